//! `instance stop`: signal, wait, escalate, and return only once it is gone.

use crate::liveness::is_alive;
use crate::record::{InstanceRecord, Instances};
use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct StopOptions {
    pub signal: Signal,
    pub timeout: Duration,
    pub force: bool,
}

impl Default for StopOptions {
    fn default() -> Self {
        StopOptions {
            signal: Signal::SIGTERM,
            timeout: Duration::from_secs(10),
            force: false,
        }
    }
}

/// A pidfd for `pid`: it becomes readable when the process exits, and signals sent through it
/// never reach a later process that reused the pid.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot watch process {pid}"));
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `sig` through a pidfd; a process that is already gone is not an error.
pub fn pidfd_signal(fd: &OwnedFd, sig: Signal) -> Result<()> {
    // SAFETY: `fd` is an open pidfd; a null siginfo is allowed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e).context("cannot signal the instance");
    }
    Ok(())
}

/// Waits until the process behind `fd` has exited; false on timeout.
fn wait_exit(fd: &OwnedFd, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

impl Instances {
    /// Stops `name`. An instance whose processes already exited is not an error:
    /// its record is removed, so that stop is safe to repeat after a crash.
    pub fn stop(&self, name: &str, opts: &StopOptions) -> Result<()> {
        rctr_state::validate_name("instance", name)?;
        let path = self.record_path(name);
        if !path.exists() {
            bail!("no instance named '{name}': see `rctr instance list`");
        }
        let rec: InstanceRecord = rctr_state::read_json(&path)?;
        if rec.init_pid == 0 {
            bail!("instance '{name}' is still starting: retry in a moment");
        }
        if rec.is_running() {
            stop_record(&rec, opts)?;
        }
        self.remove(name)
    }
}

/// Stops the container of `rec` and waits for its init (and so every process,
/// mount and loop device of the container) to be gone.
pub fn stop_record(rec: &InstanceRecord, opts: &StopOptions) -> Result<()> {
    let fd = match pidfd_open(rec.init_pid) {
        Ok(fd) => fd,
        // It ended between the caller's look and now (an engine that ended the application,
        // init following): nothing is left to stop.
        Err(_) if !is_alive(rec.init_pid, rec.init_start_ticks) => return Ok(()),
        Err(e) => return Err(e),
    };
    // The pid could have been reused between reading the record and opening the pidfd.
    if !is_alive(rec.init_pid, rec.init_start_ticks) {
        return Ok(());
    }
    let first = if opts.force {
        Signal::SIGKILL
    } else {
        opts.signal
    };
    pidfd_signal(&fd, first)?;
    if wait_exit(
        &fd,
        if opts.force {
            Duration::from_secs(30)
        } else {
            opts.timeout
        },
    ) {
        return Ok(());
    }
    // Killing pid 1 of the namespace takes every process of the container with it.
    pidfd_signal(&fd, Signal::SIGKILL)?;
    if !wait_exit(&fd, Duration::from_secs(30)) {
        bail!(
            "instance '{}' did not exit after SIGKILL (init pid {})",
            rec.name,
            rec.init_pid
        );
    }
    Ok(())
}
