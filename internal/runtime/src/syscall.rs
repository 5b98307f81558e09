//! The system calls container setup needs, behind a trait so that the rootfs
//! logic can be unit-tested without root by a recording fake (as youki does).

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

/// What kind of thing sits at a path (without following a final symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Missing,
    Dir,
    File,
    Symlink,
    Other,
}

pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn umount_detach(&self, target: &Path) -> Result<()>;
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()>;
    fn create_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32) -> Result<()>;
    fn kind(&self, path: &Path) -> FileKind;
    /// Whether `path` is a directory, following symlinks (what a bind's source is).
    fn is_dir(&self, path: &Path) -> bool;
    /// A symlink's target, None when `path` is not a symlink.
    fn read_link(&self, path: &Path) -> Option<PathBuf>;
    fn pivot_root(&self, new_root: &Path) -> Result<()>;
    /// Mounts the squashfs at `offset` in `image` on `target` through FUSE (see
    /// [`crate::squashfuse`]): a user's container, which cannot use the kernel's.
    fn mount_squashfuse(&self, image: &Path, offset: u64, target: &Path) -> Result<()>;
    /// The flags of the mount at `path` that a remount must keep: in a user namespace
    /// the kernel locks those a mount inherited from the host (nosuid, nodev, noexec,
    /// atime), and a remount that drops one fails.
    fn kept_flags(&self, path: &Path) -> MsFlags;
}

/// The real thing.
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        rctr_log::debug!(
            "mount {} on {} (type {}, {flags:?}{})",
            source.map_or("none".into(), |s| s.display().to_string()),
            target.display(),
            fstype.unwrap_or("-"),
            data.map(|d| format!(", {d}")).unwrap_or_default()
        );
        mount(source, target, fstype, flags, data).with_context(|| {
            format!(
                "cannot mount {} on {}",
                source
                    .map(|s| s.display().to_string())
                    .unwrap_or_else(|| fstype.unwrap_or("none").to_string()),
                target.display()
            )
        })
    }

    fn umount_detach(&self, target: &Path) -> Result<()> {
        umount2(target, MntFlags::MNT_DETACH)
            .with_context(|| format!("cannot unmount {}", target.display()))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .with_context(|| format!("cannot create directory {}", path.display()))
    }

    fn create_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(contents)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        symlink(target, link).with_context(|| format!("cannot create symlink {}", link.display()))
    }

    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32) -> Result<()> {
        mknod(
            path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::makedev(major, minor),
        )
        .with_context(|| format!("cannot create device node {}", path.display()))?;
        // mknod applies the umask: /dev/null must end up 0666 whatever ours is.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))
    }

    fn kind(&self, path: &Path) -> FileKind {
        match std::fs::symlink_metadata(path) {
            Err(_) => FileKind::Missing,
            Ok(m) if m.file_type().is_symlink() => FileKind::Symlink,
            Ok(m) if m.is_dir() => FileKind::Dir,
            Ok(m) if m.is_file() => FileKind::File,
            Ok(_) => FileKind::Other,
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn read_link(&self, path: &Path) -> Option<PathBuf> {
        std::fs::read_link(path).ok()
    }

    fn mount_squashfuse(&self, image: &Path, offset: u64, target: &Path) -> Result<()> {
        crate::squashfuse::mount(image, offset, target)
    }

    fn kept_flags(&self, path: &Path) -> MsFlags {
        let kept = MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_NOATIME
            | MsFlags::MS_NODIRATIME
            | MsFlags::MS_RELATIME;
        // statvfs's ST_* flags have the values of the MS_* ones.
        nix::sys::statvfs::statvfs(path).map_or(MsFlags::empty(), |st| {
            MsFlags::from_bits_truncate(st.flags().bits() as libc::c_ulong) & kept
        })
    }

    fn pivot_root(&self, new_root: &Path) -> Result<()> {
        // pivot_root(".", ".") stacks the old root on top of the new one; detaching
        // it leaves only the container's mounts in the namespace (no chroot escape,
        // and CRIU sees no host mounts).
        rctr_log::debug!("pivot_root into {}", new_root.display());
        nix::unistd::chdir(new_root)
            .with_context(|| format!("cannot enter {}", new_root.display()))?;
        nix::unistd::pivot_root(".", ".").context("pivot_root into the container failed")?;
        umount2(".", MntFlags::MNT_DETACH).context("cannot detach the host root")?;
        nix::unistd::chdir("/").context("cannot chdir to the container root")?;
        Ok(())
    }
}
