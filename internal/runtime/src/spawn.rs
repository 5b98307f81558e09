//! Child processes: the one place rctr-runtime calls fork(2), and the steps
//! every child takes before it execs a program.
//!
//! - [`fork_child`] runs a closure in a child, [`Child::wait`] returns its
//!   exit status; [`run_in_child`] does both.
//! - [`fork_detached`] double-forks a process that is nobody's child.
//! - [`prepare_exec`] sets stdio, closes descriptors and resets signals in a
//!   child about to exec.
//!
//! # Safety of every fork
//!
//! This is the single safety argument for the `fork` calls below; the rest of
//! rctr (runtime, instances, the checkpoint engines and store) forks only
//! through this module.
//!
//! - **One thread.** A forked child holds only the thread that called fork.
//!   rctr forks while it is single-threaded (the CLI starts no thread before
//!   it runs a container; init, the middle process of a detached start and
//!   every child have only one thread), so the child is a plain copy of its
//!   parent: no lock is held by a thread that does not exist there, and the
//!   child may allocate, format messages, open files and mount, as it does
//!   while building a container. A caller that does run other threads (a test
//!   harness) must keep the child's closure to async-signal-safe work until
//!   it execs, as with [`std::os::unix::process::CommandExt::pre_exec`].
//! - **No way back.** The child never returns into its caller's frames: the
//!   closure's result becomes its exit status through `_exit(2)`, which runs
//!   no destructor, atexit handler or flush of stdio buffers copied from the
//!   parent. A panic in the closure is caught and ends the child with
//!   [`PANIC_STATUS`] instead of unwinding into the parent's code.
//! - **What it inherits.** The child shares the parent's descriptors and
//!   signal state. Before exec, [`prepare_exec`] points stdio where asked,
//!   closes every other descriptor (they would leak into the container and
//!   CRIU cannot dump descriptors of host files), and [`reset_signals`] gives
//!   the program the default dispositions and an empty mask: the Rust runtime
//!   ignores SIGPIPE and supervisors block the signals they relay, and both
//!   would otherwise survive exec.
//! - **Whose credentials.** A child that runs code of a container root runs as
//!   another user takes that user's ids first ([`crate::credentials`]): the
//!   application and `exec` with no capability, the checkpoint engine with
//!   root's capabilities kept as ambient ones.

use anyhow::{bail, Context, Result};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Exit status of a child whose closure panicked.
pub const PANIC_STATUS: i32 = 255;

/// A forked child that its parent must wait for (or hand to a supervisor
/// that reaps it).
#[derive(Debug)]
#[must_use = "a child must be waited for, or it stays a zombie"]
pub struct Child {
    pid: Pid,
}

impl Child {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Waits for the child to end; returns its exit status in shell
    /// convention (the code, or 128 + the signal that killed it).
    pub fn wait(self) -> Result<i32> {
        loop {
            match waitpid(self.pid, None) {
                Ok(status) => {
                    if let Some(code) = crate::supervise::exit_code(status) {
                        return Ok(code);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot wait for process {}", self.pid))
                }
            }
        }
    }
}

/// Forks; the child runs `f` and exits with the status it returns. See the
/// module documentation for what `f` may do.
pub fn fork_child(f: impl FnOnce() -> i32) -> Result<Child> {
    // SAFETY: see the module documentation; the child leaves through `in_child`.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Child => in_child(f),
        ForkResult::Parent { child } => Ok(Child { pid: child }),
    }
}

