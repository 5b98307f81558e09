//! `rctr version`: rctr's version and the checkpoint engine's, as bug reports need both.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Checkpoint engine configuration naming the CRIU binary (default: $RCTR_CKPT_CONF,
    /// /etc/rctr/ckpt-conf.yaml, built-in)
    #[arg(long, value_name = "FILE")]
    pub ckpt_conf: Option<PathBuf>,
}

pub fn run(a: VersionArgs) -> Result<i32> {
    println!("rctr {}", env!("CARGO_PKG_VERSION"));
    match rctr_checkpoint::doctor::criu_version(a.ckpt_conf.as_deref()) {
        Ok((version, path)) => println!("criu {version} ({})", path.display()),
        // Still exit 0: the application-level engine needs no CRIU.
        Err(e) => println!("criu not available: {e:#}"),
    }
    println!("app engine (built in)");
    Ok(0)
}
