//! Keeps the squashfs image of checkpointed containers mounted on the host, so that a
//! restore finds the image's pages already decompressed.
//!
//! Every container mounts its image from a fresh loop device, and so gets a fresh squashfs
//! superblock with an empty page cache: whatever the application maps from the image (the
//! interpreter, its libraries) is read and decompressed again. A CRIU restore touches all of
//! that at once, and it was most of the restore's time (measured on the Python server: 180 of
//! 300 ms under load, `perf`: half of all CPU samples in `squashfs_decompress`).
//!
//! So for containers that carry the checkpoint engine, the loop device is also mounted
//! read-only at `HOST_DIR/<key>` (root-only, on /run's tmpfs), and later containers of the
//! same image file (same device, inode, change times, offset and size) reuse that loop
//! device: their mounts share the superblock and its page cache. A mount stays until the
//! next reboot or until its image file is deleted (swept when another one is made); remove
//! them by hand with `umount /run/rctr/image-cache/*`.

use crate::loopdev::{self, LoopDevice};
use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the images stay mounted: root's, on a tmpfs (/run).
pub const HOST_DIR: &str = "/run/rctr/image-cache";

const SQUASHFS_MAGIC: i64 = 0x7371_7368;

/// A loop device for `image` whose superblock outlives the container: an existing one when
/// the image is already kept, else a new one, kept. Errors leave the caller to attach a
/// plain device.
pub fn attach_kept(image: &Path, offset: u64, size: u64) -> Result<LoopDevice> {
    let dir = Path::new(HOST_DIR);
    prepare(dir)?;
    let _lock = rctr_state::lock_exclusive(&dir.join(".lock"))?;
    let md = std::fs::metadata(loopdev::image_path_to_open(image))
        .with_context(|| format!("cannot stat image {}", image.display()))?;
    let key = format!(
        "{:x}-{:x}-{}.{}-{}.{}-{offset}-{size}",
        md.dev(),
        md.ino(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec()
    );
    let keep = dir.join(&key);
    if let Some(dev) = mounted_device(&keep) {
        if let Some(d) = loopdev::open_attached(&dev, image, offset, size) {
            rctr_log::debug!(
                "image {}: reusing {} (kept mounted at {})",
                image.display(),
                dev.display(),
                keep.display()
            );
            return Ok(d);
        }
        // Not ours (any more): out of the way.
        let _ = umount2(&keep, MntFlags::MNT_DETACH);
    }
    sweep_deleted(dir);
    let dev = loopdev::attach(image, offset, size)?;
    match std::fs::DirBuilder::new().mode(0o700).create(&keep) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", keep.display())),
    }
    mount(
        Some(&dev.path),
        &keep,
        Some("squashfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| format!("cannot mount {} on {}", dev.path.display(), keep.display()))?;
    rctr_log::debug!(
        "image {}: {} kept mounted at {}",
        image.display(),
        dev.path.display(),
        keep.display()
    );
    Ok(dev)
}

/// The loop device mounted at `dir`, if a squashfs is.
fn mounted_device(dir: &Path) -> Option<PathBuf> {
    let fs = nix::sys::statfs::statfs(dir).ok()?;
    if fs.filesystem_type().0 as i64 != SQUASHFS_MAGIC {
        return None;
    }
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    (major == 7).then(|| PathBuf::from(format!("/dev/loop{minor}")))
}

/// Unmounts kept images whose file has been deleted (or replaced by a new file).
fn sweep_deleted(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(dev) = mounted_device(&path) else {
            continue;
        };
        let Some(name) = dev.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
            .unwrap_or_default();
        if backing.trim_end().ends_with("(deleted)") {
            rctr_log::debug!(
                "image cache: {} was deleted, unmounting",
                backing.trim_end()
            );
            if umount2(&path, MntFlags::MNT_DETACH).is_ok() {
                let _ = std::fs::remove_dir(&path);
            }
        }
    }
}

/// `dir` and its parent exist and are root's own real directories, `dir` closed to others.
fn prepare(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let m = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?;
    if !m.file_type().is_dir() || m.uid() != 0 || m.mode() & 0o077 != 0 {
        bail!(
            "{} is not a directory of root's closed to other users: remove it",
            dir.display()
        );
    }
    Ok(())
}
