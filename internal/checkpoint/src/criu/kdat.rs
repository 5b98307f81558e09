//! A persistent cache of CRIU's kernel-feature detection ("kerndat") for the engine inside
//! containers.
//!
//! Every CRIU run starts by probing the kernel (pagemap, shared memory devices, mount and
//! ptrace features, `iptables -L` to load netfilter modules, ...), tens of milliseconds, unless
//! it finds `/run/criu.kdat` from an earlier run. CRIU keeps that file only on a tmpfs, so
//! that it is gone after a reboot (a new kernel), and only written by root. Inside rctr's
//! containers `/run` is the image's, read-only: the probe ran on every dump and restore.
//!
//! So the host keeps one cache per engine bundle (CRIU rejects a cache written by another
//! build of itself) in a root-only directory on a tmpfs ([`HOST_DIR`], mounted there when the
//! host's /run is not a tmpfs itself), filled once by running the bundled CRIU on the host
//! with that directory as its /run, and the file is bind-mounted read-only at
//! [`CONTAINER_PATH`] into containers that carry the engine.

use super::bundle::EngineBundle;
use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where CRIU looks for its cache (its build's RUNDIR).
pub const CONTAINER_PATH: &str = "/run/criu.kdat";

/// The host directory of the caches: root's, on a tmpfs.
pub const HOST_DIR: &str = "/run/rctr/criu-kdat";

const FILE_NAME: &str = "criu.kdat";

/// The cache file for `bundle`, made if needed; None when it cannot be had (not root, no
/// tmpfs, the engine failed): the engine then probes the kernel itself, as before.
pub fn ensure(bundle: &EngineBundle) -> Option<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    match ensure_in(Path::new(HOST_DIR), bundle) {
        Ok(path) => Some(path),
        Err(e) => {
            rctr_log::debug!("no kernel-feature cache for the checkpoint engine: {e:#}");
            None
        }
    }
}

fn ensure_in(dir: &Path, bundle: &EngineBundle) -> Result<PathBuf> {
    prepare_dir(dir)?;
    let sub = dir.join(&bundle.id);
    make_private_dir(&sub)?;
    let file = sub.join(FILE_NAME);
    if usable(&file) {
        return Ok(file);
    }
    fill(bundle, &sub)?;
    if !usable(&file) {
        bail!("the engine wrote no {}", file.display());
    }
    Ok(file)
}

/// A regular file of root's, not a symlink, with something in it.
fn usable(file: &Path) -> bool {
    std::fs::symlink_metadata(file)
        .is_ok_and(|m| m.file_type().is_file() && m.uid() == 0 && m.len() > 0)
}

/// `dir` and its parent exist, are root's own real directories, and `dir` is on a tmpfs.
fn prepare_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        owned_by_root(parent, false)?;
    }
    make_private_dir(dir)?;
    if !on_tmpfs(dir)? {
        // Lives until the next reboot, like CRIU's own cache in a tmpfs /run.
        mount(
            Some("rctr-criu-kdat"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700,size=1m"),
        )
        .with_context(|| format!("cannot mount a tmpfs on {}", dir.display()))?;
        if !on_tmpfs(dir)? {
            bail!("{} is not on a tmpfs", dir.display());
        }
    }
    owned_by_root(dir, true)
}

fn make_private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    owned_by_root(dir, true)
}

/// A real directory (not a symlink) of root's that nobody else may write to (nor read, with
/// `private`).
fn owned_by_root(dir: &Path, private: bool) -> Result<()> {
    let m = std::fs::symlink_metadata(dir)
        .with_context(|| format!("cannot inspect {}", dir.display()))?;
    let forbidden = if private { 0o077 } else { 0o022 };
    if !m.file_type().is_dir() || m.uid() != 0 || m.mode() & forbidden != 0 {
        bail!(
            "{} is not a directory of root's closed to other users: remove it",
            dir.display()
        );
    }
    Ok(())
}

fn on_tmpfs(dir: &Path) -> Result<bool> {
    let s = nix::sys::statfs::statfs(dir)
        .with_context(|| format!("cannot statfs {}", dir.display()))?;
    Ok(s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Runs the bundled CRIU once on the host, in a private mount namespace whose /run is `sub`:
/// it probes the kernel and saves its cache there (whatever `check` itself concludes).
fn fill(bundle: &EngineBundle, sub: &Path) -> Result<()> {
    let argv = bundle.host_argv(super::CRIU, &["check".to_string()])?;
    let sub = sub.to_path_buf();
    let code = rctr_runtime::spawn::run_in_child(move || {
        let private = || -> nix::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            mount(
                Some(&sub),
                "/run",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        if private().is_err() {
            return 125;
        }
        rctr_runtime::spawn::prepare_exec(&rctr_runtime::spawn::ExecIo::NULL);
        super::run::exec_engine(&argv, &[]);
        126
    })?;
    if code == 125 || code == 126 {
        bail!("cannot run the engine to fill its cache (status {code})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_closed_real_directory_of_roots_is_accepted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (the cache directory must be root's)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        make_private_dir(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Opened to others: refused, and not silently repaired.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(make_private_dir(&dir).is_err());
        // A symlink to a good directory is refused too.
        let real = tmp.path().join("real");
        make_private_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(owned_by_root(&link, true).is_err());
        // Someone else's directory.
        let theirs = tmp.path().join("theirs");
        make_private_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        assert!(owned_by_root(&theirs, true).is_err());
    }

    #[test]
    fn a_cache_file_must_be_a_non_empty_regular_file() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join(FILE_NAME);
        assert!(!usable(&f));
        std::fs::write(&f, b"").unwrap();
        assert!(!usable(&f));
        std::fs::write(&f, b"kdat").unwrap();
        assert_eq!(usable(&f), nix::unistd::geteuid().is_root());
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(!usable(&link));
    }
}
