//! The checkpoint engine interface: what every engine does for rctr, whatever its mechanism.
//!
//! The store ([`crate::store`]) owns everything on disk and the guarantees (numbering,
//! staging, checksums, atomic publish, pruning); an engine only fills a staged directory with
//! an application's state and, later, brings the application back from a published one.
//! [`crate::criu`] does it transparently with CRIU; [`crate::app`] asks the application to
//! write its own state.

use crate::conf::CkptConf;
use crate::preflight::HostFacts;
use crate::store::{Checkpoint, EngineData, Generation, Staged};
use anyhow::{bail, Result};
use rctr_instance::InstanceRecord;
use rctr_runtime::launch::AppStart;
use rctr_runtime::plan::ContainerPlan;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Which engine a checkpoint uses; fixed when the checkpoint is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// CRIU: the whole process tree, transparently, as root.
    Criu,
    /// The application writes and reads its own state (no privileges, any kernel).
    App,
}

impl EngineKind {
    pub const ALL: [EngineKind; 2] = [EngineKind::Criu, EngineKind::App];

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Criu => "criu",
            EngineKind::App => "app",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "criu" => Ok(EngineKind::Criu),
            "app" => Ok(EngineKind::App),
            _ => bail!("unknown checkpoint engine {s:?}: use criu or app"),
        }
    }
}

/// What a successful dump hands back to the store, beside the files it wrote.
#[derive(Debug, Clone)]
pub struct Dumped {
    /// The engine's own facts about this generation, kept in the manifest.
    pub data: EngineData,
    /// How long the application was frozen, when the engine froze it and measured it.
    pub frozen_us: Option<u64>,
}

/// How a dump treats the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpMode {
    /// Keep the application running after the checkpoint (false: it is about to be stopped).
    pub leave_running: bool,
    /// The application had no TCP connection just before the dump (listening sockets
    /// only), so there is nothing to hold still on the network. Set by [`crate::dump`].
    pub no_tcp_connections: bool,
}

impl Default for DumpMode {
    fn default() -> Self {
        DumpMode {
            leave_running: true,
            no_tcp_connections: false,
        }
    }
}

/// What a restart asks of the engine beyond the generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreFlags {
    /// Accept what the engine would otherwise refuse (files changed since the checkpoint).
    pub force: bool,
    /// Restore established TCP connections live instead of closed (the peer must still be
    /// there: the application's own processes, or a client that kept its connection).
    pub tcp_established: bool,
    /// Bring the application's memory in while it runs (CRIU lazy-pages) rather than all
    /// of it before.
    pub lazy_pages: bool,
}

/// How a restarted container is built and its application brought back.
pub struct Restore {
    pub plan: ContainerPlan,
    pub start: AppStart,
    /// The longest to watch for an application that fails at once (zero: not watched).
    pub settle_limit: Duration,
}

/// One checkpoint mechanism. Implementations hold their configuration; the store and the
/// orchestration in [`crate::dump`] and [`crate::restore`] hold everything else.
pub trait CheckpointEngine {
    fn kind(&self) -> EngineKind;

    /// Adds what the engine needs to a container whose application will be checkpointed into
    /// `ckpt` (mounts, environment). Used at launch and again at every restart.
    fn inject(&self, plan: &mut ContainerPlan, ckpt: &Checkpoint) -> Result<()>;

    /// Writes the state of the running instance `target` into `staged`. With
    /// `mode.leave_running` false the engine may leave the application stopped (CRIU does:
    /// nothing it does after the checkpoint is seen); the caller then ends it with SIGKILL. On error the store discards `staged`, the application is left running, and the
    /// error says why in one line (the engine's explanation, with where its log is).
    fn dump(
        &self,
        target: &InstanceRecord,
        ckpt: &Checkpoint,
        staged: &Staged,
        mode: DumpMode,
    ) -> Result<Dumped>;

    /// The engine's version on this host, recorded with every generation (`cache`: the
    /// user's private cache).
    fn version(&self, cache: &std::path::Path) -> Option<String>;

    /// How this host differs from `then`, the host generation `g` was taken on, in ways the
    /// engine's restore depends on: one phrase each, empty when nothing matters. The
    /// listening addresses are checked for every engine by [`crate::preflight`].
    fn host_differences(
        &self,
        _ckpt: &Checkpoint,
        _g: &Generation,
        _then: &HostFacts,
    ) -> Vec<String> {
        vec![]
    }

    /// The container to start for a restart from `generation` (already verified, as
    /// `checked` says) and how its application comes back. `requested` is the container
    /// the user asked for now.
    fn restore(
        &self,
        ckpt: &Checkpoint,
        generation: &Generation,
        requested: ContainerPlan,
        how: RestoreFlags,
        checked: crate::store::Checked,
    ) -> Result<Restore>;

    /// Finishes a restore once the restarted application runs (`started`): what must happen
    /// from the host afterwards (CRIU: CUDA processes get their GPU state back).
    fn after_restore(&self, _generation: &Generation, _started: &InstanceRecord) -> Result<()> {
        Ok(())
    }
}

/// The engine for `ckpt`, configured from `conf`.
pub fn engine_for(kind: EngineKind, conf: &CkptConf) -> Result<Box<dyn CheckpointEngine>> {
    Ok(match kind {
        EngineKind::Criu => Box::new(crate::criu::CriuEngine::new(conf.criu()?)),
        EngineKind::App => Box::new(crate::app::AppEngine::new(conf.app.clone())),
    })
}

/// The longest a freshly launched application is watched for an immediate failure.
pub const LAUNCH_SETTLE_LIMIT: Duration = rctr_runtime::launch::SETTLE_LIMIT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names_round_trip() {
        for k in EngineKind::ALL {
            assert_eq!(k.as_str().parse::<EngineKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        let err = "dmtcp".parse::<EngineKind>().unwrap_err().to_string();
        assert!(
            err.contains("dmtcp") && err.contains("criu or app"),
            "{err}"
        );
    }
}
