//! Starting the container process: descriptors, environment, argv.

use crate::plan::ContainerPlan;
use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::ffi::CString;
use std::path::Path;

/// Signals rctr relays to the container (what a user or a batch system sends).
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Points stdin, stdout and stderr at /dev/null: see [`crate::spawn::detach_stdio`].
pub use crate::spawn::detach_stdio;

/// The forwarded signals plus SIGCHLD: what supervisors take through a signalfd.
pub fn supervised_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(*s);
    }
    set.add(Signal::SIGCHLD);
    set
}

pub fn block_supervised_signals() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&supervised_set()), None)
        .context("cannot block signals")
}

/// Default signal dispositions and an empty mask, for a child about to exec (the
/// engine's in rctr-checkpoint): see [`crate::spawn::reset_signals`].
pub use crate::spawn::reset_signals as unblock_all_signals;

/// For a user's container (a user namespace): no program run from here on gains a
/// privilege by exec, setuid-root binaries of the image included. Root's containers
/// keep the kernel's default, as Apptainer's do.
pub fn restrict_privileges(plan: &ContainerPlan) -> Result<()> {
    if plan.userns.is_none() {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments only changes this process's attributes.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set no_new_privs");
    }
    Ok(())
}

/// In a child about to exec the application (or a command in an instance): the user root
/// runs the container as, if any (see [`crate::plan::RunAs`]).
pub fn take_application_credentials(plan: &ContainerPlan) -> Result<()> {
    match &plan.run_as {
        Some(run_as) => crate::credentials::become_user(run_as),
        None => Ok(()),
    }
}

/// The shell that sources the image's env scripts: bash when the image has it, since
/// those scripts are written for Apptainer's bash-like interpreter (`source`, `[[`);
/// otherwise /bin/sh, helped by the wrapper's shims.
fn env_shell() -> Option<&'static str> {
    ["/bin/bash", "/bin/sh"]
        .into_iter()
        .find(|s| Path::new(s).exists())
}

/// The final argv and environment: through the image's shell when it has one,
/// so that /.singularity.d/env/*.sh is sourced as Apptainer's action scripts do.
pub fn final_command(plan: &ContainerPlan) -> (Vec<String>, Vec<(String, String)>) {
    let env = crate::env::ContainerEnv {
        base: plan.env.clone(),
        overrides: plan.env_overrides.clone(),
        no_eval: plan.env_no_eval,
    };
    if let Some(shell) = env_shell() {
        let script = crate::env::wrapper_script(&env);
        let mut argv = vec![
            shell.to_string(),
            "-c".to_string(),
            script,
            "rctr".to_string(),
        ];
        argv.extend(plan.argv.iter().cloned());
        // A host BASH_ENV would make bash source a host path's namesake at startup.
        let base = plan
            .env
            .iter()
            .filter(|(k, _)| k != "BASH_ENV" || shell != "/bin/bash")
            .cloned()
            .collect();
        (argv, base)
    } else {
        (plan.argv.clone(), env.merged())
    }
}

/// Looks up `cmd` like execvp would, with the container's PATH.
pub fn resolve_in_path(cmd: &str, env: &[(String, String)]) -> Option<String> {
    if cmd.contains('/') {
        return Path::new(cmd).exists().then(|| cmd.to_string());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{d}/{cmd}"))
        .find(|p| Path::new(p).exists())
}

/// Replaces the current process, with default signal dispositions and an empty
/// signal mask (see [`crate::spawn`]). Only returns on failure, with the exit status
/// a shell would use (127 not found, 126 not executable) and a message.
pub fn exec(argv: &[String], env: &[(String, String)]) -> (i32, String) {
    let Some(first) = argv.first() else {
        return (127, "empty command".to_string());
    };
    let Some(resolved) = resolve_in_path(first, env) else {
        return (127, format!("command '{first}' not found in the container"));
    };
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let c_path = to_c(&resolved);
    let c_argv: Vec<CString> = argv.iter().map(|a| to_c(a)).collect();
    let c_env: Vec<CString> = env.iter().map(|(k, v)| to_c(&format!("{k}={v}"))).collect();
    crate::spawn::reset_signals();
    let err = nix::unistd::execve(&c_path, &c_argv, &c_env).unwrap_err();
    let code = if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    (
        code,
        format!("cannot execute '{first}' in the container: {}", err.desc()),
    )
}
