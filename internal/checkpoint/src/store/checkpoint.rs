//! A handle on one checkpoint: its directory and everything in it.

use super::{dir_size, generation_dir_name, CheckpointMeta, Generation, Manifest};
use crate::chunk_sums::{is_memory_image, sidecar_name, ChunkSums};
use crate::engine::EngineKind;
use crate::integrity::{image_digest, verify_files, FileSum};
use anyhow::{bail, Context, Result};
use rctr_runtime::plan::RootSource;
use rctr_state::{lock_exclusive, read_json, try_lock_exclusive, StateLock};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How much of a generation was checked before a restore from it.
#[derive(Debug, Clone)]
pub enum Checked {
    /// Every file, whole.
    Whole,
    /// Every file but these memory images (by name), whose piece checksums were checked
    /// instead: whoever reads them must check each piece it uses.
    MemoryInPieces(BTreeMap<String, ChunkSums>),
}

/// The checked piece checksums of memory image `name` in `dir`, recorded as `sum`.
fn pieces_of(dir: &Path, name: &str, sum: &FileSum) -> Result<ChunkSums> {
    let path = dir.join(name);
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|_| anyhow::anyhow!("image file {} is missing", path.display()))?;
    if !meta.is_file() || meta.len() != sum.size {
        bail!(
            "image file {} is not a regular file of {} bytes",
            path.display(),
            sum.size
        );
    }
    let sums = ChunkSums::read(&dir.join(sidecar_name(name)))?;
    sums.check_root(sum.size, &sum.blake3)
        .with_context(|| format!("image file {}", path.display()))?;
    Ok(sums)
}

#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Where the generations, logs and lock are.
    dir: PathBuf,
    /// Where `meta.json` is, under the user's state directory (the same as `dir` unless the
    /// images live elsewhere).
    state_dir: PathBuf,
    meta: CheckpointMeta,
    /// The user's private cache (image digests).
    cache: PathBuf,
}

/// One line of `checkpoint list`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointRow {
    pub name: String,
    pub engine: EngineKind,
    pub created: u64,
    pub last_checkpoint: Option<u64>,
    pub generation: Option<u32>,
    pub size_bytes: u64,
    pub used_by: Vec<String>,
}

/// One line of `checkpoint list NAME`.
#[derive(Debug, Clone, Serialize)]
pub struct GenerationRow {
    pub generation: u32,
    pub latest: bool,
    pub created: Option<u64>,
    pub size_bytes: u64,
    pub frozen_ms: Option<f64>,
    pub instance: Option<String>,
}

