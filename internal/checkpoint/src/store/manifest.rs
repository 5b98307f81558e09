//! What a generation records about itself, beside the engine's files.

use crate::engine::EngineKind;
use crate::integrity::FileSum;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Facts about one generation, written beside the engine's images as `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub generation: u32,
    pub engine: EngineKind,
    pub created: u64,
    pub instance: String,
    pub image: String,
    /// The container as it was built: a restart rebuilds exactly these mounts.
    pub plan: rctr_runtime::plan::ContainerPlan,
    pub size_bytes: u64,
    pub frozen_us: Option<u64>,
    pub wall_ms: u64,
    /// Digest of the container image's filesystem (None for directory images).
    #[serde(default)]
    pub image_digest: Option<String>,
    /// Every file of the generation (relative path) with its size and checksum.
    #[serde(default)]
    pub files: BTreeMap<String, FileSum>,
    /// What only the engine that wrote the generation needs to restore it.
    pub engine_data: EngineData,
    /// The host it was taken on, for the restore preflight (None: taken before it existed).
    #[serde(default)]
    pub host: Option<crate::preflight::HostFacts>,
}

/// Engine-specific facts of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase")]
pub enum EngineData {
    Criu(CriuData),
    /// The application's own files are everything: nothing else is needed.
    App,
}

/// CRIU: how to reconnect the application's output on restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriuData {
    /// The host pipe identities of the application's stdout/stderr at dump time
    /// (e.g. `pipe:[1234]`), handed to CRIU as inherited descriptors on restore.
    pub stdout_pipe: Option<String>,
    pub stderr_pipe: Option<String>,
    /// Files open on writable binds, as they were: a restart refuses changed ones.
    #[serde(default)]
    pub open_files: Vec<crate::criu::open_files::OpenFile>,
    /// The container's private tmpfs mounts, saved as archives in the generation.
    #[serde(default)]
    pub tmpfs: Vec<crate::criu::tmpfs::TmpfsSnapshot>,
    /// nftables lock tables CRIU kept after killing the application, holding its TCP
    /// connections for a live (`--tcp-established`) restore, which releases them.
    #[serde(default)]
    pub held_network_locks: Vec<String>,
    /// The GPU and driver the application's CUDA processes were saved from, if it had any.
    #[serde(default)]
    pub gpu: Option<Box<crate::criu::cuda::GpuFacts>>,
    /// The directory in the generation holding `criu cpuinfo dump`'s record of the CPU.
    #[serde(default)]
    pub cpu: Option<String>,
}

/// A published generation and its manifest.
#[derive(Debug, Clone)]
pub struct Generation {
    pub number: u32,
    pub dir: PathBuf,
    pub manifest: Manifest,
}
