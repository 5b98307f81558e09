//! Jobs moving between the nodes of a real two-node Slurm cluster (e2e/src/cluster.rs: n1 and
//! n2 are network and UTS namespaces with their own addresses and slurmd; `$HOME` is shared).
//!
//! The request-counter server runs as a batch job, with the job script of docs/multi-node.md,
//! on n1 and answers on n1's address. n1 is drained, the job is signalled as an administrator
//! does (`scancel --signal=USR1 --batch`), checkpoints, requeues itself, and Slurm starts it on
//! n2, where it answers on n2's address with the count continuing. Then it moves back to n1,
//! this time by excluding n2 from the pending job (`scontrol update jobid=.. ExcNodeList=n2`)
//! and lifting Slurm's hold on it (`StartTime=now`). A second test moves it with a successor
//! job started first (`--ckpt-take-over`), which has the old run checkpoint and stop; a third
//! takes over from a run started without `--ckpt-on-term`.

use rctr_e2e::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests of this file share the cluster's two nodes, and drain and resume them: one at a
/// time.
static NODES_IN_USE: Mutex<()> = Mutex::new(());

/// The port the job script of docs/multi-node.md serves on.
const PORT: u16 = 8888;

/// The job script of docs/multi-node.md: the fenced block after its marker comment.
fn job_script_from_docs() -> String {
    let doc = workspace_root().join("docs/multi-node.md");
    let text = std::fs::read_to_string(&doc)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", doc.display()));
    let marker = "<!-- The job script below is the one e2e/tests/multi_node.rs submits. -->";
    let after = text
        .split_once(marker)
        .unwrap_or_else(|| panic!("{} lacks the marker {marker:?}", doc.display()))
        .1;
    let block = after
        .trim_start()
        .strip_prefix("```sh\n")
        .unwrap_or_else(|| panic!("no ```sh block after the marker in {}", doc.display()));
    let end = block
        .find("```")
        .unwrap_or_else(|| panic!("the job script block of {} never ends", doc.display()));
    block[..end].to_string()
}

/// Puts the nodes back in service and cancels the job, whatever the test's outcome.
struct Cleanup<'a> {
    cluster: &'a TwoNodeCluster,
    job: Option<u32>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.job {
            let _ = self.cluster.scancel(id);
            let _ = self
                .cluster
                .wait_for_state(id, &["CANCELLED"], Duration::from_secs(30));
        }
        for node in NODES {
            let _ = self.cluster.resume(node);
        }
    }
}

fn at(addr: Ipv4Addr) -> SocketAddr {
    SocketAddr::from((addr, PORT))
}

