//! Copies of another process's descriptors (`pidfd_getfd`), for looking at the application's
//! sockets and holding the lazy-pages daemon's userfaultfds. The pidfd itself comes from
//! [`rctr_instance::pidfd_open`].

use anyhow::{Context, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub use rctr_instance::pidfd_open as open;

/// A copy (close-on-exec) of descriptor `fd` of the process behind `pidfd`.
pub fn copy_fd(pidfd: &OwnedFd, fd: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags, and returns a new
    // close-on-exec descriptor or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot take a copy of descriptor {fd} (pidfd_getfd)"));
    }
    // SAFETY: a descriptor pidfd_getfd just returned, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as i32) })
}
