//! rctr's own messages on stderr, filtered by the global `-q`, `-v` and `-d` flags.
//!
//! One process-wide level, set once by the CLI. Lines are written with a single write(2) on
//! fd 2, never through std's locked stderr: rctr logs in children it forked (container
//! setup, checkpoint engines), where a lock held by another thread at fork time would hang.

use std::sync::atomic::{AtomicU8, Ordering};

/// How much rctr says on stderr. Errors are always shown (by the CLI, not here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// `-q`: warnings only, no informational lines.
    Quiet = 0,
    /// Default: warnings and informational lines ("instance started successfully").
    Info = 1,
    /// `-v`: also the main steps (image opened, container started, checkpoint written).
    Verbose = 2,
    /// `-d`: every step (loop device, each mount, namespaces, exec argv, engine argv).
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the level for the whole process (and the children it forks afterwards).
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The current level.
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Level::Quiet,
        1 => Level::Info,
        2 => Level::Verbose,
        _ => Level::Debug,
    }
}

/// Whether messages at `level` are shown: lets callers skip building costly messages.
pub fn enabled(level: Level) -> bool {
    level <= self::level()
}

/// The prefix of a line at `level`, Apptainer-style for the levels it has.
fn prefix(level: Level) -> String {
    match level {
        Level::Quiet => "rctr: warning: ".to_string(),
        Level::Info => String::new(),
        Level::Verbose => "VERBOSE ".to_string(),
        // The pid tells a container's setup (a forked child) from rctr itself.
        Level::Debug => format!("DEBUG   [P={}] ", std::process::id()),
    }
}

/// Writes one message at `level` if the level is enabled. Use the macros.
pub fn write(level: Level, msg: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = format!("{}{msg}\n", prefix(level));
    write_stderr(line.as_bytes());
}

fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: fd 2 is only read from here; the pointer and length describe `bytes`.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return; // stderr closed or full: nothing better to do with a log line
        }
        bytes = &bytes[n as usize..];
    }
}

/// A warning: shown even with `-q`, as Apptainer does.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::write($crate::Level::Quiet, format_args!($($arg)*)) };
}

/// An informational line, hidden by `-q`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::write($crate::Level::Info, format_args!($($arg)*)) };
}

/// A main step, shown with `-v` or `-d`.
#[macro_export]
macro_rules! verbose {
    ($($arg:tt)*) => { $crate::write($crate::Level::Verbose, format_args!($($arg)*)) };
}

/// A detailed step, shown with `-d`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::write($crate::Level::Debug, format_args!($($arg)*)) };
}

/// An argv as a shell would show it, for debug lines.
pub fn show_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_filter_in_order() {
        set_level(Level::Quiet);
        assert!(enabled(Level::Quiet) && !enabled(Level::Info));
        set_level(Level::Verbose);
        assert!(enabled(Level::Info) && enabled(Level::Verbose) && !enabled(Level::Debug));
        set_level(Level::Debug);
        assert!(enabled(Level::Debug));
        set_level(Level::Info);
    }

    #[test]
    fn argv_is_shown_shell_quoted() {
        let argv = ["/bin/sh", "-c", "echo 'hi there'", ""].map(String::from);
        assert_eq!(show_argv(&argv), r"/bin/sh -c 'echo '\''hi there'\''' ''");
    }
}
