//! Running the engine inside a running container: join its pid and mount
//! namespaces (so CRIU sees the container's /proc and mounts as its own), fork,
//! and exec the bundled engine.

use anyhow::Result;
use rctr_runtime::credentials::become_user_keeping_capabilities;
use rctr_runtime::plan::RunAs;
use rctr_runtime::spawn::{prepare_exec, run_in_child, ExecIo};
use std::ffi::CString;

/// Runs `argv` inside the container whose init has host pid `init_pid`; returns the exit code.
pub fn run_in_container(init_pid: i32, net: bool, argv: &[String]) -> Result<i32> {
    run_in_container_as(init_pid, net, None, argv)
}

/// As [`run_in_container`]; with `run_as`, the engine runs with that user's ids and root's
/// capabilities (see [`rctr_runtime::credentials::become_user_keeping_capabilities`]).
pub fn run_in_container_as(
    init_pid: i32,
    net: bool,
    run_as: Option<&RunAs>,
    argv: &[String],
) -> Result<i32> {
    run_in_child(
        || match rctr_runtime::join::join_namespaces(init_pid, net) {
            // Joining a pid namespace applies to children only: fork once more to be in it.
            Ok(()) => run_in_child(|| {
                let _ = nix::unistd::chdir("/");
                if let Some(r) = run_as {
                    if let Err(e) = become_user_keeping_capabilities(r) {
                        eprintln!("rctr: error: {e:#}");
                        return 125;
                    }
                }
                // The engine logs to its own file; its stdio must not be a descriptor of the
                // host it could trip over.
                prepare_exec(&ExecIo::NULL);
                exec_engine(argv, &[]);
                126
            })
            .unwrap_or(1),
            Err(e) => {
                eprintln!("rctr: error: {e:#}");
                125
            }
        },
    )
}

/// execv with a minimal environment; returns only on failure.
pub fn exec_engine(argv: &[String], extra_env: &[String]) {
    let c: Vec<CString> = argv
        .iter()
        .filter_map(|a| CString::new(a.as_str()).ok())
        .collect();
    let mut env: Vec<CString> =
        vec![CString::new("PATH=/usr/sbin:/usr/bin:/sbin:/bin").unwrap_or_default()];
    env.extend(
        extra_env
            .iter()
            .filter_map(|e| CString::new(e.as_str()).ok()),
    );
    rctr_runtime::process::unblock_all_signals();
    // CRIU creates its images and stats files 0644 (before rctr narrows them): they hold
    // process memory, so never let them be readable by others, whatever the caller's umask.
    // The restored tasks get their own umask back from the images.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Some(path) = c.first() {
        let _ = nix::unistd::execve(path, &c, &env);
    }
}

/// Error lines CRIU logs on every run here, whatever happens next: its start-up probes of
/// the rlimit it may not raise and of a tun device the host lacks. They never explain a failure.
const HARMLESS_ERRORS: &[&str] = &[
    "RLIMIT_NOFILE",
    "tun: Unable to create tun",
    // nft's complaint while CRIU removes its network lock after a failure: a consequence.
    "Could not process rule",
];

/// Causes that need more than the engine's words: what the log says, and what it means here.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "Can't get rlimit",
        "a process of the application changed its uid, and dumping it needs CAP_SYS_RESOURCE, which root lacks on this host (see `rctr checkpoint check`); run the application under one uid",
    ),
    (
        "doesn't live in IPC ns",
        "the application uses SysV shared memory of an IPC namespace the checkpoint does not own; launch it again with --ckpt-launch so that it gets its own",
    ),
];

