//! Running containers: in the foreground (exec/run/shell/test) and detached
//! under rctr's own init (instances).

use crate::container::{session_mount_point, setup_rootfs, unshare_namespaces};
use crate::init_status::InitStatus;
use crate::loopdev::{self, LoopDevice};
use crate::plan::{ContainerPlan, RootKind};
use crate::process::{
    block_supervised_signals, exec, final_command, restrict_privileges,
    take_application_credentials,
};
use crate::spawn::{
    close_fds_except, detach_stdio, fork_child, fork_child_in_userns, fork_detached_in,
    prepare_exec, ExecIo, Stdio,
};
pub use crate::supervise::Companion;
use crate::supervise::{supervise, supervise_with, Ended, LogPump};
use anyhow::{bail, Context, Result};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// How a foreground container ended.
pub struct Outcome {
    pub code: i32,
    /// Set when rctr itself failed to set up or start the process.
    pub error: Option<String>,
}

fn attach_image(plan: &ContainerPlan) -> Result<Option<LoopDevice>> {
    if plan.userns.is_some() {
        // squashfuse reads the image itself, inside the container (see rootfs).
        return Ok(None);
    }
    let (image, offset, size) = (&plan.root.path, plan.root.offset, plan.root.size);
    match plan.root.kind {
        // Containers that may be restored keep their image's page cache between them.
        RootKind::Squashfs if carries_checkpoint_engine(plan) => {
            match crate::image_cache::attach_kept(image, offset, size) {
                Ok(d) => Ok(Some(d)),
                Err(e) => {
                    rctr_log::debug!("image {} not kept mounted: {e:#}", image.display());
                    Ok(Some(loopdev::attach(image, offset, size)?))
                }
            }
        }
        RootKind::Squashfs => Ok(Some(loopdev::attach(image, offset, size)?)),
        RootKind::Dir => Ok(None),
    }
}

fn carries_checkpoint_engine(plan: &ContainerPlan) -> bool {
    plan.mounts
        .iter()
        .any(|m| m.dst == Path::new(crate::plan::ENGINE_MOUNT))
}

fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")
}

/// Writes a message to a raw fd, ignoring errors (the reader may be gone).
fn report(fd: i32, msg: &str) {
    // SAFETY: callers pass a descriptor they hold open for the duration of the call.
    let _ = nix::unistd::write(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        msg.as_bytes(),
    );
}

/// Sends one of init's reports to `instance start` (see [`read_status`]).
fn send(fd: i32, status: &InitStatus) {
    report(fd, &status.encode());
}

/// Runs the plan's command in the foreground and returns its exit status.
pub fn run_foreground(plan: &ContainerPlan) -> Result<Outcome> {
    let device = attach_image(plan)?;
    let device_path = device.as_ref().map(|d| d.path.as_path());
    let session = session_mount_point(plan)?;
    let session = session.as_path();
    block_supervised_signals()?;
    let (err_r, err_w) = pipe_cloexec()?;
    if plan.pid_ns {
        rctr_log::debug!("namespaces: pid (the container's first process is pid 1)");
    }
    let child = if let Some(ns) = &plan.userns {
        rctr_log::debug!(
            "namespaces: user (uid {} is {} inside)",
            ns.uid,
            ns.inside_uid()
        );
        let pid = if plan.pid_ns {
            CloneFlags::CLONE_NEWPID
        } else {
            CloneFlags::empty()
        };
        fork_child_in_userns(ns, pid, move || {
            foreground_child(plan, device_path, session, err_w)
        })?
    } else {
        if plan.pid_ns {
            // Our next child becomes pid 1 of a new pid namespace.
            unshare(CloneFlags::CLONE_NEWPID).context("cannot create a pid namespace")?;
        }
        // The closure owns `err_w`: the parent's copy is closed once the child is forked.
        let child = fork_child(move || foreground_child(plan, device_path, session, err_w))?;
        // Our own later threads and containers must not land in the child's namespace.
        if plan.pid_ns {
            crate::container::reset_pid_ns_for_children()?;
        }
        child
    };
    drop(device);
    let mut msg = String::new();
    let _ = File::from(err_r).read_to_string(&mut msg);
    let code = supervise(child.pid(), &mut [])?.code;
    let error = (!msg.trim().is_empty()).then(|| msg.trim().to_string());
    Ok(Outcome { code, error })
}

