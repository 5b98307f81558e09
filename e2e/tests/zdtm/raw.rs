//! The baseline: the test checkpointed and restored by raw CRIU on the host, with the options
//! zdtm gives it (`criu dump --tree PID`, then `criu restore --restore-detached`).
//!
//! The test runs under zdtm_run, as in rctr: a subreaper that reaps the dumped (killed)
//! tree, so that its pids are free for the restore, and that the restored test is
//! re-parented to (zdtm_run also wraps `criu restore`).

use crate::catalogue::Case;
use crate::protocol::{first_criu_error, test_args, wait_for, wait_for_pid, wait_for_verdict};
use rctr_e2e::CRIU_BIN;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const READY: &str = "restore.ready";

/// CRIU through its own loader, as rctr's bundle runs it.
fn criu_argv() -> Vec<String> {
    let prefix = Path::new(CRIU_BIN)
        .parent()
        .and_then(Path::parent)
        .expect("CRIU_BIN is <prefix>/bin/criu");
    let lib = prefix.join("lib");
    vec![
        lib.join("ld-linux-x86-64.so.2").display().to_string(),
        "--library-path".into(),
        format!(
            "{}:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu",
            lib.display()
        ),
        CRIU_BIN.into(),
    ]
}

fn spawn_in(dir: &Path, wrapper: &Path, argv: &[String], ready: bool) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("run.log"))?;
    let mut cmd = Command::new(wrapper);
    cmd.arg(dir).args(argv).current_dir(dir);
    if ready {
        cmd.env("ZDTM_RUN_READY", dir.join(READY));
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

fn wait_child(child: &mut Child, timeout: Duration) -> bool {
    let exited = wait_for(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    exited
}

/// Runs one test through dump and restore with raw CRIU; Ok, or Err with the stage and cause.
pub fn run(case: &Case, bins: &Path, dir: &Path) -> Result<(), String> {
    let wrapper = bins.join("zdtm_run");
    let mut argv: Vec<String> = vec![];
    if !case.host_ns.is_empty() {
        argv.push("/usr/bin/unshare".into());
        argv.extend(case.host_ns.iter().map(|s| s.to_string()));
    }
    argv.push(bins.join(case.name).display().to_string());
    argv.extend(test_args(case));
    let mut tree = spawn_in(dir, &wrapper, &argv, false).map_err(|e| format!("start: {e}"))?;
    let Some(pid) = wait_for_pid(dir) else {
        let _ = tree.kill();
        let _ = tree.wait();
        return Err(format!("start: no pidfile ({})", log_tail(dir)));
    };

    let img = dir.join("img");
    std::fs::create_dir(&img).map_err(|e| e.to_string())?;
    let mut dump: Vec<String> = criu_argv();
    dump.extend(
        [
            "dump",
            "--tree",
            &pid.to_string(),
            "-D",
            "img",
            "-o",
            "dump.log",
            "-v4",
        ]
        .map(String::from),
    );
    dump.extend(case.opts.iter().chain(case.dopts).map(|s| s.to_string()));
    dump.extend(["--timeout", "10"].map(String::from));
    let status = Command::new(&dump[0])
        .args(&dump[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("dump: {e}"))?;
    if !status.success() {
        kill_test(pid);
        wait_child(&mut tree, Duration::from_secs(10));
        return Err(format!("dump: {}", first_criu_error(&img.join("dump.log"))));
    }
    // The dumped tree was killed and zdtm_run reaps it, freeing the pids. (zdtm_run itself
    // may stay: some tests keep a helper outside the dumped tree, a TCP peer for instance.)
    if !wait_for(Duration::from_secs(30), || {
        gone(pid) && !has_zombies(tree.id())
    }) {
        let _ = tree.kill();
        let _ = tree.wait();
        return Err("dump: the dumped test did not go away".into());
    }

    let mut restore: Vec<String> = criu_argv();
    restore.extend(["restore", "-D", "img", "-o", "restore.log", "-v4"].map(String::from));
    restore.extend(case.opts.iter().chain(case.ropts).map(|s| s.to_string()));
    restore.push("--restore-detached".into());
    let mut restored =
        spawn_in(dir, &wrapper, &restore, true).map_err(|e| format!("restore: {e}"))?;
    let ready = dir.join(READY);
    wait_for(Duration::from_secs(60), || {
        ready.exists() || matches!(restored.try_wait(), Ok(Some(_)))
    });
    if !ready.exists() {
        wait_child(&mut restored, Duration::from_secs(1));
        return Err(format!(
            "restore: {}",
            first_criu_error(&img.join("restore.log"))
        ));
    }
    kill_test_term(pid);
    let verdict = wait_for_verdict(dir);
    if !wait_child(&mut restored, Duration::from_secs(30)) && verdict.is_ok() {
        return Err("check: the restored test did not exit".into());
    }
    // The helper outside the tree, if any, is done too by now.
    wait_child(&mut tree, Duration::from_secs(5));
    verdict.map_err(|e| format!("check: {e}"))
}

/// Whether no process has pid `pid` any more.
fn gone(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) != 0 }
}

/// Whether `parent` has children that exited and are not reaped yet.
fn has_zombies(parent: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
    })
}

fn kill_test_term(pid: i32) {
    // SAFETY: kill(2) with a pid read from the test's pidfile; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

fn kill_test(pid: i32) {
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
        + &std::fs::read_to_string(dir.join("test.out.inprogress")).unwrap_or_default();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// A fresh work directory for one run of one test.
pub fn work_dir(root: &Path, case: &Case, side: &str) -> PathBuf {
    let dir = root.join(format!("{}.{side}", case.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}
