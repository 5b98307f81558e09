//! `--ckpt-then requeue`: put the Slurm job this runs in back into the queue.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// The Slurm job id of this process, from `$SLURM_JOB_ID`.
pub fn slurm_job_id() -> Result<String> {
    match std::env::var("SLURM_JOB_ID") {
        Ok(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) => Ok(id),
        Ok(id) => bail!("--ckpt-then requeue: $SLURM_JOB_ID is {id:?}, not a job id"),
        Err(_) => bail!(
            "--ckpt-then requeue needs a Slurm batch job ($SLURM_JOB_ID is not set): run it from an sbatch script, or use --ckpt-then exit"
        ),
    }
}

/// `scontrol requeue JOBID`: Slurm ends this run and starts the job again later.
pub fn requeue(job_id: &str) -> Result<()> {
    let out = Command::new("scontrol")
        .args(["requeue", job_id])
        .output()
        .context("cannot run scontrol (is Slurm's client installed?)")?;
    if !out.status.success() {
        bail!(
            "scontrol requeue {job_id} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
