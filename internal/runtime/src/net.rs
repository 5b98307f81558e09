//! Network namespace helpers.

use anyhow::{Context, Result};

/// Brings up `lo` in a fresh network namespace (it starts down).
pub fn loopback_up() -> Result<()> {
    // SAFETY: socket(2) takes integers only; the descriptor is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot open a socket to configure lo");
    }
    // SAFETY: ifreq is plain C data, valid when zeroed.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming lo, and lives across both ioctls.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: `sock` is ours and used no more.
    unsafe { libc::close(sock) };
    result.context("cannot bring up the loopback interface")
}