impl Checkpoint {
    pub(super) fn new(
        dir: PathBuf,
        state_dir: PathBuf,
        meta: CheckpointMeta,
        cache: PathBuf,
    ) -> Self {
        Checkpoint {
            dir,
            state_dir,
            meta,
            cache,
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn engine(&self) -> EngineKind {
        self.meta.engine
    }

    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }

    /// What an instance started with this checkpoint records.
    pub fn reference(&self) -> rctr_instance::CheckpointRef {
        rctr_instance::CheckpointRef {
            name: self.name().to_string(),
            id: self.meta.id.clone(),
        }
    }

    /// Whether `rec` was started with this checkpoint (not an earlier one of the same name).
    pub fn is_used_by(&self, rec: &rctr_instance::InstanceRecord) -> bool {
        rec.checkpoint.as_deref() == Some(self.name())
            && match rec.checkpoint_id.as_deref() {
                Some(id) => id == self.meta.id || self.meta.id.is_empty(),
                None => true,
            }
    }

    /// Names of the running instances (foreground jobs included) using this checkpoint.
    pub fn users(&self, instances: &rctr_instance::Instances) -> Result<Vec<String>> {
        Ok(instances
            .list(None)?
            .into_iter()
            .filter(|r| self.is_used_by(r))
            .map(|r| r.name)
            .collect())
    }

    /// The checkpoint's directory on the host (engines bind it or parts of it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where engines write their logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The private cache of the checkpoint's owner.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Waits for, then holds, the checkpoint's lock: one writer or restorer at a time.
    pub fn lock(&self) -> Result<StateLock> {
        lock_exclusive(&self.lock_path())
    }

    /// The lock, or a one-line error at once if another command holds it.
    pub fn try_lock(&self) -> Result<StateLock> {
        match try_lock_exclusive(&self.lock_path())? {
            Some(l) => Ok(l),
            None => bail!(
                "checkpoint '{}' is busy (another checkpoint or restore is running): retry, or drop --no-wait to wait",
                self.name()
            ),
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(".lock")
    }

    /// Published generations (complete: they were renamed into place), ascending.
    pub fn generations(&self) -> Result<Vec<u32>> {
        let mut out = vec![];
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read {}", self.dir.display()))?;
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

    /// The newest complete generation, if any: what `latest` points at, or (if `latest` is
    /// missing, damaged or points at a pruned generation) the highest published one.
    pub fn latest(&self) -> Result<Option<u32>> {
        let published = self.generations()?;
        let pointed = std::fs::read_to_string(self.dir.join("latest"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|n| published.contains(n));
        Ok(pointed.or_else(|| published.last().copied()))
    }

    /// Published generation `number` with its manifest.
    pub fn generation(&self, number: u32) -> Result<Generation> {
        if !self.generations()?.contains(&number) {
            bail!(
                "checkpoint '{}' has no generation {number}: see `rctr checkpoint list {}`",
                self.name(),
                self.name()
            );
        }
        let dir = self.dir.join(generation_dir_name(number));
        let manifest: Manifest = match read_json(&dir.join("manifest.json")) {
            Ok(m) => m,
            Err(e) => bail!(
                "generation {number} of checkpoint '{}' is damaged: {e:#}{}",
                self.name(),
                self.older_hint(number)
            ),
        };
        if manifest.engine != self.engine() {
            bail!(
                "generation {number} of checkpoint '{}' is damaged: it was written by the {} engine, not {}{}",
                self.name(),
                manifest.engine,
                self.engine(),
                self.older_hint(number)
            );
        }
        Ok(Generation {
            number,
            dir,
            manifest,
        })
    }

    /// Generation `wanted`, or the newest one.
    pub fn select(&self, wanted: Option<u32>) -> Result<Generation> {
        let number = match wanted {
            Some(g) => g,
            None => match self.latest()? {
                Some(g) => g,
                None => bail!(
                    "checkpoint '{n}' has no images yet: start an instance with `--ckpt-launch {n}` and run `rctr checkpoint instance INSTANCE` first",
                    n = self.name()
                ),
            },
        };
        self.generation(number)
    }

    /// Checks every file of `g` and, when `image` is given, that it is the image the
    /// checkpoint was taken from (unless `force`).
    pub fn verify(&self, g: &Generation, image: Option<&RootSource>, force: bool) -> Result<()> {
        if let Err(e) = verify_files(&g.dir, &g.manifest.files) {
            return Err(self.damaged(g, e));
        }
        self.verify_image(g, image, force)
    }

    /// [`Checkpoint::verify`], except the memory images that have piece checksums: those
    /// are left for whoever reads them to check piece by piece (a lazy restore serves
    /// gigabytes of memory without reading them all first). Their piece checksums are
    /// checked here, against the manifest.
    pub fn verify_but_memory(
        &self,
        g: &Generation,
        image: Option<&RootSource>,
        force: bool,
    ) -> Result<Checked> {
        let files = &g.manifest.files;
        let in_pieces: Vec<&String> = files
            .keys()
            .filter(|n| is_memory_image(n) && files.contains_key(&sidecar_name(n)))
            .collect();
        let now: BTreeMap<String, FileSum> = files
            .iter()
            .filter(|(n, _)| !in_pieces.contains(n))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        if let Err(e) = verify_files(&g.dir, &now) {
            return Err(self.damaged(g, e));
        }
        let mut later = BTreeMap::new();
        for name in in_pieces {
            let sums = pieces_of(&g.dir, name, &files[name]).map_err(|e| self.damaged(g, e))?;
            later.insert(name.clone(), sums);
        }
        self.verify_image(g, image, force)?;
        Ok(Checked::MemoryInPieces(later))
    }

    /// The error for a damaged file of `g`, with where to turn next.
    pub fn damaged(&self, g: &Generation, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "generation {} of checkpoint '{}' is damaged: {e:#}{}",
            g.number,
            self.name(),
            self.older_hint(g.number)
        )
    }

    fn verify_image(&self, g: &Generation, image: Option<&RootSource>, force: bool) -> Result<()> {
        if let (Some(root), Some(want), false) = (image, &g.manifest.image_digest, force) {
            let have = image_digest(root, &self.cache)?;
            if have.as_deref() != Some(want.as_str()) {
                // Any copy of the image will do (it is known by its digest, not its path):
                // say so when the recorded path is not on this host.
                let recorded = &g.manifest.plan.root.path;
                let there = if recorded.exists() {
                    String::new()
                } else {
                    ", not on this host".to_string()
                };
                bail!(
                    "image {} differs from the image checkpoint '{}' was taken from ({}{there}): name that image or a copy of it (it is recognised by its digest, wherever it is), or use --force to restore anyway",
                    root.path.display(),
                    self.name(),
                    g.manifest.image
                );
            }
        }
        Ok(())
    }

    fn older_hint(&self, number: u32) -> String {
        let prev = self
            .generations()
            .ok()
            .and_then(|all| all.into_iter().filter(|n| *n < number).max());
        match prev {
            Some(prev) => format!(
                "; restore the previous one with `--generation {prev}` (check it with `rctr checkpoint verify {} --generation {prev}`)",
                self.name()
            ),
            None => String::new(),
        }
    }

    /// Deletes the checkpoint and all its generations. `users` are the running instances
    /// using it: deleting is refused while there are any, unless `force`. Waits for a
    /// checkpoint or restore in progress to finish.
    pub fn delete(self, force: bool, users: &[String]) -> Result<()> {
        if !users.is_empty() && !force {
            bail!(
                "checkpoint '{}' is used by running instance(s) {}: stop them first or use --force",
                self.name(),
                users.join(", ")
            );
        }
        let _lock = self.lock()?;
        // The state entry last: while it exists the images can still be found and deleted.
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot delete {}", self.dir.display()))?;
        if self.state_dir != self.dir {
            std::fs::remove_dir_all(&self.state_dir)
                .with_context(|| format!("cannot delete {}", self.state_dir.display()))?;
        }
        Ok(())
    }

    /// Total size of everything the checkpoint holds.
    pub fn size(&self) -> u64 {
        dir_size(&self.dir)
    }

    /// The checkpoint's line in `checkpoint list`.
    pub fn row(&self, used_by: Vec<String>) -> Result<CheckpointRow> {
        let latest = self.latest()?;
        let last_checkpoint = latest
            .and_then(|g| self.generation(g).ok())
            .map(|g| g.manifest.created);
        Ok(CheckpointRow {
            name: self.name().to_string(),
            engine: self.engine(),
            created: self.meta.created,
            last_checkpoint,
            generation: latest,
            size_bytes: self.size(),
            used_by,
        })
    }

    /// The lines of `checkpoint list NAME`: every published generation.
    pub fn generation_rows(&self) -> Result<Vec<GenerationRow>> {
        let latest = self.latest()?;
        let mut rows = vec![];
        for n in self.generations()? {
            let dir = self.dir.join(generation_dir_name(n));
            let m: Option<Manifest> = read_json(&dir.join("manifest.json")).ok();
            rows.push(GenerationRow {
                generation: n,
                latest: latest == Some(n),
                created: m.as_ref().map(|m| m.created),
                size_bytes: dir_size(&dir),
                frozen_ms: m
                    .as_ref()
                    .and_then(|m| m.frozen_us)
                    .map(|us| us as f64 / 1000.0),
                instance: m.map(|m| m.instance),
            });
        }
        Ok(rows)
    }
}
