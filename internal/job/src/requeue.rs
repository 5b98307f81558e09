//! `--ckpt-then requeue`: put the Slurm job this runs in back into the queue.

use anyhow::{bail, Context, Result};
use rctr_runtime::plan::RunAs;
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

/// `scontrol requeue JOBID`: Slurm ends this run and starts the job again later. A job
/// root runs as another user asks as that user: Slurm lets users requeue only their own
/// jobs (root could requeue anyone's, whatever `$SLURM_JOB_ID` said).
pub fn requeue(job_id: &str, as_user: Option<&RunAs>) -> Result<()> {
    let mut cmd = Command::new("scontrol");
    cmd.args(["requeue", job_id]);
    if let Some(r) = as_user {
        use std::os::unix::process::CommandExt;
        cmd.uid(r.uid).gid(r.gid);
    }
    let out = cmd
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
