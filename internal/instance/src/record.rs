//! Instance records: one JSON file per instance, plus its log files.

use crate::liveness::is_alive;
use anyhow::{bail, Context, Result};
use rctr_runtime::plan::ContainerPlan;
use rctr_state::{lock_exclusive, read_json, validate_name, StateLock, StateRoot};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub name: String,
    /// Image as the user named it, and the resolved file.
    pub image: String,
    pub args: Vec<String>,
    pub plan: ContainerPlan,
    /// Host pid of the container's init (0 while starting).
    pub init_pid: i32,
    /// Start time of init in clock ticks since boot: tells a live init from a reused pid.
    pub init_start_ticks: u64,
    /// Application pid inside the container's pid namespace.
    pub app_pid: i32,
    /// Host pid of the application.
    pub app_host_pid: i32,
    /// Seconds since the epoch.
    pub started: u64,
    /// Checkpoint this instance was launched or restarted with.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// That checkpoint's identity: a checkpoint deleted and created again under the same
    /// name is another one, which this instance does not use.
    #[serde(default)]
    pub checkpoint_id: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    /// A foreground job (`rctr run|exec --ckpt`), not a background instance.
    #[serde(default)]
    pub foreground: bool,
}

impl InstanceRecord {
    pub fn is_running(&self) -> bool {
        self.init_pid > 0 && is_alive(self.init_pid, self.init_start_ticks)
    }
}

/// The instances of the current user on this host.
pub struct Instances {
    dir: PathBuf,
    /// Where the next detached instance logs instead of `<NAME>.out`/`.err` here (see
    /// [`Instances::log_to`]).
    pub(crate) caller_logs: std::cell::RefCell<Option<(std::fs::File, std::fs::File)>>,
}

impl Instances {
    pub fn open(state: &StateRoot) -> Result<Self> {
        Ok(Instances {
            dir: state.instances_dir()?,
            caller_logs: Default::default(),
        })
    }

    /// The next instance started detached logs to these files, opened by whoever asked
    /// for it (the privileged helper starts instances for a user, whose logs belong in
    /// the user's own directory, which root must not write into by path).
    pub fn log_to(self, out: std::fs::File, err: std::fs::File) -> Self {
        *self.caller_logs.borrow_mut() = Some((out, err));
        self
    }

    pub fn for_current_user() -> Result<Self> {
        Self::open(&StateRoot::for_current_user()?)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn log_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.out")),
            self.dir.join(format!("{name}.err")),
        )
    }

    /// Serializes changes to this user's instance records.
    pub fn lock(&self) -> Result<StateLock> {
        lock_exclusive(&self.dir.join(".lock"))
    }

    /// The running instance `name`; a dead one is cleaned up and reported missing.
    pub fn get(&self, name: &str) -> Result<InstanceRecord> {
        validate_name("instance", name)?;
        let path = self.record_path(name);
        if !path.exists() {
            bail!("no instance named '{name}': see `rctr instance list`");
        }
        let rec: InstanceRecord = read_json(&path)?;
        if !rec.is_running() {
            if rec.init_pid > 0 {
                let _ = std::fs::remove_file(&path);
            }
            bail!(
                "instance '{name}' is not running (its process exited); see its log {}",
                self.log_paths(name).1.display()
            );
        }
        Ok(rec)
    }

    /// All records whose name matches `pattern` (a glob with `*` and `?`),
    /// dropping those whose init died.
    pub fn list(&self, pattern: Option<&str>) -> Result<Vec<InstanceRecord>> {
        Ok(self.list_with_dead(pattern)?.0)
    }

    /// Running instances, and the records of dead ones (which this call removes,
    /// so each is reported once).
    pub fn list_with_dead(
        &self,
        pattern: Option<&str>,
    ) -> Result<(Vec<InstanceRecord>, Vec<InstanceRecord>)> {
        let (mut running, mut dead) = (vec![], vec![]);
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read {}", self.dir.display()))?;
        for e in entries.flatten() {
            let p = e.path();
            let Some(name) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if pattern.is_some_and(|pat| !glob_match(pat, name)) {
                continue;
            }
            let Ok(rec) = read_json::<InstanceRecord>(&p) else {
                continue;
            };
            if rec.init_pid == 0 {
                continue; // still starting
            }
            if rec.is_running() {
                running.push(rec);
            } else {
                let _ = std::fs::remove_file(&p);
                dead.push(rec);
            }
        }
        running.sort_by(|a, b| a.name.cmp(&b.name));
        dead.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((running, dead))
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        let p = self.record_path(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
}

/// Shell-style glob with `*` and `?` only (instance names have no other specials).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "server"));
        assert!(glob_match("serv*", "server"));
        assert!(glob_match("s?rver", "server"));
        assert!(!glob_match("s?rver", "srver"));
        assert!(!glob_match("web*", "server"));
    }
}
