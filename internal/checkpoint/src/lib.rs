//! rctr-checkpoint: checkpoints of running instances: the store, and the engines.
//!
//! The store ([`store`]) keeps each checkpoint's generations on disk and owns every guarantee
//! about them: numbering, staging, checksums ([`integrity`], and per 1 MiB piece of the
//! memory images, [`chunk_sums`]), atomic publish, `latest`, pruning, locking. The engines implement [`engine::CheckpointEngine`]: [`criu`] checkpoints
//! whole process trees transparently; [`app`] asks the application to write its own state.
//! [`conf`] loads ckpt-conf.yaml (files it names are checked by [`trust`]). [`dump`] and
//! [`restore`] put store and engine together for the commands; [`app_sockets`] tells them
//! what the application's TCP sockets are doing.

pub mod app;
pub mod app_sockets;
pub mod chunk_sums;
pub mod conf;
pub mod criu;
pub mod dump;
pub mod engine;
pub mod integrity;
mod pidfd;
pub mod preflight;
mod procfs;
pub mod restore;
pub mod store;
pub mod trust;

// The CRIU engine's parts keep their short paths.
pub use criu::{bundle, closure, doctor};

pub use bundle::{ensure_bundle, EngineBundle};
pub use conf::CkptConf;
pub use engine::{CheckpointEngine, EngineKind};
