//! Crash-safe file updates: readers see either the old or the new content,
//! never a torn write, even if rctr or the node dies midway.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes`: writes a temporary file with permissions
/// `mode` next to it, fsyncs it, renames it over `path` and fsyncs the
/// directory so the rename itself is durable.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    replace(path, bytes, mode, Durability::Durable)
}

/// Whether [`replace`] waits for the disk.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Durable,
    /// Atomic against rctr dying midway, not against the node losing power.
    Volatile,
}

/// [`write_json_atomic`] without waiting for the disk: readers still see the old or the new
/// content, never a torn write, if rctr dies midway, but after a power loss the file may hold
/// either or be empty. For records of running processes (instances), which mean nothing once
/// the node has lost power, and which every reader already treats as stale when unreadable;
/// the two fsyncs cost tens of milliseconds on a busy disk on every instance start.
pub fn write_json_volatile<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("cannot serialize data for {}", path.display()))?;
    bytes.push(b'\n');
    replace(path, &bytes, 0o600, Durability::Volatile)
}

fn replace(path: &Path, bytes: &[u8], mode: u32, durability: Durability) -> Result<()> {
    let (dir, tmp) = temp_path_for(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .with_context(|| format!("cannot create temporary file {}", tmp.display()))?;
    let written = (|| -> Result<()> {
        // The open mode went through the umask; set exactly what was asked.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set mode {mode:04o} on {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        if durability == Durability::Durable {
            file.sync_all()
                .with_context(|| format!("cannot flush {} to disk", tmp.display()))?;
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    match durability {
        Durability::Durable => fsync_dir(&dir),
        Durability::Volatile => Ok(()),
    }
}

/// [`write_atomic`] of `value` as pretty JSON (plus a final newline), mode 0600.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("cannot serialize data for {}", path.display()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, 0o600)
}

/// Reads JSON from `path`, refusing to follow a symlink at `path`.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            bail!("refusing to read {}: it is a symbolic link", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_reader(BufReader::new(file))
        .with_context(|| format!("invalid JSON in {}", path.display()))
}

/// fsyncs a directory, making renames and creations inside it durable.
pub fn fsync_dir(path: &Path) -> Result<()> {
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open directory {}", path.display()))?;
    dir.sync_all()
        .with_context(|| format!("cannot flush directory {} to disk", path.display()))
}

/// The directory of `path` and a fresh hidden temporary name inside it.
fn temp_path_for(path: &Path) -> Result<(PathBuf, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        bail!("cannot write {}: not a file path", path.display());
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = dir.join(tmp_name);
    Ok((dir, tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::os::unix::fs::MetadataExt;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        pid: u32,
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("data");
        write_atomic(&p, b"one", 0o640).unwrap();
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(entries(tmp.path()), vec!["data".to_string()]);
    }

    #[test]
    fn failed_write_leaves_no_temp_and_keeps_old_content() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("data");
        write_atomic(&p, b"old", 0o600).unwrap();
        // Renaming a file over a non-empty directory fails after the temp file is written.
        let d = tmp.path().join("dir");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("keep"), b"").unwrap();
        assert!(write_atomic(&d, b"new", 0o600).is_err());
        assert_eq!(
            entries(tmp.path()),
            vec!["data".to_string(), "dir".to_string()]
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }

    #[test]
    fn json_round_trip_is_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("rec.json");
        let rec = Rec {
            name: "web".into(),
            pid: 42,
        };
        write_json_atomic(&p, &rec).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        let back: Rec = read_json(&p).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn read_json_refuses_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.json");
        write_json_atomic(
            &real,
            &Rec {
                name: "a".into(),
                pid: 1,
            },
        )
        .unwrap();
        let link = tmp.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = read_json::<Rec>(&link).unwrap_err();
        assert!(format!("{err:#}").contains("is a symbolic link"), "{err:#}");
    }

    #[test]
    fn read_json_reports_bad_json_and_missing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("bad.json");
        std::fs::write(&p, b"{not json").unwrap();
        let err = format!("{:#}", read_json::<Rec>(&p).unwrap_err());
        assert!(
            err.starts_with(&format!("invalid JSON in {}", p.display())),
            "{err}"
        );

        let missing = tmp.path().join("missing.json");
        let err = read_json::<Rec>(&missing).unwrap_err();
        let io = err
            .downcast_ref::<std::io::Error>()
            .expect("io error kept as source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn fsync_dir_errors_on_missing_dir() {
        let err = fsync_dir(Path::new("/nonexistent-rctr-dir")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-rctr-dir"));
    }
}
