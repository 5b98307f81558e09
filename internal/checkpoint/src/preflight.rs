//! The facts a restore depends on, recorded with every generation, and the check of them on
//! the host that restores it.
//!
//! A checkpoint moved to another host (a shared file system, `checkpoint import`) restores
//! only where the kernel, the CPU, the engine and the network let it: CRIU puts back memory
//! that may use CPU instructions the new CPU lacks, and sockets bound to addresses the new host
//! may not have. Each generation records [`HostFacts`] at checkpoint time; before a restart,
//! [`check`] compares them with this host and refuses, in one line naming every difference,
//! unless `--force` is given. Which facts matter is the engine's call
//! ([`crate::engine::CheckpointEngine::host_differences`]); the listening addresses matter to
//! every engine, since the application (restored or started again) binds them.

use crate::engine::CheckpointEngine;
use crate::store::{Checkpoint, Generation};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a generation records about the host it was taken on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The CPU's model name, as /proc/cpuinfo gives it.
    pub cpu_model: String,
    /// The engine's version as it reports it (CRIU's `--version`, rctr's own for the
    /// application-level engine).
    #[serde(default)]
    pub engine_version: Option<String>,
    /// Where the application's TCP sockets listened.
    #[serde(default)]
    pub listening: Vec<SocketAddr>,
}

impl HostFacts {
    /// This host's facts, with the engine's version and the application's listening sockets.
    pub fn here(engine_version: Option<String>, listening: Vec<SocketAddr>) -> HostFacts {
        HostFacts {
            hostname: rctr_state::hostname(),
            kernel: kernel_release(),
            cpu_model: cpu_model(),
            engine_version,
            listening,
        }
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The first CPU's model name.
pub fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_model_in(&text)
}

fn cpu_model_in(cpuinfo: &str) -> String {
    // x86 says "model name"; other architectures "Model", "cpu model" or "Processor".
    ["model name", "cpu model", "Model", "Processor"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == *key).then(|| v.trim().to_string())
            })
        })
        .unwrap_or_default()
}

/// The addresses the TCP sockets of `pids` listen on, from the network namespace's tables
/// (/proc/PID/net/tcp and tcp6) joined with the processes' descriptors.
pub fn listening_sockets(pids: &[i32]) -> Vec<SocketAddr> {
    let mut inodes = BTreeSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy();
                if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if let Ok(n) = n.parse::<u64>() {
                        inodes.insert(n);
                    }
                }
            }
        }
    }
    let Some(pid) = pids.first() else {
        return vec![];
    };
    let mut out = BTreeSet::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        out.extend(listening_in(&text, &inodes));
    }
    out.into_iter().collect()
}

/// The listening sockets of a /proc/net/tcp{,6} table whose inode is in `inodes`.
fn listening_in(table: &str, inodes: &BTreeSet<u64>) -> Vec<SocketAddr> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = f.get(9)?.parse().ok()?;
            if f.get(3) != Some(&LISTEN) || !inodes.contains(&inode) {
                return None;
            }
            parse_proc_addr(f.get(1)?)
        })
        .collect()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the kernel prints each 32-bit
