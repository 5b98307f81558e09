//! A `sqfs_file_t` backed by a Rust `File` and a byte window inside it, so libsquashfs can read a
//! squashfs that starts at an offset (the system partition of a SIF) or write a new image.
//! (`sqfs_open_file` only knows whole files.)

use crate::ffi;
use std::fs::File;
use std::io;
use std::os::raw::{c_int, c_void};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// `base` must stay the first field: libsquashfs only sees `*mut sqfs_file_t` and the callbacks
/// cast it back to `RangeFile`.
#[repr(C)]
pub(crate) struct RangeFile {
    base: ffi::sqfs_file_t,
    file: File,
    /// Byte offset of the squashfs image inside `file`.
    start: u64,
    /// Readable length of the window; None for an output file that grows.
    len: Option<u64>,
    /// The last OS error, kept because libsquashfs only passes an error code up.
    last_error: Mutex<Option<io::Error>>,
}

impl RangeFile {
    /// A read-only window of `len` bytes starting at `start`.
    pub(crate) fn reader(file: File, start: u64, len: u64) -> Box<RangeFile> {
        Self::boxed(file, start, Some(len))
    }

    /// An output file, written from offset 0 (the caller truncates it first).
    pub(crate) fn writer(file: File) -> Box<RangeFile> {
        Self::boxed(file, 0, None)
    }

    fn boxed(file: File, start: u64, len: Option<u64>) -> Box<RangeFile> {
        let mut base = ffi::sqfs_file_t::default();
        base.base.destroy = Some(destroy);
        base.base.copy = None;
        base.read_at = Some(read_at);
        base.write_at = if len.is_none() { Some(write_at) } else { None };
        base.get_size = Some(get_size);
        base.truncate = if len.is_none() { Some(truncate) } else { None };
        Box::new(RangeFile {
            base,
            file,
            start,
            len,
            last_error: Mutex::new(None),
        })
    }

    /// The pointer to hand to libsquashfs. Valid as long as the Box lives; libsquashfs only ever
    /// calls back through it, and the callbacks take `&RangeFile`, never `&mut`.
    pub(crate) fn as_sqfs(&self) -> *mut ffi::sqfs_file_t {
        (&self.base as *const ffi::sqfs_file_t).cast_mut()
    }

    /// The OS error behind the last failed callback, if any.
    pub(crate) fn take_error(&self) -> Option<io::Error> {
        self.last_error.lock().ok().and_then(|mut e| e.take())
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    fn remember(&self, err: io::Error) -> c_int {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(err);
        }
        ffi::SQFS_ERROR_IO
    }

    fn size(&self) -> u64 {
        match self.len {
            Some(len) => len,
            None => match self.file.metadata() {
                Ok(m) => m.len().saturating_sub(self.start),
                Err(e) => {
                    self.remember(e);
                    0
                }
            },
        }
    }
}

/// SAFETY (all callbacks): libsquashfs passes back the pointer from `as_sqfs`, which points at
/// the first field of a live, `#[repr(C)]` RangeFile.
unsafe fn this<'a>(file: *const ffi::sqfs_file_t) -> &'a RangeFile {
    unsafe { &*file.cast::<RangeFile>() }
}

/// The Rust side owns the RangeFile; libsquashfs never destroys files it did not open.
unsafe extern "C" fn destroy(_obj: *mut ffi::sqfs_object_t) {}

unsafe extern "C" fn read_at(
    file: *mut ffi::sqfs_file_t,
    offset: u64,
    buffer: *mut c_void,
    size: usize,
) -> c_int {
    let me = unsafe { this(file) };
    let end = match offset.checked_add(size as u64) {
        Some(end) => end,
        None => return ffi::SQFS_ERROR_OUT_OF_BOUNDS,
    };
    if let Some(len) = me.len {
        if end > len {
            return ffi::SQFS_ERROR_OUT_OF_BOUNDS;
        }
    }
    if size == 0 {
        return 0;
    }
    // SAFETY: libsquashfs hands us a writable buffer of `size` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buffer.cast::<u8>(), size) };
    match me.file.read_exact_at(buf, me.start + offset) {
        Ok(()) => 0,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => ffi::SQFS_ERROR_OUT_OF_BOUNDS,
        Err(e) => me.remember(e),
    }
}

unsafe extern "C" fn write_at(
    file: *mut ffi::sqfs_file_t,
    offset: u64,
    buffer: *const c_void,
    size: usize,
) -> c_int {
    let me = unsafe { this(file) };
    if size == 0 {
        return 0;
    }
    // SAFETY: libsquashfs hands us a readable buffer of `size` bytes.
    let buf = unsafe { std::slice::from_raw_parts(buffer.cast::<u8>(), size) };
    match me.file.write_all_at(buf, me.start + offset) {
        Ok(()) => 0,
        Err(e) => me.remember(e),
    }
}

unsafe extern "C" fn get_size(file: *const ffi::sqfs_file_t) -> u64 {
    unsafe { this(file) }.size()
}

unsafe extern "C" fn truncate(file: *mut ffi::sqfs_file_t, size: u64) -> c_int {
    let me = unsafe { this(file) };
    match me.file.set_len(me.start + size) {
        Ok(()) => 0,
        Err(e) => me.remember(e),
    }
}
