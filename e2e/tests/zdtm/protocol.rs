//! What both runs share: a test's command line, waiting for it, reading its verdict.

use crate::catalogue::{Args, Case};
use std::path::Path;
use std::time::{Duration, Instant};

/// Files of the zdtm protocol, relative to the test's work directory.
pub const PIDFILE: &str = "test.pid";
pub const OUTFILE: &str = "test.out";
const TESTFILE: &str = "test.test";

/// How long a test may take to get ready, and to check and exit after SIGTERM.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The test's arguments after its program path.
pub fn test_args(case: &Case) -> Vec<String> {
    let mut args = vec![
        format!("--pidfile={PIDFILE}"),
        format!("--outfile={OUTFILE}"),
    ];
    match case.args {
        Args::NoFile => {}
        Args::File => args.push(format!("--filename={TESTFILE}")),
        Args::Dir => args.push(format!("--dirname={TESTFILE}")),
        Args::Extra(extra) => args.extend(extra.iter().map(|s| s.to_string())),
    }
    args
}

/// Polls `done` every 20 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The test's pid (in its own pid namespace) from its pidfile, once the test is ready.
pub fn wait_for_pid(dir: &Path) -> Option<i32> {
    let pidfile = dir.join(PIDFILE);
    let mut pid = None;
    wait_for(TEST_TIMEOUT, || {
        pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    });
    pid
}

/// The verdict in the outfile, which the test renames into place when it exits: Ok when it
/// says PASS, else Err with its last line (or why there is none).
pub fn wait_for_verdict(dir: &Path) -> Result<(), String> {
    let out = dir.join(OUTFILE);
    if !wait_for(TEST_TIMEOUT, || out.exists()) {
        let partial =
            std::fs::read_to_string(dir.join(format!("{OUTFILE}.inprogress"))).unwrap_or_default();
        return Err(format!(
            "no verdict within {}s after SIGTERM{}",
            TEST_TIMEOUT.as_secs(),
            last_line(&partial)
                .map(|l| format!(" (last: {l})"))
                .unwrap_or_default()
        ));
    }
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    if text.lines().any(|l| l.trim_end().ends_with("PASS")) {
        Ok(())
    } else {
        // The test's first complaint says most; its last line is often only the cleanup.
        let first = text
            .lines()
            .find(|l| l.contains("FAIL") || l.contains("errno =") || l.contains("mismatch"))
            .map(str::trim);
        Err(first
            .or(last_line(&text))
            .unwrap_or("empty outfile")
            .to_string())
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::trim)
}

/// The first real error of a CRIU log (the RLIMIT_NOFILE one is harmless on these hosts).
pub fn first_criu_error(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("Error (") && !l.contains("RLIMIT_NOFILE"))
        .map(|l| l.split_once("): ").map_or(l, |(_, m)| m).trim().to_string())
        .unwrap_or_else(|| format!("see {}", log.display()))
}