/// Forks a child born in a new user namespace (and in the namespaces of `extra`,
/// which the new user namespace owns: a pid namespace makes the child its pid 1),
/// where `ns` maps the caller's ids. The child runs `f` once its maps are written,
/// with every capability inside its namespace until it execs; the caller, outside,
/// keeps its own namespaces (nothing to undo, as unshare would need).
///
/// Unprivileged: a user may map their own uid and gid, one id each, to any id inside.
pub fn fork_child_in_userns(
    ns: &crate::plan::UserNs,
    extra: nix::sched::CloneFlags,
    f: impl FnOnce() -> i32,
) -> Result<Child> {
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let flags = (nix::sched::CloneFlags::CLONE_NEWUSER | extra).bits() as libc::c_ulong
        | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone without a new stack or CLONE_VM is fork with namespace flags: the
    // child is a copy of this process (see the module documentation for why a copy is
    // safe) and leaves through `in_child`.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        return Err(err).context(
            "cannot create a user namespace (unprivileged user namespaces may be disabled: \
             kernel.unprivileged_userns_clone or user.max_user_namespaces)",
        );
    }
    if pid == 0 {
        drop(ready_w);
        in_child(|| {
            // The parent writes one byte once the maps are in place; EOF means it failed.
            let mut byte = [0u8; 1];
            match nix::unistd::read(ready_r.as_raw_fd(), &mut byte) {
                Ok(1) => {
                    drop(ready_r);
                    f()
                }
                _ => PANIC_STATUS,
            }
        })
    }
    let child = Child {
        pid: Pid::from_raw(pid as i32),
    };
    drop(ready_r);
    match write_id_maps(child.pid, ns) {
        Ok(()) => {
            nix::unistd::write(&ready_w, b"1").context("cannot start the container")?;
            Ok(child)
        }
        Err(e) => {
            drop(ready_w);
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Writes a single-id uid and gid map for the child `pid`'s user namespace.
fn write_id_maps(pid: Pid, ns: &crate::plan::UserNs) -> Result<()> {
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text.as_bytes())
            .with_context(|| format!("cannot write the container's {file} ({})", text.trim()))
    };
    // An unprivileged gid map needs setgroups(2) denied first.
    write("setgroups", "deny".to_string())?;
    write("uid_map", format!("{} {} 1\n", ns.inside_uid(), ns.uid))?;
    write("gid_map", format!("{} {} 1\n", ns.inside_gid(), ns.gid))
}

/// Runs `f` in a child and waits for it: its exit status, in shell convention.
pub fn run_in_child(f: impl FnOnce() -> i32) -> Result<i32> {
    fork_child(f)?.wait()
}

/// Starts `f` in a grandchild that is nobody's child: the middle process
/// leaves our session (setsid), runs `setup`, forks `f` and exits, and the
/// grandchild is reparented to the host's init. Returns the grandchild's pid
/// once the middle process has exited, or `setup`'s error.
///
/// Whatever `setup` changes for the children of a process (unshare of the
/// pid namespace) applies to the grandchild.
pub fn fork_detached(setup: impl FnOnce() -> Result<()>, f: impl FnOnce() -> i32) -> Result<Pid> {
    fork_detached_in(setup, None, f)
}

/// [`fork_detached`] whose grandchild, with `userns`, is born in a new user namespace
/// and the namespaces it owns (see [`fork_child_in_userns`]).
pub fn fork_detached_in(
    setup: impl FnOnce() -> Result<()>,
    userns: Option<(&crate::plan::UserNs, nix::sched::CloneFlags)>,
    f: impl FnOnce() -> i32,
) -> Result<Pid> {
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    let middle = fork_child(|| {
        let _ = nix::unistd::setsid();
        let fork = |f| match userns {
            Some((ns, flags)) => fork_child_in_userns(ns, flags, f),
            None => fork_child(f),
        };
        let report = match setup().and_then(|()| fork(f)) {
            Ok(child) => child.pid().to_string(),
            Err(e) => format!("!{e:#}"),
        };
        // One write of at most PIPE_BUF bytes: the parent reads it in one go.
        let bytes = report.as_bytes();
        let _ = nix::unistd::write(&report_w, &bytes[..bytes.len().min(libc::PIPE_BUF)]);
        0
    })?;
    drop(report_w);
    middle.wait()?;
    // The grandchild may still hold the write end, so read what is there
    // rather than wait for EOF: the middle process wrote it before exiting.
    nix::fcntl::fcntl(
        report_r.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .context("cannot read the detached child's pid")?;
    let mut buf = [0u8; libc::PIPE_BUF];
    let n = nix::unistd::read(report_r.as_raw_fd(), &mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    match text.strip_prefix('!') {
        Some(error) => bail!("{error}"),
        None if n == 0 => bail!("the process starting a detached child died"),
        None => text
            .parse::<i32>()
            .map(Pid::from_raw)
            .with_context(|| format!("bad report from a detached child: {text:?}")),
    }
}

/// Runs `f` as the body of a forked child and exits with its status.
fn in_child(f: impl FnOnce() -> i32) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(PANIC_STATUS);
    // SAFETY: _exit ends the process at once; nothing of the parent's state is used after it.
    unsafe { libc::_exit(code) }
}

/// Where a child's standard descriptor points when it execs.
#[derive(Debug, Clone, Copy)]
pub enum Stdio<'a> {
    /// Left as the parent had it.
    Inherit,
    /// /dev/null.
    Null,
    /// A copy of this descriptor (it may itself be 0, 1 or 2).
    Fd(BorrowedFd<'a>),
}

/// The descriptors of a child about to exec: its stdio and the only other
/// descriptors it keeps.
#[derive(Debug, Clone, Copy)]
pub struct ExecIo<'a> {
    pub stdin: Stdio<'a>,
    pub stdout: Stdio<'a>,
    pub stderr: Stdio<'a>,
    /// Descriptors above 2 that stay open (an error pipe marked close-on-exec).
    pub keep: &'a [RawFd],
}

