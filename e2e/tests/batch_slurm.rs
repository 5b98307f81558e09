//! Batch jobs under a real Slurm (e2e/src/slurm.rs starts munged, slurmctld and slurmd): a
//! job script `exec rctr exec --ckpt ... --ckpt-signal USR1 --ckpt-then requeue` is signalled
//! as Slurm does before a time limit (`scancel --signal=USR1 --batch`), checkpoints, requeues
//! itself, and every later run continues the count where the previous one stopped: the job's
//! output file (appended to) holds one continuous sequence.

use rctr_e2e::*;
use std::time::Duration;

/// A shell loop printing 1, 2, 3, ... every 20 ms.
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i; usleep 20000; done";

#[test]
fn a_requeued_job_continues_its_count_from_the_checkpoint_three_times() {
    let test = "a_requeued_job_continues_its_count_from_the_checkpoint_three_times";
    if !require_criu(test) {
        return;
    }
    let Some(cluster) = require_slurm(test) else {
        return;
    };
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let out = env.work().join("job.out");
    let err = env.work().join("job.err");
    let script = env.work().join("job.sbatch");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             #SBATCH --requeue\n\
             #SBATCH --open-mode=append\n\
             #SBATCH --output={out}\n\
             #SBATCH --error={err}\n\
             export HOME={home}\n\
             exec {rctr} exec --ckpt sim --ckpt-signal USR1 --ckpt-then requeue {img} sh -c '{COUNTER}'\n",
            out = out.display(),
            err = err.display(),
            home = env.home().display(),
            rctr = rctr_bin().display(),
        ),
    )
    .unwrap();
    let id = cluster.sbatch(&script, &["--job-name=sim"]).unwrap();
    let show = || {
        format!(
            "job {id}: {}\n--- job.err:\n{}\n--- slurm:\n{}",
            cluster.job_record(id).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default(),
            cluster.logs()
        )
    };
    for requeue in 1..=3u32 {
        let before = numeric_lines(&out).len();
        assert!(
            wait_until(Duration::from_secs(90), || numeric_lines(&out).len()
                >= before + 10),
            "run {requeue} printed nothing new: {}",
            show()
        );
        cluster.scancel_signal(id, "USR1", true).unwrap();
        assert!(
            wait_until(Duration::from_secs(90), || {
                cluster.restart_count(id).unwrap_or(0) >= requeue
            }),
            "the job did not requeue itself (run {requeue}): {}",
            show()
        );
        let seq = numeric_lines(&out);
        for (i, n) in seq.iter().enumerate() {
            assert_eq!(
                *n,
                i as u64 + 1,
                "after requeue {requeue}, line {} of the output is {n}: {seq:?}\n{}",
                i + 1,
                show()
            );
        }
    }
    // The fourth run continues too.
    let before = numeric_lines(&out).len();
    assert!(
        wait_until(Duration::from_secs(90), || numeric_lines(&out).len()
            >= before + 10),
        "the last run printed nothing: {}",
        show()
    );
    cluster.scancel(id).unwrap();
    let seq = numeric_lines(&out);
    for (i, n) in seq.iter().enumerate() {
        assert_eq!(*n, i as u64 + 1, "line {} of the output is {n}", i + 1);
    }
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    assert_eq!(log.matches("rctr: requeued Slurm job").count(), 3, "{log}");
    assert_eq!(
        log.matches("rctr: resuming job sim from checkpoint sim")
            .count(),
        3,
        "{log}"
    );
}
