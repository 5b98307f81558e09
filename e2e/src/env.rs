//! [`TestEnv`]: one test's private `$HOME` and work directory, and running rctr in them.

use crate::net::try_wait_for_port;
use crate::paths::{e2e_tmp_dir, rctr_bin, try_rctr_bin};
use crate::run::{describe_command, output_with_timeout, try_output_with_timeout, DEFAULT_TIMEOUT};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;
use tempfile::TempDir;

/// Tests of one test binary run in parallel (shared), except those checking host-wide state
/// such as the mount table, which run alone (exclusive).
static HOST_STATE: RwLock<()> = RwLock::new(());

enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

/// A private `$HOME` (hence its own `~/.rctr`) and work directory for one test. Every rctr
/// command of the test runs with that `$HOME`, in the work directory, with stdin /dev/null.
/// Dropping it stops all instances started under that `$HOME`, then deletes both directories.
pub struct TestEnv {
    test: String,
    // Field order matters: the directories go before the turn is given back.
    home: TempDir,
    work: TempDir,
    _turn: Turn,
}

/// Host variables that would point the container's Python at host-only directories.
const HOST_ONLY_VARS: &[&str] = &["PYTHONHOME", "PYTHONPATH"];

impl TestEnv {
    /// An environment for a test that may run alongside others. Its directories are created
    /// under `<target>/e2e-tmp/`.
    pub fn new(test: &str) -> TestEnv {
        let turn = Turn::Shared(HOST_STATE.read().unwrap_or_else(PoisonError::into_inner));
        Self::with_turn(test, turn)
    }

    /// An environment for a test that checks host-wide state (mounts, /run/rctr) and must not
    /// see other tests' containers: it waits for the running tests and runs alone.
    pub fn exclusive(test: &str) -> TestEnv {
        let turn = Turn::Exclusive(HOST_STATE.write().unwrap_or_else(PoisonError::into_inner));
        Self::with_turn(test, turn)
    }

    fn with_turn(test: &str, turn: Turn) -> TestEnv {
        let parent = e2e_tmp_dir();
        let make = |what: &str| {
            tempfile::Builder::new()
                .prefix(&format!("{what}-"))
                .tempdir_in(&parent)
                .unwrap_or_else(|e| {
                    panic!("{test}: cannot create a temporary {what} directory: {e}")
                })
        };
        TestEnv {
            test: test.to_string(),
            home: make("home"),
            work: make("work"),
            _turn: turn,
        }
    }

    pub fn test_name(&self) -> &str {
        &self.test
    }

    /// The `$HOME` rctr sees.
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// The working directory of rctr commands; scratch space for the test.
    pub fn work(&self) -> &Path {
        self.work.path()
    }

    /// `rctr ARGS` ready to run in this environment (add env vars, spawn it yourself, ...).
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(rctr_bin());
        cmd.args(args)
            .env("HOME", self.home())
            .current_dir(self.work());
        for var in HOST_ONLY_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs a command made by [`TestEnv::command`] to completion (with a deadline).
    pub fn run(&self, cmd: Command) -> Output {
        output_with_timeout(cmd, DEFAULT_TIMEOUT)
    }

