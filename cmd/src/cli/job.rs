//! The checkpoint options of `rctr run` and `rctr exec`: a foreground job that survives
//! preemption (see docs/batch.md).

use anyhow::{bail, Result};
use clap::Args;
use rctr_checkpoint::EngineKind;
use rctr_job::{duration::parse_duration, CkptChoice, JobOptions, Then};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone, Default)]
pub struct JobArgs {
    /// Checkpointable job: resume from checkpoint NAME's newest valid generation, or (if it
    /// has none) create NAME if needed and start fresh. The same command serves every requeue
    #[arg(long, value_name = "NAME", conflicts_with_all = ["ckpt_launch", "ckpt_restart"])]
    pub ckpt: Option<String>,
    /// Like --ckpt, but always start fresh (NAME must exist: `rctr checkpoint create NAME`)
    #[arg(long, value_name = "NAME", conflicts_with = "ckpt_restart")]
    pub ckpt_launch: Option<String>,
    /// Like --ckpt, but always resume (from the newest generation, or --generation)
    #[arg(long, value_name = "NAME")]
    pub ckpt_restart: Option<String>,
    /// Instance name the job is registered under while it runs (default: the checkpoint's)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Engine of a checkpoint that --ckpt creates: criu or app (default: ckpt-conf.yaml's)
    #[arg(long, value_name = "ENGINE")]
    pub ckpt_engine: Option<EngineKind>,
    /// Take a checkpoint every DURATION while the job runs (e.g. 90s, 30m, 1h30m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ckpt_interval: Option<Duration>,
    /// Take a checkpoint when rctr receives SIG (e.g. USR1); repeatable
    #[arg(long = "ckpt-signal", value_name = "SIG")]
    pub ckpt_signal: Vec<String>,
    /// After a checkpoint on --ckpt-signal: continue, exit (stop the job, exit 0) or requeue
    /// (stop it and `scontrol requeue $SLURM_JOB_ID`)
    #[arg(long, value_name = "WHAT", default_value = "continue")]
    pub ckpt_then: Then,
    /// On SIGTERM (Slurm preemption or time limit), take a final checkpoint, then exit
    #[arg(long)]
    pub ckpt_on_term: bool,
    /// Generations to keep (0: all; default `keep:` in ckpt-conf.yaml)
    #[arg(long, value_name = "N")]
    pub ckpt_keep: Option<u32>,
    /// With --ckpt-restart: resume from generation G
    #[arg(long, value_name = "G", requires = "ckpt_restart")]
    pub generation: Option<u32>,
    /// With --ckpt/--ckpt-restart: resume even if the image differs from the checkpoint's
    #[arg(long)]
    pub ckpt_force: bool,
    /// On a resume (CRIU): restore established TCP connections live, not closed (their peers
    /// must still be there: the job's own processes, as between MPI ranks and mpirun)
    #[arg(long)]
    pub tcp_established: bool,
    /// On a resume (CRIU): start the job before its memory is back; its pages arrive in the
    /// background and on first touch (CRIU lazy-pages over userfaultfd)
    #[arg(long)]
    pub lazy_pages: bool,
    /// Before resuming, have Slurm job JOBID (this job's run on another node, started with
    /// --ckpt-on-term) take a final checkpoint and stop, then resume from it: start this run
    /// first, so that only the checkpoint and the restore interrupt the application
    #[arg(long, value_name = "JOBID", conflicts_with_all = ["ckpt_launch", "generation"])]
    pub ckpt_take_over: Option<String>,
    /// Checkpoint engine configuration (default: $RCTR_CKPT_CONF, /etc/rctr/ckpt-conf.yaml, built-in)
    #[arg(long, value_name = "FILE")]
    pub ckpt_conf: Option<PathBuf>,
}

impl JobArgs {
    /// The job's options, or None for a plain (not checkpointable) run.
    pub fn to_options(&self) -> Result<Option<JobOptions>> {
        let ckpt = match (&self.ckpt, &self.ckpt_launch, &self.ckpt_restart) {
            (Some(n), _, _) => CkptChoice::Auto(n.clone()),
            (_, Some(n), _) => CkptChoice::Launch(n.clone()),
            (_, _, Some(n)) => CkptChoice::Restart(n.clone()),
            _ => {
                let used = [
                    (self.name.is_some(), "--name"),
                    (self.ckpt_engine.is_some(), "--ckpt-engine"),
                    (self.ckpt_interval.is_some(), "--ckpt-interval"),
                    (!self.ckpt_signal.is_empty(), "--ckpt-signal"),
                    (self.ckpt_then != Then::Continue, "--ckpt-then"),
                    (self.ckpt_on_term, "--ckpt-on-term"),
                    (self.ckpt_keep.is_some(), "--ckpt-keep"),
                    (self.ckpt_force, "--ckpt-force"),
                    (self.tcp_established, "--tcp-established"),
                    (self.lazy_pages, "--lazy-pages"),
                    (self.ckpt_take_over.is_some(), "--ckpt-take-over"),
                    (self.ckpt_conf.is_some(), "--ckpt-conf"),
                ];
                if let Some((_, flag)) = used.iter().find(|(on, _)| *on) {
                    bail!("{flag} needs --ckpt NAME (or --ckpt-launch/--ckpt-restart NAME)");
                }
                return Ok(None);
            }
        };
        let mut signals = vec![];
        for s in &self.ckpt_signal {
            let sig = crate::cli::instance::parse_signal(s)?;
            if matches!(
                sig,
                nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP
            ) {
                bail!("--ckpt-signal {s}: {sig} cannot be caught; use e.g. USR1");
            }
            signals.push(sig);
        }
        if self.ckpt_engine.is_some() && !matches!(ckpt, CkptChoice::Auto(_)) {
            bail!("--ckpt-engine only applies to a checkpoint that --ckpt creates");
        }
        Ok(Some(JobOptions {
            ckpt,
            name: self.name.clone(),
            engine: self.ckpt_engine,
            interval: self.ckpt_interval,
            signals,
            then: self.ckpt_then,
            on_term: self.ckpt_on_term,
            keep: self.ckpt_keep,
            conf_path: self.ckpt_conf.clone(),
            generation: self.generation,
            force: self.ckpt_force,
            tcp_established: self.tcp_established,
            lazy_pages: self.lazy_pages,
            take_over: self
                .ckpt_take_over
                .as_deref()
                .map(rctr_job::takeover::parse_job_id)
                .transpose()?,
        }))
    }
}
