//! CUDA processes. CRIU cannot see GPU memory, so NVIDIA's `cuda-checkpoint` first moves each
//! CUDA process's GPU state into its host memory (after locking the process, so that no CUDA
//! call is in flight) and releases the GPU; CRIU then saves it with everything else. After a
//! dump that leaves the application running, and after a restore, the state goes back to
//! the GPU and the process is unlocked. A dump that fails puts everything back first: the
//! application keeps running on its GPU.

use crate::conf::CudaSettings;
use crate::trust;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a CUDA process looks like from the host: the driver library in its mappings.
const DRIVER_LIBRARY: &str = "libcuda.so";
/// Wall-clock limit of one tool call beyond the lock's own timeout: the tool must never
/// hang a checkpoint (the caller may be a batch system with a grace time).
const CALL_SLACK: Duration = Duration::from_secs(30);

/// The host pids of the process tree rooted at `root` (itself first, then descendants).
pub fn process_tree(root: i32) -> Vec<i32> {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let pid = tree[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let children = task.path().join("children");
                if let Ok(text) = std::fs::read_to_string(children) {
                    tree.extend(
                        text.split_whitespace()
                            .filter_map(|c| c.parse::<i32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    tree
}

/// The processes of the tree under `root` that use CUDA.
pub fn cuda_processes(root: i32) -> Vec<i32> {
    process_tree(root)
        .into_iter()
        .filter(|pid| maps_driver(*pid))
        .collect()
}

fn maps_driver(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|maps| maps.lines().any(|l| l.contains(DRIVER_LIBRARY)))
        .unwrap_or(false)
}

/// The GPU a generation's CUDA processes ran on: a restore needs the same model and driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuFacts {
    /// GPU model names, one per GPU the host has (`NVIDIA H200`).
    pub models: Vec<String>,
    pub driver_version: String,
    /// GPU memory the CUDA processes held when they were saved, MiB.
    pub memory_used_mib: u64,
    /// How many CUDA processes were saved.
    pub processes: usize,
}

/// Asks `nvidia-smi` (the host's, from the driver) about the GPUs and what `pids` use;
/// what it cannot tell stays empty.
pub fn gpu_facts(pids: &[i32]) -> GpuFacts {
    let query = |args: &[&str]| -> String {
        Command::new("nvidia-smi")
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default()
    };
    let gpus = query(&[
        "--query-gpu=name,driver_version",
        "--format=csv,noheader,nounits",
    ]);
    let apps = query(&[
        "--query-compute-apps=pid,used_memory",
        "--format=csv,noheader,nounits",
    ]);
    parse_gpu_facts(&gpus, &apps, pids)
}

fn parse_gpu_facts(gpus: &str, apps: &str, pids: &[i32]) -> GpuFacts {
    let mut facts = GpuFacts {
        processes: pids.len(),
        ..GpuFacts::default()
    };
    for line in gpus.lines() {
        if let Some((model, driver)) = line.rsplit_once(',') {
            facts.models.push(model.trim().to_string());
            facts.driver_version = driver.trim().to_string();
        }
    }
    for line in apps.lines() {
        let mut fields = line.split(',').map(str::trim);
        let (Some(pid), Some(mib)) = (fields.next(), fields.next()) else {
            continue;
        };
        if pid.parse::<i32>().is_ok_and(|p| pids.contains(&p)) {
            facts.memory_used_mib += mib.parse::<u64>().unwrap_or(0);
        }
    }
    facts
}

/// How this host's GPUs differ from those a generation's CUDA processes were saved on: the
/// GPU state is only valid for the same model and the same driver. Unknown facts (no
/// nvidia-smi when the checkpoint was taken) are not held against this host.
pub fn gpu_differences(then: &GpuFacts, here: &GpuFacts) -> Vec<String> {
    let mut out = vec![];
    if then.models.is_empty() {
        return out;
    }
    if here.models.is_empty() {
        out.push(format!(
            "its CUDA processes ran on {} (driver {}); this host has no NVIDIA GPU that nvidia-smi sees",
            then.models.join(", "),
            then.driver_version
        ));
        return out;
    }
    let models =
        |f: &GpuFacts| -> std::collections::BTreeSet<String> { f.models.iter().cloned().collect() };
    if models(then) != models(here) {
        out.push(format!(
            "GPU {} there, {} here",
            then.models.join(", "),
            here.models.join(", ")
        ));
    }
    if !then.driver_version.is_empty() && then.driver_version != here.driver_version {
        out.push(format!(
            "NVIDIA driver {} there, {} here",
            then.driver_version, here.driver_version
        ));
    }
    out
}

/// The tool, checked: root-owned and not writable by others (it acts on every process).
pub struct CudaTool {
    path: PathBuf,
    lock_timeout: Duration,
}

impl CudaTool {
    /// The configured tool, or a one-line reason why there is none usable. `for_what` names
    /// the processes that need it.
    pub fn open(settings: &CudaSettings, for_what: &str) -> Result<CudaTool> {
        let path = &settings.path;
        let whence = match &settings.configured_at {
            Some(at) => format!("configured at {at}"),
            None => "the default; set cuda-checkpoint: path: in ckpt-conf.yaml".to_string(),
        };
        if !path.exists() {
            bail!(
                "{for_what} need NVIDIA's cuda-checkpoint, which is not at {} ({whence}): install it from NVIDIA's driver packages or github.com/NVIDIA/cuda-checkpoint",
                path.display()
            );
        }
        let real = trust::ensure_root_controlled(path)
            .map_err(|e| anyhow!("cuda-checkpoint {} ({whence}): {e:#}", path.display()))?;
        Ok(CudaTool {
            path: real,
            lock_timeout: settings.lock_timeout,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `cuda-checkpoint ARGS`, limited in time; Err carries the tool's own words.
    fn call(&self, args: &[String]) -> Result<String> {
        let mut child = Command::new(&self.path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| anyhow!("cannot run {}: {e}", self.path.display()))?;
        let limit = self.lock_timeout + CALL_SLACK;
        let started = Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`cuda-checkpoint {}` did not finish in {limit:?}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = child.wait_with_output()?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            let why = [text(&out.stderr), text(&out.stdout)]
                .into_iter()
                .find(|t| !t.is_empty())
                .unwrap_or_else(|| out.status.to_string());
            bail!(
                "`cuda-checkpoint {}` failed: {}",
                args.join(" "),
                why.lines().next().unwrap_or_default()
            )
        }
    }

    fn action(&self, action: &str, pid: i32) -> Result<()> {
        let mut args = vec![
            "--action".to_string(),
            action.to_string(),
            "--pid".to_string(),
            pid.to_string(),
        ];
        if action == "lock" {
            args.push("--timeout".into());
            args.push(self.lock_timeout.as_millis().to_string());
        }
        self.call(&args).map(drop)
    }

    /// Locks, then checkpoints, every process in `pids`; on any failure undoes what was done
    /// and says why.
    pub fn suspend(&self, pids: &[i32]) -> Result<Suspended<'_>> {
        let mut s = Suspended {
            tool: self,
            locked: vec![],
            checkpointed: vec![],
        };
        for &pid in pids {
            if let Err(e) = self.action("lock", pid) {
                s.resume_quietly();
                return Err(e.context(format!("CUDA process {pid} could not be locked")));
            }
            s.locked.push(pid);
        }
        for &pid in pids {
            if let Err(e) = self.action("checkpoint", pid) {
                s.resume_quietly();
                return Err(e.context(format!(
                    "the GPU state of CUDA process {pid} could not be saved"
                )));
            }
            s.checkpointed.push(pid);
        }
        Ok(s)
    }

    /// Brings `pids` back onto the GPU after a restore: restore, then unlock.
    pub fn resume_restored(&self, pids: &[i32]) -> Result<()> {
        for &pid in pids {
            self.action("restore", pid)?;
            self.action("unlock", pid)?;
        }
        Ok(())
    }
}

/// Processes whose GPU state is in host memory, until [`Suspended::resume`] or
/// [`Suspended::ended`].
pub struct Suspended<'a> {
    tool: &'a CudaTool,
    locked: Vec<i32>,
    checkpointed: Vec<i32>,
}

impl Suspended<'_> {
    pub fn pids(&self) -> &[i32] {
        &self.checkpointed
    }

    /// Back onto the GPU, unlocked; the first failure is reported after trying them all.
    pub fn resume(mut self) -> Result<()> {
        self.resume_all()
    }

    /// The processes were ended by the dump: nothing to put back.
    pub fn ended(mut self) {
        self.locked.clear();
        self.checkpointed.clear();
    }

    fn resume_quietly(&mut self) {
        let _ = self.resume_all();
    }

    fn resume_all(&mut self) -> Result<()> {
        let mut first_error = None;
        for pid in std::mem::take(&mut self.checkpointed) {
            if let Err(e) = self.tool.action("restore", pid) {
                first_error.get_or_insert(e);
            }
        }
        for pid in std::mem::take(&mut self.locked) {
            if let Err(e) = self.tool.action("unlock", pid) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Suspended<'_> {
    /// Never leave an application off its GPU because an error skipped the resume.
    fn drop(&mut self) {
        self.resume_quietly();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_of_this_process_includes_a_child_and_a_grandchild() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        let tree = loop {
            let tree = process_tree(me);
            if tree.len() >= 3 || Instant::now() > deadline {
                break tree;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = Command::new("pkill")
            .args(["-P", &child.id().to_string()])
            .status();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], me);
        assert!(tree.contains(&(child.id() as i32)), "{tree:?}");
        assert!(tree.len() >= 3, "no grandchild in {tree:?}");
    }

    #[test]
    fn a_process_without_the_driver_is_not_a_cuda_process() {
        let me = std::process::id() as i32;
        assert!(!maps_driver(me));
        assert!(cuda_processes(me).iter().all(|p| *p != me));
    }

    #[test]
    fn gpu_facts_name_the_model_driver_and_the_memory_of_our_processes() {
        let gpus = "NVIDIA H200, 580.159.04\nNVIDIA H200, 580.159.04\n";
        let apps = "4242, 582\n4243, 100\n999, 7000\n";
        let f = parse_gpu_facts(gpus, apps, &[4242, 4243]);
        assert_eq!(f.models, vec!["NVIDIA H200", "NVIDIA H200"]);
        assert_eq!(f.driver_version, "580.159.04");
        assert_eq!(f.memory_used_mib, 682);
        assert_eq!(f.processes, 2);
        let unknown = parse_gpu_facts("", "", &[1]);
        assert!(unknown.models.is_empty() && unknown.driver_version.is_empty());
        assert_eq!(unknown.processes, 1);
    }

    #[test]
    fn another_gpu_model_or_driver_is_named_and_unknown_facts_pass() {
        let h200 = |driver: &str| GpuFacts {
            models: vec!["NVIDIA H200".into()],
            driver_version: driver.into(),
            memory_used_mib: 600,
            processes: 1,
        };
        assert!(gpu_differences(&h200("580.159.04"), &h200("580.159.04")).is_empty());
        let d = gpu_differences(&h200("580.159.04"), &h200("570.1"));
        assert_eq!(d, vec!["NVIDIA driver 580.159.04 there, 570.1 here"]);
        let a100 = GpuFacts {
            models: vec!["NVIDIA A100".into()],
            ..h200("580.159.04")
        };
        let d = gpu_differences(&h200("580.159.04"), &a100);
        assert_eq!(d, vec!["GPU NVIDIA H200 there, NVIDIA A100 here"]);
        let d = gpu_differences(&h200("580.159.04"), &GpuFacts::default());
        assert!(d[0].contains("no NVIDIA GPU"), "{d:?}");
        assert!(gpu_differences(&GpuFacts::default(), &a100).is_empty());
    }

    #[test]
    fn a_missing_tool_is_one_line_naming_where_to_get_it() {
        let settings = CudaSettings {
            path: PathBuf::from("/nonexistent/cuda-checkpoint"),
            configured_at: Some("/etc/rctr/ckpt-conf.yaml:40".into()),
            lock_timeout: Duration::from_secs(1),
        };
        let err = CudaTool::open(&settings, "CUDA processes 12, 13")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("CUDA processes 12, 13 need NVIDIA's cuda-checkpoint"),
            "{err}"
        );
        assert!(err.contains("/etc/rctr/ckpt-conf.yaml:40"), "{err}");
        assert!(!err.contains('\n'));
    }
}
