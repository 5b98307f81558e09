//! Helpers shared by this crate's integration tests.

use std::fs;
use std::path::Path;

/// The build staging directories (`.rctr-build-*`) left in `dir`: a build must leave none,
/// whether it succeeds or fails.
pub fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rctr-build-"))
        .collect()
}
