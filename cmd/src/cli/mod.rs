//! Command definitions (clap derive) and dispatch, one module per verb group.

mod build;
mod checkpoint;
mod exec;
mod inspect;
mod instance;
mod job;
mod run_opts;
mod sif;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "rctr",
    version,
    about = "Container runtime for HPC with checkpoint/restart",
    long_about = "rctr runs SIF and squashfs images (as built by Apptainer or by `rctr build`) and \
                  checkpoints running instances to disk so they can be restarted later, here or on \
                  another host."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect and dump SIF files (output compatible with siftool)
    #[command(subcommand)]
    Sif(sif::SifCommand),
    /// Build a SIF image from a directory or a definition file
    Build(build::BuildArgs),
    /// Show metadata of an image
    Inspect(inspect::InspectArgs),
    /// Run a command inside a container
    Exec(exec::ExecArgs),
    /// Run the image's runscript
    Run(exec::RunArgs),
    /// Start an interactive shell inside a container
    Shell(exec::ShellArgs),
    /// Run the image's test script
    Test(exec::TestArgs),
    /// Manage background instances
    #[command(subcommand)]
    Instance(instance::InstanceCommand),
    /// Manage checkpoints of instances
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
}

/// Runs the parsed command and returns the process exit status.
pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Sif(c) => sif::run(c),
        Command::Build(a) => build::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Exec(a) => exec::exec(a),
        Command::Run(a) => exec::run(a),
        Command::Shell(a) => exec::shell(a),
        Command::Test(a) => exec::test(a),
        Command::Instance(c) => instance::run(c),
        Command::Checkpoint(c) => checkpoint::run(c),
    }
}
