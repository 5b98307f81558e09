//! The application-level engine: the application writes its own state.
//!
//! Contract (docs/checkpoint.md has a complete example):
//! - Launched or restarted with a checkpoint, the application sees `RCTR_CKPT_DIR`. When rctr
//!   checkpoints it, rctr creates that directory empty and sends the configured signal
//!   (default SIGUSR1) to the application (pid 2 of the container, the process the startscript
//!   or runscript exec'd).
//! - The application writes its state there (regular files and directories only), then
//!   creates the empty file `.done` last. To give up, it creates `.failed` holding a one-line
//!   reason instead. rctr then seals and publishes the files as a generation, exactly like a
//!   CRIU one; the application must not touch them after `.done`.
//! - Restarted with `--ckpt-restart`, the application is started again (with the arguments
//!   given now) and sees `RCTR_RESTORE_DIR`: the generation to resume from, read-only.
//! - No answer within the timeout, an application that exits while writing, or nothing
//!   written: the checkpoint fails with one line and the previous generation stays newest.
//!
//! It needs no privileges and no kernel support beyond running the container.

mod handover;

use crate::conf::AppSettings;
use crate::engine::{CheckpointEngine, DumpMode, Dumped, EngineKind, Restore, LAUNCH_SETTLE_LIMIT};
use crate::store::{Checkpoint, EngineData, Generation, Staged};
use anyhow::Result;
use rctr_instance::InstanceRecord;
use rctr_runtime::launch::AppStart;
use rctr_runtime::plan::{ContainerPlan, MountEntry};
use std::path::{Path, PathBuf};

/// Environment variable naming the directory to write a checkpoint into.
pub const ENV_CKPT_DIR: &str = "RCTR_CKPT_DIR";
/// Environment variable naming the generation to resume from.
pub const ENV_RESTORE_DIR: &str = "RCTR_RESTORE_DIR";
/// Where the generation to resume from appears inside the container.
pub const RESTORE_MOUNT: &str = "/.rctr-restore";
/// The file the application creates when its checkpoint is complete.
pub const DONE_MARKER: &str = ".done";
/// The file the application creates, holding a reason, when it cannot checkpoint.
pub const FAILED_MARKER: &str = ".failed";
/// Name of the per-checkpoint directory inside the hand-over directory.
const CURRENT: &str = "current";

pub struct AppEngine {
    settings: AppSettings,
}

impl AppEngine {
    pub fn new(settings: AppSettings) -> Self {
        AppEngine { settings }
    }

    /// `$RCTR_CKPT_DIR` as the application sees it.
    fn ckpt_dir_in_container(&self) -> PathBuf {
        self.settings.dir.join(CURRENT)
    }
}

/// The host side of the hand-over directory: only it is mounted (read-write) into the
/// container, never the checkpoint directory with its published generations.
pub fn exchange_dir(ckpt: &Checkpoint) -> PathBuf {
    ckpt.dir().join("exchange")
}

impl CheckpointEngine for AppEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::App
    }

    fn inject(&self, plan: &mut ContainerPlan, ckpt: &Checkpoint) -> Result<()> {
        let exchange = exchange_dir(ckpt);
        rctr_state::ensure_private_dir(&exchange)?;
        let dst = self.settings.dir.clone();
        plan.mounts.retain(|m| m.dst != dst);
        plan.mounts.push(MountEntry::bind(&exchange, &dst, false));
        set_env(plan, ENV_CKPT_DIR, &self.ckpt_dir_in_container());
        Ok(())
    }

    /// The application's own files are the checkpoint: what matters is the protocol, rctr's.
    fn version(&self, _cache: &Path) -> Option<String> {
        Some(format!("rctr {}", env!("CARGO_PKG_VERSION")))
    }

    /// The application keeps running whatever `mode` says: the caller stops it.
    fn dump(
        &self,
        target: &InstanceRecord,
        ckpt: &Checkpoint,
        staged: &Staged,
        _mode: DumpMode,
    ) -> Result<Dumped> {
        rctr_log::debug!(
            "checkpoint engine (app): signal {:?} to pid {} of instance {}, wait up to {:?}",
            self.settings.signal,
            target.app_host_pid,
            target.name,
            self.settings.timeout
        );
        handover::collect(
            &handover::Request {
                exchange: exchange_dir(ckpt),
                current: CURRENT,
                in_container: self.ckpt_dir_in_container(),
                instance: &target.name,
                app_host_pid: target.app_host_pid,
                signal: self.settings.signal,
                timeout: self.settings.timeout,
            },
            &staged.dir,
        )?;
        Ok(Dumped {
            data: EngineData::App,
            frozen_us: None,
        })
    }

    /// The application starts again, in the container asked for now, with the generation
    /// mounted read-only: an application-level checkpoint does not depend on the old mounts.
    fn restore(
        &self,
        ckpt: &Checkpoint,
        g: &Generation,
        requested: ContainerPlan,
        _how: crate::engine::RestoreFlags,
        _checked: crate::store::Checked,
    ) -> Result<Restore> {
        let mut plan = requested;
        rctr_log::debug!(
            "checkpoint engine (app): restart with generation {} mounted at {RESTORE_MOUNT}",
            g.dir.display()
        );
        self.inject(&mut plan, ckpt)?;
        plan.mounts.retain(|m| m.dst != Path::new(RESTORE_MOUNT));
        plan.mounts
            .push(MountEntry::bind(&g.dir, RESTORE_MOUNT, true));
        set_env(&mut plan, ENV_RESTORE_DIR, Path::new(RESTORE_MOUNT));
        Ok(Restore {
            plan,
            start: AppStart::Exec,
            settle_limit: LAUNCH_SETTLE_LIMIT,
        })
    }
}

/// Sets `key` in the container's environment, after the image's own env scripts too.
fn set_env(plan: &mut ContainerPlan, key: &str, value: &Path) {
    let value = value.to_string_lossy().into_owned();
    for list in [&mut plan.env, &mut plan.env_overrides] {
        list.retain(|(k, _)| k != key);
        list.push((key.to_string(), value.clone()));
    }
}
