//! Files the application holds open, looked at around a CRIU dump.
//!
//! - On a writable bind: CRIU restores the descriptor but checks only the file's size. rctr
//!   records size, modification time and a checksum at checkpoint time and refuses a restart
//!   on a file whose contents changed since (files opened for appending are exempt: appending
//!   after a checkpoint is how logs keep growing, see docs/checkpoint.md).

use anyhow::{bail, Result};
use rctr_runtime::plan::{ContainerPlan, MountSource};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Above this size a file's contents are not hashed (size and modification time still are).
const HASH_LIMIT: u64 = 1 << 30;

/// An open file on a writable bind, as it was at checkpoint time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFile {
    /// The path inside the container.
    pub path: PathBuf,
    /// The same file on the host.
    pub host: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    /// BLAKE3 of the contents (None above [`HASH_LIMIT`]).
    pub blake3: Option<String>,
}

pub(super) use crate::procfs::container_pids;

/// mountinfo escapes spaces and the like as \ooo.
pub(super) fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or(""), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The open flags of descriptor `fd` of `pid`.
fn open_flags(pid: i32, fd: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        })
        .unwrap_or(0)
}

/// Whether descriptor `fd` of `pid` was opened for appending.
fn is_append(pid: i32, fd: &str) -> bool {
    open_flags(pid, fd) & libc::O_APPEND as u32 != 0
}

/// The host path of container path `path`, when it lies under a writable bind of `plan`.
fn host_path(plan: &ContainerPlan, path: &Path) -> Option<PathBuf> {
    plan.mounts
        .iter()
        .filter(|m| !m.readonly)
        .filter_map(|m| match &m.source {
            MountSource::Bind { src } => {
                let rest = path.strip_prefix(&m.dst).ok()?;
                Some((m.dst.as_os_str().len(), src.join(rest)))
            }
            MountSource::Tmpfs => None,
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, p)| p)
}

