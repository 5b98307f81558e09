//! `instance start --ckpt-launch` and `--ckpt-restart`, for every engine.

use crate::conf::CkptConf;
use crate::engine::{engine_for, LAUNCH_GRACE};
use crate::store::CheckpointStore;
use anyhow::{bail, Result};
use rctr_instance::{InstanceRecord, Instances, StartRequest};
use rctr_runtime::launch::AppStart;
use rctr_runtime::plan::ContainerPlan;
use std::path::Path;

/// Starts an instance with checkpoint `checkpoint`'s engine injected; `conf_path` is
/// `--ckpt-conf`.
pub fn launch(
    instances: &Instances,
    conf_path: Option<&Path>,
    checkpoint: &str,
    name: &str,
    args: Vec<String>,
    mut plan: ContainerPlan,
) -> Result<InstanceRecord> {
    let ckpt = CheckpointStore::for_current_user()?.open(checkpoint)?;
    let conf = CkptConf::load_for(conf_path, ckpt.engine())?;
    engine_for(ckpt.engine(), &conf)?.inject(&mut plan, &ckpt)?;
    instances.start(StartRequest {
        name: name.to_string(),
        args,
        plan,
        checkpoint: Some(checkpoint.to_string()),
        start: AppStart::Exec,
        grace: LAUNCH_GRACE,
    })
}

/// Which generation to restore, and whether to skip the image check.
#[derive(Debug, Clone, Default)]
pub struct RestartOptions {
    pub generation: Option<u32>,
    pub force: bool,
}

/// Starts a new instance from a verified generation of `checkpoint`.
pub fn restart(
    instances: &Instances,
    conf_path: Option<&Path>,
    checkpoint: &str,
    name: &str,
    args: Vec<String>,
    requested: ContainerPlan,
    opts: &RestartOptions,
) -> Result<InstanceRecord> {
    let ckpt = CheckpointStore::for_current_user()?.open(checkpoint)?;
    let conf = CkptConf::load_for(conf_path, ckpt.engine())?;
    let engine = engine_for(ckpt.engine(), &conf)?;
    // Not while a checkpoint is being written or the checkpoint deleted.
    let _lock = ckpt.lock()?;
    let g = ckpt.select(opts.generation)?;
    ckpt.verify(&g, Some(&requested.root), opts.force)?;
    if !opts.force
        && (!same_file(&requested.root.path, &g.manifest.plan.root.path)
            && g.manifest.image_digest.is_none())
    {
        bail!(
            "checkpoint '{checkpoint}' was taken from image {}, not {}: restart it with the same image",
            g.manifest.plan.root.path.display(),
            requested.root.path.display()
        );
    }
    let restore = engine.restore(&ckpt, &g, requested)?;
    instances.start(StartRequest {
        name: name.to_string(),
        args,
        plan: restore.plan,
        checkpoint: Some(checkpoint.to_string()),
        start: restore.start,
        grace: restore.grace,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
