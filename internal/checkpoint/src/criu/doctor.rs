//! `rctr checkpoint check`'s engine checks: is the configured engine usable on this host, and
//! if not, exactly what is missing and how to get it.

use super::bundle::{self, EngineBundle};
use crate::conf::{CkptConf, CriuConf, Engine, INSTALL_HINT};
use anyhow::{bail, Context, Result};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest CRIU known to work on current kernels (see docs: 3.17 fails on the vDSO
/// layout, 4.1 cannot dump TCP sockets).
const MIN_CRIU: (u32, u32, u32) = (4, 2, 0);
const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One verified item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

/// The outcome of all checks.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The bundle, when it could be assembled.
    pub bundle: Option<EngineBundle>,
    /// CRIU's version, when it ran.
    pub engine_version: Option<String>,
}

impl Report {
    /// True when nothing failed (warnings allowed).
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.status != Status::Fail)
    }

    fn push(&mut self, what: &'static str, status: Status, detail: String, fix: Option<String>) {
        self.findings.push(Finding {
            what,
            status,
            detail,
            fix,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.findings {
            let tag = match item.status {
                Status::Ok => " ok ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            writeln!(f, "[{tag}] {}: {}", item.what, item.detail)?;
            if let Some(fix) = &item.fix {
                writeln!(f, "       fix: {fix}")?;
            }
        }
        Ok(())
    }
}

/// Loads the configuration (see [`crate::conf::locate`]) and checks it; a configuration that
/// does not load is reported as a failure, not returned as an error.
pub fn diagnose(explicit_conf: Option<&Path>) -> Report {
    let conf = match CkptConf::load(explicit_conf) {
        Ok(c) => c,
        Err(e) => {
            let mut r = Report::default();
            r.push(
                "config",
                Status::Fail,
                format!("{e:#}"),
                Some("fix the file or what it names (see the message)".into()),
            );
            return r;
        }
    };
    if conf.criu.is_some() {
        return check(&conf);
    }
    // CRIU is not the default engine here: check it too, but its absence is no failure.
    match CkptConf::load_for(explicit_conf, Engine::Criu) {
        Ok(with_criu) => check(&with_criu),
        Err(e) => {
            let mut r = check(&conf);
            r.push(
                "criu",
                Status::Warn,
                format!("the CRIU engine is not usable: {e:#}"),
                Some(format!(
                    "only needed for `--engine criu` checkpoints: {INSTALL_HINT}"
                )),
            );
            r
        }
    }
}

/// Checks `conf` with bundles in the default cache directory.
pub fn check(conf: &CkptConf) -> Report {
    match bundle::default_cache_dir() {
        Ok(dir) => check_with_cache(conf, &dir),
        Err(e) => {
            let mut r = Report::default();
            config_finding(&mut r, conf);
            r.push("bundle", Status::Fail, format!("{e:#}"), None);
            r
        }
    }
}

/// Checks `conf`: the application-level engine's settings and, when CRIU is configured, the
/// resolved files, the host, the bundle (assembled under `cache_dir` if needed) and CRIU
/// itself run from the bundle on the host.
pub fn check_with_cache(conf: &CkptConf, cache_dir: &Path) -> Report {
    let mut r = Report::default();
    config_finding(&mut r, conf);
    r.push(
        "app engine",
        Status::Ok,
        format!(
            "usable: needs no privileges; signal {}, timeout {} s, files in {} inside the container",
            conf.app.signal,
            conf.app.timeout.as_secs(),
            conf.app.dir.display()
        ),
        None,
    );
    let Some(criu) = &conf.criu else {
        return r;
    };
    criu_config_finding(&mut r, criu);
    host_findings(&mut r);
    gpu_finding(&mut r, criu);

    let bundle = match bundle::ensure_bundle_in(criu, cache_dir) {
        Ok(b) => b,
        Err(e) => {
            r.push("bundle", Status::Fail, format!("{e:#}"), None);
            return r;
        }
    };
    r.push(
        "bundle",
        Status::Ok,
        format!(
            "{} ({}, {} binaries, {} libraries)",
            bundle.dir.display(),
            if bundle.created {
                "assembled now"
            } else {
                "cached"
            },
            bundle.bins.len(),
            bundle.libs.len()
        ),
        None,
    );
    criu_findings(&mut r, &bundle);
    r.bundle = Some(bundle);
    r
}

fn config_finding(r: &mut Report, conf: &CkptConf) {
    r.push(
        "config",
        Status::Ok,
        format!(
            "{}: default engine {}, keep {}",
            conf.origin, conf.engine, conf.keep
        ),
        None,
    );
}

fn criu_config_finding(r: &mut Report, conf: &CriuConf) {
    let loader = conf
        .closure
        .loader
        .as_deref()
        .and_then(|n| conf.closure.lib(n))
        .map(|l| l.path.display().to_string())
        .unwrap_or_else(|| "none (static)".into());
    r.push(
        "criu config",
        Status::Ok,
        format!(
            "bins {}, {} libraries, loader {loader}",
            conf.bins
                .iter()
                .map(|b| b.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            conf.closure.libs.len(),
        ),
        None,
    );
}

/// Whether CUDA applications can be checkpointed here: NVIDIA's cuda-checkpoint, trusted and
/// runnable. Only a warning where a GPU needs it; rctr does not ship it.
fn gpu_finding(r: &mut Report, conf: &CriuConf) {
    let tool = &conf.cuda.path;
    let has_gpu = Path::new("/dev/nvidiactl").exists();
    if !tool.exists() {
        let (status, detail) = if has_gpu {
            (
                Status::Warn,
                format!(
                    "not found at {}: CUDA applications (--nv) cannot be checkpointed",
                    tool.display()
                ),
            )
        } else {
            (
                Status::Ok,
                format!(
                    "not found at {} (only CUDA applications need it; this host has no NVIDIA GPU)",
                    tool.display()
                ),
            )
        };
        let fix = has_gpu.then(|| "install NVIDIA's cuda-checkpoint (driver packages 570 or later, or github.com/NVIDIA/cuda-checkpoint) and set cuda-checkpoint: path: in ckpt-conf.yaml".to_string());
        r.push("cuda-checkpoint", status, detail, fix);
        return;
    }
    if let Err(e) = crate::trust::ensure_root_controlled(tool) {
        r.push(
            "cuda-checkpoint",
            Status::Fail,
            format!("{}: {e:#}", tool.display()),
            Some(
                "make it and the directories above it owned by root and not writable by others"
                    .into(),
            ),
        );
        return;
    }
    let runs = std::process::Command::new(tool)
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        r.push(
            "cuda-checkpoint",
            Status::Ok,
            format!(
                "usable: {} (lock timeout {} s)",
                tool.display(),
                conf.cuda.lock_timeout.as_secs()
            ),
            None,
        );
    } else {
        r.push(
            "cuda-checkpoint",
            Status::Warn,
            format!("{} does not run (`--help` failed)", tool.display()),
            Some("reinstall it for this host's driver".into()),
        );
    }
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24 of CapEff).
fn has_cap_sys_resource() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << 24) != 0)
}

