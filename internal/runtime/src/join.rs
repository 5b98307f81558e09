//! Entering a running container (`exec instance://NAME`): join its namespaces
//! and run a command there in the foreground.

use crate::launch::Outcome;
use crate::plan::ContainerPlan;
use crate::process::{block_supervised_signals, exec, final_command};
use crate::spawn::{fork_child, prepare_exec, ExecIo};
use crate::supervise::supervise;
use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

/// Joins the namespaces of the process `init_pid` (host pid). The pid
/// namespace applies to children forked afterwards.
pub fn join_namespaces(init_pid: i32, net: bool) -> Result<()> {
    join_namespaces_of(init_pid, net, false)
}

/// [`join_namespaces`], first joining the container's user namespace when it has one
/// (`userns`: a user's container, which the same user may enter).
pub fn join_namespaces_of(init_pid: i32, net: bool, userns: bool) -> Result<()> {
    let open = |ns: &str| {
        File::open(format!("/proc/{init_pid}/ns/{ns}")).with_context(|| {
            format!(
                "cannot open namespace {ns} of process {init_pid} (is the instance still running?)"
            )
        })
    };
    let user = if userns { Some(open("user")?) } else { None };
    let pid = open("pid")?;
    let mnt = open("mnt")?;
    if let Some(u) = &user {
        // Its owner may enter it and has every capability there, which the other
        // namespaces (owned by it) then let in.
        setns(u, CloneFlags::CLONE_NEWUSER)
            .context("cannot join the instance's user namespace (is it yours?)")?;
    }
    let netns = if net { Some(open("net")?) } else { None };
    setns(&pid, CloneFlags::CLONE_NEWPID).context("cannot join the instance's pid namespace")?;
    if let Some(n) = &netns {
        setns(n, CloneFlags::CLONE_NEWNET)
            .context("cannot join the instance's network namespace")?;
    }
    setns(&mnt, CloneFlags::CLONE_NEWNS).context("cannot join the instance's mount namespace")?;
    Ok(())
}

/// Runs `plan.argv` inside the running container whose init is `init_pid`.
pub fn exec_in(init_pid: i32, plan: &ContainerPlan) -> Result<Outcome> {
    block_supervised_signals()?;
    join_namespaces_of(init_pid, plan.net_ns, plan.userns.is_some())?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // The closure owns `err_w`: the parent's copy is closed once the child is forked.
    let child = fork_child(move || exec_child(plan, err_w))?;
    let mut msg = String::new();
    let _ = File::from(err_r).read_to_string(&mut msg);
    let code = supervise(child.pid(), &mut [])?.code;
    Ok(Outcome {
        code,
        error: (!msg.trim().is_empty()).then(|| msg.trim().to_string()),
    })
}

/// The forked child of [`exec_in`]: the command, or its error on `err_w`.
fn exec_child(plan: &ContainerPlan, err_w: OwnedFd) -> i32 {
    for dir in [
        plan.cwd.as_path(),
        plan.home.as_path(),
        std::path::Path::new("/"),
    ] {
        if nix::unistd::chdir(dir).is_ok() {
            break;
        }
    }
    rctr_log::debug!(
        "exec {} in the instance's namespaces (through the image's environment scripts)",
        rctr_log::show_argv(&plan.argv)
    );
    let (argv, env) = final_command(plan);
    let privileges = crate::process::restrict_privileges(plan)
        .and_then(|_| crate::process::take_application_credentials(plan));
    if let Err(e) = privileges {
        let _ = nix::unistd::write(&err_w, format!("{e:#}").as_bytes());
        return 255;
    }
    prepare_exec(&ExecIo {
        keep: &[err_w.as_raw_fd()],
        ..ExecIo::INHERIT
    });
    let (code, msg) = exec(&argv, &env);
    let _ = nix::unistd::write(&err_w, msg.as_bytes());
    code
}
