//! rctr-runtime: building containers (namespaces, mounts, pivot_root) and running
//! processes in them, in the foreground or detached under rctr's own init.

pub mod binds;
pub mod build_runner;
pub mod container;
pub mod credentials;
pub mod env;
pub mod identity;
pub mod image_cache;
pub mod image_root;
mod init_status;
pub mod join;
pub mod launch;
pub mod loopdev;
pub mod net;
pub mod nvidia;
pub mod options;
pub mod plan;
pub mod process;
pub mod resolve;
pub mod rootfs;
pub mod settle;
pub mod site_config;
pub mod spawn;
pub mod squashfuse;
pub mod supervise;
pub mod syscall;
