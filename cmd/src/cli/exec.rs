//! `rctr exec|run|shell|test` and the hidden init entry point.

use super::run_opts::RunOptions;
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    /// Image: .sif, squashfs file, directory, or instance://NAME
    pub image: String,
    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Path of the serialized container plan
    pub plan: String,
}

pub fn exec(a: ExecArgs) -> Result<i32> {
    let _ = a;
    bail!("exec is not implemented yet")
}
pub fn run(a: RunArgs) -> Result<i32> {
    let _ = a;
    bail!("run is not implemented yet")
}
pub fn shell(a: ShellArgs) -> Result<i32> {
    let _ = a;
    bail!("shell is not implemented yet")
}
pub fn test(a: TestArgs) -> Result<i32> {
    let _ = a;
    bail!("test is not implemented yet")
}
pub fn init(a: InitArgs) -> Result<i32> {
    let _ = a;
    bail!("init is internal")
}
