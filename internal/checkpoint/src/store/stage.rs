//! Writing a generation: a private staging directory, sealed (private modes, fsync,
//! checksums), then published by one rename, then `latest`, then pruning.

use super::{dir_size, generation_dir_name, Checkpoint, Manifest};
use crate::chunk_sums;
use crate::integrity::{hash_file, FileSum};
use anyhow::{bail, Context, Result};
use rctr_state::{fsync_dir, write_atomic, write_json_atomic, StateLock};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A generation being written: `<ckpt>/.tmp-gen-NNNNNN-<pid>/`. Dropped unpublished, it is
/// removed; a crash leaves it for the next [`Checkpoint::stage`] to sweep.
#[derive(Debug)]
pub struct Staged {
    pub number: u32,
    pub dir: PathBuf,
    /// The directory's file name (engines address it inside the container).
    pub dir_name: String,
    published: bool,
    /// Checksums the engine had taken while writing (see [`super::follow`]).
    prehashed: std::cell::RefCell<super::follow::Prehashed>,
}

impl Staged {
    /// Checksums taken while the engine wrote; sealing uses those of unchanged files.
    pub fn remember_sums(&self, sums: super::follow::Prehashed) {
        *self.prehashed.borrow_mut() = sums;
    }

    /// Removes everything the engine wrote, for it to start again.
    pub fn empty(&self) -> Result<()> {
        for e in std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read {}", self.dir.display()))?
        {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        *self.prehashed.borrow_mut() = Default::default();
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What [`Checkpoint::publish`] did.
#[derive(Debug)]
pub struct Published {
    pub number: u32,
    pub dir: PathBuf,
    pub size_bytes: u64,
    /// Pruned generations, renamed out of sight; free them with
    /// [`crate::store::remove_in_background`] once the lock is released.
    pub pruned: Vec<PathBuf>,
}

impl Checkpoint {
    /// Starts a new generation, numbered above every published one (even one that `latest`
    /// does not point at yet because rctr died just after publishing it). Leftovers of
    /// interrupted checkpoints are swept first.
    pub fn stage(&self, _lock: &StateLock) -> Result<Staged> {
        self.remove_stale_temporaries();
        let number = self.generations()?.last().copied().unwrap_or(0) + 1;
        let dir_name = format!(
            ".tmp-{}-{}",
            generation_dir_name(number),
            std::process::id()
        );
        let dir = self.dir().join(&dir_name);
        let _ = std::fs::remove_dir_all(&dir);
        rctr_state::ensure_private_dir(&dir)?;
        Ok(Staged {
            number,
            dir,
            dir_name,
            published: false,
            prehashed: Default::default(),
        })
    }

    /// Seals `staged` (every file 0600, durable, checksummed into the manifest), writes the
    /// manifest, publishes it by rename, points `latest` at it and prunes to `keep`
    /// generations (0 keeps all).
    pub fn publish(
        &self,
        _lock: &StateLock,
        mut staged: Staged,
        mut manifest: Manifest,
        keep: u32,
    ) -> Result<Published> {
        manifest.generation = staged.number;
        manifest.files = seal(&staged.dir, &staged.prehashed.borrow())?;
        manifest.size_bytes = dir_size(&staged.dir);
        write_json_atomic(&staged.dir.join("manifest.json"), &manifest)?;
        let final_dir = self.dir().join(generation_dir_name(staged.number));
        std::fs::rename(&staged.dir, &final_dir)
            .with_context(|| format!("cannot publish {}", final_dir.display()))?;
        staged.published = true;
        fsync_dir(self.dir())?;
        write_atomic(
            &self.dir().join("latest"),
            format!("{}\n", staged.number).as_bytes(),
            0o600,
        )?;
        let pruned = self.prune(keep)?;
        Ok(Published {
            number: staged.number,
            dir: final_dir,
            size_bytes: manifest.size_bytes,
            pruned,
        })
    }

    /// Keeps the newest `keep` generations (0 keeps all). Each is renamed out of sight at
    /// once (so a crash never leaves half a generation behind), and the renamed directories
    /// are returned for [`remove_in_background`].
    fn prune(&self, keep: u32) -> Result<Vec<PathBuf>> {
        if keep == 0 {
            return Ok(vec![]);
        }
        let all = self.generations()?;
        let excess = all.len().saturating_sub(keep as usize);
        let mut trash = vec![];
        for n in &all[..excess] {
            let from = self.dir().join(generation_dir_name(*n));
            let to = self
                .dir()
                .join(format!(".trash-{}", generation_dir_name(*n)));
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot prune {}", from.display()))?;
            trash.push(to);
        }
        fsync_dir(self.dir())?;
        Ok(trash)
    }

    /// Removes leftovers of interrupted checkpoints. Call with the lock held.
    fn remove_stale_temporaries(&self) {
        if let Ok(rd) = std::fs::read_dir(self.dir()) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// Deletes `dirs` in a detached process: freeing gigabytes of images takes the file system a
/// while, and nobody needs to wait for it. Whatever a killed remover leaves is swept by the
/// next checkpoint.
pub fn remove_in_background(dirs: Vec<PathBuf>) {
    if dirs.is_empty() {
        return;
    }
    let remove_all = |dirs: &[PathBuf]| {
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    };
    let detached = rctr_runtime::spawn::fork_detached(
        || Ok(()),
        || {
            // Nothing of the caller's: a pipe someone reads to its end (the checkpoint's
            // report, a shell's `$(...)`) would otherwise stay open until the files are gone.
            rctr_runtime::spawn::detach_stdio();
            rctr_runtime::spawn::close_fds_except(&[]);
            remove_all(&dirs);
            0
        },
    );
    if detached.is_err() {
        remove_all(&dirs);
    }
}

/// Every regular file under `dir`, by relative path. Anything else (a symlink, a device, a
/// FIFO) is refused: a generation holds data, and a link could point anywhere at restore.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = vec![];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for e in
            std::fs::read_dir(&here).with_context(|| format!("cannot read {}", here.display()))?
        {
            let e = e?;
            let rel = rel.join(e.file_name());
            let ft = e.file_type()?;
            if ft.is_dir() {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("cannot chmod {}", e.path().display()))?;
                stack.push(rel);
            } else if ft.is_file() {
                let Some(name) = rel.to_str() else {
                    bail!(
                        "checkpoint file {} has a name that is not UTF-8",
                        e.path().display()
                    );
                };
                out.push(name.to_string());
            } else {
                bail!(
                    "{} is not a regular file or directory (a generation holds no symlinks, devices or FIFOs)",
                    rel.display()
                );
            }
        }
    }
    Ok(out)
}

/// A file to write beside another: its name and bytes.
type Sidecar = (String, Vec<u8>);

/// The checksum of file `name` at `path` and, for a memory image of several pieces, its
/// sidecar (name and bytes) of piece checksums. Taken while the engine wrote when the file
/// has not changed since, else read now.
fn sum_with_pieces(
    name: &str,
    path: &Path,
    prehashed: &super::follow::Prehashed,
) -> Result<(FileSum, Option<Sidecar>)> {
    if !chunk_sums::is_memory_image(name) {
        return match prehashed.sum_if_unchanged(name, path) {
            Some(sum) => Ok((sum, None)),
            None => Ok((hash_file(path)?, None)),
        };
    }
    let (sum, chunks) = match prehashed.sums_if_unchanged(name, path) {
        Some(found) => found,
        None => {
            let (size, blake3, chunks) = chunk_sums::hash_file_chunked(path)?;
            (FileSum { size, blake3 }, chunks)
        }
    };
    let sidecar = chunks.map(|c| (chunk_sums::sidecar_name(name), c.to_bytes()));
    Ok((sum, sidecar))
}

/// Makes every file private (0600: they hold process memory), durable, and checksummed.
/// Hashing is CPU work and fsync waits for the disk, so a second thread syncs each file
/// while the next one is being hashed.
fn seal(dir: &Path, prehashed: &super::follow::Prehashed) -> Result<BTreeMap<String, FileSum>> {
    let mut names = files_under(dir)?;
    // Biggest first: the disk starts on the bulk of the data at once.
    names.sort_by_key(|n| {
        std::cmp::Reverse(std::fs::metadata(dir.join(n)).map(|m| m.len()).unwrap_or(0))
    });
    let (to_sync, synced) = std::sync::mpsc::channel::<PathBuf>();
    let sums = std::thread::scope(|scope| -> Result<BTreeMap<String, FileSum>> {
        let syncer = scope.spawn(move || -> Result<()> {
            for path in synced {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("cannot chmod {}", path.display()))?;
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("cannot sync {}", path.display()))?;
            }
            Ok(())
        });
        let mut sums = BTreeMap::new();
        let mut failure = None;
        for name in &names {
            let path = dir.join(name);
            if to_sync.send(path.clone()).is_err() {
                break; // the syncer failed: its error is reported below
            }
            let sidecar = match sum_with_pieces(name, &path, prehashed) {
                Ok((sum, sidecar)) => {
                    sums.insert(name.clone(), sum);
                    sidecar
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            // A memory image's piece checksums go beside it, sealed like the rest.
            if let Some((side_name, bytes)) = sidecar {
                let side_path = dir.join(&side_name);
                if let Err(e) = std::fs::write(&side_path, &bytes)
                    .with_context(|| format!("cannot write {}", side_path.display()))
                {
                    failure = Some(e);
                    break;
                }
                if to_sync.send(side_path).is_err() {
                    break;
                }
                sums.insert(
                    side_name,
                    FileSum {
                        size: bytes.len() as u64,
                        blake3: blake3::hash(&bytes).to_hex().to_string(),
                    },
                );
            }
        }
        drop(to_sync);
        let synced = syncer
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the sync thread panicked")));
        if let Some(e) = failure {
            return Err(e);
        }
        synced?;
        Ok(sums)
    })?;
    // Subdirectories' entries must be durable too, not only the top level.
    let mut dirs: Vec<PathBuf> = names
        .iter()
        .filter_map(|n| Path::new(n).parent().map(|p| dir.join(p)))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        fsync_dir(&d)?;
    }
    Ok(sums)
}
