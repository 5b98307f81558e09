//! One application-level checkpoint: create `$RCTR_CKPT_DIR` afresh, signal the application,
//! wait for `.done` (or `.failed`, its exit, or the timeout), then move what it wrote into the
//! staged generation.
//!
//! The directory is writable by the application, so the host side never follows a path into
//! it twice: it is opened once (O_NOFOLLOW) and everything after goes through that descriptor.

use super::{DONE_MARKER, FAILED_MARKER};
use anyhow::{bail, Context, Result};
use nix::dir::Dir;
use nix::fcntl::{renameat, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;
use nix::sys::stat::{fstatat, Mode};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub struct Request<'a> {
    /// Host side of the hand-over directory.
    pub exchange: PathBuf,
    /// Name of the per-checkpoint directory in it.
    pub current: &'a str,
    /// `$RCTR_CKPT_DIR` as the application sees it (for messages).
    pub in_container: PathBuf,
    pub instance: &'a str,
    pub app_host_pid: i32,
    pub signal: Signal,
    pub timeout: Duration,
}

/// Asks the application for its state and moves it into `staged`.
pub fn collect(req: &Request, staged: &Path) -> Result<()> {
    let current = req.exchange.join(req.current);
    // Whatever an earlier, failed checkpoint left: the application gets an empty directory.
    let _ = std::fs::remove_dir_all(&current);
    let _cleanup = RemoveOnDrop(current.clone());
    std::fs::create_dir(&current)
        .with_context(|| format!("cannot create {}", current.display()))?;
    let dir: OwnedFd = nix::fcntl::open(
        &current,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map(|fd| {
        // SAFETY: open returned a new descriptor that nothing else owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    })
    .with_context(|| format!("cannot open {}", current.display()))?;

    let app = rctr_instance::pidfd_open(req.app_host_pid).with_context(|| {
        format!(
            "the application of instance '{}' is not running",
            req.instance
        )
    })?;
    // A wake-up hint only: what counts is checked through `dir`.
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .context("cannot watch the checkpoint directory")?;
    inotify
        .add_watch(
            &current,
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR,
        )
        .context("cannot watch the checkpoint directory")?;
    rctr_instance::pidfd_signal(&app, req.signal)?;
    wait_for_marker(req, &dir, &app, &inotify)?;
    move_entries(req, &dir, staged)
}

fn exists_in(dir: &OwnedFd, name: &str) -> bool {
    fstatat(
        Some(dir.as_raw_fd()),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok()
}

fn wait_for_marker(req: &Request, dir: &OwnedFd, app: &OwnedFd, inotify: &Inotify) -> Result<()> {
    let deadline = Instant::now() + req.timeout;
    let previous = "the previous checkpoint is unchanged";
    loop {
        if exists_in(dir, FAILED_MARKER) {
            let reason = read_reason(dir);
            bail!(
                "checkpoint of instance '{}' failed: the application reported: {reason}; {previous}",
                req.instance
            );
        }
        if exists_in(dir, DONE_MARKER) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "checkpoint of instance '{}' failed: the application did not finish within {} s (no {}/{DONE_MARKER} after {}); raise app: timeout in ckpt-conf.yaml or fix its handler; {previous}",
                req.instance,
                req.timeout.as_secs(),
                req.in_container.display(),
                req.signal
            );
        }
        let mut fds = [
            PollFd::new(app.as_fd(), PollFlags::POLLIN),
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
        ];
        // Inotify is only a hint (the watch is on a path); look again at least every 100 ms.
        let wait = left.min(Duration::from_millis(100));
        let ms = u16::try_from(wait.as_millis()).unwrap_or(100);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for the application failed"),
        }
        let app_exited = fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP));
        // Drain the hint.
        let _ = inotify.read_events();
        if app_exited && !exists_in(dir, DONE_MARKER) {
            bail!(
                "checkpoint of instance '{}' failed: the application exited while writing its checkpoint; {previous}",
                req.instance
            );
        }
    }
}

/// The first line of `.failed`, bounded, for a one-line error.
fn read_reason(dir: &OwnedFd) -> String {
    let text = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        FAILED_MARKER,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )
    .ok()
    .map(|fd| {
        // SAFETY: openat returned a new descriptor that nothing else owns.
        let f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut buf = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::Read::take(f, 512), &mut buf);
        buf
    })
    .unwrap_or_default();
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "no reason given".to_string()
    } else {
        line.chars().filter(|c| !c.is_control()).take(200).collect()
    }
}

/// Moves everything the application wrote (but the marker) into `staged`.
fn move_entries(req: &Request, dir: &OwnedFd, staged: &Path) -> Result<()> {
    let target: OwnedFd = nix::fcntl::open(
        staged,
        OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
        Mode::empty(),
    )
    .map(|fd| {
        // SAFETY: open returned a new descriptor that nothing else owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    })
    .with_context(|| format!("cannot open {}", staged.display()))?;
    let listing = Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context("cannot list the application's checkpoint")?;
    let mut names = vec![];
    for entry in listing.into_iter() {
        let entry = entry.context("cannot list the application's checkpoint")?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." || name == DONE_MARKER.as_bytes() {
            continue;
        }
        names.push(std::ffi::OsStr::from_bytes(name).to_os_string());
    }
    if names.is_empty() {
        bail!(
            "checkpoint of instance '{}' failed: the application wrote nothing into {} before {DONE_MARKER}; the previous checkpoint is unchanged",
            req.instance,
            req.in_container.display()
        );
    }
    for name in names {
        renameat(
            Some(dir.as_raw_fd()),
            name.as_os_str(),
            Some(target.as_raw_fd()),
            name.as_os_str(),
        )
        .with_context(|| format!("cannot move {} into the checkpoint", name.to_string_lossy()))?;
    }
    Ok(())
}

/// Removes the hand-over directory however the checkpoint ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
