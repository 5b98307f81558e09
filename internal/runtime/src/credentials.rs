//! Taking another user's credentials in a child about to exec, for root's containers run as
//! another user (`--security uid:N,gid:N`, [`RunAs`]):
//!
//! - [`become_user`]: the application and `exec` into the instance. Groups, gid, then uid
//!   (after the uid no change is possible); leaving root clears every capability; with
//!   `no_new_privs` a setuid binary of the image cannot bring root back.
//! - [`become_user_keeping_capabilities`]: the checkpoint engine dumping such a container.
//!   Dumping a process of another uid reads its rlimits, which needs CAP_SYS_RESOURCE, and
//!   root lacks it on some hosts (VMs, nested containers); as the application's own uid,
//!   holding root's other capabilities as ambient ones, the engine needs no such check.

use crate::plan::RunAs;
use anyhow::{Context, Result};

/// Reads Apptainer's `--security` values for the user to run as: `uid:N` and
/// `gid:N[:M...]` (primary group, then supplementary ones), comma-separated or repeated.
/// Without `gid`, the user's primary and supplementary groups from the host's databases.
pub fn parse_security(values: &[String]) -> Result<Option<RunAs>> {
    let (mut uid, mut gids): (Option<u32>, Option<Vec<u32>>) = (None, None);
    let number = |item: &str, v: &str| -> Result<u32> {
        v.parse()
            .with_context(|| format!("--security {item}: {v:?} is not a number"))
    };
    for item in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
        let (key, rest) = item.split_once(':').unwrap_or((item, ""));
        match key {
            "" => {}
            "uid" => uid = Some(number(item, rest)?),
            "gid" => {
                gids = Some(
                    rest.split(':')
                        .map(|g| number(item, g))
                        .collect::<Result<_>>()?,
                )
            }
            "seccomp" | "apparmor" | "selinux" => anyhow::bail!(
                "--security {item}: rctr does not support {key} profiles (supported: uid:N, gid:N)"
            ),
            _ => anyhow::bail!("--security {item}: unknown option (supported: uid:N, gid:N)"),
        }
    }
    let Some(uid) = uid else {
        if gids.is_some() {
            anyhow::bail!("--security gid needs uid:N as well");
        }
        return Ok(None);
    };
    let (gid, groups) = match gids {
        Some(g) => (g[0], g),
        None => host_groups(uid)?,
    };
    Ok(Some(RunAs { uid, gid, groups }))
}

/// The primary gid and all groups of `uid` from the host's passwd and group databases.
fn host_groups(uid: u32) -> Result<(u32, Vec<u32>)> {
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .with_context(|| {
            format!("--security uid:{uid}: no passwd entry for that uid on this host; give gid:N too, or create the user")
        })?;
    let name = std::ffi::CString::new(user.name.clone()).context("user name with a NUL byte")?;
    let groups = nix::unistd::getgrouplist(&name, user.gid)
        .with_context(|| format!("cannot list the groups of {}", user.name))?;
    Ok((
        user.gid.as_raw(),
        groups.into_iter().map(|g| g.as_raw()).collect(),
    ))
}

/// The application's credentials, no capability, `no_new_privs`.
pub fn become_user(run_as: &RunAs) -> Result<()> {
    set_ids(run_as)?;
    no_new_privs()
}

/// The user's ids with every capability root holds kept: effective, inheritable and
/// ambient, so that they survive the exec of an ordinary (non-setuid) binary.
pub fn become_user_keeping_capabilities(run_as: &RunAs) -> Result<()> {
    // SAFETY: prctl with integer arguments only changes this process's attributes.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot keep capabilities");
    }
    set_ids(run_as)?;
    let mut caps = capget()?;
    // Leaving uid 0 cleared the effective set; the permitted one stayed (KEEPCAPS).
    for d in caps.iter_mut() {
        d.effective = d.permitted;
        d.inheritable = d.permitted;
    }
    capset(&caps)?;
    for cap in 0..64u32 {
        let (word, bit) = ((cap / 32) as usize, cap % 32);
        if caps[word].permitted & (1 << bit) == 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only changes this process's attributes.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot keep capability {cap} across exec"));
        }
    }
    Ok(())
}

