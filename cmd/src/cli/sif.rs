//! `rctr sif list|info|header|dump`: siftool-compatible output.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum SifCommand {
    /// List object descriptors
    List { image: PathBuf },
    /// Show details of one object descriptor
    Info { id: u32, image: PathBuf },
    /// Show the global header
    Header { image: PathBuf },
    /// Write the data of one object to stdout
    Dump { id: u32, image: PathBuf },
}

pub fn run(cmd: SifCommand) -> Result<i32> {
    let _ = cmd;
    bail!("sif commands are not implemented yet")
}
