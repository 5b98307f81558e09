//! rctr-job: batch jobs that survive preemption and wall-time limits.
//!
//! `rctr run|exec --ckpt NAME ...` runs a container in the foreground whose application can
//! be checkpointed: resumed from checkpoint NAME's newest generation when it has one,
//! launched fresh otherwise. While it runs it is registered like an instance (so `rctr
//! checkpoint instance`, `instance list` and `exec instance://` reach it), and rctr takes
//! checkpoints every `--ckpt-interval`, on `--ckpt-signal`s and, with `--ckpt-on-term`, on
//! SIGTERM; `--ckpt-then` says what follows a checkpoint on a signal (go on, exit, or
//! `scontrol requeue` the Slurm job). With `--ckpt-take-over JOBID` a run started on another
//! node first has the Slurm job JOBID take its final checkpoint and stop, then resumes it.
//!
//! [`options`] holds the typed request, [`duration`] parses intervals, [`supervisor`] is the
//! event loop, [`requeue`] and [`takeover`] talk to Slurm.

pub mod duration;
pub mod options;
pub mod requeue;
mod supervisor;
pub mod takeover;

pub use options::{CkptChoice, JobOptions, Then};
pub use supervisor::run_job;

/// Exit status of a job whose checkpoint on a signal failed (EX_TEMPFAIL): the previous
/// generation is still the newest, and the job was stopped as `--ckpt-then` asked.
pub const EXIT_CHECKPOINT_FAILED: i32 = 75;
