//! Checksumming and writing back a generation's memory images while the engine is still
//! writing them, so that sealing does not start on gigabytes from scratch once it ends.
//!
//! A forked process (rctr forks only while single-threaded, see rctr_runtime::spawn)
//! follows every `pages-*.img` in the staging directory: it hashes each file's new bytes
//! as they appear (still in the page cache) and starts their write-back to the disk
//! (`sync_file_range`), so the final fsync waits only for the tail; pages more than
//! `KEEP_CACHED` behind are dropped from the cache once on disk. When the engine has
//! ended, [`Follower::finish`] has it read each file to its end and report the checksums
//! with the file's identity at that moment (inode, size, modification time).
//! [`Prehashed::sum_if_unchanged`] hands a checksum out only while the file still has
//! that identity; otherwise sealing hashes the file again. CRIU writes its page images
//! sequentially, each once.

use crate::chunk_sums::{ChunkSums, ChunkedHasher};
use crate::integrity::FileSum;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The files followed: the memory images, where nearly all the bytes are.
fn followed(name: &str) -> bool {
    crate::chunk_sums::is_memory_image(name)
}

/// How often the follower looks for new bytes while the engine runs.
const POLL: Duration = Duration::from_millis(20);

/// How much of each image's newest part stays in the page cache. Further back, pages are
/// dropped once on disk: a dump of many gigabytes otherwise fills memory with cache that
/// the kernel must reclaim while the dump is still writing (an 8 GiB dump took 4.3-4.5 s
/// instead of 5.9 s here, see docs/benchmarks.md), and a smaller image stays cached whole
/// for a restore soon after.
const KEEP_CACHED: u64 = 1 << 30;

/// A file's identity when its checksum was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    ino: u64,
    size: u64,
    mtime_ns: i128,
    sum: FileSum,
    /// The file's piece checksums (see [`crate::chunk_sums`]), as bytes in hex.
    chunks: Option<String>,
}

impl Seen {
    fn matches(&self, md: &std::fs::Metadata) -> bool {
        md.ino() == self.ino && md.len() == self.size && mtime_ns(md) == self.mtime_ns
    }
}

fn mtime_ns(md: &std::fs::Metadata) -> i128 {
    md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128
}

/// Checksums taken while the images were written, by file name in the staging directory.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Prehashed {
    files: BTreeMap<String, Seen>,
}

impl Prehashed {
    /// The checksum of `name` (at `path`), if the file is still exactly as it was hashed.
    pub fn sum_if_unchanged(&self, name: &str, path: &Path) -> Option<FileSum> {
        self.sums_if_unchanged(name, path).map(|(sum, _)| sum)
    }

    /// [`Prehashed::sum_if_unchanged`], with the file's piece checksums.
    pub fn sums_if_unchanged(
        &self,
        name: &str,
        path: &Path,
    ) -> Option<(FileSum, Option<ChunkSums>)> {
        let seen = self.files.get(name)?;
        let md = std::fs::symlink_metadata(path).ok()?;
        if !md.is_file() || !seen.matches(&md) {
            return None;
        }
        let chunks = match &seen.chunks {
            None => None,
            Some(hex) => Some(ChunkSums::from_bytes(&hex_decode(hex)?).ok()?),
        };
        Some((seen.sum.clone(), chunks))
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The follower process of one staging directory.
pub struct Follower {
    child: rctr_runtime::spawn::Child,
    /// Closed to tell it the engine has ended.
    stop_w: OwnedFd,
    /// Where it writes its report.
    report_r: OwnedFd,
}

impl Follower {
    /// Starts following `dir`.
    pub fn start(dir: &Path) -> Result<Follower> {
        Follower::start_keeping(dir, KEEP_CACHED)
    }

    /// [`Follower::start`], keeping the newest `keep_cached` bytes of each image cached.
    fn start_keeping(dir: &Path, keep_cached: u64) -> Result<Follower> {
        let (stop_r, stop_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let dir = dir.to_path_buf();
        let (parent_end, reader_end) = (stop_w.as_raw_fd(), report_r.as_raw_fd());
        let child = rctr_runtime::spawn::fork_child(move || {
            // The parent's ends: with the write end of the stop pipe open here, the
            // follower would never see it close.
            let _ = nix::unistd::close(parent_end);
            let _ = nix::unistd::close(reader_end);
            let report = follow(&dir, &stop_r, keep_cached);
            let text = serde_json::to_vec(&report).unwrap_or_default();
            let mut out = std::fs::File::from(report_w);
            if out.write_all(&text).is_err() {
                return 1;
            }
            0
        })?;
        // The closure, and with it this process's copies of the child's ends, is gone.
        Ok(Follower {
            child,
            stop_w,
            report_r,
        })
    }

    /// The engine has ended: the follower reads the files to their ends and reports.
    /// Never fails: without a report, sealing hashes everything itself.
    pub fn finish(self) -> Prehashed {
        drop(self.stop_w);
        let mut text = Vec::new();
        let _ = std::fs::File::from(self.report_r).read_to_end(&mut text);
        let _ = self.child.wait();
        serde_json::from_slice(&text).unwrap_or_default()
    }
}

/// One followed file: how far it has been read and hashed.
struct Progress {
    file: std::fs::File,
    hasher: ChunkedHasher,
    done: u64,
    /// Up to where its pages were dropped from the cache.
    dropped: u64,
}

/// The follower's loop: until `stop` reads EOF, take in new bytes every [`POLL`]; then a
/// last pass to each file's end.
fn follow(dir: &Path, stop: &OwnedFd, keep_cached: u64) -> Prehashed {
    let mut files: BTreeMap<String, Progress> = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let ended = stop_requested(stop, POLL);
        discover(dir, &mut files);
        for p in files.values_mut() {
            take_in(p, &mut buf, keep_cached);
        }
        if ended {
            break;
        }
    }
    let mut out = Prehashed::default();
    for (name, p) in files {
        let Ok(md) = p.file.metadata() else { continue };
        if md.len() != p.done {
            continue; // something went wrong reading: leave it to sealing
        }
        let (size, blake3, chunks) = p.hasher.finish();
        out.files.insert(
            name,
            Seen {
                ino: md.ino(),
                size: md.len(),
                mtime_ns: mtime_ns(&md),
                sum: FileSum { size, blake3 },
                chunks: chunks.map(|c| hex_encode(&c.to_bytes())),
            },
        );
    }
    out
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Waits up to `wait` for the stop pipe: true once it is closed.
fn stop_requested(stop: &OwnedFd, wait: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(stop),
        PollFlags::POLLIN,
    )];
    let ms = PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::ZERO);
    matches!(poll(&mut fds, ms), Ok(n) if n > 0)
}