/// Why the engine failed, for a one-line message: the signal that killed it, or its exit
/// code and the last errors of its log.
pub fn engine_failure(code: i32, log: &std::path::Path) -> String {
    // Exit codes above 128 are how the helper processes pass on a signal death.
    if let Some(sig) = code.checked_sub(128).filter(|s| (1..=64).contains(s)) {
        return match nix::sys::signal::Signal::try_from(sig) {
            Ok(name) => format!("the engine was killed by signal {sig} ({name})"),
            Err(_) => format!("the engine was killed by signal {sig}"),
        };
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut why = format!("engine exit {code}: {}", log_errors(log));
    if let Some((_, meaning)) = EXPLAINED.iter().find(|(said, _)| text.contains(said)) {
        why.push_str(&format!(" ({meaning})"));
    }
    why
}

/// The first and the last error lines of an engine log, for a one-line message.
pub fn log_errors(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !HARMLESS_ERRORS.iter().any(|h| l.contains(h)))
        .collect();
    // The first real error is the cause ("2: Error (...): File data/log has bad size",
    // "Can't get rlimit 0"); the last lines only say that the whole operation failed.
    let first_error = errors.first();
    let pick = match (first_error, errors.last()) {
        (Some(first), Some(last)) if first != last => vec![*first, *last],
        _ if errors.is_empty() => text.lines().rev().take(1).collect::<Vec<_>>(),
        _ => errors[errors.len().saturating_sub(2)..].to_vec(),
    };
    pick.iter()
        .map(|l| without_timestamp(l.trim()))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A log line without the `(00.016231) ` time CRIU puts first at -v3 and above.
fn without_timestamp(line: &str) -> &str {
    line.strip_prefix('(')
        .and_then(|rest| rest.split_once(')'))
        .filter(|(time, _)| {
            !time.is_empty() && time.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
        .map(|(_, after)| after.trim_start())
        .unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_lose_the_engines_timestamp_only() {
        assert_eq!(
            without_timestamp("(00.016231) Error (criu/cr-dump.c:389): Can't get rlimit 0"),
            "Error (criu/cr-dump.c:389): Can't get rlimit 0"
        );
        assert_eq!(
            without_timestamp("Error (criu/cr-dump.c:389): x"),
            "Error (criu/cr-dump.c:389): x"
        );
        assert_eq!(without_timestamp("(pid 3) Error"), "(pid 3) Error");
    }

    const NOISE: &str = "Error (criu/tun.c:85): tun: Unable to create tun: No such file or directory\n\
        Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n";

    fn log_with(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn start_up_noise_is_not_shown_as_the_cause() {
        let log = log_with(&format!(
            "{NOISE}Error (criu/bfd.c:131): bfd: Error flushing image: No space left on device\n\
             Error (criu/cr-dump.c:1975): Dumping FAILED.\n"
        ));
        let why = engine_failure(1, log.path());
        assert_eq!(
            why,
            "engine exit 1: Error (criu/bfd.c:131): bfd: Error flushing image: No space left on device \
             | Error (criu/cr-dump.c:1975): Dumping FAILED."
        );
        // Only noise: the last line stands in.
        let log = log_with(NOISE);
        assert!(!engine_failure(1, log.path()).contains("tun"));
    }

    #[test]
    fn a_task_error_is_preferred_over_the_generic_failure_lines() {
        let log = log_with(&format!(
            "{NOISE}    2: Error (criu/files-reg.c:2175): File data/log has bad size 51 (expect 39)\n\
             Error (criu/cr-restore.c:1269): 2 killed by signal 9: Killed\n\
             Error (criu/cr-restore.c:2331): Restoring FAILED.\n"
        ));
        let why = engine_failure(1, log.path());
        assert!(
            why.contains("File data/log has bad size 51 (expect 39)"),
            "{why}"
        );
        assert!(why.contains("Restoring FAILED"), "{why}");
        assert!(!why.contains("killed by signal"), "{why}");
    }

    #[test]
    fn the_first_cause_is_shown_and_explained() {
        let log = log_with(&format!(
            "{NOISE}Error (criu/cr-dump.c:389): Can't get rlimit 0: Operation not permitted\n\
             Error (criu/cr-dump.c:1511): Dump mappings failed\n\
             Error: Could not process rule: No such file or directory\n\
             Error (criu/cr-dump.c:1975): Dumping FAILED.\n"
        ));
        let why = engine_failure(1, log.path());
        assert!(why.contains("Can't get rlimit 0"), "{why}");
        assert!(why.contains("CAP_SYS_RESOURCE"), "{why}");
        assert!(!why.contains("Dump mappings"), "{why}");
        assert!(!why.contains("Could not process rule"), "{why}");
    }

    #[test]
    fn a_signal_death_is_named_not_blamed_on_the_log() {
        let log = log_with(NOISE);
        assert_eq!(
            engine_failure(137, log.path()),
            "the engine was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            engine_failure(143, log.path()),
            "the engine was killed by signal 15 (SIGTERM)"
        );
        assert!(engine_failure(2, log.path()).starts_with("engine exit 2: "));
    }
}