impl ExecIo<'_> {
    /// Stdio as the parent has it, every other descriptor closed.
    pub const INHERIT: ExecIo<'static> = ExecIo {
        stdin: Stdio::Inherit,
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
        keep: &[],
    };

    /// Stdio on /dev/null, every other descriptor closed: for detached processes.
    pub const NULL: ExecIo<'static> = ExecIo {
        stdin: Stdio::Null,
        stdout: Stdio::Null,
        stderr: Stdio::Null,
        keep: &[],
    };
}

/// The steps between fork and exec, in a child: stdio as `io` says, every
/// other descriptor but `io.keep` closed, default signal dispositions and an
/// empty signal mask. Best effort: a descriptor that cannot be set up is left
/// as it was, and the exec that follows still runs.
pub fn prepare_exec(io: &ExecIo) {
    set_stdio(io);
    close_fds_except(io.keep);
    reset_signals();
}

/// Points descriptors 0, 1 and 2 as `io` says.
fn set_stdio(io: &ExecIo) {
    let null = match (io.stdin, io.stdout, io.stderr) {
        (Stdio::Null, _, _) | (_, Stdio::Null, _) | (_, _, Stdio::Null) => {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .ok()
        }
        _ => None,
    };
    // Copy every source above 2 first, so that a source that is itself 0-2
    // is not overwritten before it is used (the copies close at exec).
    let source = |s: Stdio| -> Option<RawFd> {
        let fd = match s {
            Stdio::Inherit => return None,
            Stdio::Null => null.as_ref()?.as_raw_fd(),
            Stdio::Fd(fd) => fd.as_raw_fd(),
        };
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).ok()
    };
    let sources = [source(io.stdin), source(io.stdout), source(io.stderr)];
    for (target, src) in sources.into_iter().enumerate() {
        if let Some(src) = src {
            // SAFETY: dup2 onto a standard descriptor of this (child) process; `src` is open.
            unsafe { libc::dup2(src, target as RawFd) };
            // SAFETY: `src` is our own copy from F_DUPFD_CLOEXEC, closed once.
            unsafe { libc::close(src) };
        }
    }
}

/// Points stdin, stdout and stderr at /dev/null. A detached process must not
/// hold the caller's stdio: a pipe someone waits on would never reach EOF,
/// and a host terminal is not the child's to write to.
pub fn detach_stdio() {
    set_stdio(&ExecIo::NULL);
}

/// Closes every descriptor above 2 except `keep`. Allocates nothing when the
/// kernel has close_range(2) (5.9 and later).
pub fn close_fds_except(keep: &[RawFd]) {
    let mut from: RawFd = 3;
    loop {
        // The lowest kept descriptor at or above `from` bounds the next range.
        let next_kept = keep.iter().copied().filter(|&k| k >= from).min();
        let to = next_kept.map_or(libc::c_uint::MAX, |k| (k as libc::c_uint).wrapping_sub(1));
        if next_kept != Some(from) && !close_range(from as libc::c_uint, to) {
            close_listed_fds_except(keep);
            return;
        }
        match next_kept {
            Some(k) => from = k + 1,
            None => return,
        }
    }
}

fn close_range(first: libc::c_uint, last: libc::c_uint) -> bool {
    // SAFETY: close_range only closes descriptors of this process; nothing else
    // of ours refers to them (the caller is about to exec or has no use for them).
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) == 0 }
}

/// close_fds_except without close_range: the descriptors listed in /proc.
fn close_listed_fds_except(keep: &[RawFd]) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => (3..4096).collect(),
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: as in close_range above.
            unsafe { libc::close(fd) };
        }
    }
}

