//! Running the engine inside a running container: join its pid and mount
//! namespaces (so CRIU sees the container's /proc and mounts as its own), fork,
//! and exec the bundled engine.

use anyhow::{Context, Result};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};
use std::ffi::CString;

/// Runs `argv` inside the container whose init has host pid `init_pid`; returns the exit code.
pub fn run_in_container(init_pid: i32, net: bool, argv: &[String]) -> Result<i32> {
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Child => {
            let code = match rctr_runtime::join::join_namespaces(init_pid, net) {
                Ok(()) => exec_child(argv),
                Err(e) => {
                    eprintln!("rctr: error: {e:#}");
                    125
                }
            };
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).context("waiting for the engine failed")?;
            Ok(rctr_runtime::supervise::exit_code(status).unwrap_or(1))
        }
    }
}

/// Forks once more (joining a pid namespace applies to children only) and execs.
fn exec_child(argv: &[String]) -> i32 {
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = nix::unistd::chdir("/");
            detach_stdio();
            rctr_runtime::container::close_fds_except(&[]);
            exec_engine(argv, &[]);
            unsafe { libc::_exit(126) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(status) => rctr_runtime::supervise::exit_code(status).unwrap_or(1),
            Err(_) => 1,
        },
        Err(_) => 1,
    }
}

/// The engine logs to its own file; its stdio goes nowhere (and must not be
/// a descriptor of the host it could trip over).
pub fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

/// execv with a minimal environment; returns only on failure.
pub fn exec_engine(argv: &[String], extra_env: &[String]) {
    let c: Vec<CString> = argv
        .iter()
        .filter_map(|a| CString::new(a.as_str()).ok())
        .collect();
    let mut env: Vec<CString> =
        vec![CString::new("PATH=/usr/sbin:/usr/bin:/sbin:/bin").unwrap_or_default()];
    env.extend(
        extra_env
            .iter()
            .filter_map(|e| CString::new(e.as_str()).ok()),
    );
    rctr_runtime::process::unblock_all_signals();
    if let Some(path) = c.first() {
        let _ = nix::unistd::execve(path, &c, &env);
    }
}

/// The last error lines of an engine log, for a one-line message.
pub fn log_errors(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .collect();
    let pick = if errors.is_empty() {
        text.lines().rev().take(1).collect::<Vec<_>>()
    } else {
        errors[errors.len().saturating_sub(2)..].to_vec()
    };
    pick.iter()
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" | ")
}
