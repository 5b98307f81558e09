//! `rctr checkpoint create|list|delete|instance|check`.

use anyhow::{bail, Result};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum CheckpointCommand {
    /// List checkpoints
    List,
}

pub fn run(c: CheckpointCommand) -> Result<i32> {
    let _ = c;
    bail!("checkpoint commands are not implemented yet")
}