fn set_ids(run_as: &RunAs) -> Result<()> {
    let groups: Vec<libc::gid_t> = run_as.groups.clone();
    // SAFETY: the pointer and length describe `groups`, which outlives the call.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set the groups");
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresgid(run_as.gid, run_as.gid, run_as.gid) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot take gid {}", run_as.gid));
    }
    // SAFETY: plain integer arguments.
    if unsafe { libc::setresuid(run_as.uid, run_as.uid, run_as.uid) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot take uid {}", run_as.uid));
    }
    Ok(())
}

fn no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments only changes this process's attributes.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set no_new_privs");
    }
    Ok(())
}

/// `struct __user_cap_header_struct` (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: one per 32 capabilities.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two words.
const CAP_VERSION_3: u32 = 0x2008_0522;

fn capget() -> Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid for the kernel to read and write; version 3
    // takes exactly two data structs.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot read the capabilities");
    }
    Ok(data)
}

fn capset(data: &[CapData; 2]) -> Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    // SAFETY: as in capget; the kernel only reads `data`.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set the capabilities");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::run_in_child;

    fn status_line(field: &str) -> String {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_default()
            .to_string()
    }

    fn nobody() -> RunAs {
        RunAs {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        }
    }

    fn parse(v: &[&str]) -> Result<Option<RunAs>> {
        parse_security(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn security_values_name_the_user_and_groups() {
        assert_eq!(parse(&[]).unwrap(), None);
        let r = parse(&["uid:1234,gid:50:60"]).unwrap().unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (1234, 50, vec![50, 60]));
        let r = parse(&["gid:7", "uid:8"]).unwrap().unwrap();
        assert_eq!((r.uid, r.gid, r.groups), (8, 7, vec![7]));
        // Without gid: root's own entry exists on every host.
        let r = parse(&["uid:0"]).unwrap().unwrap();
        assert_eq!(r.gid, 0);
        assert!(r.groups.contains(&0));
    }

    #[test]
    fn bad_security_values_are_refused_in_one_line() {
        for (v, want) in [
            ("uid:x", "not a number"),
            ("gid:5", "needs uid"),
            ("seccomp:default.json", "does not support seccomp"),
            ("frobnicate", "unknown option"),
            ("uid:99999999999", "not a number"),
            ("uid:4000000000", "no passwd entry"),
        ] {
            let e = format!("{:#}", parse(&[v]).unwrap_err());
            assert!(e.contains(want), "{v}: {e}");
            assert!(!e.contains('\n'), "{v}: {e}");
        }
    }

    #[test]
    fn a_child_that_becomes_a_user_has_its_ids_and_no_capability() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (changing uid)");
            return;
        }
        let code = run_in_child(|| {
            if become_user(&nobody()).is_err() {
                return 10;
            }
            let ok = status_line("Uid:")
                .split_whitespace()
                .skip(1)
                .all(|u| u == "65534")
                && status_line("Gid:")
                    .split_whitespace()
                    .skip(1)
                    .all(|g| g == "65534")
                && status_line("CapEff:").ends_with("0000000000000000")
                && status_line("CapPrm:").ends_with("0000000000000000")
                && status_line("NoNewPrivs:").ends_with('1');
            if ok {
                0
            } else {
                11
            }
        })
        .unwrap();
        assert_eq!(code, 0);
    }

    #[test]
    fn the_engine_keeps_root_capabilities_as_ambient_ones() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (changing uid)");
            return;
        }
        let before = status_line("CapEff:");
        let code = run_in_child(|| {
            if become_user_keeping_capabilities(&nobody()).is_err() {
                return 10;
            }
            let uid_ok = status_line("Uid:")
                .split_whitespace()
                .skip(1)
                .all(|u| u == "65534");
            // What an exec'd program gets: the ambient set equals what root had.
            let amb = status_line("CapAmb:");
            let eff = status_line("CapEff:");
            if uid_ok
                && amb.split_whitespace().nth(1) == before.split_whitespace().nth(1)
                && eff.split_whitespace().nth(1) == before.split_whitespace().nth(1)
            {
                0
            } else {
                11
            }
        })
        .unwrap();
        assert_eq!(code, 0);
    }
}
