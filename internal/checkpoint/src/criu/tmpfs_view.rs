//! Each of the application's tmpfs mounts readable on its own, without what is mounted on
//! top of it.
//!
//! Through the application's root a tmpfs shows the mounts above it: files under a mount
//! point of another tmpfs are hidden, and a tmpfs mounted over the same directory hides the
//! one below it entirely. A child joins the application's mount namespace and clones each
//! mount alone (`open_tree(OPEN_TREE_CLONE)`, not recursive: a detached copy of that one mount,
//! hidden files included). Mounts hidden by a later mount at the same path are reached in a
//! private copy of the namespace where the mounts above them are taken away first. The child
//! holds the clones open until the views are dropped; the host reads them through
//! `/proc/<child>/fd/<n>`.

use super::tmpfs::TmpfsMount;
use anyhow::{bail, Context, Result};
use rctr_runtime::spawn::{fork_child, Child};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// `open_tree(2)` flag: a detached copy of the mount instead of a reference to it.
const OPEN_TREE_CLONE: libc::c_uint = 1;

/// The views of some tmpfs mounts of one application, held open by a child process.
#[derive(Debug)]
pub struct MountViews {
    child: Option<Child>,
    /// Its closing tells the child to end.
    hold: Option<OwnedFd>,
    /// The child's descriptor of each mount's clone, in the order of the mounts given;
    /// None for a mount that could not be reached alone.
    fds: Vec<Option<i32>>,
}

impl MountViews {
    /// No views (no mounts to read).
    pub fn none() -> MountViews {
        MountViews {
            child: None,
            hold: None,
            fds: vec![],
        }
    }

    /// Clones each of `mounts` (in mount order, parents first) inside the mount namespace of
    /// host process `pid`. A mount read from elsewhere (`from`) gets no view.
    pub fn open(pid: i32, mounts: &[TmpfsMount]) -> Result<MountViews> {
        if mounts.iter().all(|m| m.from.is_some()) {
            return Ok(MountViews::none());
        }
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
            .with_context(|| format!("cannot open the mount namespace of process {pid}"))?;
        // Prepared before the fork: the child only makes system calls.
        let targets: Vec<Option<(CString, u64)>> = mounts
            .iter()
            .map(|m| {
                if m.from.is_some() {
                    return None;
                }
                let path = CString::new(m.dst.as_os_str().as_bytes()).ok()?;
                Some((path, device_number(&m.device)?))
            })
            .collect();
        // A mount over an earlier one at the same path hides it: it must be taken away
        // once cloned.
        let hides: Vec<bool> = (0..mounts.len())
            .map(|i| mounts[..i].iter().any(|e| e.dst == mounts[i].dst))
            .collect();
        let need_copy = hides.iter().any(|h| *h);
        let (report_r, report_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        let (hold_r, hold_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
        let mut report: Vec<u8> = (0..mounts.len())
            .flat_map(|_| (-1i32).to_ne_bytes())
            .collect();
        // The child's copies of the parent's ends are closed by number: the closure cannot
        // take what the parent keeps.
        let (parent_report, parent_hold) = (report_r.as_raw_fd(), hold_w.as_raw_fd());
        let (child_report, child_hold) = (report_w.as_raw_fd(), hold_r.as_raw_fd());
        let child = fork_child(|| {
            let _ = nix::unistd::close(parent_report);
            let _ = nix::unistd::close(parent_hold);
            if nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS).is_err() {
                return 1;
            }
            if need_copy {
                // A copy of the application's mounts, private so that taking mounts away
                // in it changes nothing the application sees.
                if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_err()
                    || nix::mount::mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                        None::<&str>,
                    )
                    .is_err()
                {
                    return 2;
                }
            }
            // Last mounted first: a mount hidden at its path is revealed once those above
            // it are cloned and taken away.
            for i in (0..targets.len()).rev() {
                let Some((path, dev)) = &targets[i] else {
                    continue;
                };
                // SAFETY: open_tree with a NUL-terminated path and no pointers kept; the
                // returned descriptor is owned by this child.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_open_tree,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
                    )
                } as i32;
                if fd < 0 {
                    continue;
                }
                // The path may lead to another file system (one mounted over it that is
                // not a tmpfs of the application): then this mount is not reachable.
                match nix::sys::stat::fstat(fd) {
                    Ok(st) if st.st_dev == *dev => {
                        report[i * 4..i * 4 + 4].copy_from_slice(&fd.to_ne_bytes())
                    }
                    _ => {
                        let _ = nix::unistd::close(fd);
                        continue;
                    }
                }
                if hides[i] {
                    let _ = nix::mount::umount2(path.as_c_str(), nix::mount::MntFlags::MNT_DETACH);
                }
            }
            // SAFETY: the child's own copy of the report pipe's write end, closed below.
            let out = unsafe { std::os::fd::BorrowedFd::borrow_raw(child_report) };
            if nix::unistd::write(out, &report) != Ok(report.len()) {
                return 3;
            }
            let _ = nix::unistd::close(child_report);
            // Holds the clones until the host is done (EOF).
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(child_hold, &mut byte);
            0
        })?;
        drop(report_w);
        drop(hold_r);
        let mut views = MountViews {
            child: Some(child),
            hold: Some(hold_w),
            fds: vec![],
        };
        let mut bytes = vec![];
        std::fs::File::from(report_r)
            .read_to_end(&mut bytes)
            .context("cannot read the views of the tmpfs mounts")?;
        if bytes.len() != mounts.len() * 4 {
            let code = views.finish();
            bail!("cannot enter the application's mount namespace to read its tmpfs mounts (helper exit status {code})");
        }
        views.fds = bytes
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .map(|fd| (fd >= 0).then_some(fd))
            .collect();
        Ok(views)
    }

    /// Where the host reads mount `i` (of those given to [`MountViews::open`]) alone.
    pub fn path(&self, i: usize) -> Option<PathBuf> {
        let child = self.child.as_ref()?;
        let fd = (*self.fds.get(i)?)?;
        Some(PathBuf::from(format!("/proc/{}/fd/{fd}", child.pid())))
    }

    /// Lets the child go and waits for it; its exit status (0 when there was none).
    fn finish(&mut self) -> i32 {
        self.hold = None;
        self.child.take().map_or(0, |c| c.wait().unwrap_or(-1))
    }
}

