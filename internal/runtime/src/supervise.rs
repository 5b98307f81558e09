//! Waiting for a container process while relaying signals, and for instances
//! copying the application's stdout/stderr pipes into the log files.
//!
//! The logs go through pipes held by rctr's init (which is never checkpointed)
//! rather than straight to files: a restored application then writes into a
//! fresh pipe (CRIU --inherit-fd) and the log can keep growing after a
//! checkpoint without upsetting the restore.

use crate::process::{supervised_set, FORWARDED};
use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

/// A pipe whose read end we drain into a log file.
pub struct LogPump {
    pub pipe: OwnedFd,
    pub log: File,
    open: bool,
}

impl LogPump {
    pub fn new(pipe: OwnedFd, log: File) -> Self {
        LogPump {
            pipe,
            log,
            open: true,
        }
    }

    /// Copies what is available; returns false once the pipe is closed.
    fn pump(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.pipe), &mut buf) {
            Ok(0) => {
                self.open = false;
                false
            }
            Ok(n) => {
                let _ = self.log.write_all(&buf[..n]);
                true
            }
            Err(nix::errno::Errno::EINTR) => true,
            Err(_) => {
                self.open = false;
                false
            }
        }
    }
}

/// Exit status in shell convention: the code, or 128 + signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// How a supervised process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// Exit status in shell convention.
    pub code: i32,
    /// The last signal relayed to it, if any: an application that exits 0
    /// after one was stopped by it rather than done with its work.
    pub relayed: Option<Signal>,
}

/// A process the application cannot do without until it has finished its work: CRIU's
/// lazy-pages daemon, which holds the part of the application's memory that has not
/// arrived yet. If it ends unsuccessfully, the whole container is killed.
pub struct Companion {
    pub pid: Pid,
    /// Descriptors held while the companion works (the application's userfaultfds): if it
    /// dies, the kernel then keeps the application's faults waiting, instead of filling the
    /// missing pages with zeros, until the application is killed. Released once it
    /// finishes well.
    pub held: Vec<OwnedFd>,
    /// What it is, for the log line that explains a failure.
    pub what: String,
}

/// Relays forwarded signals to `target`, reaps every child (we may be pid 1),
/// pumps logs, and returns how `target` ended once it is gone.
/// The supervised signals must already be blocked.
pub fn supervise(target: Pid, pumps: &mut [LogPump]) -> Result<Ended> {
    supervise_with(target, pumps, None)
}

/// [`supervise`], with a `companion` whose failure kills every process of the container
/// (this must be its pid 1) and is explained in the last pump's log.
pub fn supervise_with(
    target: Pid,
    pumps: &mut [LogPump],
    mut companion: Option<Companion>,
) -> Result<Ended> {
    let sfd = SignalFd::with_flags(
        &supervised_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .context("cannot create signalfd")?;
    let mut result: Option<i32> = reap(target, &mut companion, pumps);
    let mut relayed = None;
    while result.is_none() {
        let mut fds: Vec<PollFd> = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let open: Vec<usize> = (0..pumps.len()).filter(|i| pumps[*i].open).collect();
        for i in &open {
            fds.push(PollFd::new(pumps[*i].pipe.as_fd(), PollFlags::POLLIN));
        }
        // The timeout is a safety net: in a multi-threaded caller another thread
        // may take SIGCHLD, so reap on every wake-up rather than trust the signal.
        match poll(&mut fds, PollTimeout::from(250u16)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll failed"),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (slot, i) in open.iter().enumerate() {
            if ready[slot + 1] {
                pumps[*i].pump();
            }
        }
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                if FORWARDED.contains(&sig) {
                    let _ = kill(target, sig);
                    relayed = Some(sig);
                }
            }
        }
        result = reap(target, &mut companion, pumps);
    }
    // Whatever the application wrote just before exiting is still in the pipes.
    for p in pumps.iter_mut() {
        drain(p);
    }
    Ok(Ended {
        code: result.unwrap_or(1),
        relayed,
    })
}

/// A companion that finished well lets go of what it held; one that failed takes the
/// container down first, while its held descriptors still keep the application waiting.
fn companion_ended(c: Companion, code: i32, pumps: &mut [LogPump]) {
    if code == 0 {
        return;
    }
    // kill(-1) from pid 1 of a pid namespace reaches every other process in it.
    if nix::unistd::getpid().as_raw() == 1 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    }
    let status = match code.checked_sub(128).and_then(|s| Signal::try_from(s).ok()) {
        Some(sig) => format!("was killed by {sig}"),
        None => format!("failed (exit {code})"),
    };
    if let Some(err) = pumps.last_mut() {
        let _ = writeln!(
            err.log,
            "rctr: {} {status} before all of the application's memory had arrived: the application was killed rather than run on missing pages",
            c.what
        );
    }
    drop(c.held);
}

fn drain(p: &mut LogPump) {
    let _ = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&p.pipe),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while p.open && p.pump() {}
}

/// Reaps all exited children; returns `target`'s code if it is among them.
fn reap(target: Pid, companion: &mut Option<Companion>, pumps: &mut [LogPump]) -> Option<i32> {
    let mut result = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return result,
            Ok(status) => {
                if status.pid() == Some(target) {
                    result = exit_code(status);
                }
                if companion.as_ref().map(|c| c.pid) == status.pid() {
                    if let (Some(c), Some(code)) = (companion.take(), exit_code(status)) {
                        companion_ended(c, code, pumps);
                    }
                }
            }
        }
    }
}
