//! `rctr build OUT.sif SOURCE`.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The SIF file to create
    pub output: PathBuf,
    /// A root filesystem directory or a definition file
    pub source: PathBuf,
    /// Overwrite OUTPUT if it exists
    #[arg(short, long)]
    pub force: bool,
}

pub fn run(args: BuildArgs) -> Result<i32> {
    let _ = args;
    bail!("build is not implemented yet")
}
