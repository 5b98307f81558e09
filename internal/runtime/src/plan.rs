//! A container plan: everything needed to build a container's filesystem and
//! start its process. It is serializable because instances record it, and a
//! checkpoint restart must rebuild exactly the same mounts as the original.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    /// A squashfs filesystem at `offset` inside `path` (a SIF or a plain squashfs file).
    Squashfs,
    /// A directory tree (sandbox).
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSource {
    pub kind: RootKind,
    pub path: PathBuf,
    #[serde(default)]
    pub offset: u64,
    /// 0 means "to the end of the file".
    #[serde(default)]
    pub size: u64,
}

/// What gets mounted at a destination inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum MountSource {
    /// A host path bind-mounted (recursively).
    Bind { src: PathBuf },
    /// An empty private tmpfs.
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub dst: PathBuf,
    pub readonly: bool,
}

impl MountEntry {
    pub fn bind(src: impl Into<PathBuf>, dst: impl Into<PathBuf>, readonly: bool) -> Self {
        MountEntry {
            source: MountSource::Bind { src: src.into() },
            dst: dst.into(),
            readonly,
        }
    }
    pub fn tmpfs(dst: impl Into<PathBuf>) -> Self {
        MountEntry {
            source: MountSource::Tmpfs,
            dst: dst.into(),
            readonly: false,
        }
    }
}

/// Contents of generated identity files bound over the image's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub root: RootSource,
    /// Image path as the user gave it (for display and instance listings).
    pub image_display: String,
    /// Mounts on top of the image, applied in order (parents before children).
    pub mounts: Vec<MountEntry>,
    /// Overlay a writable tmpfs on the image.
    pub writable_tmpfs: bool,
    /// Add the calling user to the image's /etc/passwd and /etc/group.
    pub identity: Option<Identity>,
    /// Working directory inside the container (falls back to home, then /).
    pub cwd: PathBuf,
    pub home: PathBuf,
    /// Process environment.
    pub env: Vec<(String, String)>,
    /// Variables re-exported after the image's env scripts (user requests win).
    pub env_overrides: Vec<(String, String)>,
    /// argv of the container process.
    pub argv: Vec<String>,
    pub pid_ns: bool,
    pub net_ns: bool,
    /// Bind the host's /dev/pts (interactive use on a terminal) instead of a
    /// private devpts instance (instances, which must be checkpointable).
    #[serde(default)]
    pub host_pts: bool,
}