/// Every signal disposition back to default and an empty signal mask: what a
/// program expects when it starts. Ignored signals and the mask survive
/// exec(2); handlers do not, so resetting them changes nothing after exec.
pub fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installs the default action; no handler of ours is involved.
        // The C library refuses its reserved signals (EINVAL), which is fine.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

#[cfg(test)]
mod tests {
    //! The test harness runs other threads: the children here only make
    //! system calls until they exit (see the module documentation).
    use super::*;
    use std::os::fd::AsFd;

    fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn the_closures_result_is_the_exit_status() {
        assert_eq!(run_in_child(|| 7).unwrap(), 7);
        assert_eq!(run_in_child(|| 0).unwrap(), 0);
    }

    #[test]
    fn a_signal_death_reads_as_128_plus_the_signal() {
        let code = run_in_child(|| {
            // SAFETY: raise only signals this process.
            unsafe { libc::raise(libc::SIGKILL) };
            0
        });
        assert_eq!(code.unwrap(), 128 + libc::SIGKILL);
    }

    #[test]
    fn stdio_is_pointed_at_the_given_descriptors() {
        let (r, w) = pipe();
        let code = run_in_child(|| {
            prepare_exec(&ExecIo {
                stdout: Stdio::Fd(w.as_fd()),
                ..ExecIo::NULL
            });
            // The pipe's own descriptors are closed; only 1 leads to it.
            let closed = nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).is_err();
            // SAFETY: writes a static buffer to descriptor 1.
            unsafe { libc::write(1, b"out".as_ptr().cast(), 3) };
            i32::from(!closed)
        });
        drop(w);
        assert_eq!(code.unwrap(), 0, "the pipe's descriptor stayed open");
        let mut buf = [0u8; 8];
        let n = nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"out");
    }

    #[test]
    fn only_kept_descriptors_survive() {
        let (a, b) = pipe();
        let (c, d) = pipe();
        let fds = [a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd(), d.as_raw_fd()];
        let code = run_in_child(|| {
            close_fds_except(&[fds[1], fds[2]]);
            let open = |fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok();
            // Bit i set: fds[i] is open.
            (0..4).filter(|&i| open(fds[i])).map(|i| 1 << i).sum()
        });
        assert_eq!(code.unwrap(), 0b0110);
    }

    #[test]
    fn signals_are_reset_to_default_and_unblocked() {
        use nix::sys::signal::{sigaction, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
        let code = run_in_child(|| {
            let ignore = SigAction::new(
                SigHandler::SigIgn,
                nix::sys::signal::SaFlags::empty(),
                SigSet::empty(),
            );
            // SAFETY: SIG_IGN installs no handler code.
            let _ = unsafe { sigaction(Signal::SIGPIPE, &ignore) };
            let mut usr1 = SigSet::empty();
            usr1.add(Signal::SIGUSR1);
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&usr1), None);
            reset_signals();
            // SAFETY: reinstalls the default action we just read back.
            let old = unsafe {
                sigaction(
                    Signal::SIGPIPE,
                    &SigAction::new(
                        SigHandler::SigDfl,
                        nix::sys::signal::SaFlags::empty(),
                        SigSet::empty(),
                    ),
                )
            };
            let default = matches!(old.map(|o| o.handler()), Ok(SigHandler::SigDfl));
            let mut mask = SigSet::empty();
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, None, Some(&mut mask));
            i32::from(!default) | (i32::from(mask.contains(Signal::SIGUSR1)) << 1)
        });
        assert_eq!(code.unwrap(), 0);
    }

    #[test]
    fn a_detached_child_is_not_ours_and_reports_its_pid() {
        let (r, w) = pipe();
        let pid = fork_detached(
            || Ok(()),
            || {
                let me = nix::unistd::getpid().as_raw().to_ne_bytes();
                let _ = nix::unistd::write(&w, &me);
                0
            },
        )
        .unwrap();
        drop(w);
        let mut buf = [0u8; 4];
        let n = nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(n, 4);
        assert_eq!(i32::from_ne_bytes(buf), pid.as_raw());
        // Not our child: waiting for it fails.
        assert!(waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)).is_err());
    }

    #[test]
    fn a_failed_setup_is_the_callers_error() {
        let err = fork_detached(|| bail!("no namespace today"), || 0).unwrap_err();
        assert_eq!(format!("{err:#}"), "no namespace today");
    }
}