    /// Runs `rctr ARGS` and returns its status, stdout and stderr, whatever the status.
    pub fn cmd<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(self.command(args))
    }

    /// Runs `rctr ARGS`, asserts success and returns stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.ok_cmd(self.command(args))
    }

    /// Runs a prepared command, asserts success and returns stdout.
    pub fn ok_cmd(&self, cmd: Command) -> String {
        let what = describe_command(&cmd);
        let out = self.run(cmd);
        if !out.status.success() {
            panic!(
                "{}: `{what}` failed ({}):\n{}",
                self.test,
                out.status,
                show(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `rctr ARGS`, asserts that it fails with an exit code (not a crash by a signal) and
    /// returns the exit code and stderr.
    pub fn fails<I, S>(&self, args: I) -> (i32, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.fails_cmd(self.command(args))
    }

    /// Runs a prepared command and asserts that it fails, as [`TestEnv::fails`].
    pub fn fails_cmd(&self, cmd: Command) -> (i32, String) {
        let what = describe_command(&cmd);
        let out = self.run(cmd);
        match (out.status.code(), out.status.signal()) {
            (Some(0), _) => panic!(
                "{}: `{what}` succeeded but should fail:\n{}",
                self.test,
                show(&out)
            ),
            (Some(code), _) => (code, String::from_utf8_lossy(&out.stderr).into_owned()),
            (None, sig) => panic!(
                "{}: `{what}` was killed by signal {sig:?}:\n{}",
                self.test,
                show(&out)
            ),
        }
    }

    /// `$HOME/.rctr/instances/<hostname>/<user>/`: where instance records and logs live.
    pub fn instances_dir(&self) -> PathBuf {
        self.home()
            .join(".rctr/instances")
            .join(hostname())
            .join(username())
    }

    /// The instance's stdout log, `<instances_dir>/<name>.out`.
    pub fn instance_log(&self, name: &str) -> PathBuf {
        self.instances_dir().join(format!("{name}.out"))
    }

    /// The instance's stderr log, `<instances_dir>/<name>.err`.
    pub fn instance_err_log(&self, name: &str) -> PathBuf {
        self.instances_dir().join(format!("{name}.err"))
    }

    /// The entries of `rctr instance list --json` (objects with "instance", "pid", ...).
    pub fn instances_json(&self) -> Vec<serde_json::Value> {
        let text = self.ok(["instance", "list", "--json"]);
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{}: `instance list --json` printed invalid JSON ({e}):\n{text}",
                self.test
            )
        });
        match doc.get("instances").and_then(|v| v.as_array()) {
            Some(items) => items.clone(),
            None => panic!(
                "{}: `instance list --json` has no \"instances\" array:\n{text}",
                self.test
            ),
        }
    }

    /// Instance `name`'s entry of `rctr instance list --json`; panics when it is not listed.
    pub fn instance_json(&self, name: &str) -> serde_json::Value {
        self.instances_json()
            .into_iter()
            .find(|i| i["instance"] == name)
            .unwrap_or_else(|| panic!("instance {name} is not listed"))
    }

    /// Instance `name`'s application pid on the host (`app_pid` of `instance list --json`).
    pub fn app_pid(&self, name: &str) -> i32 {
        let entry = self.instance_json(name);
        entry["app_pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("instance {name} has no app_pid: {entry}")) as i32
    }

    /// Names of the running instances, from `rctr instance list --json`.
    pub fn instance_names(&self) -> Vec<String> {
        self.instances_json()
            .iter()
            .filter_map(|i| {
                i.get("instance")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
            })
            .collect()
    }

    /// Waits until something listens on `port` (see [`crate::wait_for_port`]); on timeout,
    /// panics showing instance `name`'s logs, which usually say why.
    pub fn wait_for_instance_port(&self, name: &str, port: u16) {
        if try_wait_for_port(port, Duration::from_secs(20)) {
            return;
        }
        panic!(
            "{}: instance '{name}' does not listen on port {port} after 20 s\n--- {name}.out:\n{}\n--- {name}.err:\n{}",
            self.test,
            read_or_note(&self.instance_log(name)),
            read_or_note(&self.instance_err_log(name))
        );
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Nothing ran that could have started an instance.
        if !self.home().join(".rctr").exists() {
            return;
        }
        // Never panic here: this also runs while a failed test unwinds.
        let Ok(bin) = try_rctr_bin() else { return };
        let mut cmd = Command::new(bin);
        cmd.args(["instance", "stop", "--all", "--force"])
            .env("HOME", self.home())
            .current_dir(self.work());
        let problem = match try_output_with_timeout(cmd, Duration::from_secs(60)) {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!(
                "`rctr instance stop --all --force` failed ({}):\n{}",
                out.status,
                show(&out)
            )),
            Err(e) => Some(e),
        };
        if let Some(p) = problem {
            let _ = writeln!(std::io::stderr(), "{}: cleanup: {p}", self.test);
        }
    }
}

/// stdout and stderr of a finished command, for failure messages.
pub(crate) fn show(out: &Output) -> String {
    format!(
        "--- stdout:\n{}--- stderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_or_note(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// The kernel's host name, as rctr uses it for the instances directory.
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match name.trim_end() {
        "" => "localhost".to_string(),
        n => n.replace('/', "_"),
    }
}

/// The effective user's name from the passwd database (the uid when it has no entry).
fn username() -> String {
    // SAFETY: geteuid cannot fail; getpwuid_r writes only into the buffers we pass.
    unsafe {
        let uid = libc::geteuid();
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16384];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == 0 && !result.is_null() && !pw.pw_name.is_null() {
            let name = std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned();
            if !name.is_empty() {
                return name;
            }
        }
        uid.to_string()
    }
}