fn foreground_child(
    plan: &ContainerPlan,
    device: Option<&Path>,
    session: &Path,
    err_w: OwnedFd,
) -> i32 {
    let err_fd = err_w.as_raw_fd();
    // A foreground container must not outlive rctr, even if rctr is SIGKILLed
    // (a batch system's hard kill): nothing may be left running behind it.
    // SAFETY: prctl with integer arguments only changes this process's attributes.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid().as_raw() == 1 {
        return 255;
    }
    let setup = unshare_namespaces(plan)
        .and_then(|_| setup_rootfs(plan, device, session))
        .and_then(|_| restrict_privileges(plan));
    if let Err(e) = setup {
        report(err_fd, &format!("{e:#}"));
        return 255;
    }
    close_fds_except(&[err_fd]);
    rctr_log::debug!(
        "exec {} (through the image's environment scripts)",
        rctr_log::show_argv(&plan.argv)
    );
    let (argv, env) = final_command(plan);
    let exec_or_report = || {
        if let Err(e) = take_application_credentials(plan) {
            report(err_fd, &format!("{e:#}"));
            return 255;
        }
        prepare_exec(&ExecIo {
            keep: &[err_fd],
            ..ExecIo::INHERIT
        });
        let (code, msg) = exec(&argv, &env);
        report(err_fd, &msg);
        code
    };
    if !plan.pid_ns || plan.no_init {
        return exec_or_report();
    }
    // We are pid 1: run the command as our child and reap everything.
    match fork_child(exec_or_report) {
        Ok(app) => {
            drop(err_w);
            supervise(app.pid(), &mut []).map_or(255, |e| e.code)
        }
        Err(e) => {
            report(err_fd, &format!("{e:#}"));
            255
        }
    }
}

/// The application of a detached container exited in its first moments (see
/// [`watch_first_moments`]).
#[derive(Debug)]
pub struct EarlyExit {
    pub code: i32,
}

impl std::fmt::Display for EarlyExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the application exited at once with status {}",
            self.code
        )
    }
}

impl std::error::Error for EarlyExit {}

/// Log files of a detached container.
pub struct LogFiles {
    pub out: File,
    pub err: File,
}

/// Write ends of the application's stdout/stderr pipes, handed to a custom starter.
pub struct AppIo {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What a custom starter started: the application, and a companion it depends on, if any.
pub struct CustomStarted {
    pub app: Pid,
    pub companion: Option<Companion>,
}

/// Starts the application inside the ready container.
pub type CustomStart = Box<dyn FnOnce(AppIo) -> Result<CustomStarted>>;

pub enum AppStart {
    /// Execute the plan's argv.
    Exec,
    /// Something else produces the application (a checkpoint restore).
    Custom(CustomStart),
}

/// A running detached container.
#[derive(Debug, Clone)]
pub struct Detached {
    /// Host pid of the container's init (pid 1 inside).
    pub init_pid: i32,
    /// Pid of the application inside the container's pid namespace.
    pub app_pid: i32,
}

/// How long a container under rctr's init lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// An instance: init is nobody's child, outlives the command that started it, and stays
    /// up after an application that finished cleanly (for `exec instance://`).
    Detached,
    /// A foreground job: init is the caller's child, dies with it (SIGKILL included, and
    /// with init the whole pid namespace), and exits with the application's status as
    /// soon as the application ends.
    Attached,
}

