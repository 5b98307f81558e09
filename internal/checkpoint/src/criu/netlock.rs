//! CRIU's network lock: while it dumps an application with TCP connections it adds an
//! nftables table (`inet CRIU-<id>`) that drops the connections' packets, and removes it when
//! it is done. A CRIU that dies half-way (SIGKILL, a batch system's grace time running out)
//! leaves the table behind, and the application's connections stay cut off. rctr removes the
//! tables a failed dump left, at once (the dump runs in a process of its own session, so that
//! it survives its caller). A dump that ends the application keeps its table on purpose: it
//! holds the connections for a `--tcp-established` restore, and any other restore removes it.
//! Needs the `nft` tool (Debian's nftables); without it nothing is removed and
//! `rctr checkpoint check` says so.

use std::process::{Command, Stdio};

const PREFIX: &str = "CRIU-";

/// `nft ARGS` in the network namespace of host process `net_of` (None: rctr's own).
fn nft(net_of: Option<i32>, args: &[&str]) -> Option<String> {
    let mut cmd = match net_of {
        None => Command::new("nft"),
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg("nft");
            c
        }
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the `nft` tool is there.
pub fn available() -> bool {
    nft(None, &["--version"]).is_some()
}

/// CRIU's lock tables in that network namespace.
pub fn tables(net_of: Option<i32>) -> Vec<String> {
    nft(net_of, &["list", "tables", "inet"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .filter(|t| t.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Removes lock tables; returns how many went.
pub fn remove(net_of: Option<i32>, names: &[String]) -> usize {
    names
        .iter()
        .filter(|t| t.starts_with(PREFIX) && !t.contains(char::is_whitespace))
        .filter(|t| nft(net_of, &["delete", "table", "inet", t]).is_some())
        .count()
}
