//! Thin wrappers over the Linux calls std does not offer: xattrs, lchown, mknod and setting
//! timestamps without following symlinks. Public for the other crates that write host trees
//! (rctr-image copies trees with them).

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `path` as a C string; a path holding a NUL byte is an `InvalidInput` error.
pub fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// All extended attributes of `path` (not following a final symlink), keys sorted so images
/// come out the same every time. A filesystem without xattr support yields none.
pub(crate) fn list_xattrs(path: &Path) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let cpath = cstring(path)?;
    let names = loop {
        // SAFETY: size query with a null buffer.
        let len = unsafe { libc::llistxattr(cpath.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(err),
            };
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf has buf.len() writable bytes.
        let got = unsafe { libc::llistxattr(cpath.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ERANGE) {
                continue; // the list grew between the two calls
            }
            return Err(err);
        }
        buf.truncate(got as usize);
        break buf;
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let key = CString::new(name).expect("split on NUL");
        if let Some(value) = get_xattr(&cpath, &key)? {
            out.push((key, value));
        }
    }
    out.sort();
    Ok(out)
}

fn get_xattr(cpath: &CStr, key: &CStr) -> io::Result<Option<Vec<u8>>> {
    loop {
        // SAFETY: size query with a null buffer.
        let len = unsafe { libc::lgetxattr(cpath.as_ptr(), key.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENODATA) => Ok(None), // removed meanwhile
                _ => Err(err),
            };
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf has buf.len() writable bytes.
        let got = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if got < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(err);
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

pub(crate) fn set_xattr(path: &Path, key: &CStr, value: &[u8]) -> io::Result<()> {
    let cpath = cstring(path)?;
    // SAFETY: valid C strings and a value buffer of value.len() bytes.
    check(unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Sets the owner of `path`, not following a final symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let cpath = cstring(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::lchown(cpath.as_ptr(), uid, gid) })
}

/// Creates the special file `path` (`mode` holds the type bits, `dev` the device number).
pub fn mknod(path: &Path, mode: u32, dev: libc::dev_t) -> io::Result<()> {
    let cpath = cstring(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(cpath.as_ptr(), mode as libc::mode_t, dev) })
}

/// Sets atime and mtime of `path` to `mtime` without following a final symlink.
pub(crate) fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    set_times(path, (mtime, 0), (mtime, 0))
}

/// Sets atime and mtime of `path`, each as (seconds, nanoseconds), without following a final
/// symlink.
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let cpath = cstring(path)?;
    let timespec = |(sec, nsec): (i64, i64)| libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: valid C string and two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// True when the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() == 0 }
}