/// Starts the container in the background under rctr's init. `settle_limit` bounds how long
/// to watch for an application that dies at once (zero: not watched).
pub fn spawn_detached(
    plan: &ContainerPlan,
    logs: LogFiles,
    start: AppStart,
    settle_limit: std::time::Duration,
) -> Result<Detached> {
    let device = attach_image(plan)?;
    let device_path = device.as_ref().map(|d| d.path.as_path());
    let session = session_mount_point(plan)?;
    let session = session.as_path();
    let (status_r, status_w) = pipe_cloexec()?;
    // The closure owns `status_w` and the logs: the parent's copies are closed
    // once init is forked, so that a dead init reads as EOF.
    // A user's init is born in its user namespace and the pid namespace that one owns.
    let userns = plan
        .userns
        .as_ref()
        .map(|ns| (ns, CloneFlags::CLONE_NEWPID));
    let init_pid = fork_detached_in(
        || enter_init_namespace(userns.is_none()),
        userns,
        move || {
            init_main(
                plan,
                device_path,
                session,
                status_w,
                logs,
                start,
                Lifetime::Detached,
            )
        },
    )?;
    drop(device);
    read_status(status_r, init_pid.as_raw(), settle_limit)
}

/// Starts the container under rctr's init as a child of the caller ([`Lifetime::Attached`]).
/// The caller waits for the returned [`Child`]: its exit status is the application's.
/// The supervised signals must be blocked by the caller (its own handling of them, a
/// signalfd, is its business); init inherits the mask.
pub fn spawn_attached(
    plan: &ContainerPlan,
    logs: LogFiles,
    start: AppStart,
    settle_limit: std::time::Duration,
) -> Result<(Detached, crate::spawn::Child)> {
    let device = attach_image(plan)?;
    let device_path = device.as_ref().map(|d| d.path.as_path());
    let session = session_mount_point(plan)?;
    let session = session.as_path();
    let (status_r, status_w) = pipe_cloexec()?;
    let init_body = move || {
        // SAFETY: prctl with integer arguments only changes this process's attributes.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if block_supervised_signals().is_err() {
            return 255;
        }
        init_main(
            plan,
            device_path,
            session,
            status_w,
            logs,
            start,
            Lifetime::Attached,
        )
    };
    let init = if let Some(ns) = &plan.userns {
        // Born in its user namespace and the pid namespace that one owns.
        fork_child_in_userns(ns, CloneFlags::CLONE_NEWPID, init_body)?
    } else {
        // Our next child becomes pid 1 of a new pid namespace.
        unshare(CloneFlags::CLONE_NEWPID).context("cannot create a pid namespace")?;
        let forked = fork_child(init_body);
        // Our own later children (the engine, in checkpoints) must not land in it.
        crate::container::reset_pid_ns_for_children()?;
        forked?
    };
    drop(device);
    let detached = read_status(status_r, init.pid().as_raw(), settle_limit)?;
    Ok((detached, init))
}

/// In the process that forks init: leaves the caller's stdio, creates the pid
/// namespace init is born into, and blocks the signals init supervises.
/// A user's init gets its pid namespace as it is forked instead (`pid_ns` false).
fn enter_init_namespace(pid_ns: bool) -> Result<()> {
    // The caller's stdio (maybe a pipe someone waits on to reach EOF) must not
    // stay open for the life of the instance: errors travel over the status pipe.
    detach_stdio();
    if pid_ns {
        unshare(CloneFlags::CLONE_NEWPID).context("cannot create a pid namespace")?;
    }
    block_supervised_signals()
}