/// word of the address in host byte order.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4 address on a dual-stack socket is the v4 address.
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether this host has address `ip` (binding it is the test the restored socket faces).
fn bindable_here(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The recorded listening sockets this host cannot give the application, as differences:
/// any address and loopback always work; another one only where `bindable` says the host
/// has it.
pub fn address_differences(
    listening: &[SocketAddr],
    bindable: impl Fn(IpAddr) -> bool,
) -> Vec<String> {
    let missing: Vec<String> = listening
        .iter()
        .filter(|a| !a.ip().is_unspecified() && !a.ip().is_loopback() && !bindable(a.ip()))
        .map(|a| a.to_string())
        .collect();
    match missing.len() {
        0 => vec![],
        1 => vec![format!(
            "the application listened on {}, an address this host does not have, so its socket cannot be bound here",
            missing[0]
        )],
        _ => vec![format!(
            "the application listened on {}, addresses this host does not have, so its sockets cannot be bound here",
            missing.join(", ")
        )],
    }
}

/// A release like "6.18.0-1-amd64" read as its leading numbers.
pub fn version_numbers(v: &str) -> Vec<u32> {
    let dotted = v
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or_default();
    dotted.split('.').map_while(|p| p.parse().ok()).collect()
}

/// The common differences of `then` from this host that matter to `engine`, followed by the
/// engine's own: every reason found that a restore here may fail.
pub fn differences(
    ckpt: &Checkpoint,
    g: &Generation,
    then: &HostFacts,
    engine: &dyn CheckpointEngine,
) -> Vec<String> {
    let mut out = address_differences(&then.listening, bindable_here);
    out.extend(engine.host_differences(ckpt, g, then));
    out
}

/// Compares generation `g`'s recorded host with this one. Differences refuse the restore
/// in one line, or with `force` are shown as a warning and let through. Generations recorded
/// before these facts were kept pass unchecked.
pub fn check(
    ckpt: &Checkpoint,
    g: &Generation,
    engine: &dyn CheckpointEngine,
    force: bool,
) -> Result<()> {
    let Some(then) = &g.manifest.host else {
        return Ok(());
    };
    let found = differences(ckpt, g, then, engine);
    if found.is_empty() {
        return Ok(());
    }
    let line = refusal(ckpt.name(), g.number, &then.hostname, &found);
    if force {
        rctr_log::warn!("{line}; restoring anyway (--force)");
        return Ok(());
    }
    if then.hostname == rctr_state::hostname() {
        bail!("{line}: use --force to try anyway");
    }
    bail!(
        "{line}: restore it on a host like {}, or use --force to try anyway",
        then.hostname
    )
}

/// "generation 2 of checkpoint 'ex' was taken on host n1 and this host (n2) differs: A; B".
pub fn refusal(name: &str, generation: u32, then_host: &str, found: &[String]) -> String {
    let here = rctr_state::hostname();
    let hosts = if then_host == here {
        format!("this host ({here}) as it was then, and it differs now")
    } else {
        format!("host {then_host} and this host ({here}) differs")
    };
    format!(
        "generation {generation} of checkpoint '{name}' was taken on {hosts}: {}",
        found.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_are_decoded() {
        let a = parse_proc_addr("0100007F:1F90").unwrap();
        assert_eq!(a, "127.0.0.1:8080".parse().unwrap());
        let any6 = parse_proc_addr("00000000000000000000000000000000:0050").unwrap();
        assert_eq!(any6, "[::]:80".parse().unwrap());
        let one6 = parse_proc_addr("00000000000000000000000001000000:0016").unwrap();
        assert_eq!(one6, "[::1]:22".parse().unwrap());
        // ::ffff:192.0.2.7 on a dual-stack socket.
        let mapped = parse_proc_addr("0000000000000000FFFF0000070200C0:1F90").unwrap();
        assert_eq!(mapped, "192.0.2.7:8080".parse().unwrap());
        assert!(parse_proc_addr("nonsense").is_none());
    }

    #[test]
    fn only_listening_sockets_of_the_application_are_taken() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0702000A:22B8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0\n\
   2: 0702000A:22B8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0\n";
        let ours: BTreeSet<u64> = [111, 333].into_iter().collect();
        assert_eq!(
            listening_in(table, &ours),
            vec!["10.0.2.7:8888".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn any_and_loopback_addresses_always_bind_others_only_when_present() {
        let listening: Vec<SocketAddr> = ["0.0.0.0:80", "127.0.0.1:81", "[::]:82", "[::1]:83"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        // Whatever the host has: these never need an address of it.
        assert!(address_differences(&listening, |_| false).is_empty());
        assert!(listening.iter().all(|a| bindable_here(a.ip())));
        // TEST-NET-1 is on no real host.
        let away: SocketAddr = "192.0.2.7:8888".parse().unwrap();
        assert!(!bindable_here(away.ip()));
        let d = address_differences(&[away], bindable_here);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains("192.0.2.7:8888") && d[0].contains("does not have"),
            "{d:?}"
        );
        let both = address_differences(&[away, "192.0.2.8:1".parse().unwrap()], |_| false);
        assert!(both[0].contains("192.0.2.7:8888, 192.0.2.8:1"), "{both:?}");
    }

    #[test]
    fn cpu_models_and_versions_are_read() {
        assert_eq!(
            cpu_model_in("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"),
            "Intel(R) Xeon(R) Processor"
        );
        assert_eq!(
            cpu_model_in("Processor\t: AArch64 rev 1\n"),
            "AArch64 rev 1"
        );
        assert_eq!(version_numbers("6.18.0-1-amd64"), vec![6, 18, 0]);
        assert_eq!(version_numbers("4.2.1"), vec![4, 2, 1]);
        assert!(version_numbers("4.1") < version_numbers("4.2.1"));
        assert!(!kernel_release().is_empty());
    }

    #[test]
    fn the_refusal_names_the_hosts_and_every_difference() {
        let line = refusal(
            "ex",
            3,
            "n1",
            &["kernel 6.1.0 there, 6.18.0 here".into(), "B".into()],
        );
        assert!(
            line.starts_with("generation 3 of checkpoint 'ex' was taken on host n1"),
            "{line}"
        );
        assert!(
            line.contains(&format!("this host ({})", rctr_state::hostname())),
            "{line}"
        );
        assert!(
            line.ends_with("kernel 6.1.0 there, 6.18.0 here; B"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        let same = refusal("ex", 3, &rctr_state::hostname(), &["A".into()]);
        assert!(
            same.contains("as it was then, and it differs now: A"),
            "{same}"
        );
    }
}
