//! Mounting an image's squashfs without root: the kernel mounts squashfs only for root
//! (and loop devices are root's too), so a user's container has FUSE serve it through
//! squashfuse (Debian's package).
//!
//! Inside the container's user namespace, this process (which holds every capability
//! there until it execs) opens /dev/fuse and mounts a FUSE filesystem with that
//! descriptor; squashfuse then serves the descriptor it inherits (`/dev/fd/N` as its
//! mount point), so no setuid helper (fusermount3) is involved. The daemon dies with
//! the process that started it, and the mount with the container's mount namespace.

use crate::spawn::{fork_child, prepare_exec, ExecIo, Stdio};
use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Programs tried, in order: the low-level one is faster; both come with the package.
const PROGRAMS: &[&str] = &["squashfuse_ll", "squashfuse"];

/// Where the programs are looked for when PATH has none.
const SYSTEM_DIRS: &[&str] = &["/usr/bin", "/usr/local/bin", "/bin"];

/// The squashfuse program to run, or a one-line error saying how to get one.
pub fn program() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
        .collect();
    for name in PROGRAMS {
        for dir in &dirs {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }
    bail!("squashfuse is not installed: as a user who is not root, rctr mounts images with it (Debian package squashfuse; or run as root)")
}

fn is_executable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file()
}

/// Opens /dev/fuse, or says in one line why FUSE cannot be used.
fn open_fuse() -> Result<OwnedFd> {
    match nix::fcntl::open(
        "/dev/fuse",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        // SAFETY: open returned a fresh descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
        Err(e) => bail!(
            "FUSE is not available (/dev/fuse: {}): as a user who is not root, rctr needs it to mount images; ask the administrator to load the fuse module and make /dev/fuse mode 0666, or run as root",
            e.desc()
        ),
    }
}

/// Mounts the squashfs at `offset` in `image` read-only on `target` and returns once
/// it is served. Call inside the container's user and mount namespaces, before
/// pivot_root (squashfuse opens the image by its host path).
pub fn mount(image: &Path, offset: u64, target: &Path) -> Result<()> {
    let program = program()?;
    let fuse = open_fuse()?;
    let data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        fuse.as_raw_fd(),
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    );
    nix::mount::mount(
        Some("squashfuse"),
        target,
        Some("fuse.squashfuse"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .with_context(|| format!("cannot mount a FUSE filesystem on {}", target.display()))?;
    let argv: Vec<CString> = [
        program.as_os_str().as_encoded_bytes().to_vec(),
        b"-f".to_vec(),
        b"-o".to_vec(),
        format!("offset={offset}").into_bytes(),
        image.as_os_str().as_encoded_bytes().to_vec(),
        format!("/dev/fd/{}", fuse.as_raw_fd()).into_bytes(),
    ]
    .into_iter()
    .map(|a| CString::new(a).context("a NUL byte in the image path"))
    .collect::<Result<_>>()?;
    rctr_log::debug!(
        "squashfuse: {} serves {} (offset {offset}) on {}",
        program.display(),
        image.display(),
        target.display()
    );
    let fd = fuse.as_raw_fd();
    // The daemon is not waited for here: it serves the container for its whole life,
    // and whoever reaps the container's processes reaps it.
    let _daemon = fork_child(|| {
        // It must not outlive the process that builds the container (for a foreground
        // run, the command it becomes): the mount is of no use to anyone else.
        // SAFETY: prctl with integer arguments only changes this process's attributes.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        prepare_exec(&ExecIo {
            stdin: Stdio::Null,
            stdout: Stdio::Null,
            stderr: Stdio::Inherit,
            keep: &[fd],
        });
        // The descriptor it serves must survive exec.
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
        let _ = nix::unistd::execv(&argv[0], &argv);
        127
    })?;
    // Ours closed, the daemon holds the only descriptor: if it dies, the mount fails
    // requests instead of waiting for an answer forever.
    drop(fuse);
    // The first request waits until the daemon has opened the image and answered
    // FUSE's handshake.
    std::fs::metadata(target).map(|_| ()).with_context(|| {
        format!(
            "squashfuse could not serve image {} (offset {offset}): is it a squashfs image?",
            image.display()
        )
    })
}
