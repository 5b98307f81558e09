//! `checkpoint instance`: take a new generation of a running instance, with whichever engine
//! its checkpoint uses. The engine fills a staged directory; the store seals and publishes it.

use crate::app_sockets::tcp_sockets;
use crate::conf::CkptConf;
use crate::engine::{engine_for, CheckpointEngine, DumpMode};
use crate::integrity::image_digest;
use crate::preflight::{listening_sockets, HostFacts};
use crate::procfs::container_pids;
use crate::store::{now, remove_in_background, Checkpoint, CheckpointStore, Manifest};
use anyhow::{anyhow, bail, Result};
use rctr_instance::{stop_record, InstanceRecord, Instances, StopOptions};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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
    /// How the engine treats the application (a job about to stop lets CRIU end it).
    pub mode: DumpMode,
}

/// Checkpoints instance `instance` into the checkpoint it was launched with; `conf_path` is
/// `--ckpt-conf`.
pub fn checkpoint_instance(
    instances: &Instances,
    instance: &str,
    opts: &DumpOptions,
    conf_path: Option<&Path>,
) -> Result<DumpReport> {
    let rec = instances.get(instance)?;
    let Some(name) = rec.checkpoint.clone() else {
        bail!("instance '{instance}' was not started with --ckpt-launch or --ckpt-restart, so it cannot be checkpointed: start it with `rctr instance start --ckpt-launch NAME ...`");
    };
    let store = CheckpointStore::for_current_user()?;
    if !store.exists(&name)? {
        bail!("instance '{instance}' was started with checkpoint '{name}', which has been deleted: restart the instance with `--ckpt-launch NEW` to checkpoint it again");
    }
    let ckpt = store.open(&name)?;
    if !ckpt.is_used_by(&rec) {
        bail!("instance '{instance}' was started with an earlier checkpoint named '{name}', deleted since (the '{name}' there now is another one): restart the instance with `--ckpt-launch {name}` to checkpoint into it");
    }
    let conf = CkptConf::load_for(conf_path, ckpt.engine())?;
    let engine = engine_for(ckpt.engine(), &conf)?;
    let mut report = detached(|| take(&ckpt, engine.as_ref(), &rec, opts, conf.keep))?;
    if opts.stop {
        // An application the engine left stopped cannot take a gentler signal.
        let stop = StopOptions {
            force: !opts.mode.leave_running,
            ..StopOptions::default()
        };
        stop_record(&rec, &stop)?;
        instances.remove(instance)?;
        report.stopped = true;
    }
    Ok(report)
}

/// Runs `work` (a checkpoint) in a process of its own session and waits for its report.
///
/// A batch system that runs out of patience kills the whole process group of the command
/// (Slurm after GraceTime); the checkpoint, its engine included, is out of that group's
/// reach and runs to its end: published, or failed with everything cleaned up and the
/// application running. The caller being killed only means nobody reads the report.
fn detached(work: impl FnOnce() -> Result<DumpReport>) -> Result<DumpReport> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| anyhow!("cannot create a pipe: {e}"))?;
    rctr_runtime::spawn::fork_detached(
        || Ok(()),
        move || {
            let report = match work() {
                Ok(r) => serde_json::json!({ "ok": r }),
                Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
            };
            let mut out = std::fs::File::from(write_end);
            match std::io::Write::write_all(&mut out, report.to_string().as_bytes()) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        },
    )?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(read_end), &mut text)
        .map_err(|e| anyhow!("cannot read the checkpoint's report: {e}"))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|_| anyhow!("the checkpoint process died without a report"))?;
    if let Some(e) = value.get("error").and_then(|e| e.as_str()) {
        bail!("{e}");
    }
    serde_json::from_value(value["ok"].clone())
        .map_err(|e| anyhow!("bad report from the checkpoint process: {e}"))
}

/// Takes one generation of `target` with `engine`: lock, stage, dump, seal, publish, prune.
/// Whatever fails, the previous generation stays the newest and intact.
pub fn take(
    ckpt: &Checkpoint,
    engine: &dyn CheckpointEngine,
    target: &InstanceRecord,
    opts: &DumpOptions,
    default_keep: u32,
) -> Result<DumpReport> {
    let started = Instant::now();
    // One dump at a time per checkpoint: a second caller waits here (or leaves).
    let lock = if opts.no_wait {
        ckpt.try_lock()?
    } else {
        ckpt.lock()?
    };
    let staged = ckpt.stage(&lock)?;
    // Read while the application still runs (a dump may end it).
    let pids = container_pids(target.init_pid);
    let (listening, mode) = match tcp_sockets(&pids) {
        Ok(s) => (
            s.listening,
            DumpMode {
                no_tcp_connections: s.connections == 0,
                ..opts.mode
            },
        ),
        Err(e) => {
            rctr_log::debug!("reading the application's sockets from /proc instead: {e:#}");
            (listening_sockets(&pids), opts.mode)
        }
    };
    let dumped = engine.dump(target, ckpt, &staged, mode)?;
    let host = HostFacts::here(engine.version(ckpt.cache_dir()), listening);
    let manifest = Manifest {
        generation: staged.number,
        engine: engine.kind(),
        created: now(),
        instance: target.name.clone(),
        image: target.plan.image_display.clone(),
        plan: target.plan.clone(),
        size_bytes: 0,
        frozen_us: dumped.frozen_us,
        wall_ms: started.elapsed().as_millis() as u64,
        image_digest: image_digest(&target.plan.root, ckpt.cache_dir())?,
        files: Default::default(),
        engine_data: dumped.data,
        host: Some(host),
    };
    let published = ckpt
        .publish(&lock, staged, manifest, opts.keep.unwrap_or(default_keep))
        .map_err(|e| {
            anyhow!(
                "checkpoint of instance '{}' failed: {e:#}; the previous checkpoint is unchanged",
                target.name
            )
        })?;
    drop(lock);
    remove_in_background(published.pruned);
    Ok(DumpReport {
        checkpoint: ckpt.name().to_string(),
        instance: target.name.clone(),
        generation: published.number,
        size_bytes: published.size_bytes,
        frozen_ms: dumped.frozen_us.map(|us| us as f64 / 1000.0),
        wall_ms: started.elapsed().as_millis() as u64,
        stopped: false,
    })
}
