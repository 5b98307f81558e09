//! Advisory locks (flock via fd-lock) serialising rctr commands that update
//! the same piece of state, across processes and across threads.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// An exclusive lock on a lock file, held until this value is dropped.
///
/// flock locks belong to the open file description, so two `StateLock`s on
/// the same path conflict even inside one process.
pub struct StateLock {
    // The lock is released when this file is closed, i.e. on drop.
    _file: fd_lock::RwLock<File>,
    path: PathBuf,
}

impl StateLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for StateLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateLock")
            .field("path", &self.path)
            .finish()
    }
}

/// Takes an exclusive lock on `path` (created with mode 0600 if missing),
/// waiting for any other holder to release it.
pub fn lock_exclusive(path: &Path) -> Result<StateLock> {
    let mut lock = fd_lock::RwLock::new(open_lock_file(path)?);
    loop {
        match lock.write() {
            Ok(guard) => {
                // The guard would unlock when dropped, but it borrows `lock`;
                // forgetting it keeps the flock until the file is closed.
                std::mem::forget(guard);
                break;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
    Ok(StateLock {
        _file: lock,
        path: path.to_path_buf(),
    })
}

/// Like [`lock_exclusive`] but returns `Ok(None)` at once when the lock is
/// held elsewhere.
pub fn try_lock_exclusive(path: &Path) -> Result<Option<StateLock>> {
    let mut lock = fd_lock::RwLock::new(open_lock_file(path)?);
    match lock.try_write() {
        Ok(guard) => std::mem::forget(guard),
        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
    Ok(Some(StateLock {
        _file: lock,
        path: path.to_path_buf(),
    }))
}

fn open_lock_file(path: &Path) -> Result<File> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(f),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!(
                "refusing to use lock file {}: it is a symbolic link",
                path.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("cannot open lock file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn try_lock_is_none_while_held_and_some_after_release() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("lock");
        let held = try_lock_exclusive(&p).unwrap().expect("free lock");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(try_lock_exclusive(&p).unwrap().is_none());
        drop(held);
        assert!(try_lock_exclusive(&p).unwrap().is_some());
    }

    #[test]
    fn blocking_lock_waits_for_release() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("lock");
        let first = lock_exclusive(&p).unwrap();
        let acquired = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (p, acquired) = (p.clone(), acquired.clone());
            std::thread::spawn(move || {
                let _second = lock_exclusive(&p).unwrap();
                acquired.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !acquired.load(Ordering::SeqCst),
            "second lock taken while first held"
        );
        drop(first);
        waiter.join().unwrap();
        assert!(acquired.load(Ordering::SeqCst));
    }

    /// Runs this test binary as a second process that tries the lock and
    /// reports through its exit code (0 = got it, 3 = held elsewhere).
    #[test]
    fn lock_excludes_other_processes() {
        const CHILD: &str = "RCTR_STATE_TEST_LOCK_PATH";
        if let Some(p) = std::env::var_os(CHILD) {
            let code = match try_lock_exclusive(Path::new(&p)).unwrap() {
                Some(_) => 0,
                None => 3,
            };
            std::process::exit(code);
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("lock");
        let child = || {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "lock::tests::lock_excludes_other_processes"])
                .env(CHILD, &p)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap()
                .code()
        };
        let held = lock_exclusive(&p).unwrap();
        assert_eq!(child(), Some(3));
        drop(held);
        assert_eq!(child(), Some(0));
    }

    #[test]
    fn refuses_symlinked_lock_file() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let link = tmp.path().join("lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = lock_exclusive(&link).unwrap_err();
        assert!(format!("{err:#}").contains("is a symbolic link"), "{err:#}");
        assert!(!target.exists());
    }
}
