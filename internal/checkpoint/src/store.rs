//! Checkpoint state on disk: `$HOME/.rctr/checkpoint/<engine>/<NAME>/`, private.
//!
//! ```text
//! <NAME>/meta.json          name, engine, creation time
//! <NAME>/gen-000001/        one complete set of engine images + manifest.json
//! <NAME>/latest             number of the newest complete generation
//! <NAME>/.tmp-*/            a generation being written (never restored from)
//! <NAME>/logs/              engine logs
//! ```
//! A generation becomes visible only by rename after everything in it is on
//! disk, so a failed or interrupted checkpoint leaves the previous one intact.

use anyhow::{bail, Context, Result};
use rctr_state::{
    ensure_private_dir, read_json, validate_name, write_atomic, write_json_atomic, StateRoot,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const ENGINE: &str = "criu";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub name: String,
    pub engine: String,
    /// Seconds since the epoch.
    pub created: u64,
}

/// Facts about one generation, written beside the engine's images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub generation: u32,
    pub engine: String,
    pub created: u64,
    pub instance: String,
    pub image: String,
    /// The container as it was built: a restart rebuilds exactly these mounts.
    pub plan: rctr_runtime::plan::ContainerPlan,
    /// The host pipe identities of the application's stdout/stderr at dump time
    /// (e.g. `pipe:[1234]`), needed to reconnect them on restore.
    pub stdout_pipe: Option<String>,
    pub stderr_pipe: Option<String>,
    pub size_bytes: u64,
    pub frozen_us: Option<u64>,
    pub wall_ms: u64,
    /// Digest of the container image's filesystem (None for directory images).
    #[serde(default)]
    pub image_digest: Option<String>,
    /// Every engine image file with its size and checksum.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, crate::integrity::FileSum>,
}

pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn for_current_user() -> Result<Self> {
        let state = StateRoot::for_current_user()?;
        Ok(CheckpointStore {
            dir: state.checkpoint_engine_dir(ENGINE)?,
        })
    }

    pub fn dir_of(&self, name: &str) -> Result<PathBuf> {
        validate_name("checkpoint", name)?;
        Ok(self.dir.join(name))
    }

    pub fn create(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir_of(name)?;
        if std::fs::symlink_metadata(&dir).is_ok() {
            bail!("checkpoint '{name}' already exists: use it, or delete it with `rctr checkpoint delete {name}`");
        }
        ensure_private_dir(&dir)?;
        ensure_private_dir(&dir.join("logs"))?;
        let meta = CheckpointMeta {
            name: name.to_string(),
            engine: ENGINE.to_string(),
            created: now(),
        };
        write_json_atomic(&dir.join("meta.json"), &meta)?;
        Ok(dir)
    }

    /// The directory of an existing checkpoint, checked to be ours and private.
    pub fn open(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir_of(name)?;
        if !dir.join("meta.json").exists() {
            bail!("no checkpoint named '{name}': create it with `rctr checkpoint create {name}`");
        }
        ensure_private_dir(&dir)?;
        Ok(dir)
    }

    pub fn meta(&self, name: &str) -> Result<CheckpointMeta> {
        read_json(&self.open(name)?.join("meta.json"))
    }

    pub fn names(&self) -> Result<Vec<String>> {
        let mut out = vec![];
        for e in std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read {}", self.dir.display()))?
            .flatten()
        {
            if let Some(n) = e.file_name().to_str() {
                if validate_name("checkpoint", n).is_ok() && e.path().join("meta.json").exists() {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        let dir = self.open(name)?;
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot delete {}", dir.display()))
    }
}

pub fn generation_dir_name(n: u32) -> String {
    format!("gen-{n:06}")
}

/// Number of the newest complete generation, if any: what `latest` points at,
/// or (if `latest` is missing, damaged or points at a pruned generation) the
/// highest published one.
pub fn latest_generation(dir: &Path) -> Result<Option<u32>> {
    let published = generations(dir)?;
    let pointed = std::fs::read_to_string(dir.join("latest"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|n| published.contains(n));
    Ok(pointed.or_else(|| published.last().copied()))
}

/// Published generations (complete: they were renamed into place), ascending.
pub fn generations(dir: &Path) -> Result<Vec<u32>> {
    let mut out = vec![];
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = number {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Number for the next generation: above every published one, even one that
/// `latest` does not point at yet because rctr died just after publishing it.
pub fn next_generation(dir: &Path) -> Result<u32> {
    Ok(generations(dir)?.last().copied().unwrap_or(0) + 1)
}

/// Removes leftovers of interrupted checkpoints. Call with the checkpoint lock held.
pub fn remove_stale_temporaries(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Keeps the newest `keep` generations (0 keeps all). Each is renamed out of
/// sight at once (so a crash never leaves half a generation behind), and the
/// renamed directories are returned for [`remove_in_background`].
pub fn prune(dir: &Path, keep: u32) -> Result<Vec<PathBuf>> {
    if keep == 0 {
        return Ok(vec![]);
    }
    let all = generations(dir)?;
    let excess = all.len().saturating_sub(keep as usize);
    let mut trash = vec![];
    for n in &all[..excess] {
        let from = dir.join(generation_dir_name(*n));
        let to = dir.join(format!(".trash-{}", generation_dir_name(*n)));
        std::fs::rename(&from, &to).with_context(|| format!("cannot prune {}", from.display()))?;
        trash.push(to);
    }
    rctr_state::fsync_dir(dir)?;
    Ok(trash)
}

/// Deletes `dirs` in a detached process: freeing gigabytes of images takes the
/// filesystem a while, and nobody needs to wait for it. Whatever a killed
/// remover leaves is swept by the next checkpoint. Call single-threaded.
pub fn remove_in_background(dirs: Vec<PathBuf>) {
    use nix::unistd::{fork, ForkResult};
    if dirs.is_empty() {
        return;
    }
    let remove_all = |dirs: &[PathBuf]| {
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    };
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = nix::unistd::setsid();
            // Double fork: the remover is nobody's child and never a zombie of ours.
            if let Ok(ForkResult::Child) = unsafe { fork() } {
                remove_all(&dirs);
            }
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(_) => remove_all(&dirs),
    }
}

pub fn set_latest(dir: &Path, n: u32) -> Result<()> {
    write_atomic(&dir.join("latest"), format!("{n}\n").as_bytes(), 0o600)
}

pub fn read_manifest(gen_dir: &Path) -> Result<Manifest> {
    read_json(&gen_dir.join("manifest.json"))
}

/// Total size of the regular files in a directory tree.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
