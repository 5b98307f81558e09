//! `instance start`: reserve the name, start the container under rctr's init,
//! record where it runs.

use crate::liveness::process_start_ticks;
use crate::record::{InstanceRecord, Instances};
use anyhow::{bail, Context, Result};
use rctr_runtime::launch::{spawn_attached, spawn_detached, AppStart, EarlyExit, LogFiles};
use rctr_runtime::plan::ContainerPlan;
use rctr_runtime::spawn::Child;
use rctr_state::{read_json, validate_name, write_json_volatile};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The checkpoint an instance is started with: its name and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRef {
    pub name: String,
    pub id: String,
}

pub struct StartRequest {
    pub name: String,
    pub args: Vec<String>,
    pub plan: ContainerPlan,
    pub checkpoint: Option<CheckpointRef>,
    pub start: AppStart,
    /// The longest to watch for an application that exits at once (zero: not watched).
    pub settle_limit: Duration,
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))
}

/// A foreground job's container: its record and init, the caller's child.
pub struct AttachedInstance {
    pub record: InstanceRecord,
    /// Wait for it: its exit status is the application's.
    pub init: Child,
}

impl Instances {
    /// Starts an instance: detached, logging to `<NAME>.out`/`.err`.
    pub fn start(&self, req: StartRequest) -> Result<InstanceRecord> {
        let (out, err) = self.log_paths(&req.name);
        let given = self.caller_logs.borrow_mut().take();
        let err_for_tail = given.is_none().then(|| err.clone());
        let (rec, _) = self.start_with(
            req,
            false,
            err_for_tail.as_deref(),
            |plan, start, settle_limit| {
                let logs = match given {
                    Some((out, err)) => LogFiles { out, err },
                    None => LogFiles {
                        out: open_log(&out)?,
                        err: open_log(&err)?,
                    },
                };
                spawn_detached(plan, logs, start, settle_limit).map(|d| (d, None))
            },
        )?;
        Ok(rec)
    }

    /// Starts a foreground job's container: registered like an instance (so that it can be
    /// checkpointed, listed and joined from another shell) but the caller's child, its
    /// application's output copied to `out`/`err` (the caller's own stdout and stderr).
    pub fn start_attached(
        &self,
        req: StartRequest,
        out: File,
        err: File,
    ) -> Result<AttachedInstance> {
        let (record, init) = self.start_with(req, true, None, |plan, start, settle_limit| {
            let (d, child) = spawn_attached(plan, LogFiles { out, err }, start, settle_limit)?;
            Ok((d, Some(child)))
        })?;
        let init = init.context("the job's init was not started")?;
        Ok(AttachedInstance { record, init })
    }

    fn start_with(
        &self,
        req: StartRequest,
        foreground: bool,
        err_log: Option<&Path>,
        spawn: impl FnOnce(
            &ContainerPlan,
            AppStart,
            Duration,
        ) -> Result<(rctr_runtime::launch::Detached, Option<Child>)>,
    ) -> Result<(InstanceRecord, Option<Child>)> {
        validate_name("instance", &req.name)?;
        let name = req.name.clone();
        let mut rec = InstanceRecord {
            name: name.clone(),
            image: req.plan.image_display.clone(),
            args: req.args.clone(),
            plan: req.plan.clone(),
            init_pid: 0,
            init_start_ticks: 0,
            app_pid: 0,
            app_host_pid: 0,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            checkpoint: req.checkpoint.as_ref().map(|c| c.name.clone()),
            checkpoint_id: req.checkpoint.as_ref().map(|c| c.id.clone()),
            ip: req.plan.net_ns.then(|| "127.0.0.1".to_string()),
            foreground,
        };
        self.reserve(&rec)?;
        let (detached, child) = match spawn(&req.plan, req.start, req.settle_limit) {
            Ok(d) => d,
            Err(e) => {
                let _ = self.remove(&name);
                if let Some(early) = e.downcast_ref::<EarlyExit>() {
                    let Some(err) = err_log else {
                        bail!(
                            "'{name}' failed to start: its application exited at once with status {}",
                            early.code
                        );
                    };
                    let tail = log_tail(err);
                    if !tail.is_empty() {
                        eprintln!("{tail}");
                    }
                    bail!(
                        "instance '{name}' failed to start: its application exited at once with status {} (log: {})",
                        early.code,
                        err.display()
                    );
                }
                return Err(e.context(format!("instance '{name}' failed to start")));
            }
        };
        rec.init_pid = detached.init_pid;
        rec.init_start_ticks = process_start_ticks(detached.init_pid).unwrap_or(0);
        rec.app_pid = detached.app_pid;
        rec.app_host_pid = app_child(detached.init_pid, detached.app_pid).unwrap_or(0);
        write_json_volatile(&self.record_path(&name), &rec)?;
        Ok((rec, child))
    }

    /// Claims the name under the lock; a stale record of a dead instance is replaced.
    fn reserve(&self, rec: &InstanceRecord) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.record_path(&rec.name);
        if path.exists() {
            match read_json::<InstanceRecord>(&path) {
                Ok(old) if old.init_pid == 0 || old.is_running() => {
                    bail!("an instance named '{}' already exists: choose another name or stop it first", rec.name)
                }
                _ => {}
            }
        }
        write_json_volatile(&path, rec)
    }
}

/// Host pid of init's first child: the application (init starts nothing else first).
/// The host pid of init's child that is `app_pid` inside the container: not simply the
/// first child, since a user's init also runs squashfuse, which serves the image.
fn app_child(init_pid: i32, app_pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{init_pid}/task/{init_pid}/children")).ok()?;
    let children: Vec<i32> = s
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect();
    let inside = |pid: i32| -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
        line.split_whitespace().last()?.parse().ok()
    };
    children
        .iter()
        .copied()
        .find(|&c| inside(c) == Some(app_pid))
        .or_else(|| children.first().copied())
}

/// The last lines of a log, for showing why an instance died at start.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
