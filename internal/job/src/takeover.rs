//! `--ckpt-take-over JOBID`: this run, already started on its node, takes the job over from
//! the Slurm job that runs it elsewhere.
//!
//! A move by requeue pays for Slurm's whole start of the job (the requeue hold, a scheduling
//! pass, the batch launch) while the service is down. A successor started first pays for it
//! while the old run still serves: only then is the old run told to take its final checkpoint
//! and stop (SIGTERM, which its `--ckpt-on-term` turns into a checkpoint and an exit 0), and
//! the successor resumes from that generation as soon as it is published. A generation is
//! published after the engine has stopped the application, so the two never serve at once.

use anyhow::{bail, Context, Result};
use rctr_checkpoint::store::Checkpoint;
use rctr_runtime::plan::RunAs;
use std::process::Command;
use std::time::{Duration, Instant};

/// How often the checkpoint's directory is looked at for the new generation.
const POLL: Duration = Duration::from_millis(5);
/// How often Slurm is asked whether the old run still runs.
const JOB_POLL: Duration = Duration::from_millis(500);

/// What the take-over found: the generation to resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The old run published this generation and stopped.
    Final(u32),
    /// The old run ended without a new generation: resume from the newest there is (None:
    /// there is none), as a requeue after a failed checkpoint would.
    Ended(Option<u32>),
}

/// A Slurm job id: digits only.
pub fn parse_job_id(id: &str) -> Result<String> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("--ckpt-take-over {id:?}: not a Slurm job id (digits, as squeue shows them)");
    }
    Ok(id.to_string())
}

/// Whether this is a requeued run of a Slurm job (`$SLURM_RESTART_COUNT` above 0): a
/// successor's first run has already taken the job over.
pub fn is_requeued_run() -> bool {
    std::env::var("SLURM_RESTART_COUNT")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n > 0)
}

/// Stops job `job_id` with a final checkpoint of `ckpt` and waits until it is published.
/// A job root runs as another user asks Slurm as that user: users may signal only their own
/// jobs, root anyone's.
pub fn take_over(ckpt: &Checkpoint, job_id: &str, as_user: Option<&RunAs>) -> Result<Handover> {
    let slurm = |program: &str| {
        let mut cmd = Command::new(program);
        if let Some(r) = as_user {
            use std::os::unix::process::CommandExt;
            cmd.uid(r.uid).gid(r.gid);
        }
        cmd
    };
    let (state, node) = job_state(slurm("scontrol"), job_id)?.with_context(|| {
        format!("--ckpt-take-over {job_id}: Slurm knows no such job (scontrol show job {job_id})")
    })?;
    if state != "RUNNING" {
        bail!("--ckpt-take-over {job_id}: job {job_id} is {state}, not RUNNING: resume with --ckpt alone");
    }
    // Same node, same instance name: the old run's record would be this one's.
    if std::env::var("SLURMD_NODENAME").is_ok_and(|here| here == node) {
        bail!("--ckpt-take-over {job_id}: job {job_id} runs on this node ({node}): start the successor on another node (sbatch --nodelist, or drain {node})");
    }
    let before = ckpt.latest()?;
    rctr_log::info!(
        "rctr: taking over job {job_id} on {node}: final checkpoint of {} requested",
        ckpt.name()
    );
    signal_term(slurm("scancel"), job_id)?;
    let mut next_look = Instant::now() + JOB_POLL;
    loop {
        if let Some(g) = newer(ckpt, before)? {
            return Ok(Handover::Final(g));
        }
        if Instant::now() >= next_look {
            next_look = Instant::now() + JOB_POLL;
            let running =
                job_state(slurm("scontrol"), job_id)?.is_some_and(|(s, _)| s == "RUNNING");
            if !running {
                // It may have published just before it ended.
                return Ok(match newer(ckpt, before)? {
                    Some(g) => Handover::Final(g),
                    None => Handover::Ended(ckpt.latest()?),
                });
            }
        }
        std::thread::sleep(POLL);
    }
}

fn newer(ckpt: &Checkpoint, before: Option<u32>) -> Result<Option<u32>> {
    Ok(ckpt.latest()?.filter(|g| Some(*g) > before))
}

/// `scancel --signal=TERM --batch JOBID`: the old run's rctr (the batch shell's `exec`) gets
/// SIGTERM, and with `--ckpt-on-term` checkpoints and exits.
fn signal_term(mut scancel: Command, job_id: &str) -> Result<()> {
    let out = scancel
        .args(["--signal=TERM", "--batch", job_id])
        .output()
        .context("cannot run scancel (is Slurm's client installed?)")?;
    if !out.status.success() {
        bail!(
            "scancel --signal=TERM --batch {job_id} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The job's state and batch node as `scontrol show job` gives them (finished jobs too, for
/// `MinJobAge`); None once Slurm has forgotten the job.
fn job_state(mut scontrol: Command, job_id: &str) -> Result<Option<(String, String)>> {
    let out = scontrol
        .args(["show", "job", "-o", job_id])
        .output()
        .context("cannot run scontrol (is Slurm's client installed?)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("Invalid job id") {
            return Ok(None);
        }
        bail!("scontrol show job {job_id} failed: {}", err.trim());
    }
    let record = String::from_utf8_lossy(&out.stdout);
    let state = field(&record, "JobState").unwrap_or("UNKNOWN");
    let node = field(&record, "BatchHost").unwrap_or("");
    Ok(Some((state.to_string(), node.to_string())))
}

/// `KEY=value` of a one-line job record.
fn field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    record
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_by_exact_key() {
        let record =
            "JobId=7 JobName=counter JobState=RUNNING Reason=None BatchHost=n1 NodeList=n1";
        assert_eq!(field(record, "JobState"), Some("RUNNING"));
        assert_eq!(field(record, "BatchHost"), Some("n1"));
        assert_eq!(field(record, "Job"), None);
        assert_eq!(field(record, "Missing"), None);
    }

    #[test]
    fn job_ids_are_digits() {
        assert_eq!(parse_job_id("1234").unwrap(), "1234");
        for bad in ["", "12a", "-1", "1 2", "../x"] {
            let e = parse_job_id(bad).unwrap_err().to_string();
            assert!(e.contains("not a Slurm job id"), "{e}");
        }
    }
}