/// The files open on writable binds in the container of `init_pid`, measured before a dump.
pub fn before_dump(init_pid: i32, plan: &ContainerPlan) -> Result<Vec<OpenFile>> {
    let mut out: Vec<OpenFile> = vec![];
    // Read only once a file is to be hashed: reading /proc/locks takes the kernel's file
    // lock semaphore for writing, an RCU grace period (~20 ms here).
    let mut leases = None;
    for pid in container_pids(init_pid) {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let fd_name = fd.file_name().to_string_lossy().into_owned();
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let text = target.to_string_lossy();
            // Pipes, sockets, anonymous files; deleted files CRIU saves itself.
            if !text.starts_with('/') || text.ends_with(" (deleted)") {
                continue;
            }
            // Through the descriptor: the very file, whatever the paths.
            let Ok(meta) = std::fs::metadata(fd.path()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if is_append(pid, &fd_name) || out.iter().any(|f| f.path == target) {
                continue;
            }
            let Some(host) = host_path(plan, &target) else {
                continue;
            };
            // Only the bind's own files: a file on a mount the application made over a
            // part of the bind (a tmpfs) is not the host's file of that path.
            if !same_file(&host, &meta) {
                continue;
            }
            // Opening a leased file, even to read it, breaks the lease: its holder gets a
            // signal (SIGIO unless it chose another), which kills a program that expects
            // none. Such a file is compared by size and time only.
            let leased = leases
                .get_or_insert_with(|| {
                    parse_leases(&std::fs::read_to_string("/proc/locks").unwrap_or_default())
                })
                .contains(&(meta.dev(), meta.ino()));
            let blake3 = if meta.len() <= HASH_LIMIT && !leased {
                crate::integrity::hash_file(&fd.path())
                    .ok()
                    .map(|s| s.blake3)
            } else {
                None
            };
            out.push(OpenFile {
                path: target.clone(),
                host,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                blake3,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The files (device, inode) that have a lease, from the text of /proc/locks
/// (`1: LEASE  ACTIVE    READ 3655 00:2a:1234 0 EOF`, the device as hex major:minor).
fn parse_leases(locks: &str) -> Vec<(u64, u64)> {
    locks
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) != Some(&"LEASE") {
                return None;
            }
            let mut id = f.get(5)?.split(':');
            let major = u32::from_str_radix(id.next()?, 16).ok()?;
            let minor = u32::from_str_radix(id.next()?, 16).ok()?;
            let ino = id.next()?.parse().ok()?;
            Some((libc::makedev(major, minor), ino))
        })
        .collect()
}

/// Whether host path `host` is the file `meta` describes (same device and inode).
fn same_file(host: &Path, meta: &std::fs::Metadata) -> bool {
    std::fs::metadata(host).is_ok_and(|h| h.dev() == meta.dev() && h.ino() == meta.ino())
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// Before a restore: every recorded file must still hold what it held at checkpoint time
/// (unless `force`).
pub fn verify_at_restore(files: &[OpenFile], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    for f in files {
        let why = match std::fs::metadata(&f.host) {
            Err(_) => Some("it no longer exists".to_string()),
            Ok(m) if m.len() != f.size => {
                Some(format!("its size is {} instead of {}", m.len(), f.size))
            }
            Ok(m) if mtime_ns(&m) == f.mtime_ns => None,
            Ok(_) => match &f.blake3 {
                Some(want) => match crate::integrity::hash_file(&f.host) {
                    Ok(sum) if &sum.blake3 == want => None,
                    Ok(_) => Some("its contents changed (same size)".to_string()),
                    Err(e) => Some(format!("it cannot be read: {e:#}")),
                },
                None => Some("it was modified (its contents were not compared)".to_string()),
            },
        };
        if let Some(why) = why {
            bail!(
                "file {} (open in the application as {} when the checkpoint was taken) changed since: {why}; the restored application would find a file it did not write: restore it, or use --force to restart anyway",
                f.host.display(),
                f.path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/x\"), r"/x\");
    }

    #[test]
    fn changed_contents_of_the_same_size_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data");
        std::fs::write(&p, b"hello").unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        let rec = OpenFile {
            path: "/data/data".into(),
            host: p.clone(),
            size: 5,
            mtime_ns: mtime_ns(&meta),
            blake3: Some(crate::integrity::hash_file(&p).unwrap().blake3),
        };
        verify_at_restore(std::slice::from_ref(&rec), false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&p, b"HELLO").unwrap();
        let err = verify_at_restore(std::slice::from_ref(&rec), false).unwrap_err();
        assert!(err.to_string().contains("same size"), "{err}");
        verify_at_restore(std::slice::from_ref(&rec), true).unwrap();
        // Touched but identical: fine.
        std::fs::write(&p, b"hello").unwrap();
        verify_at_restore(std::slice::from_ref(&rec), false).unwrap();
        std::fs::write(&p, b"hello!").unwrap();
        let err = verify_at_restore(std::slice::from_ref(&rec), false).unwrap_err();
        assert!(err.to_string().contains("size is 6 instead of 5"), "{err}");
    }

    #[test]
    fn a_file_under_another_mount_is_not_the_binds_file() {
        let dir = tempfile::tempdir().unwrap();
        let (bind, other) = (dir.path().join("f"), dir.path().join("g"));
        std::fs::write(&bind, b"host").unwrap();
        std::fs::write(&other, b"tmpfs").unwrap();
        let open = std::fs::metadata(&other).unwrap();
        assert!(same_file(&other, &open));
        assert!(!same_file(&bind, &open), "another file of the same path");
        assert!(!same_file(&dir.path().join("gone"), &open));
    }

    #[test]
    fn leases_are_found_in_proc_locks() {
        let locks = "1: FLOCK  ADVISORY  WRITE 14907 fe:00:5546158 0 EOF\n\
                     2: LEASE  ACTIVE    WRITE 3655 00:2a:1234 0 EOF\n\
                     3: LEASE  BREAKING  READ 3656 fe:01:99 0 EOF\n\
                     3: -> LEASE  ACTIVE  READ 3657 fe:01:98 0 EOF\n";
        assert_eq!(
            parse_leases(locks),
            vec![(libc::makedev(0, 0x2a), 1234), (libc::makedev(0xfe, 1), 99)]
        );
    }
}
