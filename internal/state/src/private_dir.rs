//! Private directories: created with mode 0700 and verified to belong to the
//! user and to be unwritable by anyone else, so no other user can plant
//! symlinks or files in the state tree.
//!
//! The tree is walked with directory file descriptors (`openat` with
//! `O_NOFOLLOW`) rather than path strings, so a component cannot be swapped
//! for a symlink between the check and its use.

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::geteuid;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

const PRIVATE_MODE: u32 = 0o700;

/// Makes sure `path` is a private directory, creating it and any missing
/// parents with mode 0700.
///
/// Checked (never followed if a symlink): `path` itself and every component
/// this call had to create. Ancestors that already existed are trusted as they
/// are (they may legitimately be symlinks or root-owned, like `/home`); use
/// [`ensure_private_dir_under`] to also check existing components below a
/// trusted root.
pub fn ensure_private_dir(path: &Path) -> Result<()> {
    let path = plain_absolute(path)?;
    let mut base = path.as_path();
    if !exists(base)? {
        while let Some(parent) = base.parent() {
            if exists(parent)? {
                break;
            }
            base = parent;
        }
    }
    ensure_private_dir_under(base, &path)
}

/// Makes sure `base` and every directory from `base` down to `path` exist, are
/// real directories (not symlinks), are owned by the effective uid and are not
/// writable by group or others. Missing ones are created with mode 0700.
/// Components above `base` are traversed normally.
pub fn ensure_private_dir_under(base: &Path, path: &Path) -> Result<()> {
    let base = plain_absolute(base)?;
    let path = plain_absolute(path)?;
    let below = path
        .strip_prefix(&base)
        .map_err(|_| anyhow!("{} is not inside {}", path.display(), base.display()))?;
    let (Some(parent), Some(first)) = (base.parent(), base.file_name()) else {
        bail!(
            "{} cannot be used as a private state directory",
            base.display()
        );
    };

    let parent_dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(parent)
        .with_context(|| format!("cannot open directory {}", parent.display()))?;
    let mut dir = OwnedFd::from(parent_dir);
    let mut shown = parent.to_path_buf();
    let names = std::iter::once(first).chain(below.components().map(|c| c.as_os_str()));
    for name in names {
        shown.push(name);
        dir = open_private_child(&dir, name, &shown)?;
    }
    Ok(())
}

/// Opens (creating if needed) the directory `name` inside `parent` and checks
/// that it is private. `shown` is its full path, for messages.
fn open_private_child(parent: &OwnedFd, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
    let (fd, created) = match open_dir_nofollow(parent, name, shown)? {
        Some(fd) => (fd, false),
        None => {
            let created = match mkdirat(
                Some(parent.as_raw_fd()),
                name,
                Mode::from_bits_truncate(PRIVATE_MODE),
            ) {
                Ok(()) => true,
                // Created concurrently by another rctr process: check it like any other.
                Err(Errno::EEXIST) => false,
                Err(e) => bail!("cannot create directory {}: {e}", shown.display()),
            };
            let fd = open_dir_nofollow(parent, name, shown)?.ok_or_else(|| {
                anyhow!("directory {} vanished while being created", shown.display())
            })?;
            (fd, created)
        }
    };
    if created {
        // mkdir applies the umask; make the mode exactly 0700 whatever it is.
        fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(PRIVATE_MODE))
            .with_context(|| format!("cannot set mode 0700 on {}", shown.display()))?;
    }
    check_private(&fd, shown)?;
    Ok(fd)
}

/// `Ok(None)` when `name` does not exist.
fn open_dir_nofollow(parent: &OwnedFd, name: &OsStr, shown: &Path) -> Result<Option<OwnedFd>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match openat(Some(parent.as_raw_fd()), name, flags, Mode::empty()) {
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        Ok(fd) => Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) })),
        Err(Errno::ENOENT) => Ok(None),
        // Linux reports a symlink as ENOTDIR when O_DIRECTORY is also given.
        Err(Errno::ELOOP | Errno::ENOTDIR) if is_symlink(parent, name) => bail!(
            "refusing to use {}: it is a symbolic link, state directories must be real directories (remove the link)",
            shown.display()
        ),
        Err(Errno::ENOTDIR) => bail!(
            "refusing to use {}: it exists but is not a directory",
            shown.display()
        ),
        Err(Errno::EACCES) if owner_of(parent, name).is_some_and(|o| o != geteuid().as_raw()) => {
            bail!("{}", not_yours(shown, owner_of(parent, name).unwrap_or(0)))
        }
        Err(e) => bail!("cannot open directory {}: {e}", shown.display()),
    }
}

fn owner_of(parent: &OwnedFd, name: &OsStr) -> Option<u32> {
    fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| st.st_uid)
}

/// The one-line refusal for another user's state: each user's instances and checkpoints
/// (which hold their processes' memory) are theirs alone.
fn not_yours(shown: &Path, owner: u32) -> String {
    let who = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(owner))
        .ok()
        .flatten()
        .map_or(format!("uid {owner}"), |u| format!("user {}", u.name));
    format!(
        "{} is not yours (it belongs to {who}): rctr uses only your own $HOME/.rctr",
        shown.display()
    )
}

