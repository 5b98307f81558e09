//! Paths of the shared test corpus.
#![allow(dead_code)]

use std::path::PathBuf;

/// `shared/testdata/sif`, beside the project checkout.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/sif")
}

pub fn sylabs(file: &str) -> PathBuf {
    testdata().join("sylabs").join(file)
}

/// Every `*.sif` file of the corpus (Sylabs' and Apptainer's).
pub fn corpus() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["sylabs", "apptainer"] {
        for entry in std::fs::read_dir(testdata().join(dir)).expect("corpus directory") {
            let path = entry.expect("corpus entry").path();
            if path.extension().is_some_and(|e| e == "sif") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() > 20, "corpus looks incomplete: {files:?}");
    files
}
