//! `rctr inspect IMAGE`.

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub image: PathBuf,
    #[arg(short, long)]
    pub labels: bool,
    #[arg(short, long)]
    pub runscript: bool,
    #[arg(short, long)]
    pub startscript: bool,
    #[arg(short, long)]
    pub environment: bool,
    #[arg(short, long)]
    pub deffile: bool,
    #[arg(short, long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<i32> {
    let _ = args;
    bail!("inspect is not implemented yet")
}
