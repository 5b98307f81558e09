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
            let blake3 = if meta.len() <= HASH_LIMIT {
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
                None => Some("it was modified (too large to compare contents)".to_string()),
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
}
