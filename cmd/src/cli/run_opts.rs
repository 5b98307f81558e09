//! Options shared by exec, run, shell, test and instance start.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone, Default)]
pub struct RunOptions {
    /// Bind mount: src[:dst[:ro|rw]], repeatable, comma-separated lists allowed
    #[arg(short = 'B', long = "bind", value_name = "SPEC")]
    pub bind: Vec<String>,
    /// Home directory inside the container: src[:dst]
    #[arg(short = 'H', long)]
    pub home: Option<String>,
    /// Do not mount the home directory
    #[arg(long)]
    pub no_home: bool,
    /// Initial working directory inside the container
    #[arg(long)]
    pub pwd: Option<String>,
    /// Use minimal /dev and empty home and /tmp; do not bind the current directory
    #[arg(short = 'c', long)]
    pub contain: bool,
    /// Start with a clean environment
    #[arg(short = 'e', long)]
    pub cleanenv: bool,
    /// Set environment variables inside the container: NAME=VALUE, repeatable
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Overlay a writable tmpfs on the read-only image
    #[arg(long)]
    pub writable_tmpfs: bool,
    /// Run in a private pid namespace
    #[arg(short = 'p', long)]
    pub pid: bool,
    /// Run in a private network namespace (loopback only)
    #[arg(short = 'n', long)]
    pub net: bool,
}

impl RunOptions {
    /// The runtime's view of these options.
    pub fn to_runtime(&self) -> rctr_runtime::options::RunOptions {
        rctr_runtime::options::RunOptions {
            bind: self.bind.clone(),
            home: self.home.clone(),
            no_home: self.no_home,
            pwd: self.pwd.clone(),
            contain: self.contain,
            cleanenv: self.cleanenv,
            env: self.env.clone(),
            env_file: self.env_file.clone(),
            writable_tmpfs: self.writable_tmpfs,
            pid: self.pid,
            net: self.net,
        }
    }
}

/// Builds the container plan for IMAGE running `argv`.
pub fn plan_for(
    image: &str,
    opts: &RunOptions,
    argv: Vec<String>,
) -> anyhow::Result<rctr_runtime::plan::ContainerPlan> {
    let root = rctr_runtime::image_root::resolve_root(image)?;
    rctr_runtime::options::build_plan(root, image, &opts.to_runtime(), argv)
}
