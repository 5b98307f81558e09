//! Running a command to completion with a deadline, so that a hung rctr fails its test
//! instead of hanging the whole suite.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

/// Deadline for one rctr command (generous: debug build, CRIU, a 2-core machine).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn describe_command(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|<>*?()".contains(c)) {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.into_owned()
        }
    }));
    words.join(" ")
}

fn read_back(mut file: File) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut buf));
    buf
}

/// Runs `cmd` (stdin from /dev/null) and waits at most `timeout`; on timeout the command is
/// killed. Errors are complete descriptions.
///
/// stdout and stderr go to unlinked temporary files, not pipes: the command is finished when
/// it exits, even if it left a process behind that still holds them (`instance start` must
/// not, and a dedicated test checks that with pipes).
pub fn try_output_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let what = describe_command(&cmd);
    let capture = || {
        tempfile::tempfile().map_err(|e| format!("cannot create a capture file for {what}: {e}"))
    };
    let (out_file, err_file) = (capture()?, capture()?);
    let dup = |f: &File| {
        f.try_clone()
            .map_err(|e| format!("cannot duplicate a capture file: {e}"))
    };
    cmd.stdin(Stdio::null())
        .stdout(dup(&out_file)?)
        .stderr(dup(&err_file)?);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {what}: {e}"))?;
    // Our copies of the files go with `cmd`; the ones kept here are for reading back.
    drop(cmd);
    let pid = child.id() as libc::pid_t;
    let (tx, exited) = channel::<std::io::Result<ExitStatus>>();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match exited.recv_timeout(timeout) {
        Ok(status) => {
            let status = status.map_err(|e| format!("waiting for {what} failed: {e}"))?;
            Ok(Output {
                status,
                stdout: read_back(out_file),
                stderr: read_back(err_file),
            })
        }
        Err(_) => {
            // SAFETY: pid is our child, not reaped yet (the waiter thread has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = exited.recv();
            Err(format!(
                "{what} did not finish within {timeout:?} and was killed; its stderr:\n{}",
                String::from_utf8_lossy(&read_back(err_file))
            ))
        }
    }
}

/// [`try_output_with_timeout`], panicking with its error.
pub fn output_with_timeout(cmd: Command, timeout: Duration) -> Output {
    try_output_with_timeout(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}
