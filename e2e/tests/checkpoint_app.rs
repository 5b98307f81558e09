//! The application-level engine (`checkpoint create --engine app`) with programs that save
//! and load their own state: a Python Fibonacci job and a C counter; and its failure modes:
//! an application that does not answer, one that exits while writing, one that reports a
//! failure, one that writes nothing, one that plants a symlink. After every failure the
//! previous generation stays the newest and restores.

use rctr_e2e::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An app-engine configuration with a short timeout, for the tests of an unanswered signal.
fn short_timeout_conf(env: &TestEnv) -> PathBuf {
    let p = env.home().join("ckpt-conf.yaml");
    std::fs::write(&p, "engine: app\napp:\n  timeout: 2\n").unwrap();
    p
}

fn lines_of(path: &Path) -> Vec<String> {
    complete_lines(path, 0)
}

/// Waits until instance `name`'s output has a line satisfying `pred`.
fn wait_for_line(env: &TestEnv, name: &str, what: &str, pred: impl Fn(&str) -> bool) {
    let log = env.instance_log(name);
    if !wait_until(Duration::from_secs(20), || {
        lines_of(&log).iter().any(|l| pred(l))
    }) {
        panic!(
            "instance {name} never printed {what}:\n{}\n--- err:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(env.instance_err_log(name)).unwrap_or_default()
        );
    }
}

/// fib(n) for the small n these tests reach.
fn fib(n: u32) -> u128 {
    let (mut a, mut b) = (0u128, 1u128);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

/// "fib(N) = V" lines as (N, V).
fn fib_lines(path: &Path) -> Vec<(u32, String)> {
    lines_of(path)
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("fib(")?;
            let (n, v) = rest.split_once(") = ")?;
            Some((n.parse().ok()?, v.to_string()))
        })
        .collect()
}

#[test]
fn python_fibonacci_job_continues_at_the_right_number() {
    let test = "python_fibonacci_job_continues_at_the_right_number";
    if !require_root(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    env.ok(["checkpoint", "create", "fib", "--engine", "app"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "fib",
        &img,
        "job",
        "python3",
        "/opt/fib.py",
        "0.02",
    ]);
    let log = env.instance_log("job");
    wait_for_line(&env, "job", "a first fib line", |l| l.starts_with("fib(5)"));
    assert!(
        lines_of(&log)[0].starts_with("No loadable checkpoint in /.rctr-ckpt/current"),
        "{:?}",
        lines_of(&log)
    );
    env.ok(["checkpoint", "instance", "job"]);
    wait_for_line(&env, "job", "its checkpoint message", |l| {
        l.starts_with("checkpoint written at fib(")
    });
    let saved: u32 = lines_of(&log)
        .iter()
        .find_map(|l| {
            l.strip_prefix("checkpoint written at fib(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|n| n.parse().ok())
        })
        .unwrap();
    env.ok(["instance", "stop", "job"]);

    env.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "fib",
        &img,
        "job2",
        "python3",
        "/opt/fib.py",
        "0.02",
    ]);
    let log2 = env.instance_log("job2");
    wait_for_line(&env, "job2", "a fib line", |l| l.starts_with("fib("));
    assert_eq!(
        lines_of(&log2)[0],
        "Loaded latest checkpoint from /.rctr-restore"
    );
    let resumed = fib_lines(&log2);
    assert_eq!(
        resumed[0].0,
        saved + 1,
        "the job continues right after the checkpointed number"
    );
    for (n, v) in resumed.iter().take(20) {
        assert!(*n < 180, "the test's fib() would overflow");
        assert_eq!(v, &fib(*n).to_string(), "fib({n}) after the restart");
    }
}

#[test]
fn c_counter_continues_from_its_own_checkpoint() {
    let test = "c_counter_continues_from_its_own_checkpoint";
    if !require_root(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    env.ok(["checkpoint", "create", "cc", "--engine", "app"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "cc",
        &img,
        "ctr",
        "/opt/ckpt_counter",
    ]);
    wait_for_line(&env, "ctr", "count 10", |l| l == "count 10");
    env.ok(["checkpoint", "instance", "ctr"]);
    let log = env.instance_log("ctr");
    wait_for_line(&env, "ctr", "its checkpoint message", |l| {
        l.starts_with("checkpoint written at count ")
    });
    let saved: u64 = lines_of(&log)
        .iter()
        .find_map(|l| l.strip_prefix("checkpoint written at count ")?.parse().ok())
        .unwrap();
    env.ok(["instance", "stop", "ctr"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "cc",
        &img,
        "ctr2",
        "/opt/ckpt_counter",
    ]);
    wait_for_line(&env, "ctr2", "a count", |l| l.starts_with("count "));
    let lines = lines_of(&env.instance_log("ctr2"));
    assert_eq!(lines[0], format!("restored at count {saved}"));
    assert_eq!(lines[1], format!("count {}", saved + 1));
}

/// A shell application whose answer to SIGUSR1 is chosen by the file /ctl/mode (bound from
/// the host): `ok` writes state and .done, `hang` ignores it, `exit` exits, `fail` writes
/// .failed, `empty` writes only .done, `link` plants a symlink.
const SCRIPTED_APP: &str = r#"
answer() {
    mode=$(cat /ctl/mode)
    case $mode in
    ok) echo "$n" > "$RCTR_CKPT_DIR/n"; touch "$RCTR_CKPT_DIR/.done" ;;
    hang) ;;
    exit) exit 3 ;;
    fail) echo "scratch quota exceeded" > "$RCTR_CKPT_DIR/.failed" ;;
    empty) touch "$RCTR_CKPT_DIR/.done" ;;
    link) ln -s /etc/passwd "$RCTR_CKPT_DIR/n"; touch "$RCTR_CKPT_DIR/.done" ;;
    esac
}
trap answer USR1
n=0
if [ -n "$RCTR_RESTORE_DIR" ]; then n=$(cat "$RCTR_RESTORE_DIR/n"); echo "restored $n"; fi
while :; do n=$((n + 1)); usleep 20000; done
"#;