fn host_findings(r: &mut Report) {
    if !super::netlock::available() {
        r.push(
            "nft",
            Status::Warn,
            "the nft tool is missing: a network lock left by a CRIU killed mid-dump would keep cutting the application's connections".into(),
            Some("install nftables (apt-get install nftables)".into()),
        );
    }
    match has_cap_sys_resource() {
        Some(true) | None => {}
        Some(false) => r.push(
            "capabilities",
            Status::Warn,
            "root lacks CAP_SYS_RESOURCE here: applications with processes that changed their uid (a web server dropping to www-data, postgres, `su` in a startscript) cannot be checkpointed (CRIU: \"Can't get rlimit\")".into(),
            Some("run such applications under one uid inside the container (an application that runs as one user throughout, `--security uid:N` or through the checkpoint helper, is dumped as that user and needs no CAP_SYS_RESOURCE), or checkpoint on a host whose root has CAP_SYS_RESOURCE".into()),
        ),
    }
    if nix::unistd::geteuid().is_root() {
        r.push("privileges", Status::Ok, "running as root".into(), None);
    } else {
        r.push(
            "privileges",
            Status::Warn,
            "not running as root: CRIU checkpoints and restores need root".into(),
            Some("ask the administrator to install rctr's checkpoint helper (`make install-suid`: rctr then checkpoints your instances through it), run as root, or use `--engine app`".into()),
        );
    }
    // Restore places processes at their old pids through ns_last_pid.
    if Path::new("/proc/sys/kernel/ns_last_pid").exists() {
        r.push(
            "kernel",
            Status::Ok,
            "checkpoint/restore support present".into(),
            None,
        );
    } else {
        r.push(
            "kernel",
            Status::Fail,
            "/proc/sys/kernel/ns_last_pid is missing".into(),
            Some("use a kernel built with CONFIG_CHECKPOINT_RESTORE=y".into()),
        );
    }
}

