//! `checkpoint instance`: dump a running instance into a new generation.

use crate::bundle::EngineBundle;
use crate::engine_run::{engine_failure, run_in_container};
use crate::inject::{bundle_dir_of, CKPT_MOUNT, ENGINE_MOUNT};
use crate::integrity::{hash_file, image_digest, FileSum};
use crate::stats::read_dump_stats;
use crate::store::{
    dir_size, generation_dir_name, next_generation, now, prune, remove_in_background,
    remove_stale_temporaries, set_latest, CheckpointStore, Manifest, ENGINE,
};
use anyhow::{bail, Context, Result};
use rctr_instance::{stop_record, Instances, StopOptions};
use rctr_state::{fsync_dir, lock_exclusive, try_lock_exclusive, write_json_atomic};
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct DumpReport {
    pub checkpoint: String,
    pub instance: String,
    pub generation: u32,
    pub size_bytes: u64,
    /// How long the application was frozen, as the engine measured it.
    pub frozen_ms: Option<f64>,
    pub wall_ms: u64,
    pub stopped: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Stop the instance after a successful checkpoint.
    pub stop: bool,
    /// Generations to keep (0: all); None uses the configuration's default.
    pub keep: Option<u32>,
    /// Fail at once instead of waiting when another checkpoint is running.
    pub no_wait: bool,
}

pub fn checkpoint_instance(
    instances: &Instances,
    instance: &str,
    opts: &DumpOptions,
    default_keep: u32,
) -> Result<DumpReport> {
    let stop = opts.stop;
    let started = Instant::now();
    let rec = instances.get(instance)?;
    let Some(name) = rec.checkpoint.clone() else {
        bail!("instance '{instance}' was not started with --ckpt-launch or --ckpt-restart, so it cannot be checkpointed: start it with `rctr instance start --ckpt-launch NAME ...`");
    };
    let store = CheckpointStore::for_current_user()?;
    let dir = store.open(&name)?;
    // One dump at a time per checkpoint: a second caller waits here (or leaves).
    let lock = if opts.no_wait {
        match try_lock_exclusive(&dir.join(".lock"))? {
            Some(l) => l,
            None => bail!("checkpoint '{name}' is busy (another checkpoint or restore is running): retry, or drop --no-wait to wait"),
        }
    } else {
        lock_exclusive(&dir.join(".lock"))?
    };
    remove_stale_temporaries(&dir);
    let bundle = EngineBundle::open(&bundle_dir_of(&rec.plan)?)?;
    let generation = next_generation(&dir)?;
    let tmp_name = format!(
        ".tmp-{}-{}",
        generation_dir_name(generation),
        std::process::id()
    );
    let tmp = dir.join(&tmp_name);
    let _ = std::fs::remove_dir_all(&tmp);
    rctr_state::ensure_private_dir(&tmp)?;
    let cleanup = TmpGuard(&tmp);

    let stdout_pipe = pipe_identity(rec.app_host_pid, 1);
    let stderr_pipe = pipe_identity(rec.app_host_pid, 2);
    let log_name = format!("dump-{}.log", generation_dir_name(generation));
    let args: Vec<String> = [
        "dump",
        "-t",
        &rec.app_pid.to_string(),
        "-D",
        &format!("{CKPT_MOUNT}/{tmp_name}"),
        "-o",
        &format!("{CKPT_MOUNT}/logs/{log_name}"),
        "-v2",
        "--leave-running",
        "--tcp-established",
        "--file-locks",
        "--network-lock",
        "nftables",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let argv = bundle.command_argv(ENGINE_MOUNT, ENGINE, &args)?;
    let code = run_in_container(rec.init_pid, rec.plan.net_ns, &argv)?;
    let log = dir.join("logs").join(&log_name);
    if code != 0 {
        bail!(
            "checkpoint of instance '{instance}' failed: {} (full log: {}); the previous checkpoint is unchanged",
            engine_failure(code, &log),
            log.display()
        );
    }
    let stats = read_dump_stats(&tmp);
    let files = seal_images(&tmp)?;
    let cache = rctr_state::StateRoot::for_current_user()?.private_subdir("cache")?;
    let image_digest = image_digest(&rec.plan.root, &cache)?;
    let mut manifest = Manifest {
        generation,
        engine: ENGINE.to_string(),
        created: now(),
        instance: instance.to_string(),
        image: rec.plan.image_display.clone(),
        plan: rec.plan.clone(),
        stdout_pipe,
        stderr_pipe,
        size_bytes: 0,
        frozen_us: stats.map(|s| s.frozen_us),
        wall_ms: 0,
        image_digest,
        files,
    };
    manifest.size_bytes = dir_size(&tmp);
    manifest.wall_ms = started.elapsed().as_millis() as u64;
    write_json_atomic(&tmp.join("manifest.json"), &manifest)?;
    let final_dir = dir.join(generation_dir_name(generation));
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("cannot publish {}", final_dir.display()))?;
    std::mem::forget(cleanup);
    fsync_dir(&dir)?;
    set_latest(&dir, generation)?;
    let pruned = prune(&dir, opts.keep.unwrap_or(default_keep))?;

    drop(lock);
    remove_in_background(pruned);

    if stop {
        stop_record(&rec, &StopOptions::default())?;
        instances.remove(instance)?;
    }
    Ok(DumpReport {
        checkpoint: name,
        instance: instance.to_string(),
        generation,
        size_bytes: manifest.size_bytes,
        frozen_ms: manifest.frozen_us.map(|us| us as f64 / 1000.0),
        wall_ms: started.elapsed().as_millis() as u64,
        stopped: stop,
    })
}

/// `pipe:[inode]` of the application's stdout or stderr, as CRIU names it.
fn pipe_identity(host_pid: i32, fd: i32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{host_pid}/fd/{fd}")).ok()?;
    let s = target.to_string_lossy().into_owned();
    s.starts_with("pipe:").then_some(s)
}

/// Makes every image file private (0600: they hold process memory), durable,
/// and checksummed. Hashing is CPU work and fsync waits for the disk, so a
/// second thread syncs each file while the next one is being hashed.
fn seal_images(dir: &Path) -> Result<BTreeMap<String, FileSum>> {
    let mut names = vec![];
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
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
            match hash_file(&path) {
                Ok(sum) => {
                    sums.insert(name.clone(), sum);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
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
    fsync_dir(dir)?;
    Ok(sums)
}

/// Removes a half-written generation unless disarmed.
struct TmpGuard<'a>(&'a Path);

impl Drop for TmpGuard<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}