/// pid 1 of an instance: builds the container, starts the application, then
/// reaps, relays signals and copies logs until the application exits.
fn init_main(
    plan: &ContainerPlan,
    device: Option<&Path>,
    session: &Path,
    status_w: OwnedFd,
    logs: LogFiles,
    start: AppStart,
    lifetime: Lifetime,
) -> i32 {
    let status_fd = status_w.as_raw_fd();
    // The CLI that started us may be gone; writing to it must not kill us.
    // SAFETY: SIG_IGN installs no handler code; children get the default back before exec.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }.ok();
    let setup = unshare_namespaces(plan)
        .and_then(|_| setup_rootfs(plan, device, session))
        .and_then(|_| restrict_privileges(plan));
    if let Err(e) = setup {
        send(status_fd, &InitStatus::Error(format!("{e:#}")));
        return 255;
    }
    let pipes = (|| -> Result<_> { Ok((pipe_cloexec()?, pipe_cloexec()?)) })();
    let ((out_r, out_w), (err_r, err_w)) = match pipes {
        Ok(p) => p,
        Err(e) => {
            send(status_fd, &InitStatus::Error(format!("{e:#}")));
            return 255;
        }
    };
    let keep = [
        status_fd,
        logs.out.as_raw_fd(),
        logs.err.as_raw_fd(),
        out_r.as_raw_fd(),
        out_w.as_raw_fd(),
        err_r.as_raw_fd(),
        err_w.as_raw_fd(),
        // Held for a checkpoint of --writable-tmpfs changes (see UPPER_DIR_FD); not open
        // otherwise, and keeping a closed number is harmless.
        crate::plan::UPPER_DIR_FD,
    ];
    close_fds_except(&keep);
    let io = AppIo {
        stdout: out_w,
        stderr: err_w,
    };
    let app = match start {
        AppStart::Exec => start_app(plan, io).map(|app| CustomStarted {
            app,
            companion: None,
        }),
        AppStart::Custom(f) => f(io),
    };
    let CustomStarted { app, companion } = match app {
        Ok(started) => started,
        Err(e) => {
            send(status_fd, &InitStatus::Error(format!("{e:#}")));
            return 255;
        }
    };
    send(status_fd, &InitStatus::Ready(app.as_raw()));
    let mut pumps = [LogPump::new(out_r, logs.out), LogPump::new(err_r, logs.err)];
    let ended = supervise_with(app, &mut pumps, companion).unwrap_or(Ended {
        code: 255,
        relayed: None,
    });
    // A checkpoint engine that ended the application (a dump that stops it) is still at
    // work inside this pid namespace, which ends with us: let it finish first.
    wait_for_checkpoint_engine();
    send(status_fd, &InitStatus::Exited(ended.code));
    drop(status_w);
    // As with Apptainer, an instance whose start script finished cleanly
    // stays up (for `exec instance://`) until it is stopped; a foreground job ends. One that exits 0
    // on the signal we relayed (a server's SIGTERM handler) was stopped: the
    // stop that sent it waits for us and sends nothing more.
    if ended.code == 0 && ended.relayed.is_none() && lifetime == Lifetime::Detached {
        idle_until_stopped();
    }
    ended.code
}

/// Waits (up to a minute) while a checkpoint engine runs in this pid namespace: its
/// processes run the bundle mounted at [`crate::plan::ENGINE_MOUNT`].
fn wait_for_checkpoint_engine() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let me = std::process::id().to_string();
    let engine_running = || {
        std::fs::read_dir("/proc").is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let name = e.file_name();
                name.to_str()
                    .is_some_and(|n| n != me && n.bytes().all(|b| b.is_ascii_digit()))
                    && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                        c.windows(crate::plan::ENGINE_MOUNT.len())
                            .any(|w| w == crate::plan::ENGINE_MOUNT.as_bytes())
                    })
            })
        })
    };
    while std::time::Instant::now() < deadline && engine_running() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Waits for a terminating signal, reaping anything that gets reparented to us.
fn idle_until_stopped() {
    let set = crate::process::supervised_set();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(s) = nix::sys::wait::waitpid(
                    Pid::from_raw(-1),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                ) {
                    if s == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) | Err(_) => return,
        }
    }
}

