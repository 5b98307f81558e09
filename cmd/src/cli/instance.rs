//! `rctr instance start|run|list|stop`.

use anyhow::{bail, Result};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum InstanceCommand {
    /// List running instances
    List,
}

pub fn run(c: InstanceCommand) -> Result<i32> {
    let _ = c;
    bail!("instance commands are not implemented yet")
}
