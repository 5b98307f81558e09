//! Checkpoint state on disk: `$HOME/.rctr/checkpoint/<engine>/<NAME>/`, private.
//!
//! ```text
//! <NAME>/meta.json          name, engine, creation time
//! <NAME>/gen-000001/        one complete set of engine images + manifest.json
//! <NAME>/latest             number of the newest complete generation
//! <NAME>/.lock              taken by every command that reads or writes generations
//! <NAME>/.tmp-*/            a generation being written (never restored from)
//! <NAME>/logs/              engine logs
//! <NAME>/exchange/          the application-level engine's hand-over directory
//! ```
//! A generation becomes visible only by rename after everything in it is on disk, so a failed
//! or interrupted checkpoint leaves the previous one intact. Names are one namespace across
//! engines: `create` refuses a name that any engine's directory already holds.
//!
//! [`CheckpointStore`] is the user's set of checkpoints; [`Checkpoint`] is a handle on one of
//! them and owns everything under its directory; [`Staged`] is a generation being written;
//! [`Incoming`] is a checkpoint being imported (hidden until complete); [`archive`] writes and
//! reads the one-file archives of `checkpoint export|import`.

pub mod archive;
mod checkpoint;
pub mod follow;
mod incoming;
mod manifest;
mod stage;

pub use checkpoint::{Checked, Checkpoint, CheckpointRow, GenerationRow};
pub use incoming::Incoming;
pub use manifest::{CriuData, EngineData, Generation, Manifest};
pub use stage::{remove_in_background, Published, Staged};

use crate::engine::EngineKind;
use anyhow::{bail, Context, Result};
use rctr_state::{ensure_private_dir, read_json, validate_name, write_json_atomic, StateRoot};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub name: String,
    pub engine: EngineKind,
    /// Seconds since the epoch.
    pub created: u64,
    /// Tells this checkpoint from an earlier one of the same name (empty: made before ids).
    #[serde(default)]
    pub id: String,
    /// Where its generations live when not beside this file (`checkpoint create --dir`,
    /// `$RCTR_CHECKPOINT_DIR`): a private directory of its own, holding a copy of this file.
    #[serde(default)]
    pub location: Option<PathBuf>,
}

/// Environment variable naming a directory for new checkpoints' images (a site's scratch
/// file system: home quotas are small on clusters).
pub const ENV_CHECKPOINT_DIR: &str = "RCTR_CHECKPOINT_DIR";

/// The checkpoints of one user.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    /// `<state>/checkpoint`: one subdirectory per engine.
    root: PathBuf,
    /// Private cache (image digests).
    cache: PathBuf,
}

impl CheckpointStore {
    pub fn for_current_user() -> Result<Self> {
        let state = StateRoot::for_current_user()?;
        // Creates and checks <state>/checkpoint/<engine> for every engine.
        let mut root = None;
        for kind in EngineKind::ALL {
            let dir = state.checkpoint_engine_dir(kind.as_str())?;
            root = dir.parent().map(Path::to_path_buf);
        }
        Ok(CheckpointStore {
            root: root.context("no checkpoint directory")?,
            cache: state.private_subdir("cache")?,
        })
    }

    /// A store rooted at `root` (which holds one directory per engine), for tests and tools.
    pub fn at(root: &Path, cache: &Path) -> Result<Self> {
        for kind in EngineKind::ALL {
            ensure_private_dir(&root.join(kind.as_str()))?;
        }
        ensure_private_dir(cache)?;
        Ok(CheckpointStore {
            root: root.to_path_buf(),
            cache: cache.to_path_buf(),
        })
    }

    fn dir_of(&self, engine: EngineKind, name: &str) -> Result<PathBuf> {
        validate_name("checkpoint", name)?;
        Ok(self.root.join(engine.as_str()).join(name))
    }

