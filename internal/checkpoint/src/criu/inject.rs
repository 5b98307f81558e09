//! What `--ckpt-launch` / `--ckpt-restart` add to a container: the engine
//! bundle (read-only, one bind mount) and the checkpoint directory.

use anyhow::{Context, Result};
use rctr_runtime::plan::{ContainerPlan, MountEntry, MountSource};
use std::path::{Path, PathBuf};

/// Where the engine bundle appears inside the container.
pub const ENGINE_MOUNT: &str = rctr_runtime::plan::ENGINE_MOUNT;
/// Where the checkpoint directory appears inside the container (as with Apptainer's DMTCP support).
pub const CKPT_MOUNT: &str = "/.checkpoint";

/// Adds (or replaces) the engine and checkpoint mounts of a plan.
pub fn add_checkpoint_mounts(plan: &mut ContainerPlan, bundle_dir: &Path, ckpt_dir: &Path) {
    plan.mounts
        .retain(|m| m.dst != Path::new(ENGINE_MOUNT) && m.dst != Path::new(CKPT_MOUNT));
    plan.mounts
        .push(MountEntry::bind(bundle_dir, ENGINE_MOUNT, true));
    plan.mounts
        .push(MountEntry::bind(ckpt_dir, CKPT_MOUNT, false));
}

/// The host directory of the engine bundle injected into an instance.
pub fn bundle_dir_of(plan: &ContainerPlan) -> Result<PathBuf> {
    plan.mounts
        .iter()
        .find_map(|m| match &m.source {
            MountSource::Bind { src } if m.dst == Path::new(ENGINE_MOUNT) => Some(src.clone()),
            _ => None,
        })
        .context("the instance has no checkpoint engine mounted")
}