/// Opens the followed files that have appeared since the last look.
fn discover(dir: &Path, files: &mut BTreeMap<String, Progress>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !followed(&name) || files.contains_key(&name) {
            continue;
        }
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Ok(file) = std::fs::File::open(PathBuf::from(dir).join(&name)) {
            files.insert(
                name,
                Progress {
                    file,
                    hasher: ChunkedHasher::default(),
                    done: 0,
                    dropped: 0,
                },
            );
        }
    }
}

/// Hashes what has been written since the last call and starts writing it back; drops
/// from the cache what lies more than `keep_cached` behind.
fn take_in(p: &mut Progress, buf: &mut [u8], keep_cached: u64) {
    use std::os::unix::fs::FileExt;
    let start = p.done;
    loop {
        match p.file.read_at(buf, p.done) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                p.hasher.update(&buf[..n]);
                p.done += n as u64;
            }
        }
    }
    if p.done > start {
        // Only starts the write-back (no waiting): the final fsync then has little left.
        // SAFETY: plain integer arguments on a descriptor this process owns.
        unsafe {
            libc::sync_file_range(
                p.file.as_raw_fd(),
                start as libc::off64_t,
                (p.done - start) as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }
    let Some(upto) = start.checked_sub(keep_cached).filter(|u| *u > p.dropped) else {
        return;
    };
    let (from, len) = (
        p.dropped as libc::off64_t,
        (upto - p.dropped) as libc::off64_t,
    );
    // Written back long ago as a rule, so waiting is short; only clean pages can be dropped.
    // SAFETY: plain integer arguments on a descriptor this process owns.
    unsafe {
        libc::sync_file_range(
            p.file.as_raw_fd(),
            from,
            len,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
        libc::posix_fadvise(p.file.as_raw_fd(), from, len, libc::POSIX_FADV_DONTNEED);
    }
    p.dropped = upto;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_written_while_followed_get_their_checksums_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let follower = Follower::start(dir.path()).unwrap();
        let pages = dir.path().join("pages-1.img");
        let mut f = std::fs::File::create(&pages).unwrap();
        let chunk = vec![7u8; 3 << 20];
        for _ in 0..4 {
            f.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        drop(f);
        std::fs::write(dir.path().join("core-1.img"), b"small").unwrap();
        let pre = follower.finish();
        let want = crate::integrity::hash_file(&pages).unwrap();
        assert_eq!(
            pre.sum_if_unchanged("pages-1.img", &pages),
            Some(want.clone())
        );
        // 12 MiB: its pieces came along, and add up to the same checksum.
        let (_, chunks) = pre.sums_if_unchanged("pages-1.img", &pages).unwrap();
        let chunks = chunks.expect("a file of several pieces has piece checksums");
        chunks.check_root(want.size, &want.blake3).unwrap();
        assert_eq!(pre.len(), 1, "only page images are followed");
        assert!(pre
            .sum_if_unchanged("core-1.img", &dir.path().join("core-1.img"))
            .is_none());
    }

    #[test]
    fn checksums_stay_right_while_the_older_part_is_dropped_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let follower = Follower::start_keeping(dir.path(), 1 << 20).unwrap();
        let pages = dir.path().join("pages-3.img");
        let mut f = std::fs::File::create(&pages).unwrap();
        for i in 0..6u8 {
            f.write_all(&vec![i; 3 << 20]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        drop(f);
        let pre = follower.finish();
        let want = crate::integrity::hash_file(&pages).unwrap();
        let (sum, chunks) = pre.sums_if_unchanged("pages-3.img", &pages).unwrap();
        assert_eq!(sum, want);
        chunks.unwrap().check_root(want.size, &want.blake3).unwrap();
    }

    #[test]
    fn a_file_changed_after_its_checksum_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let follower = Follower::start(dir.path()).unwrap();
        let pages = dir.path().join("pages-2.img");
        std::fs::write(&pages, vec![1u8; 1 << 20]).unwrap();
        let pre = follower.finish();
        assert!(pre.sum_if_unchanged("pages-2.img", &pages).is_some());
        // Rewritten in place, same size: the modification time gives it away.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&pages, vec![2u8; 1 << 20]).unwrap();
        assert!(pre.sum_if_unchanged("pages-2.img", &pages).is_none());
    }
}