    /// Creates an empty checkpoint for `engine`. With `images_in` (or else
    /// `$RCTR_CHECKPOINT_DIR`), its generations live in `<images_in>/<name>` instead of under
    /// the state directory.
    pub fn create(
        &self,
        name: &str,
        engine: EngineKind,
        images_in: Option<&Path>,
    ) -> Result<Checkpoint> {
        for kind in EngineKind::ALL {
            if std::fs::symlink_metadata(self.dir_of(kind, name)?).is_ok() {
                bail!("checkpoint '{name}' already exists: use it, or delete it with `rctr checkpoint delete {name}`");
            }
        }
        let from_env = std::env::var_os(ENV_CHECKPOINT_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let location = match images_in.map(Path::to_path_buf).or(from_env) {
            None => None,
            Some(base) => Some(images_location(&base, name)?),
        };
        let dir = self.dir_of(engine, name)?;
        let meta = CheckpointMeta {
            name: name.to_string(),
            engine,
            created: now(),
            id: new_id()?,
            location: location.clone(),
        };
        // The images directory first: a --dir that cannot hold it leaves no half-made
        // checkpoint behind (whose name would then be taken but not listed).
        if let Some(images) = &location {
            ensure_private_dir(images)?;
        }
        let made = (|| {
            if let Some(images) = &location {
                write_json_atomic(&images.join("meta.json"), &meta)?;
            }
            ensure_private_dir(&dir)?;
            let data = location.clone().unwrap_or_else(|| dir.clone());
            ensure_private_dir(&data.join("logs"))?;
            write_json_atomic(&dir.join("meta.json"), &meta)?;
            Ok::<_, anyhow::Error>(data)
        })();
        match made {
            Ok(data) => Ok(Checkpoint::new(data, dir, meta, self.cache.clone())),
            Err(e) => {
                if let Some(images) = &location {
                    let _ = std::fs::remove_dir_all(images);
                }
                Err(e)
            }
        }
    }

    /// An existing checkpoint, whatever its engine; its directory checked to be ours and
    /// private.
    pub fn open(&self, name: &str) -> Result<Checkpoint> {
        for kind in EngineKind::ALL {
            let dir = self.dir_of(kind, name)?;
            if std::fs::symlink_metadata(dir.join("meta.json")).is_err() {
                continue;
            }
            ensure_private_dir(&dir)?;
            let meta: CheckpointMeta = read_json(&dir.join("meta.json"))?;
            if meta.engine != kind || meta.name != name {
                bail!(
                    "checkpoint '{name}' is damaged: {} describes {} checkpoint '{}'; delete it with `rctr checkpoint delete {name}`",
                    dir.join("meta.json").display(),
                    meta.engine,
                    meta.name
                );
            }
            let data = match &meta.location {
                None => dir.clone(),
                Some(images) => {
                    // Same rules as the state directory: ours, private, no symlink; and the
                    // very directory this checkpoint made, not one put in its place.
                    if let Some(base) = images.parent() {
                        check_images_base(base)?;
                    }
                    ensure_private_dir(images).with_context(|| {
                        format!(
                            "checkpoint '{name}' keeps its images in {}",
                            images.display()
                        )
                    })?;
                    let there: Option<CheckpointMeta> = read_json(&images.join("meta.json")).ok();
                    if there.as_ref().map(|m| &m.id) != Some(&meta.id) {
                        bail!(
                            "checkpoint '{name}' keeps its images in {}, which does not hold them (moved, replaced or deleted): delete the checkpoint with `rctr checkpoint delete {name}`",
                            images.display()
                        );
                    }
                    images.clone()
                }
            };
            return Ok(Checkpoint::new(data, dir, meta, self.cache.clone()));
        }
        bail!("no checkpoint named '{name}': create it with `rctr checkpoint create {name}`")
    }

    /// Whether a checkpoint named `name` exists, whatever its engine.
    pub fn exists(&self, name: &str) -> Result<bool> {
        for kind in EngineKind::ALL {
            if std::fs::symlink_metadata(self.dir_of(kind, name)?.join("meta.json")).is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every checkpoint, sorted by name.
    pub fn list(&self) -> Result<Vec<Checkpoint>> {
        let mut names = vec![];
        for kind in EngineKind::ALL {
            let dir = self.root.join(kind.as_str());
            for e in std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .flatten()
            {
                if let Some(n) = e.file_name().to_str() {
                    if validate_name("checkpoint", n).is_ok() && e.path().join("meta.json").exists()
                    {
                        names.push(n.to_string());
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        names.iter().map(|n| self.open(n)).collect()
    }
}

/// `<base>/<name>` for a checkpoint's images outside the state directory. `base` must be an
/// existing absolute directory.
fn images_location(base: &Path, name: &str) -> Result<PathBuf> {
    if !base.is_absolute() {
        bail!(
            "checkpoint directory {} must be an absolute path",
            base.display()
        );
    }
    if !base.is_dir() {
        bail!(
            "checkpoint directory {} does not exist: create it first (e.g. on your scratch file system)",
            base.display()
        );
    }
    check_images_base(base)?;
    let images = base.join(name);
    if std::fs::symlink_metadata(&images).is_ok() {
        bail!(
            "{} already exists: choose another --dir or remove it",
            images.display()
        );
    }
    Ok(images)
}

/// The directory a checkpoint's images directory is made in must be one nobody else can
/// rename entries of: otherwise they could swap the (private) images directory for a symlink
/// between its checks and the engine's writes, and have root write its images anywhere.
/// Owned by the caller or root, and not writable by group or others unless sticky (/tmp).
fn check_images_base(base: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(base).with_context(|| format!("cannot stat {}", base.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if md.uid() != euid && md.uid() != 0 {
        bail!(
            "checkpoint directory {} belongs to uid {}, not to you: its owner could swap your checkpoint for a link; use a directory of your own",
            base.display(),
            md.uid()
        );
    }
    let mode = md.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        bail!(
            "checkpoint directory {} is writable by group or others (mode {mode:04o}) and not sticky: they could swap your checkpoint for a link; use a private directory (or chmod +t {})",
            base.display(),
            base.display()
        );
    }
    Ok(())
}

/// 128 random bits, as hex.
fn new_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?,
        &mut bytes,
    )
    .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn generation_dir_name(n: u32) -> String {
    format!("gen-{n:06}")
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

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod tests;