fn is_symlink(parent: &OwnedFd, name: &OsStr) -> bool {
    fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
        SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK
    })
}

fn check_private(fd: &OwnedFd, shown: &Path) -> Result<()> {
    let st = fstat(fd.as_raw_fd()).with_context(|| format!("cannot stat {}", shown.display()))?;
    let me = geteuid().as_raw();
    if st.st_uid != me {
        bail!(
            "refusing to use {}: it is not yours (owned by uid {}, and rctr runs as uid {me}); state directories must belong to you",
            shown.display(),
            st.st_uid
        );
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        bail!(
            "refusing to use {}: it is writable by group or others (mode {mode:04o}); fix it with `chmod go-w {}`",
            shown.display(),
            shown.display()
        );
    }
    Ok(())
}

/// An absolute path without `..` (which would make "below base" meaningless).
fn plain_absolute(path: &Path) -> Result<PathBuf> {
    if !path.is_absolute() {
        bail!(
            "state directory {} must be an absolute path",
            path.display()
        );
    }
    if path.components().any(|c| c == Component::ParentDir) {
        bail!("state directory {} must not contain '..'", path.display());
    }
    Ok(path.components().collect())
}

fn exists(path: &Path) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        // ENOTDIR: an ancestor is a file; the walk reports it precisely.
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_missing_components_private() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("a/b/c");
        ensure_private_dir(&target).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            let p = tmp.path().join(p);
            assert!(p.is_dir(), "{} missing", p.display());
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        // Idempotent.
        ensure_private_dir(&target).unwrap();
    }

    /// The umask is process-wide, so the restrictive one is set in a child
    /// process (this same test binary) rather than under the other tests.
    #[test]
    fn mode_is_0700_despite_umask() {
        const CHILD: &str = "RCTR_STATE_TEST_UMASK_DIR";
        if let Some(dir) = std::env::var_os(CHILD) {
            nix::sys::stat::umask(Mode::from_bits_truncate(0o277));
            ensure_private_dir(&Path::new(&dir).join("x")).unwrap();
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "private_dir::tests::mode_is_0700_despite_umask"])
            .env(CHILD, tmp.path())
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        // With umask 0277 a plain mkdir(0700) would have produced 0500.
        assert_eq!(mode(&tmp.path().join("x")), 0o700);
    }

    #[test]
    fn refuses_symlinked_component() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&real, root.join("link")).unwrap();

        let err = ensure_private_dir_under(&root, &root.join("link/sub")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("is a symbolic link"), "{msg}");
        assert!(msg.contains("/root/link"), "{msg}");
        assert!(!real.join("sub").exists(), "followed the symlink");

        // The final component being a symlink is refused too.
        let err = ensure_private_dir(&root.join("link")).unwrap_err();
        assert!(format!("{err:#}").contains("is a symbolic link"));
    }

    #[test]
    fn refuses_dangling_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("dangling");
        std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).unwrap();
        let err = ensure_private_dir_under(tmp.path(), &link.join("x")).unwrap_err();
        assert!(format!("{err:#}").contains("is a symbolic link"), "{err:#}");
        // Without a trusted base the link is an existing ancestor: still no creation through it.
        assert!(ensure_private_dir(&link.join("x")).is_err());
        assert!(!tmp.path().join("nowhere").exists());
    }

    #[test]
    fn refuses_file_component() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let err = ensure_private_dir(&tmp.path().join("f/x")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("/f") && msg.contains("Not a directory"),
            "{msg}"
        );
        let err = ensure_private_dir(&tmp.path().join("f")).unwrap_err();
        assert!(
            format!("{err:#}").contains("exists but is not a directory"),
            "{err:#}"
        );
    }

    #[test]
    fn refuses_group_writable_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("shared");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = ensure_private_dir(&d).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("writable by group or others (mode 0770)"),
            "{msg}"
        );
        assert!(msg.contains("chmod go-w"), "{msg}");
        // A read-only-for-others directory is fine.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&d).unwrap();
    }

    #[test]
    fn refuses_dir_owned_by_another_user() {
        if !geteuid().is_root() {
            eprintln!("skipped: changing a directory's owner needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let theirs = root.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
        let err = ensure_private_dir_under(&root, &theirs.join("x")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("owned by uid 4242"), "{msg}");
        assert!(!theirs.join("x").exists());
    }

    #[test]
    fn under_checks_existing_components_below_base() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("mid")).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(root.join("mid"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir_under(&root, &root.join("mid/leaf")).unwrap_err();
        assert!(format!("{err:#}").contains("/root/mid"), "{err:#}");
    }

    #[test]
    fn rejects_relative_and_outside_paths() {
        assert!(ensure_private_dir(Path::new("rel/dir")).is_err());
        let err = ensure_private_dir_under(Path::new("/a/b"), Path::new("/a/c")).unwrap_err();
        assert!(format!("{err:#}").contains("is not inside"));
        let err = ensure_private_dir(Path::new("/tmp/../etc")).unwrap_err();
        assert!(format!("{err:#}").contains("'..'"));
    }
}
