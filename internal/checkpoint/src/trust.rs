//! Refusing engine files that a non-root user could have written.
//!
//! The engine runs as root inside every checkpointed container, so a binary or library that
//! another user can modify (or swap, through a writable directory above it) is a privilege
//! escalation. A file is trusted when it and every directory above it are owned by root and
//! not writable by group or others; a sticky directory (like /tmp) is accepted because there
//! only the owner of an entry can rename or remove it.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Checks that `path` (a file, followed through symlinks) and the directories leading to it
/// are root-controlled. Returns the canonical path.
pub fn ensure_root_controlled(path: &Path) -> Result<PathBuf> {
    let real = path
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    check_entry(&real, path, false)?;
    // The directory the caller named the file in counts too: a writable directory there
    // could redirect a symlink.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(p) = parent.canonicalize() {
            check_ancestors(&p, path)?;
        }
    }
    if let Some(parent) = real.parent() {
        check_ancestors(parent, path)?;
    }
    Ok(real)
}

fn check_ancestors(dir: &Path, named: &Path) -> Result<()> {
    for d in dir.ancestors() {
        check_entry(d, named, true)?;
    }
    Ok(())
}

fn check_entry(p: &Path, named: &Path, is_dir: bool) -> Result<()> {
    let md = std::fs::metadata(p).with_context(|| format!("cannot stat {}", p.display()))?;
    let what = if p == named {
        format!("{}", p.display())
    } else if is_dir {
        format!("directory {} (above {})", p.display(), named.display())
    } else {
        format!("{} (target of {})", p.display(), named.display())
    };
    if md.uid() != 0 {
        bail!(
            "{what} is owned by uid {}, not root: engine files run as root, so they must be \
             owned by root (chown root: {})",
            md.uid(),
            p.display()
        );
    }
    let mode = md.mode() & 0o7777;
    let writable = mode & GROUP_OR_OTHER_WRITE != 0;
    let sticky_dir = is_dir && mode & STICKY != 0;
    if writable && !sticky_dir {
        bail!(
            "{what} is writable by group or others (mode {mode:04o}): engine files run as \
             root, so only root may write them (chmod go-w {})",
            p.display()
        );
    }
    Ok(())
}

/// The same rule for the configuration file, except that the invoking user may own it (it
/// only names files, which are checked themselves).
pub fn ensure_conf_file_safe(path: &Path) -> Result<()> {
    let md = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if md.uid() != 0 && md.uid() != euid {
        bail!(
            "{} is owned by uid {}, neither root nor you: refusing to take checkpoint engine \
             settings from it",
            path.display(),
            md.uid()
        );
    }
    if md.mode() & GROUP_OR_OTHER_WRITE != 0 {
        bail!(
            "{} is writable by group or others (mode {:04o}): refusing to take checkpoint \
             engine settings from it (chmod go-w {})",
            path.display(),
            md.mode() & 0o7777,
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn running_as_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn system_binary_is_trusted() {
        assert!(ensure_root_controlled(Path::new("/bin/ls")).is_ok());
    }

    #[test]
    fn group_writable_file_is_refused() {
        if !running_as_root() {
            eprintln!("skipped: needs root to create root-owned files");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("criu");
        std::fs::copy("/bin/true", &f).unwrap();
        assert!(ensure_root_controlled(&f).is_ok());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = format!("{:#}", ensure_root_controlled(&f).unwrap_err());
        assert!(err.contains("writable by group or others"), "{err}");
    }

    #[test]
    fn writable_directory_above_is_refused() {
        if !running_as_root() {
            eprintln!("skipped: needs root to create root-owned files");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("bin");
        std::fs::create_dir(&sub).unwrap();
        let f = sub.join("criu");
        std::fs::copy("/bin/true", &f).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", ensure_root_controlled(&f).unwrap_err());
        assert!(
            err.contains("directory") && err.contains("mode 0777"),
            "{err}"
        );
    }

    #[test]
    fn file_owned_by_another_user_is_refused() {
        if !running_as_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("criu");
        std::fs::copy("/bin/true", &f).unwrap();
        std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
        let err = format!("{:#}", ensure_root_controlled(&f).unwrap_err());
        assert!(err.contains("owned by uid 65534"), "{err}");
    }
}
