//! Generates Rust bindings for the system libsquashfs (Debian: libsquashfs-dev) and links it.
//! squashfs-ng has the same bindings but keeps them private, and its high-level API lacks
//! what an image builder needs (hard links, gzip, parent inodes, reading at an offset).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-link-lib=squashfs");
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