/// Polls `addr` until the server answers; the answer and when it came. None after `timeout`.
fn first_answer(addr: SocketAddr, timeout: Duration) -> Option<(String, Instant)> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(answer) = try_request(addr, Duration::from_millis(200)) {
            return Some((answer, Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// `request:N` -> N.
fn count(answer: &str) -> u64 {
    answer
        .strip_prefix("request:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the server answered {answer:?}, not request:N"))
}

/// The node squeue shows the job running on ("" while pending).
fn squeue_node(cluster: &TwoNodeCluster, id: u32) -> String {
    cluster
        .run("squeue", &["-h", "-j", &id.to_string(), "-o", "%N"])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits until the job runs on `node` (squeue and scontrol agree); panics with `show()`.
fn wait_running_on(cluster: &TwoNodeCluster, id: u32, node: &str, show: &dyn Fn() -> String) {
    cluster
        .wait_for_state(id, &["RUNNING"], Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", show()));
    assert!(
        wait_until(Duration::from_secs(10), || squeue_node(cluster, id) == node),
        "squeue shows job {id} on {:?}, not {node}\n{}",
        squeue_node(cluster, id),
        show()
    );
    assert_eq!(cluster.job_node(id).unwrap(), node, "{}", show());
}

#[test]
fn nodes_have_their_own_hostname_and_address() {
    let test = "nodes_have_their_own_hostname_and_address";
    let Some(cluster) = require_two_nodes(test) else {
        return;
    };
    let _turn = NODES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    for node in NODES {
        let script = dir.path().join(format!("{node}.sh"));
        let out = dir.path().join(format!("{node}.out"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n#SBATCH --output={}\necho \"$(hostname) $SLURMD_NODENAME\"\nip -o -4 addr show dev eth0\n",
                out.display()
            ),
        )
        .unwrap();
        let id = cluster.sbatch(&script, &["--nodelist", node]).unwrap();
        cluster
            .wait_for_state(id, &["COMPLETED"], Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
        let text = std::fs::read_to_string(&out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some(format!("{node} {node}").as_str()),
            "{text}"
        );
        let want = format!(" inet {}/24 ", cluster.addr(node));
        assert!(
            lines.next().is_some_and(|l| l.contains(&want)),
            "{node}'s eth0 lacks {want:?}: {text}"
        );
    }
    assert_ne!(cluster.addr("n1"), cluster.addr("n2"));
}

#[test]
fn a_service_job_moves_to_another_node_and_back_keeping_its_count() {
    let test = "a_service_job_moves_to_another_node_and_back_keeping_its_count";
    if !require_criu(test) {
        return;
    }
    let Some(cluster) = require_two_nodes(test) else {
        return;
    };
    let _turn = NODES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let env = TestEnv::new(test);
    let work = env.work();
    std::os::unix::fs::symlink(server_image(), work.join("server.sif")).unwrap();
    let script = work.join("counter.sbatch");
    std::fs::write(&script, job_script_from_docs()).unwrap();
    let out = work.join("counter.out");
    let rctr_dir = rctr_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        rctr_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cleanup = Cleanup { cluster, job: None };

    // Start on n1: n2 takes no jobs for now.
    cluster.drain("n2", "rctr-e2e:start-on-n1").unwrap();
    // sbatch passes its environment on to the job: the shared $HOME and rctr on $PATH.
    let id = cluster
        .sbatch_with(&script, &[], |cmd| {
            cmd.env("HOME", env.home()).env("PATH", &path);
        })
        .unwrap();
    cleanup.job = Some(id);
    let show = || {
        format!(
            "job {id}: {}\n--- counter.out:\n{}\n--- slurm:\n{}",
            cluster.job_record(id).unwrap_or_default(),
            std::fs::read_to_string(&out).unwrap_or_default(),
            cluster.logs()
        )
    };
    wait_running_on(cluster, id, "n1", &show);
    let n1 = at(cluster.addr("n1"));
    let n2 = at(cluster.addr("n2"));
    let (first, _) = first_answer(n1, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the server never answered on n1 ({n1})\n{}", show()));
    assert_eq!(first, "request:1", "{}", show());
    for n in 2..=3 {
        assert_eq!(request_to(n1), format!("request:{n}"));
    }
    // It serves on n1's address only.
    assert!(try_request(n2, Duration::from_secs(2)).is_err());

    // n1 fails: drain it, checkpoint and requeue the job; Slurm starts it on n2.
    cluster.resume("n2").unwrap();
    cluster.drain("n1", "rctr-e2e:failing").unwrap();
    let mut last = 3;
    cluster.scancel_signal(id, "USR1", true).unwrap();
    let (answer, _) = first_answer(n2, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the job never answered on n2 ({n2})\n{}", show()));
    assert_eq!(answer, format!("request:{}", last + 1), "{}", show());
    last = count(&answer);
    wait_running_on(cluster, id, "n2", &show);
    assert_eq!(cluster.restart_count(id).unwrap(), 1, "{}", show());
    assert!(
        try_request(n1, Duration::from_secs(2)).is_err(),
        "n1 still answers after the move"
    );
    assert_eq!(request_to(n2), format!("request:{}", last + 1));
    last += 1;

    // Back to n1, this time by excluding n2 from the requeued job rather than draining it.
    cluster.resume("n1").unwrap();
    cluster.scancel_signal(id, "USR1", true).unwrap();
    cluster
        .wait_for_state(id, &["PENDING"], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", show()));
    cluster
        .run(
            "scontrol",
            &["update", &format!("jobid={id}"), "ExcNodeList=n2"],
        )
        .unwrap();
    // And without waiting out Slurm's hold on requeued jobs (docs/multi-node.md): it is set
    // again when the previous run has ended, so lift it as long as the job is pending.
    let deadline = Instant::now() + Duration::from_secs(90);
    while cluster.job_state(id).unwrap() == "PENDING" && Instant::now() < deadline {
        cluster.lift_begin_time_hold(id).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (answer, _) = first_answer(n1, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the job never answered on n1 again ({n1})\n{}", show()));
    assert_eq!(answer, format!("request:{}", last + 1), "{}", show());
    last = count(&answer);
    wait_running_on(cluster, id, "n1", &show);
    assert_eq!(cluster.restart_count(id).unwrap(), 2, "{}", show());
    assert_eq!(cluster.node_state("n2").unwrap(), "idle", "{}", show());

    // The output file holds each run's lines once, in order: one continuous count.
    let text = std::fs::read_to_string(&out).unwrap();
    let answered: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("answered request:"))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(answered, (1..=last).collect::<Vec<u64>>(), "{text}");
    assert_eq!(
        text.matches("rctr: resuming job counter from checkpoint counter")
            .count(),
        2,
        "{text}"
    );
}

#[test]
fn a_successor_job_takes_the_service_over_from_another_node_keeping_its_count() {
    let test = "a_successor_job_takes_the_service_over_from_another_node_keeping_its_count";
    if !require_criu(test) {
        return;
    }
    let Some(cluster) = require_two_nodes(test) else {
        return;
    };
    let _turn = NODES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let env = TestEnv::new(test);
    let work = env.work();
    std::os::unix::fs::symlink(server_image(), work.join("server.sif")).unwrap();
    let script = work.join("counter.sbatch");
    std::fs::write(&script, job_script_from_docs()).unwrap();
    let out = work.join("counter.out");
    let rctr_dir = rctr_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        rctr_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cleanup = Cleanup { cluster, job: None };

    cluster.drain("n2", "rctr-e2e:start-on-n1").unwrap();
    let old = cluster
        .sbatch_with(&script, &[], |cmd| {
            cmd.env("HOME", env.home()).env("PATH", &path);
        })
        .unwrap();
    cleanup.job = Some(old);
    let show = |id: u32| {
        format!(
            "job {id}: {}\n--- counter.out:\n{}\n--- slurm:\n{}",
            cluster.job_record(id).unwrap_or_default(),
            std::fs::read_to_string(&out).unwrap_or_default(),
            cluster.logs()
        )
    };
    wait_running_on(cluster, old, "n1", &|| show(old));
    let n1 = at(cluster.addr("n1"));
    let n2 = at(cluster.addr("n2"));
    let (first, _) = first_answer(n1, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the server never answered on n1 ({n1})\n{}", show(old)));
    assert_eq!(first, "request:1", "{}", show(old));
    for n in 2..=3 {
        assert_eq!(request_to(n1), format!("request:{n}"));
    }

    // The successor, the same job script with --ckpt-take-over, starts on n2 (n1 drained)
    // while the old run still serves on n1 (docs/multi-node.md).
    cluster.resume("n2").unwrap();
    cluster.drain("n1", "rctr-e2e:failing").unwrap();
    let old_id = old.to_string();
    let new = cluster
        .sbatch_script_args(&script, &[], &["--ckpt-take-over", &old_id], |cmd| {
            cmd.env("HOME", env.home()).env("PATH", &path);
        })
        .unwrap();
    let (answer, _) = first_answer(n2, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the successor never answered on n2 ({n2})\n{}", show(new)));
    assert_eq!(answer, "request:4", "{}", show(new));
    // The old run ended by itself after its final checkpoint: exit 0, not requeued.
    assert_eq!(
        cluster
            .wait_for_state(old, &["COMPLETED"], Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", show(old))),
        "COMPLETED"
    );
    assert_eq!(cluster.job_field(old, "ExitCode").unwrap(), "0:0");
    assert_eq!(cluster.restart_count(old).unwrap(), 0, "{}", show(old));
    cleanup.job = Some(new);
    wait_running_on(cluster, new, "n2", &|| show(new));
    assert!(
        try_request(n1, Duration::from_secs(2)).is_err(),
        "n1 still answers after the take-over"
    );
    assert_eq!(request_to(n2), "request:5");

    // A take-over from a job that is not running is refused at once, in one line.
    let refused = cluster
        .sbatch_script_args(
            &script,
            &["--nodelist=n2", "--output", "refused.out"],
            &["--ckpt-take-over", &old_id],
            |cmd| {
                cmd.env("HOME", env.home()).env("PATH", &path);
            },
        )
        .unwrap();
    cluster
        .wait_for_state(refused, &["FAILED"], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", show(refused)));
    let text = std::fs::read_to_string(work.join("refused.out")).unwrap();
    assert!(
        text.contains(&format!("job {old} is COMPLETED, not RUNNING")) && text.lines().count() == 1,
        "{text}"
    );
    assert_eq!(
        request_to(n2),
        "request:6",
        "the refused successor disturbed the service"
    );

    // The successor is a job like the first: requeued, it runs its script again (with
    // --ckpt-take-over, which a requeued run skips) and resumes on n1.
    cluster.resume("n1").unwrap();
    cluster.drain("n2", "rctr-e2e:back-to-n1").unwrap();
    cluster.scancel_signal(new, "USR1", true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while cluster.job_state(new).unwrap() != "RUNNING" && Instant::now() < deadline {
        cluster.lift_begin_time_hold(new).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let (answer, _) = first_answer(n1, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the requeued successor never answered on n1\n{}", show(new)));
    assert_eq!(answer, "request:7", "{}", show(new));
    assert_eq!(cluster.restart_count(new).unwrap(), 1, "{}", show(new));

    // Both runs wrote to the same output file: one continuous count, resumed twice. (The
    // server prints after it has answered.)
    wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("answered request:7"))
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let answered: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("answered request:"))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(answered, (1..=7).collect::<Vec<u64>>(), "{text}");
    assert_eq!(
        text.matches(&format!("rctr: taking over job {old} on n1"))
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("rctr: resuming job counter from checkpoint counter")
            .count(),
        2,
        "{text}"
    );
}

#[test]
fn a_take_over_of_a_run_without_ckpt_on_term_says_so() {
    let test = "a_take_over_of_a_run_without_ckpt_on_term_says_so";
    if !require_criu(test) {
        return;
    }
    let Some(cluster) = require_two_nodes(test) else {
        return;
    };
    let _turn = NODES_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let env = TestEnv::new(test);
    let work = env.work();
    std::os::unix::fs::symlink(server_image(), work.join("server.sif")).unwrap();
    // The documented script without --ckpt-on-term: SIGTERM just ends the application.
    let documented = job_script_from_docs();
    assert!(documented.contains(" --ckpt-on-term"), "{documented}");
    let script = work.join("counter.sbatch");
    std::fs::write(&script, documented.replace(" --ckpt-on-term", "")).unwrap();
    let out = work.join("counter.out");
    let rctr_dir = rctr_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        rctr_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cleanup = Cleanup { cluster, job: None };
    cluster.drain("n2", "rctr-e2e:start-on-n1").unwrap();
    let old = cluster
        .sbatch_with(&script, &[], |cmd| {
            cmd.env("HOME", env.home()).env("PATH", &path);
        })
        .unwrap();
    cleanup.job = Some(old);
    let show = |id: u32| {
        format!(
            "job {id}: {}\n--- counter.out:\n{}\n--- slurm:\n{}",
            cluster.job_record(id).unwrap_or_default(),
            std::fs::read_to_string(&out).unwrap_or_default(),
            cluster.logs()
        )
    };
    wait_running_on(cluster, old, "n1", &|| show(old));
    let (n1, n2) = (at(cluster.addr("n1")), at(cluster.addr("n2")));
    let (first, _) = first_answer(n1, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("the server never answered on n1\n{}", show(old)));
    assert_eq!(first, "request:1");
    assert_eq!(request_to(n1), "request:2");

    cluster.resume("n2").unwrap();
    cluster.drain("n1", "rctr-e2e:failing").unwrap();
    let new = cluster
        .sbatch_script_args(
            &script,
            &[],
            &["--ckpt-take-over", &old.to_string()],
            |cmd| {
                cmd.env("HOME", env.home()).env("PATH", &path);
            },
        )
        .unwrap();
    cleanup.job = Some(new);
    // The old run ended without a checkpoint, and there was none before: the successor
    // says so and starts afresh rather than waiting for ever.
    let (answer, _) = first_answer(n2, Duration::from_secs(90))
        .unwrap_or_else(|| panic!("the successor never answered on n2\n{}", show(new)));
    assert_eq!(answer, "request:1", "{}", show(new));
    assert_ne!(cluster.job_state(old).unwrap(), "RUNNING");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains(&format!(
            "rctr: warning: job {old} ended without a new checkpoint (does it run with --ckpt-on-term?); starting fresh"
        )),
        "{text}"
    );
}
