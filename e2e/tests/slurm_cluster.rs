//! Checks of the Slurm test cluster itself (e2e/src/slurm.rs), against real munged, slurmctld
//! and slurmd: batch jobs run, requeue from inside a job runs it again within seconds, and
//! signals reach the batch shell. If these fail, the Slurm tests of rctr say nothing about rctr.

use rctr_e2e::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Writes an executable batch script `name` into `dir`; `@DIR@` in `body` becomes `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body.replace("@DIR@", &dir.display().to_string())).unwrap();
    path
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for `path` to exist, panicking with the job's record after `timeout`.
fn wait_for_file(cluster: &SlurmCluster, job: u32, path: &Path, timeout: Duration) {
    if !wait_until(timeout, || path.exists()) {
        panic!(
            "{} not written after {timeout:?}; job {job}: {}",
            path.display(),
            cluster.job_record(job).unwrap_or_else(|e| format!("{e:#}"))
        );
    }
}

#[test]
fn batch_job_runs_and_completes() {
    let Some(cluster) = require_slurm("batch_job_runs_and_completes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let job = script(
        dir.path(),
        "hello.sh",
        "#!/bin/sh\necho \"hello from $SLURM_JOB_ID on $SLURMD_NODENAME\" > @DIR@/result\n",
    );
    let started = Instant::now();
    let id = cluster.sbatch(&job, &["--job-name=hello"]).unwrap();
    cluster
        .wait_for_state(id, &["COMPLETED"], Duration::from_secs(60))
        .unwrap();
    eprintln!("job {id} completed in {:?}", started.elapsed());
    assert_eq!(
        read(&dir.path().join("result")).trim(),
        format!("hello from {id} on {}", cluster.node())
    );
    assert_eq!(cluster.job_field(id, "ExitCode").unwrap(), "0:0");
    assert_eq!(cluster.restart_count(id).unwrap(), 0);
    // The job ran as root, as CI does.
    assert_eq!(cluster.job_field(id, "UserId").unwrap(), "root(0)");
}

#[test]
fn requeue_from_inside_the_job_runs_it_again_within_seconds() {
    let Some(cluster) = require_slurm("requeue_from_inside_the_job_runs_it_again_within_seconds")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // stderr apart: slurmstepd writes "CANCELLED ... DUE TO JOB REQUEUE" there on each requeue.
    let job = script(
        dir.path(),
        "requeue.sh",
        r#"#!/bin/sh
#SBATCH --requeue --open-mode=append
#SBATCH --output=@DIR@/job.out --error=@DIR@/job.err
n=$(cat @DIR@/runs 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > @DIR@/runs
echo "run $n restarts=${SLURM_RESTART_COUNT:-0}"
if [ "$n" -lt 3 ]; then
    scontrol requeue "$SLURM_JOB_ID"
    sleep 120  # killed by the requeue
fi
"#,
    );
    let started = Instant::now();
    let id = cluster.sbatch(&job, &[]).unwrap();
    cluster
        .wait_for_state(id, &["COMPLETED"], Duration::from_secs(90))
        .unwrap();
    let took = started.elapsed();
    eprintln!("job {id}: 3 runs, 2 requeues in {took:?}");
    assert_eq!(
        read(&dir.path().join("job.out")),
        "run 1 restarts=0\nrun 2 restarts=1\nrun 3 restarts=2\n",
        "stderr: {}",
        read(&dir.path().join("job.err"))
    );
    assert_eq!(cluster.restart_count(id).unwrap(), 2);
    assert!(
        took < Duration::from_secs(45),
        "two requeues took {took:?}: is the requeue delay (cred_expire) back to 120 s?"
    );
}

#[test]
fn scancel_signal_batch_reaches_the_batch_shell_trap() {
    let Some(cluster) = require_slurm("scancel_signal_batch_reaches_the_batch_shell_trap") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let job = script(
        dir.path(),
        "trap.sh",
        r#"#!/bin/sh
#SBATCH --output=@DIR@/job.out
trap 'echo USR1 > @DIR@/got; exit 0' USR1
touch @DIR@/ready
while :; do sleep 0.1; done
"#,
    );
    let id = cluster.sbatch(&job, &[]).unwrap();
    wait_for_file(
        cluster,
        id,
        &dir.path().join("ready"),
        Duration::from_secs(60),
    );
    let sent = Instant::now();
    cluster.scancel_signal(id, "USR1", true).unwrap();
    cluster
        .wait_for_state(id, &["COMPLETED"], Duration::from_secs(30))
        .unwrap();
    eprintln!("job {id}: USR1 handled in {:?}", sent.elapsed());
    assert_eq!(read(&dir.path().join("got")).trim(), "USR1");
}

#[test]
fn requeue_by_the_helper_runs_the_job_again() {
    let Some(cluster) = require_slurm("requeue_by_the_helper_runs_the_job_again") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let job = script(
        dir.path(),
        "again.sh",
        r#"#!/bin/sh
#SBATCH --requeue --open-mode=append
#SBATCH --output=@DIR@/job.out --error=@DIR@/job.err
echo "run restarts=${SLURM_RESTART_COUNT:-0}"
if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then sleep 120; fi
"#,
    );
    let id = cluster.sbatch(&job, &[]).unwrap();
    cluster
        .wait_for_state(id, &["RUNNING"], Duration::from_secs(60))
        .unwrap();
    let requeued = Instant::now();
    cluster.requeue(id).unwrap();
    cluster
        .wait_for_state(id, &["COMPLETED"], Duration::from_secs(60))
        .unwrap();
    eprintln!(
        "job {id}: requeued and run again in {:?}",
        requeued.elapsed()
    );
    assert_eq!(
        read(&dir.path().join("job.out")),
        "run restarts=0\nrun restarts=1\n"
    );
    assert_eq!(cluster.restart_count(id).unwrap(), 1);
}

/// `--signal=B:USR1@55` with `--time=1`: due 5 s after the start, but slurmctld looks at time
/// limits only every 30 s (PERIODIC_TIMEOUT), so it arrives 5 to about 35 s after the start.
#[test]
fn signal_before_time_limit_reaches_the_batch_shell() {
    let Some(cluster) = require_slurm("signal_before_time_limit_reaches_the_batch_shell") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let job = script(
        dir.path(),
        "warn.sh",
        r#"#!/bin/sh
#SBATCH --time=1 --signal=B:USR1@55
#SBATCH --output=@DIR@/job.out
trap 'echo USR1 > @DIR@/got; exit 0' USR1
touch @DIR@/ready
while :; do sleep 0.1; done
"#,
    );
    let id = cluster.sbatch(&job, &[]).unwrap();
    wait_for_file(
        cluster,
        id,
        &dir.path().join("ready"),
        Duration::from_secs(60),
    );
    let started = Instant::now();
    wait_for_file(
        cluster,
        id,
        &dir.path().join("got"),
        Duration::from_secs(50),
    );
    eprintln!("job {id}: USR1 {:?} after the start", started.elapsed());
    assert_eq!(
        cluster
            .wait_for_state(id, &["COMPLETED"], Duration::from_secs(30))
            .unwrap(),
        "COMPLETED"
    );
}

/// A cluster of its own (next to the shared one): its daemons run while it lives, and
/// dropping it kills them and removes its directory.
#[test]
fn own_cluster_stops_its_daemons_and_removes_its_directory() {
    if require_slurm("own_cluster_stops_its_daemons_and_removes_its_directory").is_none() {
        return;
    }
    let started = Instant::now();
    let cluster = SlurmCluster::start().unwrap();
    eprintln!("own cluster started in {:?}", started.elapsed());
    let dir = cluster.dir().to_path_buf();
    let slurmd_pid = format!("slurmd-{}.pid", cluster.node());
    let pids: Vec<i32> = ["munged.pid", "slurmctld.pid", &slurmd_pid]
        .iter()
        .map(|f| {
            let text = read(&dir.join(f));
            text.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{f} holds {text:?}"))
        })
        .collect();
    assert!(pids.iter().all(|&p| process_alive(p)), "pids {pids:?}");
    // A job still running at stop is killed with the cluster.
    let job = script(&dir, "long.sh", "#!/bin/sh\nsleep 600\n");
    let id = cluster.sbatch(&job, &[]).unwrap();
    cluster
        .wait_for_state(id, &["RUNNING"], Duration::from_secs(30))
        .unwrap();
    drop(cluster);
    assert!(
        wait_until(Duration::from_secs(5), || pids
            .iter()
            .all(|&p| !process_alive(p))),
        "daemons {pids:?} still alive after stop"
    );
    assert!(!dir.exists(), "{} still exists after stop", dir.display());
}