fn criu_findings(r: &mut Report, bundle: &EngineBundle) {
    let Some(criu) = bundle.bins.iter().find(|b| b.as_str() == "criu") else {
        r.push(
            "criu",
            Status::Fail,
            format!(
                "the bundle has no criu binary (it has: {})",
                bundle.bins.join(", ")
            ),
            Some("list the criu binary under bins in ckpt-conf.yaml".into()),
        );
        return;
    };

    match run_engine(bundle, criu, &["--version"]) {
        Ok((true, out)) => match parse_version(&out) {
            Some(v) if v >= MIN_CRIU => {
                r.push("criu version", Status::Ok, version_string(v), None);
                r.engine_version = Some(version_string(v));
            }
            Some(v) => {
                r.push(
                    "criu version",
                    Status::Warn,
                    format!(
                        "{} is older than {}: CRIU 3.17 fails on current kernels' vDSO, 4.1 \
                         cannot dump TCP sockets",
                        version_string(v),
                        version_string(MIN_CRIU)
                    ),
                    Some(INSTALL_HINT.into()),
                );
                r.engine_version = Some(version_string(v));
            }
            None => r.push(
                "criu version",
                Status::Warn,
                format!("cannot read a version from: {}", out.trim()),
                None,
            ),
        },
        Ok((false, out)) | Err(RunError::Output(out)) => {
            r.push(
                "criu version",
                Status::Fail,
                format!("criu --version failed through the bundle: {}", tail(&out)),
                Some(format!("check the bundle's libraries, or {INSTALL_HINT}")),
            );
            return;
        }
        Err(RunError::Spawn(e)) => {
            r.push("criu version", Status::Fail, format!("{e:#}"), None);
            return;
        }
    }

    match run_engine(bundle, criu, &["check"]) {
        Ok((_, out)) if out.contains("Looks good.") => {
            r.push("criu check", Status::Ok, "Looks good.".into(), None)
        }
        Ok((_, out)) | Err(RunError::Output(out)) => r.push(
            "criu check",
            Status::Fail,
            format!("`criu check` on the host reports: {}", tail(&out)),
            Some(if nix::unistd::geteuid().is_root() {
                format!(
                    "the kernel or host lacks something CRIU needs (see its message); if CRIU \
                     is older than 4.2, {INSTALL_HINT}"
                )
            } else {
                "run the check as root: CRIU needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE".into()
            }),
        ),
        Err(RunError::Spawn(e)) => r.push("criu check", Status::Fail, format!("{e:#}"), None),
    }
}

enum RunError {
    /// Could not start it or it hung.
    Spawn(anyhow::Error),
    /// Killed by a signal; its output so far.
    Output(String),
}

/// Runs a bundle binary on the host; returns (exited 0, stdout + stderr).
fn run_engine(bundle: &EngineBundle, bin: &str, args: &[&str]) -> Result<(bool, String), RunError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let argv = bundle.host_argv(bin, &args).map_err(RunError::Spawn)?;
    match run_with_timeout(&argv, ENGINE_TIMEOUT) {
        Ok((Some(code), out)) => Ok((code == 0, out)),
        Ok((None, out)) => Err(RunError::Output(out)),
        Err(e) => Err(RunError::Spawn(e)),
    }
}

