//! Creating a container: namespaces, then the root filesystem, in the child.

use crate::plan::ContainerPlan;
use crate::rootfs::{self, Session, SESSION_DIR};
use crate::syscall::{LinuxSyscall, Syscall};
use anyhow::{Context, Result};
use nix::mount::MsFlags;
use nix::sched::{unshare, CloneFlags};
use std::path::{Path, PathBuf};

/// Enters a new mount (and, if asked, network) namespace. Call in the child.
pub fn unshare_namespaces(plan: &ContainerPlan) -> Result<()> {
    let mut flags = CloneFlags::CLONE_NEWNS;
    if plan.net_ns {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if plan.ipc_ns {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if plan.hostname.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    rctr_log::debug!(
        "namespaces: mount{}",
        if plan.net_ns { ", network" } else { "" }
    );
    unshare(flags).context("cannot create the container's namespaces")?;
    if plan.net_ns {
        crate::net::loopback_up()?;
    }
    if let Some(name) = &plan.hostname {
        nix::unistd::sethostname(name)
            .with_context(|| format!("cannot set the container's host name to {name:?}"))?;
    }
    Ok(())
}

/// Makes this thread's next children start in its own pid namespace again.
///
/// `run_foreground` with `pid_ns` unshares CLONE_NEWPID in the calling thread, so
/// its children go to the new namespace; once that container is gone the kernel
/// refuses another such unshare (EINVAL) until this is undone. Needed by callers
/// that run several pid-namespaced containers in turn (`rctr build`: %post, %test).
pub fn reset_pid_ns_for_children() -> Result<()> {
    let own = Path::new("/proc/thread-self/ns/pid");
    let children = Path::new("/proc/thread-self/ns/pid_for_children");
    let (a, b) = (std::fs::read_link(own), std::fs::read_link(children));
    if let (Ok(a), Ok(b)) = (&a, &b) {
        if a == b {
            return Ok(());
        }
    }
    let ns = std::fs::File::open(own).with_context(|| format!("cannot open {}", own.display()))?;
    nix::sched::setns(ns, CloneFlags::CLONE_NEWPID)
        .context("cannot return to rctr's own pid namespace")
}

/// Where a container's session tmpfs is mounted (in its own mount namespace, so one
/// directory serves every container): root's under /run; a user, who cannot create
/// directories there, has a private one in their state directory. Call on the host side,
/// as the caller (inside a `--fakeroot` namespace the state directory is not "yours").
pub fn session_mount_point(plan: &ContainerPlan) -> Result<PathBuf> {
    if plan.userns.is_none() {
        return Ok(PathBuf::from(SESSION_DIR));
    }
    rctr_state::StateRoot::for_current_user()?.private_subdir("session")
}

/// Builds the root filesystem and pivots into it. Runs inside the new mount namespace;
/// `session_dir` comes from [`session_mount_point`].
pub fn setup_rootfs(plan: &ContainerPlan, device: Option<&Path>, session_dir: &Path) -> Result<()> {
    let sys = LinuxSyscall;
    // Nothing we mount may propagate back to the host.
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let session = Session {
        dir: session_dir.to_path_buf(),
    };
    sys.mkdir_all(&session.dir, 0o700)?;
    // The session also holds --writable-tmpfs changes: limited like Apptainer's.
    let session_opts = match plan.session_size_mib {
        Some(mib) => format!("mode=700,size={mib}m"),
        None => "mode=700".to_string(),
    };
    sys.mount(
        Some(Path::new("tmpfs")),
        &session.dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some(&session_opts),
    )?;
    for d in [session.image(), session.skeleton(), session.root()] {
        sys.mkdir_all(&d, 0o755)?;
    }
    let root = rootfs::assemble_root(&sys, &session, plan, device)?;
    let identity_files = write_identity_files(&session, plan)?;
    rootfs::mount_system(&sys, &root, plan.dev, plan.host_pts, plan.userns.is_some())?;
    rootfs::mount_host_files(&sys, &session, &root, &identity_files)?;
    rootfs::mount_entries(&sys, &root, &plan.mounts)?;
    if plan.writable_tmpfs {
        hold_upper_dir(&session.upper())?;
    }
    sys.pivot_root(&root)?;
    enter_workdir(plan)
}

/// Keeps the overlay's upper directory open at [`crate::plan::UPPER_DIR_FD`] (close-on-exec:
/// only init keeps it), before pivot_root hides its path.
fn hold_upper_dir(upper: &Path) -> Result<()> {
    let fd = nix::fcntl::open(
        upper,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("cannot open {}", upper.display()))?;
    // SAFETY: dup3 onto a descriptor number this process reserves for it; `fd` is ours.
    let rc = unsafe { libc::dup3(fd, crate::plan::UPPER_DIR_FD, libc::O_CLOEXEC) };
    // SAFETY: `fd` was opened above and is not used again.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .context("cannot keep the overlay's upper directory");
    }
    Ok(())
}

/// Enters the plan's working directory. A `--pwd` that does not exist is an error (as
/// with Apptainer); an inherited one only gets a warning and home (or /) instead.
fn enter_workdir(plan: &ContainerPlan) -> Result<()> {
    if nix::unistd::chdir(plan.cwd.as_path()).is_ok() {
        return Ok(());
    }
    if plan.cwd_explicit {
        anyhow::bail!(
            "--pwd {}: no such directory in the container (create it in the image, or bind one there)",
            plan.cwd.display()
        );
    }
    for dir in [plan.home.as_path(), Path::new("/")] {
        if nix::unistd::chdir(dir).is_ok() {
            eprintln!(
                "rctr: warning: the current directory {} does not exist in the container; starting in {}",
                plan.cwd.display(),
                dir.display()
            );
            return Ok(());
        }
    }
    Ok(())
}

/// passwd/group with the calling user added, as Apptainer does by default.
fn write_identity_files(
    session: &Session,
    plan: &ContainerPlan,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let Some(id) = &plan.identity else {
        return Ok(vec![]);
    };
    let image = session.image();
    let sys = LinuxSyscall;
    // Through the image's symlinks, inside the image.
    let read = |p: &str| {
        let inside = crate::resolve::resolve_in_root(&sys, &image, Path::new(p));
        std::fs::read_to_string(rootfs::under(&image, &inside)).ok()
    };
    let user = crate::identity::UserEntry {
        uid: id.uid,
        gid: id.gid,
        name: id.name.clone(),
        gecos: id.gecos.clone(),
        home: id.home.clone(),
        shell: id.shell.clone(),
        group_name: crate::identity::host_group_name(id.gid).unwrap_or_else(|| id.name.clone()),
    };
    let mut out = vec![];
    // Like Apptainer, a file the image does not have is not made up.
    let files = [
        read("/etc/passwd").map(|p| ("passwd", crate::identity::passwd_with_user(&p, &user))),
        read("/etc/group").map(|g| ("group", crate::identity::group_with_user(&g, &user))),
    ];
    for (name, contents) in files.into_iter().flatten() {
        let generated = session.dir.join(name);
        std::fs::write(&generated, contents)
            .with_context(|| format!("cannot write {}", generated.display()))?;
        out.push((generated, PathBuf::from(format!("/etc/{name}"))));
    }
    Ok(out)
}

/// Closes every descriptor above 2 except `keep`: see [`crate::spawn::close_fds_except`].
pub use crate::spawn::close_fds_except;
