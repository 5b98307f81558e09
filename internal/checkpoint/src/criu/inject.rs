//! What `--ckpt-launch` / `--ckpt-restart` add to a container: the engine
//! bundle (read-only, one bind mount), the checkpoint directory, and the engine's
//! kernel-feature cache when the host has one (see [`super::kdat`]).

use anyhow::{Context, Result};
use rctr_runtime::plan::{ContainerPlan, MountEntry, MountSource};
use std::path::{Path, PathBuf};

/// Where the engine bundle appears inside the container.
pub const ENGINE_MOUNT: &str = rctr_runtime::plan::ENGINE_MOUNT;
/// Where the checkpoint directory appears inside the container (as with Apptainer's DMTCP support).
pub const CKPT_MOUNT: &str = "/.checkpoint";

/// Where the engine's kernel-feature cache appears inside the container.
pub const KDAT_MOUNT: &str = super::kdat::CONTAINER_PATH;

/// Whether `dst` is one of the mounts rctr adds for the engine (not the user's).
pub fn is_engine_mount(dst: &Path) -> bool {
    [ENGINE_MOUNT, CKPT_MOUNT, KDAT_MOUNT]
        .iter()
        .any(|m| dst == Path::new(m))
}

/// Adds (or replaces) the engine, checkpoint and kernel-feature cache mounts of a plan.
pub fn add_checkpoint_mounts(
    plan: &mut ContainerPlan,
    bundle_dir: &Path,
    ckpt_dir: &Path,
    kdat: Option<&Path>,
) {
    plan.mounts.retain(|m| !is_engine_mount(&m.dst));
    plan.mounts
        .push(MountEntry::bind(bundle_dir, ENGINE_MOUNT, true));
    plan.mounts
        .push(MountEntry::bind(ckpt_dir, CKPT_MOUNT, false));
    if let Some(kdat) = kdat {
        plan.mounts.push(MountEntry::bind(kdat, KDAT_MOUNT, true));
    }
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