/// The configured CRIU's version and path, from `criu --version` run the way checkpoints
/// run it: through the engine bundle (assembled in the cache if needed).
pub fn criu_version(explicit_conf: Option<&Path>) -> Result<(String, PathBuf)> {
    let conf = CkptConf::load_for(explicit_conf, Engine::Criu)?;
    let criu = conf.criu()?;
    let bin = criu
        .bins
        .iter()
        .find(|b| b.file_name().is_some_and(|n| n == "criu"))
        .context("ckpt-conf.yaml lists no criu binary")?;
    let bundle = bundle::ensure_bundle_in(criu, &bundle::default_cache_dir()?)?;
    match run_engine(&bundle, "criu", &["--version"]) {
        Ok((true, out)) => match parse_version(&out) {
            Some(v) => Ok((version_string(v), bin.clone())),
            None => bail!("cannot read a version from: {}", out.trim()),
        },
        Ok((false, out)) | Err(RunError::Output(out)) => {
            bail!("criu --version failed: {}", tail(&out))
        }
        Err(RunError::Spawn(e)) => Err(e),
    }
}

/// Runs `argv` with stdin from /dev/null, collecting stdout and stderr together; returns the
/// exit code (`None` if killed by a signal) and the output.
pub(crate) fn run_with_timeout(
    argv: &[String],
    timeout: Duration,
) -> Result<(Option<i32>, String)> {
    rctr_log::debug!("running {}", rctr_log::show_argv(argv));
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", argv.join(" ")))?;
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            buf
        })
    })
    .collect();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().context("cannot wait for the engine")? {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not finish within {}s",
                argv.join(" "),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    for r in readers {
        let bytes = r.join().unwrap_or_default();
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
    Ok((status.code(), out))
}

/// "Version: 4.2.1" (CRIU's --version output) -> (4, 2, 1).
pub(crate) fn parse_version(out: &str) -> Option<(u32, u32, u32)> {
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))?
        .trim();
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

pub(crate) fn version_string(v: (u32, u32, u32)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

/// The meaningful end of an engine's output: its last lines, minus the RLIMIT_NOFILE error
/// CRIU logs on every run where the hard limit cannot be raised (harmless).
fn tail(out: &str) -> String {
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("RLIMIT_NOFILE"))
        .collect();
    if lines.is_empty() {
        return "(no output)".into();
    }
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criu_versions() {
        assert_eq!(parse_version("Version: 4.2.1\n"), Some((4, 2, 1)));
        assert_eq!(parse_version("Version: 3.17\nGitID: x"), Some((3, 17, 0)));
        assert_eq!(parse_version("criu: unknown"), None);
        assert!(parse_version("Version: 4.1.1").unwrap() < MIN_CRIU);
    }

    #[test]
    fn tail_drops_the_harmless_rlimit_error() {
        let out = "Error (criu/util.c:1): rlimit: Can't setup RLIMIT_NOFILE for self\n\
                   Error (criu/vdso.c:2): vdso: Unexpected rt vDSO area bounds\n";
        assert_eq!(
            tail(out),
            "Error (criu/vdso.c:2): vdso: Unexpected rt vDSO area bounds"
        );
        assert_eq!(tail(""), "(no output)");
    }

    #[test]
    fn runs_and_times_out() {
        let (code, out) =
            run_with_timeout(&["/bin/echo".into(), "hi".into()], ENGINE_TIMEOUT).unwrap();
        assert_eq!((code, out.as_str()), (Some(0), "hi\n"));
        let err = run_with_timeout(
            &["/bin/sleep".into(), "5".into()],
            Duration::from_millis(100),
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("did not finish"));
    }

    #[test]
    fn report_fails_when_any_finding_fails() {
        let mut r = Report::default();
        r.push("a", Status::Ok, "fine".into(), None);
        r.push("b", Status::Warn, "meh".into(), Some("do x".into()));
        assert!(r.ok());
        r.push("c", Status::Fail, "broken".into(), Some("do y".into()));
        assert!(!r.ok());
        let text = r.to_string();
        assert!(
            text.contains("[FAIL] c: broken") && text.contains("fix: do y"),
            "{text}"
        );
    }
}
