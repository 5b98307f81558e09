//! TCP helpers for servers running in containers (which share the network namespace of
//! whoever started them: the host's, or a test cluster node's).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bind to port 0, read the port, close).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener
        .local_addr()
        .expect("bound socket has an address")
        .port()
}

/// True when a socket in this network namespace listens on TCP `port` (any address, v4 or v6).
///
/// Read from /proc/net/tcp{,6} rather than by connecting: a connection would be served and
/// would change a counting server's answers.
pub fn is_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&LISTEN)
        })
    })
}

/// Polls (every few ms) until something listens on `port`; false after `timeout`.
pub fn try_wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if is_listening(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`try_wait_for_port`], panicking on timeout.
pub fn wait_for_port(port: u16, timeout: Duration) {
    assert!(
        try_wait_for_port(port, timeout),
        "nothing listens on port {port} after {timeout:?}"
    );
}

/// Connects to 127.0.0.1:`port`, reads until the server closes, returns the text without its
/// trailing newline. Panics (with the cause) when the server does not answer within 10 s.
pub fn request(port: u16) -> String {
    request_to(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// [`request`] to any address (a server on another node's address).
pub fn request_to(addr: SocketAddr) -> String {
    try_request(addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no answer from {addr}: {e}"))
}

/// Connects to `addr` (waiting at most `connect_timeout`), reads until the server closes and
/// returns the text without its trailing newline; the error says what failed. Reading may
/// take 10 s more.
pub fn try_request(addr: SocketAddr, connect_timeout: Duration) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&addr, connect_timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a non-zero read timeout is valid");
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .map_err(|e| format!("reading the answer from {addr} failed (got {text:?} so far): {e}"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
