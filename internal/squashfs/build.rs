//! Generates Rust bindings for the system libsquashfs (Debian: libsquashfs-dev) and links it.
//! squashfs-ng has the same bindings but keeps them private, and its high-level API lacks
//! what an image builder needs (hard links, gzip, parent inodes, reading at an offset).
//!
//! The library and the compressors it was built with are linked statically, so that rctr
//! starts on hosts that lack them (an admin installs one file; GPU nodes often run another
//! distribution): `ldd rctr` shows only the C library, its loader and libgcc_s.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// libsquashfs first, then what it calls (a static link resolves left to right).
const STATIC_LIBS: [&str; 5] = ["squashfs", "lzma", "z", "lz4", "zstd"];

/// The directory holding `lib<name>.a`, as the C compiler finds it.
fn archive_dir(name: &str) -> PathBuf {
    let file = format!("lib{name}.a");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let found = Command::new(&cc)
        .arg(format!("-print-file-name={file}"))
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_absolute() && p.is_file());
    let Some(path) = found else {
        panic!(
            "{file} not found by {cc}: install the static libraries \
             (Debian: libsquashfs-dev liblzma-dev zlib1g-dev liblz4-dev libzstd-dev)"
        );
    };
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn main() {
    for name in STATIC_LIBS {
        println!(
            "cargo:rustc-link-search=native={}",
            archive_dir(name).display()
        );
        println!("cargo:rustc-link-lib=static={name}");
    }
    println!("cargo:rerun-if-changed=wrapper.h");
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("sqfs_.*")
        .allowlist_type("sqfs_.*")
        .allowlist_type("SQFS_.*")
        .allowlist_var("SQFS_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|e| {
            panic!("generating libsquashfs bindings failed (is libsquashfs-dev installed?): {e}")
        });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing libsquashfs bindings");
}
