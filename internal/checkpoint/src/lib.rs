//! rctr-checkpoint: the checkpoint engine (CRIU) and the checkpoint commands' logic.
//!
//! Engine layer: [`conf`] loads ckpt-conf.yaml and resolves it to host files ([`closure`]
//! computes the libraries, [`trust`] refuses files non-root users could modify), [`bundle`]
//! assembles them into a cached, self-contained directory run through its own loader, and
//! [`doctor`] checks that all of it works on this host.
//!
//! Checkpoint layer: [`store`] keeps checkpoints and their generations on disk, [`inject`]
//! adds the engine and checkpoint mounts to a container, [`dump`] checkpoints a running
//! instance, [`restore`] launches and restarts instances.

pub mod bundle;
pub mod closure;
pub mod conf;
pub mod doctor;
pub mod dump;
mod elf;
mod engine_run;
pub mod inject;
pub mod integrity;
pub mod restore;
pub mod stats;
pub mod store;
pub mod trust;
pub mod verify;

pub use bundle::{ensure_bundle, EngineBundle};
pub use conf::CkptConf;