impl Drop for MountViews {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A mount table's device (`MAJOR:MINOR`) as a `st_dev` value.
fn device_number(device: &str) -> Option<u64> {
    let (major, minor) = device.split_once(':')?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process in a mount namespace of its own (made by util-linux's unshare) with a
    /// tmpfs on `dir`, a file hidden under a second tmpfs on `dir/sub`, and a third tmpfs
    /// over the second at the same path.
    fn stacked_mounts(dir: &std::path::Path) -> Option<std::process::Child> {
        let d = dir.display();
        let script = format!(
            "mount -t tmpfs -o size=1m low {d} && echo lower > {d}/f && mkdir {d}/sub && \
             echo hidden > {d}/sub/g && mount -t tmpfs mid {d}/sub && echo middle > {d}/sub/m && \
             mount -t tmpfs top {d}/sub && echo ready > {d}/ready && exec sleep 60"
        );
        let child = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .spawn()
            .ok()?;
        let ready = dir.join("ready");
        let pid = child.id();
        for _ in 0..200 {
            let seen = std::fs::read_to_string(format!("/proc/{pid}/root{}", ready.display()));
            if seen.is_ok_and(|s| s.trim() == "ready") {
                return Some(child);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn each_mount_is_read_without_the_mounts_above_it() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: mount namespaces need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut app = stacked_mounts(dir.path()).expect("the mounts were not made");
        let pid = app.id() as i32;
        let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
        let mounts: Vec<TmpfsMount> = super::super::tmpfs::private_tmpfs(&table)
            .into_iter()
            .filter(|m| m.dst.starts_with(dir.path()))
            .collect();
        assert_eq!(mounts.len(), 3, "{table}");
        let views = MountViews::open(pid, &mounts).unwrap();
        let names = |i: usize| {
            let mut n: Vec<String> = std::fs::read_dir(views.path(i).unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(0), ["f", "ready", "sub"]);
        let hidden = views.path(0).unwrap().join("sub/g");
        assert_eq!(std::fs::read_to_string(hidden).unwrap(), "hidden\n");
        assert_eq!(names(1), ["m"]);
        assert!(names(2).is_empty());
        // The application's own view is unchanged.
        let sub = format!("/proc/{pid}/root{}/sub", dir.path().display());
        assert_eq!(std::fs::read_dir(sub).unwrap().count(), 0);
        drop(views);
        let _ = app.kill();
        let _ = app.wait();
    }

    #[test]
    fn devices_read_as_stat_numbers() {
        assert_eq!(device_number("0:49"), Some(libc::makedev(0, 49)));
        assert_eq!(device_number("254:1"), Some(libc::makedev(254, 1)));
        assert_eq!(device_number("x"), None);
    }
}