/// Forks the application: session leader, stdin /dev/null, output to the log pipes. Returns
/// once its exec succeeded; a failed exec (command not found, not executable) is the error,
/// reported by the child over a close-on-exec pipe that an exec closes without a word.
fn start_app(plan: &ContainerPlan, io: AppIo) -> Result<Pid> {
    rctr_log::debug!(
        "exec {} (through the image's environment scripts)",
        rctr_log::show_argv(&plan.argv)
    );
    let (argv, env) = final_command(plan);
    let (exec_r, exec_w) = pipe_cloexec()?;
    let app = fork_child(|| {
        let _ = nix::unistd::setsid();
        if let Err(e) = take_application_credentials(plan) {
            report(exec_w.as_raw_fd(), &format!("{e:#}"));
            return 255;
        }
        prepare_exec(&ExecIo {
            stdin: Stdio::Null,
            stdout: Stdio::Fd(io.stdout.as_fd()),
            stderr: Stdio::Fd(io.stderr.as_fd()),
            keep: &[exec_w.as_raw_fd()],
        });
        let (code, msg) = exec(&argv, &env);
        report(exec_w.as_raw_fd(), &msg);
        let _ = writeln!(std::io::stderr(), "rctr: error: {msg}");
        code
    })?;
    drop(exec_w);
    let mut msg = String::new();
    let _ = File::from(exec_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        // Reaped so that it does not linger as a zombie under an init about to exit.
        let _ = app.wait();
        bail!("{msg}");
    }
    // Init's supervisor reaps it.
    Ok(app.pid())
}

/// Reads init's reports: `Ready` (or `Error`), then watches the application's first moments
/// (see [`watch_first_moments`]).
fn read_status(
    status_r: OwnedFd,
    init_pid: i32,
    settle_limit: std::time::Duration,
) -> Result<Detached> {
    let mut reader = BufReader::new(File::from(status_r));
    let app_pid = match next_status(&mut reader)? {
        None => bail!("the container's init exited during setup"),
        Some(InitStatus::Error(msg)) => bail!("{msg}"),
        Some(InitStatus::Ready(pid)) => pid,
        Some(other) => bail!("unexpected report from the container's init: {other:?}"),
    };
    if !settle_limit.is_zero() {
        watch_first_moments(&mut reader, init_pid, settle_limit)?;
    }
    Ok(Detached { init_pid, app_pid })
}

/// The longest `instance start` watches an application that neither settles nor exits (one
/// that computes from its first moment): it is then judged started. A bound, not a wait: a
/// server is judged started as soon as it sleeps on its socket.
pub const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_millis(200);

/// How often the application's processes are looked at while it starts.
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// Consecutive looks that must find the application settled.
const SETTLED_LOOKS: u32 = 2;

/// An application that fails at once must fail the start: watches until it has settled
/// (every one of its threads asleep, waiting for work: a server on its socket, a job on a
/// timer or a child) or exited, whichever comes first, and at most `limit` for one that keeps
/// computing. An exit with a non-zero status is an [`EarlyExit`]. No fixed wait: a server is
/// judged started the moment it sleeps on its socket.
fn watch_first_moments(
    reader: &mut BufReader<File>,
    init_pid: i32,
    limit: std::time::Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + limit;
    let mut settled_looks = 0;
    loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        if readable_within(reader, SETTLE_POLL.min(deadline - now)) {
            return match next_status(reader) {
                Ok(Some(InitStatus::Exited(code))) if code != 0 => Err(EarlyExit { code }.into()),
                // A clean exit (an instance that idles after its start script), or init gone.
                _ => Ok(()),
            };
        }
        settled_looks = if crate::settle::is_settled(init_pid) {
            settled_looks + 1
        } else {
            0
        };
        if settled_looks >= SETTLED_LOOKS {
            return Ok(());
        }
    }
}

/// The next report of init; None once init closed the pipe.
fn next_status(reader: &mut BufReader<File>) -> Result<Option<InitStatus>> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return Ok(None);
    }
    InitStatus::decode(&line).map(Some)
}

/// Whether a report (or EOF) is there to read within `timeout`.
fn readable_within(reader: &BufReader<File>, timeout: std::time::Duration) -> bool {
    if !reader.buffer().is_empty() {
        return true;
    }
    let mut pfd = [nix::poll::PollFd::new(
        reader.get_ref().as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = timeout.as_millis().min(u16::MAX as u128) as u16;
    nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)).unwrap_or(0) > 0
}
