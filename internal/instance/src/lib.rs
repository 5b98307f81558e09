//! rctr-instance: long-running containers in the background, with per-user
//! state under `$HOME/.rctr/instances/<host>/<user>/`.

mod liveness;
mod record;
mod start;
mod stop;

pub use liveness::{is_alive, process_start_ticks};
pub use record::{InstanceRecord, Instances};
pub use start::{AttachedInstance, CheckpointRef, StartRequest};
pub use stop::{pidfd_open, pidfd_signal, stop_record, StopOptions};
