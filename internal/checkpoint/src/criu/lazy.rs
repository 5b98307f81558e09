//! Lazy restore: CRIU's lazy-pages daemon serves the application's memory from the (already
//! verified) generation over userfaultfd while the application runs, so a restore does not
//! wait for its whole memory to be read.
//!
//! The danger is a daemon that goes away before every page has arrived: the kernel then
//! drops the application's userfaultfd registrations and later faults get zero-filled pages,
//! silently. So the restore leaves the processes stopped, init takes copies of every
//! userfaultfd the daemon holds (while those exist, a fault waits instead of getting a zero
//! page) and only then lets the processes run; init kills the container if the daemon ends
//! unsuccessfully (see [`rctr_runtime::launch::Companion`]).

use super::page_source::PageSource;
use super::run::{exec_engine, log_errors};
use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rctr_runtime::launch::Companion;
use rctr_runtime::spawn::{close_fds_except, fork_child, prepare_exec, Child, ExecIo};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// The longest the daemon may take to get ready (it reads the generation's process tree).
const READY_LIMIT: Duration = Duration::from_secs(30);

/// A started lazy-pages daemon, ready for the restore to connect.
pub(super) struct Daemon {
    child: Child,
    /// Its log, as the container sees it (read here) and as the user does (shown).
    log: String,
    host_log: String,
    /// The page source's log, as the user sees it.
    source_log: String,
}

/// A running page source: the daemon's end of its socket.
pub(super) struct StartedSource {
    daemon_end: OwnedFd,
    host_log: String,
}

/// Forks the process that serves `source` to the lazy-pages daemon (a child of init, like
/// the daemon, reaped by init's supervision). If it finds a damaged piece, it says why in
/// `log` and ends, closing the daemon's socket: the daemon fails, and init, which watches it,
/// kills the container and says so in the instance's log (the application's faults wait
/// meanwhile, see [`Daemon::hold_and_resume`]).
pub(super) fn start_page_source(
    source: PageSource,
    log: &str,
    host_log: &str,
) -> Result<StartedSource> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()
        .context("cannot create a socket pair for the lazy restore's page source")?;
    let theirs_raw = theirs.as_raw_fd();
    let log = log.to_string();
    let child = fork_child(move || {
        // Only its socket: not the daemon's end (or the daemon's end would never see it
        // go), nor init's pipes and files.
        let _ = nix::unistd::close(theirs_raw);
        close_fds_except(&[ours.as_raw_fd()]);
        let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&log)
        else {
            return 1;
        };
        match source.serve(ours) {
            Ok(served) => {
                let _ = writeln!(
                    log,
                    "rctr page source: served {} pages ({} MiB), checked {} pieces of 1 MiB",
                    served.pages,
                    (served.pages * 4096) >> 20,
                    served.pieces
                );
                0
            }
            Err(e) => {
                let _ = writeln!(
                    log,
                    "rctr page source: {e:#}: serving stopped, the container is killed rather than run on memory that differs from its checkpoint"
                );
                1
            }
        }
    })?;
    // Init reaps it with every other child.
    drop(child);
    Ok(StartedSource {
        daemon_end: theirs.into(),
        host_log: host_log.to_string(),
    })
}

/// Starts `argv` (`criu lazy-pages ... --page-server`, without `--status-fd` and
/// `--ps-socket`) on `source` and waits until it listens.
pub(super) fn start_daemon(
    argv: &[String],
    log: &str,
    host_log: &str,
    source: StartedSource,
) -> Result<Daemon> {
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("cannot create a pipe for the lazy-pages daemon")?;
    let mut argv = argv.to_vec();
    argv.push("--status-fd".into());
    argv.push(ready_w.as_raw_fd().to_string());
    argv.push("--ps-socket".into());
    argv.push(source.daemon_end.as_raw_fd().to_string());
    rctr_log::debug!(
        "checkpoint engine (lazy pages): {}",
        rctr_log::show_argv(&argv)
    );
    let child = fork_child(|| {
        let fds = [ready_w.as_raw_fd(), source.daemon_end.as_raw_fd()];
        prepare_exec(&ExecIo {
            keep: &fds,
            ..ExecIo::NULL
        });
        // The daemon writes one byte to the first once it listens, and asks the page
        // source on the second: both must survive the exec.
        for fd in fds {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            );
        }
        exec_engine(&argv, &[]);
        126
    })?;
    drop(ready_w);
    let daemon = Daemon {
        child,
        log: log.to_string(),
        host_log: host_log.to_string(),
        source_log: source.host_log.clone(),
    };
    // Only the daemon holds its end now: the source sees it go.
    drop(source);
    let mut fds = [PollFd::new(ready_r.as_fd(), PollFlags::POLLIN)];
    let ready = poll(
        &mut fds,
        PollTimeout::try_from(READY_LIMIT).unwrap_or(PollTimeout::MAX),
    )
    .is_ok_and(|n| n > 0)
        && nix::unistd::read(ready_r.as_raw_fd(), &mut [0u8; 1]).is_ok_and(|n| n == 1);
    if !ready {
        let why = daemon.stop();
        bail!("restore failed: the lazy-pages daemon did not start: {why}");
    }
    Ok(daemon)
}