struct Scripted<'a> {
    env: &'a TestEnv,
    img: String,
    ctl: PathBuf,
    conf: PathBuf,
}

impl<'a> Scripted<'a> {
    fn launch(env: &'a TestEnv) -> Scripted<'a> {
        let ctl = env.work().join("ctl");
        std::fs::create_dir(&ctl).unwrap();
        let s = Scripted {
            env,
            img: path_str(&app_image()),
            ctl,
            conf: short_timeout_conf(env),
        };
        s.set_mode("ok");
        env.ok(["checkpoint", "create", "sc", "--engine", "app"]);
        s.start("--ckpt-launch", "app");
        s
    }

    fn start(&self, flag: &str, name: &str) {
        let bind = format!("{}:/ctl", self.ctl.display());
        self.env.ok([
            "instance",
            "start",
            "-B",
            &bind,
            flag,
            "sc",
            &self.img,
            name,
            "sh",
            "-c",
            SCRIPTED_APP,
        ]);
    }

    fn set_mode(&self, mode: &str) {
        std::fs::write(self.ctl.join("mode"), mode).unwrap();
    }

    fn checkpoint(&self) -> std::process::Output {
        self.env.cmd([
            "checkpoint",
            "instance",
            "--ckpt-conf",
            &path_str(&self.conf),
            "app",
        ])
    }

    /// Asserts the checkpoint fails with one line containing `want`, leaving generation 1.
    fn fails_with(&self, mode: &str, want: &str) {
        self.set_mode(mode);
        let out = self.checkpoint();
        assert!(
            !out.status.success(),
            "mode {mode}: the checkpoint succeeded"
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = assert_one_line_error(&stderr, &format!("mode {mode}"));
        assert!(line.contains(want), "mode {mode}: {line}");
        assert!(
            line.contains("previous checkpoint is unchanged"),
            "mode {mode}: {line}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&self.env.ok(["checkpoint", "list", "sc", "--json"])).unwrap();
        let gens: Vec<u64> = v["generations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["generation"].as_u64().unwrap())
            .collect();
        assert_eq!(gens, [1], "mode {mode}: generation 1 stays the only one");
        let dir = self.env.checkpoint_dir("sc");
        let leftovers: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "mode {mode}: {leftovers:?}");
        assert!(
            !dir.join("exchange/current").exists(),
            "mode {mode}: the hand-over directory is left"
        );
    }
}

#[test]
fn failed_application_checkpoints_keep_the_previous_generation() {
    let test = "failed_application_checkpoints_keep_the_previous_generation";
    if !require_root(test) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Scripted::launch(&env);
    let out = s.checkpoint();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let started = std::time::Instant::now();
    s.fails_with("hang", "did not finish within 2 s");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout is honoured"
    );
    s.fails_with("fail", "the application reported: scratch quota exceeded");
    s.fails_with("empty", "wrote nothing");
    s.fails_with("link", "not a regular file");
    // Still running after all that: a later checkpoint works again.
    s.set_mode("ok");
    let out = s.checkpoint();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(["checkpoint", "verify", "sc"]);
    // Put generation 2 aside so that the exit test can again require "only generation 1".
    env.ok(["instance", "stop", "app"]);
    std::fs::remove_dir_all(env.checkpoint_dir("sc").join("gen-000002")).unwrap();
    std::fs::write(env.checkpoint_dir("sc").join("latest"), "1\n").unwrap();
    s.start("--ckpt-restart", "app");
    wait_for_line(&env, "app", "the restore message", |l| {
        l.starts_with("restored ")
    });
    s.fails_with("exit", "exited while writing");
    // Generation 1 still restores.
    env.ok(["instance", "stop", "--force", "app"]);
    s.set_mode("ok");
    s.start("--ckpt-restart", "again");
    wait_for_line(&env, "again", "the restore message", |l| {
        l.starts_with("restored ")
    });
}

#[test]
fn app_checkpoint_errors_are_one_line() {
    let test = "app_checkpoint_errors_are_one_line";
    if !require_root(test) {
        return;
    }
    let env = TestEnv::new(test);
    let (_, stderr) = env.fails(["checkpoint", "create", "x", "--engine", "dmtcp"]);
    assert_no_panic(&stderr, "unknown engine");
    assert!(stderr.contains("dmtcp"), "{stderr}");
    env.ok(["checkpoint", "create", "x", "--engine", "app"]);
    let (_, stderr) = env.fails(["checkpoint", "create", "x", "--engine", "criu"]);
    let line = assert_one_line_error(&stderr, "a name taken by another engine");
    assert!(line.contains("already exists"), "{line}");
    let img = path_str(&app_image());
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        "x",
        &img,
        "r",
        "true",
    ]);
    let line = assert_one_line_error(&stderr, "restart without generations");
    assert!(line.contains("has no images yet"), "{line}");
    let bad = env.home().join("bad.yaml");
    std::fs::write(&bad, "engine: app\napp:\n  signal: SIGNOPE\n").unwrap();
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-conf",
        &path_str(&bad),
        "--ckpt-launch",
        "x",
        &img,
        "r",
        "true",
    ]);
    let line = assert_one_line_error(&stderr, "a bad app section");
    assert!(
        line.contains("bad.yaml:3:") && line.contains("SIGNOPE"),
        "{line}"
    );
}
