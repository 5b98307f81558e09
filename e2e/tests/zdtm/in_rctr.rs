//! The test inside an rctr instance: `instance start --ckpt-launch`, `checkpoint instance
//! --stop`, `instance start --ckpt-restart`, then SIGTERM to the restored test and its verdict.
//!
//! The test's work directory is bound at /w; zdtm_run is the instance's application.

use crate::catalogue::Case;
use crate::protocol::{test_args, wait_for_pid, wait_for_verdict};
use rctr_e2e::{path_str, TestEnv};
use std::path::Path;

/// Runs one test in rctr; Ok, or Err with the stage and cause. Its instances and checkpoint
/// are gone afterwards, whatever happened.
pub fn run(
    env: &TestEnv,
    image: &Path,
    index: usize,
    case: &Case,
    dir: &Path,
) -> Result<(), String> {
    let result = run_steps(env, image, index, case, dir);
    let _ = env.cmd(["instance", "stop", "--force", &format!("z{index}[ab]")]);
    let _ = env.cmd(["checkpoint", "delete", "--force", &format!("z{index}")]);
    result
}

fn run_steps(
    env: &TestEnv,
    image: &Path,
    index: usize,
    case: &Case,
    dir: &Path,
) -> Result<(), String> {
    let img = path_str(image);
    let ckpt = format!("z{index}");
    let (first, second) = (format!("z{index}a"), format!("z{index}b"));
    let step = |stage: &str, args: Vec<String>| -> Result<(), String> {
        let out = env.cmd(&args);
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            // The cause, without the log's path (it is gone with the test's $HOME).
            let line = line.trim_start_matches("rctr: error: ");
            let line = line.split(" (full log: ").next().unwrap_or(line);
            Err(format!("{stage}: {line}"))
        }
    };
    step(
        "create",
        vec!["checkpoint".into(), "create".into(), ckpt.clone()],
    )?;
    let mut start: Vec<String> = ["instance", "start", "--bind"].map(String::from).to_vec();
    start.push(format!("{}:/w", dir.display()));
    start.extend(case.rctr_flags.iter().map(|s| s.to_string()));
    start.extend([
        "--ckpt-launch".into(),
        ckpt.clone(),
        img.clone(),
        first.clone(),
    ]);
    start.extend([
        "/zdtm/zdtm_run".into(),
        "/w".into(),
        format!("/zdtm/{}", case.name),
    ]);
    start.extend(test_args(case));
    step("start", start)?;
    let Some(pid) = wait_for_pid(dir) else {
        return Err(format!(
            "start: no pidfile ({})",
            std::fs::read_to_string(env.instance_err_log(&first))
                .unwrap_or_default()
                .trim()
        ));
    };
    step(
        "dump",
        ["checkpoint", "instance", "--stop", &first]
            .map(String::from)
            .to_vec(),
    )?;
    let mut restart: Vec<String> = ["instance", "start", "--ckpt-restart", &ckpt]
        .map(String::from)
        .to_vec();
    if case.tcp_established() {
        restart.push("--tcp-established".into());
    }
    restart.extend([img, second.clone()]);
    step("restore", restart)?;
    let host_pid = host_pid_of(env.app_pid(&second), pid)
        .ok_or_else(|| format!("restore: test pid {pid} is not in the restored instance"))?;
    // SAFETY: kill(2) of a process found in the instance's pid namespace just now.
    unsafe { libc::kill(host_pid, libc::SIGTERM) };
    wait_for_verdict(dir).map_err(|e| format!("check: {e}"))
}

/// The host pid of the process that is `ns_pid` in the pid namespace of host process `app`.
fn host_pid_of(app: i32, ns_pid: i32) -> Option<i32> {
    let ns = std::fs::read_link(format!("/proc/{app}/ns/pid")).ok()?;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let host: i32 = e.file_name().to_str()?.parse().ok()?;
            if std::fs::read_link(e.path().join("ns/pid")).ok()? != ns {
                return None;
            }
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let inner: i32 = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))?
                .split_whitespace()
                .last()?
                .parse()
                .ok()?;
            (inner == ns_pid).then_some(host)
        })
}