impl Daemon {
    /// Ends a daemon the restore does not need any more; says why it failed, from its log.
    pub(super) fn stop(self) -> String {
        let _ = kill(self.child.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
        format!(
            "{} (full log: {}; page source: {})",
            log_errors(Path::new(&self.log)),
            self.host_log,
            self.source_log
        )
    }

    /// After a successful `criu restore --lazy-pages --leave-stopped`: takes copies of the
    /// daemon's userfaultfds, checks that it still works (or finished well), then lets every
    /// process of the container run. Returns the companion init must watch, none when every
    /// page has already arrived.
    pub(super) fn hold_and_resume(self) -> Result<Option<Companion>> {
        let pid = self.child.pid();
        let held = held_userfaultfds(pid);
        // Checked after taking the copies: a daemon alive now holds no userfaultfd we lack
        // (the restored processes are stopped and cannot fork), and the ones it already
        // closed belong to processes that have all their pages.
        let status = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        let failed = |why: String| -> Result<Option<Companion>> {
            // Nothing restored has run yet: kill(-1) from init takes everything down.
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            bail!(
                "restore failed: {why} (full log: {}); the restored processes were killed before they ran",
                self.host_log
            )
        };
        let held = match (held, status) {
            (Ok(held), Ok(WaitStatus::StillAlive)) => Some(held),
            (_, Ok(WaitStatus::Exited(_, 0))) => None,
            (Err(e), Ok(WaitStatus::StillAlive)) => {
                let _ = kill(pid, Signal::SIGKILL);
                return failed(format!("{e:#}"));
            }
            (_, other) => {
                return failed(format!(
                    "the lazy-pages daemon ended ({other:?}) before the application's memory had arrived: {}",
                    log_errors(Path::new(&self.log))
                ))
            }
        };
        // The restored processes were left stopped; the daemon ignores the signal.
        let _ = kill(Pid::from_raw(-1), Signal::SIGCONT);
        // Init's supervision reaps it from now on.
        Ok(held.map(|held| Companion {
            pid,
            held,
            what: format!(
                "the lazy-pages daemon (log: {}; page source's log: {})",
                self.host_log, self.source_log
            ),
        }))
    }
}

/// Copies of every userfaultfd open in process `pid`.
fn held_userfaultfds(pid: Pid) -> Result<Vec<OwnedFd>> {
    let pidfd = crate::pidfd::open(pid.as_raw()).context("the lazy-pages daemon")?;
    let dir = format!("/proc/{pid}/fd");
    let mut held = vec![];
    for e in std::fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
        let e = e?;
        let is_uffd = std::fs::read_link(e.path())
            .is_ok_and(|t| t.as_os_str().as_encoded_bytes().ends_with(b"[userfaultfd]"));
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if !is_uffd {
            continue;
        }
        held.push(
            crate::pidfd::copy_fd(&pidfd, fd).context("the lazy-pages daemon's userfaultfd")?,
        );
    }
    Ok(held)
}

/// Waits while a lazy restore of instance `init_pid` still brings memory in: until then the
/// processes lack pages a dump would take as zeros. Bounded by `limit`.
pub fn wait_until_complete(init_pid: i32, limit: Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    while let Some(daemon) = running_daemon(init_pid) {
        if std::time::Instant::now() >= deadline {
            bail!(
                "the instance's memory is still arriving from its lazy restore (lazy-pages daemon, host pid {daemon}); try again once it has arrived"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The host pid of the lazy-pages daemon among init's children, if one runs.
fn running_daemon(init_pid: i32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0).any(|arg| arg == b"lazy-pages")
                    && c.windows(super::inject::ENGINE_MOUNT.len())
                        .any(|w| w == super::inject::ENGINE_MOUNT.as_bytes())
            })
        })
}
