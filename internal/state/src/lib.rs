//! rctr-state: the per-user state kept under `$HOME/.rctr`.
//!
//! Everything here is about keeping that state trustworthy: names that are
//! safe as path components, directories nobody else can tamper with, files
//! replaced atomically, and advisory locks serialising concurrent commands.

mod files;
mod host;
mod lock;
mod name;
mod private_dir;
mod root;

pub use files::{fsync_dir, read_json, write_atomic, write_json_atomic, write_json_volatile};
pub use host::{hostname, username};
pub use lock::{lock_exclusive, try_lock_exclusive, StateLock};
pub use name::{validate_name, MAX_NAME_LEN};
pub use private_dir::{ensure_private_dir, ensure_private_dir_under};
pub use root::StateRoot;
