//! Checkpointable foreground jobs (`rctr run|exec --ckpt ...`) without Slurm: periodic
//! checkpoints and a hard kill, checkpoints on signals, --ckpt-on-term, a job checkpointed
//! from another shell, exit statuses and errors. The job's output goes to a file opened for
//! appending, as a batch system's output file is.

use rctr_e2e::*;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;

/// A shell loop printing 1, 2, 3, ... every 20 ms.
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i; usleep 20000; done";

/// A running `rctr` job, killed if the test ends first.
struct JobProcess {
    child: Child,
}

impl JobProcess {
    fn start(env: &TestEnv, args: &[&str], out: &Path) -> JobProcess {
        let append = |p: &Path| -> File {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap()
        };
        let mut cmd = env.command(args);
        cmd.stdin(std::process::Stdio::null())
            .stdout(append(out))
            .stderr(append(&out.with_extension("err")));
        JobProcess {
            child: cmd.spawn().expect("cannot start rctr"),
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill with the pid of our own child and a valid signal number.
        unsafe { libc::kill(self.pid(), sig) };
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rctr did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for JobProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn generations(env: &TestEnv, ckpt: &str) -> Vec<u64> {
    let out = env.cmd(["checkpoint", "list", ckpt, "--json"]);
    if !out.status.success() {
        return vec![];
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["generations"]
        .as_array()
        .map(|a| a.iter().filter_map(|g| g["generation"].as_u64()).collect())
        .unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(wait_until(timeout, cond), "timed out waiting for {what}");
}

/// Asserts `seq` is 1, 2, ..., n with nothing missing or repeated.
fn assert_continuous(seq: &[u64], what: &str) {
    for (i, n) in seq.iter().enumerate() {
        assert_eq!(
            *n,
            i as u64 + 1,
            "{what}: line {} is {n}, not {}; the sequence: {seq:?}",
            i + 1,
            i + 1
        );
    }
}

fn err_text(out: &Path) -> String {
    std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
}

fn job_args<'a>(img: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["exec", "--ckpt", "job"];
    v.extend_from_slice(extra);
    v.extend_from_slice(&[img, "sh", "-c", COUNTER]);
    v
}

fn output_file(env: &TestEnv) -> PathBuf {
    env.work().join("job.out")
}

#[test]
fn checkpoint_on_signal_then_exit_and_resume_give_one_continuous_output() {
    let test = "checkpoint_on_signal_then_exit_and_resume_give_one_continuous_output";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let out = output_file(&env);
    let args = job_args(&img, &["--ckpt-signal", "USR1", "--ckpt-then", "exit"]);
    for run in 1..=3 {
        let before = numeric_lines(&out).len();
        let mut job = JobProcess::start(&env, &args, &out);
        wait_for("new output", Duration::from_secs(20), || {
            numeric_lines(&out).len() >= before + 10
        });
        if run == 1 {
            let listed = env.instances_json();
            let me = listed
                .iter()
                .find(|i| i["instance"] == "job")
                .unwrap_or_else(|| panic!("the job is not listed as an instance: {listed:?}"));
            assert_eq!(me["foreground"], true, "{me}");
            let table = env.ok(["instance", "list"]);
            assert!(table.contains("(foreground job)"), "{table}");
        }
        job.signal(libc::SIGUSR1);
        let status = job.wait(Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "run {run}: {}", err_text(&out));
        assert_eq!(generations(&env, "job").last().copied(), Some(run));
        assert!(
            !env.instance_names().contains(&"job".to_string()),
            "run {run}: the ended job is still listed"
        );
        let seq = numeric_lines(&out);
        assert_continuous(&seq, &format!("after run {run}"));
    }
    let log = err_text(&out);
    assert!(
        log.contains("resuming job job from checkpoint job"),
        "{log}"
    );
}

#[test]
fn periodic_checkpoints_survive_a_hard_kill() {
    let test = "periodic_checkpoints_survive_a_hard_kill";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let out = output_file(&env);
    let args = job_args(&img, &["--ckpt-interval", "1s", "--ckpt-keep", "2"]);
    let mut job = JobProcess::start(&env, &args, &out);
    wait_for("a periodic generation", Duration::from_secs(30), || {
        !generations(&env, "job").is_empty()
    });
    // Two generations later, the newest one was taken after everything printed by now.
    let floor = *numeric_lines(&out).last().unwrap_or(&0);
    let seen = *generations(&env, "job").last().unwrap();
    wait_for(
        "two more periodic generations",
        Duration::from_secs(30),
        || {
            generations(&env, "job")
                .last()
                .is_some_and(|g| *g >= seen + 2)
        },
    );
    let app_pid = env.app_pid("job");
    job.signal(libc::SIGKILL);
    job.wait(Duration::from_secs(10));
    wait_for(
        "the application to die with rctr",
        Duration::from_secs(10),
        || !process_alive(app_pid),
    );
    let killed_at = numeric_lines(&out).len();
    let ceiling = *numeric_lines(&out).last().unwrap();
    // A checkpoint under way when the job died runs on in its own session, and publishes
    // before it prunes: the count settles at the limit.
    assert!(
        wait_until(Duration::from_secs(10), || generations(&env, "job").len()
            <= 2),
        "--ckpt-keep 2: {:?}",
        generations(&env, "job")
    );

    let _again = JobProcess::start(&env, &args, &out);
    wait_for("output after the resume", Duration::from_secs(20), || {
        numeric_lines(&out).len() > killed_at + 5
    });
    let seq = numeric_lines(&out);
    let resumed = &seq[killed_at..];
    let first = resumed[0];
    assert!(
        first > floor && first <= ceiling + 1,
        "resumed at {first}: expected within ({floor}, {}]: {resumed:?}",
        ceiling + 1
    );
    for w in resumed.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the resumed job counts on: {resumed:?}");
    }
}

#[test]
fn a_foreground_job_is_checkpointed_and_joined_from_another_shell() {
    let test = "a_foreground_job_is_checkpointed_and_joined_from_another_shell";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let out = output_file(&env);
    let args = job_args(&img, &["--name", "sim"]);
    let mut job = JobProcess::start(&env, &args, &out);
    wait_for("output", Duration::from_secs(20), || {
        numeric_lines(&out).len() > 5
    });
    let report = env.ok(["checkpoint", "instance", "--json", "sim"]);
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(v["checkpoint"], "job");
    assert_eq!(v["generation"], 1);
    let inside = env.ok(["exec", "instance://sim", "cat", "/proc/1/cmdline"]);
    assert!(!inside.is_empty(), "exec instance:// reached the job");
    // SIGINT goes to the application, which dies of it; rctr exits with its status.
    job.signal(libc::SIGINT);
    let status = job.wait(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGINT),
        "{}",
        err_text(&out)
    );
    let done = numeric_lines(&out).len();
    let _again = JobProcess::start(&env, &args, &out);
    wait_for("output after the resume", Duration::from_secs(20), || {
        numeric_lines(&out).len() > done + 3
    });
    assert!(
        numeric_lines(&out)[done] > 1,
        "the job resumed, not restarted"
    );
}

#[test]
fn sigterm_with_ckpt_on_term_takes_a_final_checkpoint() {
    let test = "sigterm_with_ckpt_on_term_takes_a_final_checkpoint";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let out = output_file(&env);
    let args = job_args(&img, &["--ckpt-on-term"]);
    let mut job = JobProcess::start(&env, &args, &out);
    wait_for("output", Duration::from_secs(20), || {
        numeric_lines(&out).len() > 5
    });
    job.signal(libc::SIGTERM);
    assert_eq!(job.wait(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(generations(&env, "job"), [1]);
    let done = numeric_lines(&out).len();
    let _again = JobProcess::start(&env, &args, &out);
    wait_for("output after the resume", Duration::from_secs(20), || {
        numeric_lines(&out).len() > done + 3
    });
    assert_continuous(&numeric_lines(&out), "after SIGTERM and resume");
}

#[test]
fn app_engine_job_resumes_from_its_own_checkpoint() {
    let test = "app_engine_job_resumes_from_its_own_checkpoint";
    if !require_root(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    let out = output_file(&env);
    let args = [
        "exec",
        "--ckpt",
        "cjob",
        "--ckpt-engine",
        "app",
        "--ckpt-signal",
        "USR2",
        "--ckpt-then",
        "exit",
        &img,
        "/opt/ckpt_counter",
    ];
    let mut job = JobProcess::start(&env, &args, &out);
    wait_for("output", Duration::from_secs(20), || {
        complete_lines(&out, 0).len() > 10
    });
    job.signal(libc::SIGUSR2);
    assert_eq!(
        job.wait(Duration::from_secs(30)).code(),
        Some(0),
        "{}",
        err_text(&out)
    );
    let saved: u64 = complete_lines(&out, 0)
        .iter()
        .find_map(|l| l.strip_prefix("checkpoint written at count ")?.parse().ok())
        .expect("the application wrote its checkpoint");
    let done = complete_lines(&out, 0).len();
    let _again = JobProcess::start(&env, &args, &out);
    wait_for("output after the resume", Duration::from_secs(20), || {
        complete_lines(&out, 0).len() > done + 2
    });
    let lines = complete_lines(&out, 0);
    assert_eq!(lines[done], format!("restored at count {saved}"));
    assert_eq!(lines[done + 1], format!("count {}", saved + 1));
}

#[test]
fn a_failed_checkpoint_on_signal_keeps_the_previous_generation_and_says_so() {
    let test = "a_failed_checkpoint_on_signal_keeps_the_previous_generation_and_says_so";
    if !require_root(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    let conf = env.home().join("ckpt-conf.yaml");
    std::fs::write(&conf, "engine: app\napp:\n  timeout: 2\n").unwrap();
    let ctl = env.work().join("mode");
    std::fs::write(&ctl, "ok").unwrap();
    // Answers SIGUSR1 with a checkpoint while /ctl/mode says ok, ignores it otherwise.
    let script = "trap 'if [ \"$(cat /ctl/mode)\" = ok ]; then echo $n > $RCTR_CKPT_DIR/n; touch $RCTR_CKPT_DIR/.done; fi' USR1; n=0; while :; do n=$((n+1)); echo $n; usleep 20000; done";
    let bind = format!("{}:/ctl/mode", ctl.display());
    let conf_s = path_str(&conf);
    let args = [
        "exec",
        "-B",
        &bind,
        "--ckpt",
        "fj",
        "--ckpt-engine",
        "app",
        "--ckpt-conf",
        &conf_s,
        "--ckpt-signal",
        "USR2",
        "--ckpt-then",
        "exit",
        &img,
        "sh",
        "-c",
        script,
    ];
    let out = output_file(&env);
    let mut job = JobProcess::start(&env, &args, &out);
    wait_for("output", Duration::from_secs(20), || {
        numeric_lines(&out).len() > 5
    });
    env.ok(["checkpoint", "instance", "--ckpt-conf", &conf_s, "fj"]);
    std::fs::write(&ctl, "hang").unwrap();
    job.signal(libc::SIGUSR2);
    let status = job.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(75), "{}", err_text(&out));
    let log = err_text(&out);
    assert!(
        log.contains("checkpoint on SIGUSR2 failed")
            && log.contains("generation 1 stays the newest and restorable"),
        "{log}"
    );
    assert_eq!(generations(&env, "fj"), [1]);
}

#[test]
fn job_exit_status_and_errors() {
    let test = "job_exit_status_and_errors";
    if !require_root(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    let out = env.cmd([
        "exec",
        "--ckpt",
        "st",
        "--ckpt-engine",
        "app",
        &img,
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!env.instance_names().contains(&"st".to_string()));

    for (args, want) in [
        (
            vec!["run", "--ckpt-interval", "5s", &img],
            "--ckpt-interval needs --ckpt NAME",
        ),
        (
            vec!["run", "--ckpt", "x", "--ckpt-interval", "0s", &img],
            "zero",
        ),
        (
            vec!["run", "--ckpt", "x", "--ckpt-signal", "KILL", &img],
            "cannot be caught",
        ),
        (
            vec!["run", "--ckpt", "x", "--ckpt-then", "requeue", &img],
            "SLURM_JOB_ID is not set",
        ),
        (vec!["run", "--ckpt", "../x", &img], "name \"../x\""),
        (
            vec!["run", "--ckpt-restart", "nothere", &img],
            "no checkpoint named 'nothere'",
        ),
    ] {
        let mut cmd = env.command(&args);
        cmd.env_remove("SLURM_JOB_ID");
        let out = env.run(cmd);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_no_panic(&stderr, &format!("{args:?}"));
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    assert!(
        env.instance_names().is_empty(),
        "a refused job left an instance"
    );
}
