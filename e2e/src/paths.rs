//! Where things are: the workspace, the binary under test, the shared test data.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The repository root (the Cargo workspace holding this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent directory")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace) or `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The rctr binary to test: `$RCTR_BIN`, else the debug build the Makefile produces.
pub fn try_rctr_bin() -> Result<PathBuf> {
    let path = match std::env::var_os("RCTR_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => target_dir().join("debug").join("rctr"),
    };
    if !path.is_file() {
        bail!(
            "rctr binary not found at {}: run `make build` first (or set RCTR_BIN to the binary to test)",
            path.display()
        );
    }
    Ok(path)
}

/// Like [`try_rctr_bin`], panicking with its message.
pub fn rctr_bin() -> PathBuf {
    try_rctr_bin().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Test data shared with other projects: `$RCTR_TESTDATA`, else `<repo>/../shared/testdata`.
pub fn shared_testdata() -> PathBuf {
    match std::env::var_os("RCTR_TESTDATA") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("..").join("shared").join("testdata"),
    }
}

/// The busybox SIF built by Apptainer (read-only: copy it before changing it).
pub fn apptainer_busybox_sif() -> PathBuf {
    let path = shared_testdata().join("sif/apptainer/busybox_amd64.sif");
    assert!(
        path.is_file(),
        "{} missing: the shared test data must be checked out beside the repository (../shared/testdata) or named by RCTR_TESTDATA",
        path.display()
    );
    path
}

/// Where test environments are created: `<target>/e2e-tmp`, not /tmp, so that a test's
/// `$HOME` looks like a real one (a home inside /tmp is a special case of its own).
pub(crate) fn e2e_tmp_dir() -> PathBuf {
    let dir = target_dir().join("e2e-tmp");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// `p` as a string, for passing a path as one argument of an rctr command line.
pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
