//! Restoring with CRIU inside a new container: the engine runs as init's child and restores
//! the application tree with its old pids, its output reconnected to the new init's pipes.

use super::bundle::EngineBundle;
use super::inject::{CKPT_MOUNT, ENGINE_MOUNT};
use super::page_source::PageSource;
use super::run::{engine_failure, exec_engine};
use super::CRIU;
use crate::engine::RestoreFlags;
use crate::store::CriuData;
use anyhow::{bail, Context, Result};
use nix::unistd::Pid;
use rctr_runtime::launch::{AppIo, AppStart, CustomStarted};
use rctr_runtime::spawn::{close_fds_except, fork_child, prepare_exec, ExecIo};
use std::os::fd::AsRawFd;

/// Descriptors at which the restore process holds the new log pipes.
const STDOUT_FD: i32 = 3;
const STDERR_FD: i32 = 4;

/// Runs inside the new container's init: restores the application as init's child.
pub(super) fn starter(
    bundle: &EngineBundle,
    gen_name: &str,
    data: &CriuData,
    host_log: std::path::PathBuf,
    flags: RestoreFlags,
    pages: Option<PageSource>,
) -> Result<AppStart> {
    let logs = format!("{CKPT_MOUNT}/logs");
    let log = format!("{logs}/restore-{gen_name}.log");
    let pidfile = format!("{logs}/restore-{gen_name}.pid");
    let images = format!("{CKPT_MOUNT}/{gen_name}");
    // The lazy-pages daemon and the restore meet at a socket in their shared work
    // directory: one of its own for each restore (two may run from one checkpoint).
    let work = if flags.lazy_pages {
        format!("{logs}/lazy-{gen_name}-{}", std::process::id())
    } else {
        logs.clone()
    };
    let mut args: Vec<String> = [
        "restore",
        "-D",
        &images,
        // CRIU writes its stats file into the work directory, by default the images
        // directory: a published generation must stay exactly as its manifest says.
        "-W",
        &work,
        "-o",
        &log,
        "-v2",
        "--restore-detached",
        "--restore-sibling",
        "--file-locks",
        "--pidfile",
        &pidfile,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Connections come back closed (a new host, a peer long gone) unless asked for live,
    // which holds their packets with the network lock until they are back.
    if flags.tcp_established {
        args.extend(["--tcp-established", "--network-lock", "nftables"].map(String::from));
    } else {
        args.push("--tcp-close".into());
    }
    // The application's stdout/stderr were pipes to the old init: hand CRIU the
    // new init's pipes in their place.
    let mut seen = vec![];
    for (fd, pipe) in [
        (STDOUT_FD, &data.stdout_pipe),
        (STDERR_FD, &data.stderr_pipe),
    ] {
        if let Some(p) = pipe {
            if !seen.contains(p) {
                args.push("--inherit-fd".into());
                args.push(format!("fd[{fd}]:{p}"));
                seen.push(p.clone());
            }
        }
    }
    // Lazily: the processes stay stopped until init holds their memory's source.
    let lazy = match pages {
        Some(source) if flags.lazy_pages => {
            args.extend(["--lazy-pages", "--leave-stopped"].map(String::from));
            let log = format!("{logs}/lazy-pages-{gen_name}.log");
            let source_log = format!("{logs}/page-source-{gen_name}.log");
            let shown = |name: String| host_log.with_file_name(name).display().to_string();
            // The daemon takes its pages from rctr's page source, on the socket that
            // `start_daemon` adds as `--ps-socket`.
            let daemon_args: Vec<String> = [
                "lazy-pages",
                "-D",
                &images,
                "-W",
                &work,
                "-o",
                &log,
                "-v2",
                "--page-server",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Some(LazyPages {
                argv: bundle.command_argv(ENGINE_MOUNT, CRIU, &daemon_args)?,
                log,
                host_log: shown(format!("lazy-pages-{gen_name}.log")),
                source,
                source_log,
                source_host_log: shown(format!("page-source-{gen_name}.log")),
                work,
            })
        }
        _ => None,
    };
    let argv = bundle.command_argv(ENGINE_MOUNT, CRIU, &args)?;
    let tmpfs = data.tmpfs.clone();
    rctr_log::debug!(
        "checkpoint engine (restore): {}",
        rctr_log::show_argv(&argv)
    );
    Ok(AppStart::Custom(Box::new(move |io: AppIo| {
        // The files the processes had in the container's own tmpfs mounts, first.
        super::tmpfs::restore(&tmpfs, std::path::Path::new(&images))?;
        let Some(lazy) = lazy else {
            let app = run_restore(&argv, &log, &host_log, &pidfile, io)?;
            return Ok(CustomStarted {
                app,
                companion: None,
            });
        };
        let _ = std::fs::remove_dir_all(&lazy.work);
        std::fs::create_dir(&lazy.work).with_context(|| format!("cannot create {}", lazy.work))?;
        keep_engine_pids_away()?;
        let source =
            super::lazy::start_page_source(lazy.source, &lazy.source_log, &lazy.source_host_log)?;
        let daemon = super::lazy::start_daemon(&lazy.argv, &lazy.log, &lazy.host_log, source);
        let restored =
            daemon.and_then(
                |daemon| match run_restore(&argv, &log, &host_log, &pidfile, io) {
                    Ok(app) => Ok((app, daemon.hold_and_resume()?)),
                    Err(e) => {
                        daemon.stop();
                        Err(e)
                    }
                },
            );
        // The socket was only needed until the restore connected.
        let _ = std::fs::remove_dir_all(&lazy.work);
        let (app, companion) = restored?;
        Ok(CustomStarted { app, companion })
    })))
}

/// How a lazy restore runs its lazy-pages daemon and the page source it asks.
struct LazyPages {
    argv: Vec<String>,
    /// The daemon's log, as the container and as the user see it.
    log: String,
    host_log: String,
    source: PageSource,
    /// The page source's log, as the container and as the user see it.
    source_log: String,
    source_host_log: String,
    /// The work directory shared with the restore, as the container sees it.
    work: String,
}

/// Restored tasks take back their old pids (2 and up): CRIU and its helpers (the
/// lazy-pages daemon too) take pids far away from them.
fn keep_engine_pids_away() -> Result<()> {
    std::fs::write("/proc/sys/kernel/ns_last_pid", "99999")
        .context("cannot set ns_last_pid in the container")
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
    keep_engine_pids_away()?;
    let child = fork_child(|| {
        // Above 2 first, so that pointing stdio at /dev/null cannot close them.
        let dup_high = |fd: i32| {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).unwrap_or(-1)
        };
        let (out, err) = (
            dup_high(io.stdout.as_raw_fd()),
            dup_high(io.stderr.as_raw_fd()),
        );
        prepare_exec(&ExecIo {
            keep: &[out, err],
            ..ExecIo::NULL
        });
        // SAFETY: dup2 on descriptors this child owns; the copies at 3 and 4 are not
        // close-on-exec, so the engine inherits them.
        unsafe {
            libc::dup2(out, STDOUT_FD);
            libc::dup2(err, STDERR_FD);
        }
        close_fds_except(&[STDOUT_FD, STDERR_FD]);
        exec_engine(argv, &[]);
        126
    })?;
    drop(io);
    let code = child.wait().context("waiting for the engine failed")?;
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
