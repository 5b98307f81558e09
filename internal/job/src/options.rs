//! What a checkpointable foreground job was asked to do.

use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::Duration;

/// How the job uses its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CkptChoice {
    /// `--ckpt NAME`: resume from the newest valid generation if there is one, else create
    /// the checkpoint if needed and launch fresh.
    Auto(String),
    /// `--ckpt-launch NAME`: always launch fresh.
    Launch(String),
    /// `--ckpt-restart NAME`: always resume (an error if there is nothing to resume).
    Restart(String),
}

impl CkptChoice {
    pub fn name(&self) -> &str {
        match self {
            CkptChoice::Auto(n) | CkptChoice::Launch(n) | CkptChoice::Restart(n) => n,
        }
    }
}

/// What follows a checkpoint taken on a `--ckpt-signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Then {
    /// Keep running.
    #[default]
    Continue,
    /// Stop the application; rctr exits 0.
    Exit,
    /// Stop the application and `scontrol requeue $SLURM_JOB_ID`; rctr exits 0.
    Requeue,
}

impl std::str::FromStr for Then {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "continue" => Ok(Then::Continue),
            "exit" => Ok(Then::Exit),
            "requeue" => Ok(Then::Requeue),
            _ => anyhow::bail!("unknown --ckpt-then {s:?}: use continue, exit or requeue"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobOptions {
    pub ckpt: CkptChoice,
    /// Instance name the job is registered under (default: the checkpoint's name).
    pub name: Option<String>,
    /// Engine of a checkpoint the job creates (default: ckpt-conf.yaml's).
    pub engine: Option<rctr_checkpoint::EngineKind>,
    pub interval: Option<Duration>,
    pub signals: Vec<Signal>,
    pub then: Then,
    pub on_term: bool,
    /// Generations to keep (None: ckpt-conf.yaml's default).
    pub keep: Option<u32>,
    pub conf_path: Option<PathBuf>,
    /// With a restart: restore this generation.
    pub generation: Option<u32>,
    /// With a restart: restore even if the image differs.
    pub force: bool,
    /// With a resume: restore established TCP connections live.
    pub tcp_established: bool,
    /// With a resume: bring the memory in while the job runs (CRIU lazy pages).
    pub lazy_pages: bool,
    /// Slurm job to take the job over from before resuming (`--ckpt-take-over`).
    pub take_over: Option<String>,
}

impl JobOptions {
    pub fn instance_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.ckpt.name())
    }
}
