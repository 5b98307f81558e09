//! A checkpoint being imported: built in hidden directories, so that it appears under its
//! name by one rename once everything in it is verified, and vanishes if anything fails.

use super::{images_location, new_id, now, Checkpoint, CheckpointMeta, CheckpointStore};
use crate::engine::EngineKind;
use anyhow::{bail, Context, Result};
use nix::fcntl::{renameat2, RenameFlags};
use rctr_state::{ensure_private_dir, fsync_dir, write_json_atomic};
use std::path::{Path, PathBuf};

/// Hidden directories of imports in progress: `.import-<name>-<pid>`.
const PREFIX: &str = ".import-";

/// A new checkpoint, not yet visible. Dropped unfinished, its directories are removed.
pub struct Incoming {
    ckpt: Checkpoint,
    /// (hidden, final) pairs, renamed in order by [`Incoming::finish`]: the images, then the
    /// state entry (the same directory unless the images live elsewhere).
    moves: Vec<(PathBuf, PathBuf)>,
    finished: bool,
}

impl CheckpointStore {
    /// Starts importing checkpoint `name` of `engine`; `images_in` (else
    /// `$RCTR_CHECKPOINT_DIR`) as for [`CheckpointStore::create`].
    pub fn begin_import(
        &self,
        name: &str,
        engine: EngineKind,
        images_in: Option<&Path>,
    ) -> Result<Incoming> {
        self.refuse_taken(name)?;
        let hidden = format!("{PREFIX}{name}-{}", std::process::id());
        let engine_dir = self.root.join(engine.as_str());
        sweep(&engine_dir);
        let state_final = self.dir_of(engine, name)?;
        let state_tmp = engine_dir.join(&hidden);
        let location = match images_in.map(Path::to_path_buf).or_else(env_checkpoint_dir) {
            None => None,
            Some(base) => Some(images_location(&base, name)?),
        };
        let meta = CheckpointMeta {
            name: name.to_string(),
            engine,
            created: now(),
            id: new_id()?,
            location: location.clone(),
        };
        let mut moves = vec![];
        let data_tmp = match &location {
            None => state_tmp.clone(),
            Some(images) => {
                let base = images
                    .parent()
                    .context("checkpoint directory has no parent")?;
                sweep(base);
                let tmp = base.join(&hidden);
                moves.push((tmp.clone(), images.clone()));
                tmp
            }
        };
        moves.push((state_tmp.clone(), state_final));
        // Registered before anything is created, so that a failure below removes it all.
        let incoming = Incoming {
            ckpt: Checkpoint::new(
                data_tmp.clone(),
                state_tmp.clone(),
                meta.clone(),
                self.cache.clone(),
            ),
            moves,
            finished: false,
        };
        for (tmp, _) in &incoming.moves {
            let _ = std::fs::remove_dir_all(tmp);
            ensure_private_dir(tmp)?;
            write_json_atomic(&tmp.join("meta.json"), &meta)?;
        }
        ensure_private_dir(&data_tmp.join("logs"))?;
        Ok(incoming)
    }

    fn refuse_taken(&self, name: &str) -> Result<()> {
        if self.exists(name)? {
            bail!("checkpoint '{name}' already exists: import under another name with --name NEW, or delete it first with `rctr checkpoint delete {name}`");
        }
        Ok(())
    }
}

impl Incoming {
    /// The hidden checkpoint, to stage and publish generations into.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ckpt
    }

    /// Makes the checkpoint visible under its name. Never replaces anything: a checkpoint
    /// of that name made meanwhile wins, and this one is removed.
    pub fn finish(mut self, store: &CheckpointStore) -> Result<()> {
        let name = self.ckpt.name().to_string();
        store.refuse_taken(&name)?;
        let mut done: Vec<(PathBuf, PathBuf)> = vec![];
        for (tmp, dst) in &self.moves {
            if let Err(e) = renameat2(None, tmp, None, dst, RenameFlags::RENAME_NOREPLACE) {
                // Put back what moved, so that Drop removes all of it.
                for (t, d) in done.iter().rev() {
                    let _ = std::fs::rename(d, t);
                }
                if e == nix::errno::Errno::EEXIST || e == nix::errno::Errno::ENOTEMPTY {
                    bail!("{} already exists: import under another name with --name NEW, or remove it", dst.display());
                }
                bail!(
                    "cannot move the imported checkpoint to {}: {e}",
                    dst.display()
                );
            }
            done.push((tmp.clone(), dst.clone()));
            if let Some(parent) = dst.parent() {
                fsync_dir(parent)?;
            }
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.finished {
            for (tmp, _) in &self.moves {
                let _ = std::fs::remove_dir_all(tmp);
            }
        }
    }
}

fn env_checkpoint_dir() -> Option<PathBuf> {
    std::env::var_os(super::ENV_CHECKPOINT_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Removes the hidden directories of imports whose process is gone (killed mid-import).
fn sweep(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let pid = rest
            .rsplit_once('-')
            .and_then(|(_, p)| p.parse::<i32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
