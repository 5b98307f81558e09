//! `instance start --ckpt-launch` and `--ckpt-restart`.

use crate::bundle::{ensure_bundle, EngineBundle};
use crate::conf::CkptConf;
use crate::engine_run::{engine_failure, exec_engine};
use crate::inject::{add_checkpoint_mounts, CKPT_MOUNT, ENGINE_MOUNT};
use crate::store::{generation_dir_name, CheckpointStore, Manifest, ENGINE};
use crate::verify::{select, verify};
use anyhow::{bail, Context, Result};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use rctr_instance::{InstanceRecord, Instances, StartRequest};
use rctr_runtime::launch::{AppIo, AppStart, CustomStart};
use rctr_runtime::plan::ContainerPlan;
use rctr_runtime::process::detach_stdio;
use rctr_state::lock_exclusive;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Watch a freshly launched application this long for an immediate failure.
const LAUNCH_GRACE: Duration = Duration::from_millis(200);

/// Starts an instance with the engine and the checkpoint directory injected.
pub fn launch(
    instances: &Instances,
    conf: &CkptConf,
    checkpoint: &str,
    name: &str,
    args: Vec<String>,
    mut plan: ContainerPlan,
) -> Result<InstanceRecord> {
    let store = CheckpointStore::for_current_user()?;
    let dir = store.open(checkpoint)?;
    let bundle = ensure_bundle(conf)?;
    add_checkpoint_mounts(&mut plan, &bundle.dir, &dir);
    instances.start(StartRequest {
        name: name.to_string(),
        args,
        plan,
        checkpoint: Some(checkpoint.to_string()),
        start: AppStart::Exec,
        grace: LAUNCH_GRACE,
    })
}

/// Which generation to restore, and whether to skip the image check.
#[derive(Debug, Clone, Default)]
pub struct RestartOptions {
    pub generation: Option<u32>,
    pub force: bool,
}

/// Starts a new instance from a verified generation of `checkpoint`.
pub fn restart(
    instances: &Instances,
    conf: &CkptConf,
    checkpoint: &str,
    name: &str,
    args: Vec<String>,
    requested: ContainerPlan,
    opts: &RestartOptions,
) -> Result<InstanceRecord> {
    let store = CheckpointStore::for_current_user()?;
    let dir = store.open(checkpoint)?;
    // Not while a checkpoint is being written or the checkpoint deleted.
    let _lock = lock_exclusive(&dir.join(".lock"))?;
    let g = select(&dir, checkpoint, opts.generation)?;
    let cache = rctr_state::StateRoot::for_current_user()?.private_subdir("cache")?;
    verify(
        &dir,
        checkpoint,
        &g,
        Some(&requested.root),
        opts.force,
        &cache,
    )?;
    if !opts.force
        && (!same_file(&requested.root.path, &g.manifest.plan.root.path)
            && g.manifest.image_digest.is_none())
    {
        bail!(
            "checkpoint '{checkpoint}' was taken from image {}, not {}: restart it with the same image",
            g.manifest.plan.root.path.display(),
            requested.root.path.display()
        );
    }
    // The restored processes expect exactly the mounts they were dumped with,
    // on the image the user named (verified to be the same one).
    let mut plan = g.manifest.plan.clone();
    plan.root = requested.root.clone();
    plan.image_display = requested.image_display.clone();
    let bundle = ensure_bundle(conf)?;
    add_checkpoint_mounts(&mut plan, &bundle.dir, &dir);
    let gen_name = generation_dir_name(g.number);
    let host_log = dir.join("logs").join(format!("restore-{gen_name}.log"));
    let starter = restore_starter(&bundle, &gen_name, &g.manifest, host_log)?;
    instances.start(StartRequest {
        name: name.to_string(),
        args,
        plan,
        checkpoint: Some(checkpoint.to_string()),
        start: AppStart::Custom(starter),
        grace: Duration::ZERO,
    })
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Descriptors at which the restore process holds the new log pipes.
const STDOUT_FD: i32 = 3;
const STDERR_FD: i32 = 4;

/// Runs inside the new container's init: restores the application as init's child.
fn restore_starter(
    bundle: &EngineBundle,
    gen_name: &str,
    manifest: &Manifest,
    host_log: std::path::PathBuf,
) -> Result<CustomStart> {
    let logs = format!("{CKPT_MOUNT}/logs");
    let log = format!("{logs}/restore-{gen_name}.log");
    let pidfile = format!("{logs}/restore-{gen_name}.pid");
    let mut args: Vec<String> = [
        "restore",
        "-D",
        &format!("{CKPT_MOUNT}/{gen_name}"),
        // CRIU writes its stats file into the work directory, by default the images
        // directory: a published generation must stay exactly as its manifest says.
        "-W",
        &logs,
        "-o",
        &log,
        "-v2",
        "--restore-detached",
        "--restore-sibling",
        "--tcp-close",
        "--file-locks",
        "--pidfile",
        &pidfile,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The application's stdout/stderr were pipes to the old init: hand CRIU the
    // new init's pipes in their place.
    let mut seen = vec![];
    for (fd, pipe) in [
        (STDOUT_FD, &manifest.stdout_pipe),
        (STDERR_FD, &manifest.stderr_pipe),
    ] {
        if let Some(p) = pipe {
            if !seen.contains(p) {
                args.push("--inherit-fd".into());
                args.push(format!("fd[{fd}]:{p}"));
                seen.push(p.clone());
            }
        }
    }
    let argv = bundle.command_argv(ENGINE_MOUNT, ENGINE, &args)?;
    Ok(Box::new(move |io: AppIo| {
        run_restore(&argv, &log, &host_log, &pidfile, io)
    }))
}

/// `log` is the engine's log as the container sees it, `host_log` as the user does.
fn run_restore(
    argv: &[String],
    log: &str,
    host_log: &std::path::Path,
    pidfile: &str,
    io: AppIo,
) -> Result<Pid> {
    let _ = std::fs::remove_file(pidfile);
    // Restored tasks take back their old pids (2 and up): keep CRIU and its
    // helpers far away from them.
    std::fs::write("/proc/sys/kernel/ns_last_pid", "99999")
        .context("cannot set ns_last_pid in the container")?;
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Child => {
            let out = nix::fcntl::fcntl(io.stdout.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD(100))
                .unwrap_or(-1);
            let err = nix::fcntl::fcntl(io.stderr.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD(100))
                .unwrap_or(-1);
            detach_stdio();
            unsafe {
                libc::dup2(out, STDOUT_FD);
                libc::dup2(err, STDERR_FD);
            }
            rctr_runtime::container::close_fds_except(&[STDOUT_FD, STDERR_FD]);
            exec_engine(argv, &[]);
            unsafe { libc::_exit(126) }
        }
        ForkResult::Parent { child } => {
            drop(io);
            let status = waitpid(child, None).context("waiting for the engine failed")?;
            let code = rctr_runtime::supervise::exit_code(status).unwrap_or(1);
            if code != 0 {
                bail!(
                    "restore failed: {} (full log: {})",
                    engine_failure(code, std::path::Path::new(log)),
                    host_log.display()
                );
            }
            let pid = std::fs::read_to_string(pidfile)
                .with_context(|| format!("the engine wrote no pid file {pidfile}"))?;
            let pid: i32 = pid
                .trim()
                .parse()
                .with_context(|| format!("bad pid in {pidfile}"))?;
            Ok(Pid::from_raw(pid))
        }
    }
}
