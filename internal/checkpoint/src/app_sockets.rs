//! The application's TCP sockets, read through copies of its own descriptors
//! (`pidfd_getfd`): where it listens (recorded for the restore's preflight) and whether it
//! has any connection (a dump must then hold the network still). Reading /proc/net/tcp
//! instead walks the kernel's whole TCP hash table, about 3 ms per file here, on every
//! checkpoint.

use crate::pidfd;
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};

/// What the application's TCP sockets were doing at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpSockets {
    /// Addresses of its listening sockets.
    pub listening: Vec<SocketAddr>,
    /// Its TCP sockets in any other state but closed: connections, and connections being
    /// made or ended.
    pub connections: usize,
}

const TCP_LISTEN: u8 = 10;
const TCP_CLOSE: u8 = 7;

/// The TCP sockets of processes `pids` (host pids). Fails when a descriptor cannot be
/// copied (the caller then knows nothing for sure).
pub fn tcp_sockets(pids: &[i32]) -> Result<TcpSockets> {
    let mut seen = BTreeSet::new();
    let mut listening = BTreeSet::new();
    let mut connections = 0;
    for &pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue; // gone meanwhile
        };
        let pidfd = pidfd::open(pid)?;
        for e in fds.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if !seen.insert(inode) {
                continue;
            }
            let sock = pidfd::copy_fd(&pidfd, fd)
                .with_context(|| format!("cannot look at socket {fd} of process {pid}"))?;
            match tcp_state(&sock) {
                None | Some(TCP_CLOSE) => {}
                Some(TCP_LISTEN) => {
                    if let Some(addr) = local_address(&sock) {
                        listening.insert(addr);
                    }
                }
                Some(_) => connections += 1,
            }
        }
    }
    Ok(TcpSockets {
        listening: listening.into_iter().collect(),
        connections,
    })
}

fn int_option(sock: &OwnedFd, level: i32, name: i32) -> Option<i32> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, which has that size.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(value)
}

/// The TCP state of `sock`; None when it is not an IPv4 or IPv6 TCP socket.
fn tcp_state(sock: &OwnedFd) -> Option<u8> {
    let domain = int_option(sock, libc::SOL_SOCKET, libc::SO_DOMAIN)?;
    let protocol = int_option(sock, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    if !(domain == libc::AF_INET || domain == libc::AF_INET6) || protocol != libc::IPPROTO_TCP {
        return None;
    }
    // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which has that size.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(info.tcpi_state)
}

fn local_address(sock: &OwnedFd) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain bytes; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `ss`, which has that size.
    let r = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return None;
    }
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (its family says so), which fits.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (its family says so), which fits.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&ss as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn listening_sockets_and_connections_of_a_process_are_told_apart() {
        let me = std::process::id() as i32;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let v6 = TcpListener::bind("[::1]:0").ok();
        let now = tcp_sockets(&[me]).unwrap();
        assert!(now.listening.contains(&addr), "{now:?}");
        if let Some(v6) = &v6 {
            assert!(now.listening.contains(&v6.local_addr().unwrap()), "{now:?}");
        }
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        // (Other tests of this process may open and close sockets meanwhile.)
        let connected = tcp_sockets(&[me]).unwrap();
        assert!(connected.connections >= 2, "{connected:?}");
        drop((client, server));
    }
}
