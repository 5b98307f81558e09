//! What an instance's init reports to the `instance start` that forked it, one
//! line per message over a pipe.

use anyhow::{bail, Context, Result};

/// One report of init, in the order init sends them: `Error` (setup failed),
/// or `Ready` and later, if the application ends, `Exited`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStatus {
    /// The application runs, with this pid in the container's pid namespace.
    Ready(i32),
    /// Setting up the container or starting the application failed.
    Error(String),
    /// The application exited with this status (shell convention).
    Exited(i32),
}

impl InitStatus {
    /// The line for this message, newline included. An error's own newlines
    /// and backslashes are escaped, so that every message is one line.
    pub fn encode(&self) -> String {
        match self {
            InitStatus::Ready(pid) => format!("ready {pid}\n"),
            InitStatus::Error(msg) => {
                let escaped = msg.replace('\\', "\\\\").replace('\n', "\\n");
                format!("error {escaped}\n")
            }
            InitStatus::Exited(code) => format!("exited {code}\n"),
        }
    }

    /// Reads back one line made by [`InitStatus::encode`] (with or without its newline).
    pub fn decode(line: &str) -> Result<InitStatus> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let (kind, arg) = line.split_once(' ').unwrap_or((line, ""));
        let number = || {
            arg.parse::<i32>()
                .with_context(|| format!("bad report from the container's init: {line:?}"))
        };
        Ok(match kind {
            "ready" => InitStatus::Ready(number()?),
            "exited" => InitStatus::Exited(number()?),
            "error" => InitStatus::Error(unescape(arg)?),
            _ => bail!("bad report from the container's init: {line:?}"),
        })
    }
}

fn unescape(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                other => bail!("bad escape {other:?} in a report from the container's init"),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_as_one_line() {
        for status in [
            InitStatus::Ready(2),
            InitStatus::Exited(0),
            InitStatus::Exited(143),
            InitStatus::Error("cannot mount /data: No such file".into()),
            InitStatus::Error(String::new()),
        ] {
            let line = status.encode();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(InitStatus::decode(&line).unwrap(), status);
        }
    }

    #[test]
    fn an_error_with_newlines_and_backslashes_stays_one_line() {
        let status = InitStatus::Error("first\nsecond \\n not a newline\\\n".into());
        let line = status.encode();
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert_eq!(InitStatus::decode(&line).unwrap(), status);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for line in [
            "",
            "ready",
            "ready x",
            "ready 2 3",
            "exited",
            "init 5",
            "error: old style",
            "error bad \\t escape",
            "error trailing \\",
        ] {
            assert!(InitStatus::decode(line).is_err(), "{line:?} was accepted");
        }
    }
}
