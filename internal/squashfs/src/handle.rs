//! Ownership of memory and objects handed out by libsquashfs, and its error codes.

use crate::ffi;
use anyhow::{anyhow, Result};
use std::os::raw::c_int;
use std::ptr::NonNull;

/// A libsquashfs object (its struct starts with `sqfs_object_t`), destroyed through its own
/// `destroy` callback when dropped.
pub(crate) struct Object<T>(NonNull<T>);

impl<T> Object<T> {
    /// Takes ownership of `ptr`; a null pointer means the library could not create the object.
    pub(crate) fn new(ptr: *mut T, what: &str) -> Result<Self> {
        NonNull::new(ptr)
            .map(Object)
            .ok_or_else(|| anyhow!("libsquashfs could not create the {what} (out of memory?)"))
    }

    pub(crate) fn ptr(&self) -> *mut T {
        self.0.as_ptr()
    }
}

impl<T> Drop for Object<T> {
    fn drop(&mut self) {
        let obj = self.0.as_ptr().cast::<ffi::sqfs_object_t>();
        // SAFETY: every type wrapped here begins with sqfs_object_t and was created by
        // libsquashfs, which always fills in `destroy`.
        unsafe {
            if let Some(destroy) = (*obj).destroy {
                destroy(obj);
            }
        }
    }
}

/// A malloc'ed structure returned by libsquashfs (inodes, directory entries, xattr keys),
/// released with `sqfs_free`.
pub(crate) struct Malloced<T>(NonNull<T>);

impl<T> Malloced<T> {
    /// Takes ownership of `ptr`, which must come from malloc/calloc or a libsquashfs call
    /// documented as "free with sqfs_free".
    pub(crate) fn new(ptr: *mut T, what: &str) -> Result<Self> {
        NonNull::new(ptr)
            .map(Malloced)
            .ok_or_else(|| anyhow!("libsquashfs returned no {what}"))
    }

    pub(crate) fn ptr(&self) -> *mut T {
        self.0.as_ptr()
    }

    pub(crate) fn get(&self) -> &T {
        // SAFETY: non-null and owned by us for our lifetime.
        unsafe { self.0.as_ref() }
    }
}

impl<T> Drop for Malloced<T> {
    fn drop(&mut self) {
        // SAFETY: allocated with malloc by libsquashfs or by us (calloc).
        unsafe { ffi::sqfs_free(self.0.as_ptr().cast()) }
    }
}

/// Allocates a zeroed inode with `extra` bytes of payload behind it, as libsquashfs expects.
pub(crate) fn alloc_inode(extra: usize) -> Result<Malloced<ffi::sqfs_inode_generic_t>> {
    let size = std::mem::size_of::<ffi::sqfs_inode_generic_t>() + extra;
    // SAFETY: plain allocation; freed by Malloced's Drop with free().
    let ptr = unsafe { libc::calloc(1, size) }.cast::<ffi::sqfs_inode_generic_t>();
    Malloced::new(ptr, "inode memory")
}

/// Human words for a libsquashfs error code.
pub(crate) fn describe(code: c_int) -> &'static str {
    match code {
        ffi::SQFS_ERROR_ALLOC => "out of memory",
        ffi::SQFS_ERROR_IO => "I/O error",
        ffi::SQFS_ERROR_COMPRESSOR => "compressed data is corrupt or the compressor failed",
        ffi::SQFS_ERROR_INTERNAL => "internal libsquashfs error",
        ffi::SQFS_ERROR_CORRUPTED => "the image is corrupt",
        ffi::SQFS_ERROR_UNSUPPORTED => "unsupported feature",
        ffi::SQFS_ERROR_OVERFLOW => "a size in the image overflows",
        ffi::SQFS_ERROR_OUT_OF_BOUNDS => "data lies outside the image (corrupt or truncated)",
        ffi::SFQS_ERROR_SUPER_MAGIC => "bad superblock magic (not a squashfs image)",
        ffi::SFQS_ERROR_SUPER_VERSION => "unsupported squashfs version",
        ffi::SQFS_ERROR_SUPER_BLOCK_SIZE => "invalid block size in the superblock",
        ffi::SQFS_ERROR_NOT_DIR => "not a directory",
        ffi::SQFS_ERROR_NO_ENTRY => "no such file or directory",
        ffi::SQFS_ERROR_LINK_LOOP => "hard link loop",
        ffi::SQFS_ERROR_NOT_FILE => "not a regular file",
        ffi::SQFS_ERROR_ARG_INVALID => "invalid argument",
        ffi::SQFS_ERROR_SEQUENCE => "operations called in the wrong order",
        _ => "unknown libsquashfs error",
    }
}

/// Turns a libsquashfs return code into a Result; `what` says what was being done.
pub(crate) fn check(code: c_int, what: impl FnOnce() -> String) -> Result<c_int> {
    if code >= 0 {
        Ok(code)
    } else {
        Err(anyhow!(
            "{}: {} (libsquashfs error {code})",
            what(),
            describe(code)
        ))
    }
}
