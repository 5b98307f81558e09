//! ckpt-conf.yaml: which checkpoint engine to inject into containers, loaded, validated and
//! resolved down to the exact host files (binaries, libraries, loader) the bundle will hold.
//!
//! Every error names the configuration file and, where it can, the line.

use crate::criu::closure::{self, Closure, ClosureRequest, LibSpec};
use crate::criu::elf;
use crate::trust;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variable naming the configuration file.
pub const ENV_CONF: &str = "RCTR_CKPT_CONF";
/// The site-wide configuration file, used when present.
pub const SYSTEM_CONF: &str = "/etc/rctr/ckpt-conf.yaml";
/// The shipped default (etc/ckpt-conf.yaml), used when no file is configured.
pub const BUILTIN_CONF: &str = include_str!("../../../etc/ckpt-conf.yaml");
/// How to get the default engine installed.
pub const INSTALL_HINT: &str =
    "run `bash etc/setup/install-criu.sh` (from the rctr sources) as root";

const DEFAULT_KEEP: u32 = 3;

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfOrigin {
    /// `--ckpt-conf <path>`
    Flag(PathBuf),
    /// `$RCTR_CKPT_CONF`
    Env(PathBuf),
    /// [`SYSTEM_CONF`]
    System(PathBuf),
    /// [`BUILTIN_CONF`]
    BuiltIn,
}

impl ConfOrigin {
    /// The file to read, `None` for the built-in text.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfOrigin::Flag(p) | ConfOrigin::Env(p) | ConfOrigin::System(p) => Some(p),
            ConfOrigin::BuiltIn => None,
        }
    }
}

impl fmt::Display for ConfOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfOrigin::Flag(p) | ConfOrigin::System(p) => write!(f, "{}", p.display()),
            ConfOrigin::Env(p) => write!(f, "{} (from ${ENV_CONF})", p.display()),
            ConfOrigin::BuiltIn => f.write_str("built-in ckpt-conf.yaml"),
        }
    }
}

/// The engine kind (the same type as [`crate::engine::EngineKind`]).
pub use crate::engine::EngineKind as Engine;

/// The file as written; see etc/ckpt-conf.yaml for what each key means.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConf {
    engine: Engine,
    #[serde(default)]
    bins: Vec<String>,
    #[serde(default)]
    libs: Vec<String>,
    lib_paths: Option<Vec<String>>,
    loader: Option<String>,
    keep: Option<u32>,
    app: Option<RawApp>,
    cuda_checkpoint: Option<RawCuda>,
}

/// The `cuda-checkpoint:` section: NVIDIA's tool for CUDA processes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCuda {
    path: Option<String>,
    lock_timeout: Option<u64>,
}

/// The `app:` section: settings of the application-level engine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawApp {
    signal: Option<String>,
    timeout: Option<u64>,
    dir: Option<String>,
}

/// Settings of the application-level engine ([`crate::app`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSettings {
    /// Signal that asks the application to write a checkpoint.
    pub signal: nix::sys::signal::Signal,
    /// How long the application may take to write it.
    pub timeout: std::time::Duration,
    /// Directory inside the container where `$RCTR_CKPT_DIR` is created for each checkpoint.
    pub dir: PathBuf,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            signal: nix::sys::signal::Signal::SIGUSR1,
            timeout: std::time::Duration::from_secs(DEFAULT_APP_TIMEOUT_S),
            dir: PathBuf::from(DEFAULT_APP_DIR),
        }
    }
}

const DEFAULT_APP_TIMEOUT_S: u64 = 60;
const DEFAULT_APP_DIR: &str = "/.rctr-ckpt";

/// A validated configuration. The CRIU part is resolved to host files only when CRIU is
/// needed, so that the application-level engine works on hosts without CRIU.
#[derive(Debug, Clone)]
pub struct CkptConf {
    pub origin: ConfOrigin,
    /// The engine of new checkpoints (`checkpoint create --engine` overrides it).
    pub engine: Engine,
    /// Default number of checkpoint generations to keep.
    pub keep: u32,
    pub app: AppSettings,
    /// The CRIU engine, when it was needed and resolved.
    pub criu: Option<CriuConf>,
}

/// The CRIU engine's settings, resolved to host files.
#[derive(Debug, Clone)]
pub struct CriuConf {
    pub origin: ConfOrigin,
    /// Engine binaries (absolute paths as configured); bundled as `bin/<file name>`.
    pub bins: Vec<PathBuf>,
    /// Extra libraries from `libs:`.
    pub libs: Vec<LibSpec>,
    /// Effective library search directories (configured, or the defaults).
    pub lib_paths: Vec<PathBuf>,
    /// Explicit loader from `loader:`.
    pub loader: Option<PathBuf>,
    /// Every library the bundle needs, loader included; all checked root-controlled.
    pub closure: Closure,
    /// NVIDIA's cuda-checkpoint, for containers with CUDA processes.
    pub cuda: CudaSettings,
}

/// Where NVIDIA's `cuda-checkpoint` is and how long its lock may wait. rctr does not ship
/// it (NVIDIA's license); it is only needed when a container has CUDA processes, and is
/// checked (root-owned, not writable by others) when it is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaSettings {
    pub path: PathBuf,
    /// Where the path was configured ("file:line"), or None for the default.
    pub configured_at: Option<String>,
    /// How long locking a process may wait for its running CUDA work to finish.
    pub lock_timeout: std::time::Duration,
}

/// Where NVIDIA's packages put cuda-checkpoint.
pub const DEFAULT_CUDA_CHECKPOINT: &str = "/usr/bin/cuda-checkpoint";
const DEFAULT_CUDA_LOCK_TIMEOUT_S: u64 = 30;

impl Default for CudaSettings {
    fn default() -> Self {
        CudaSettings {
            path: PathBuf::from(DEFAULT_CUDA_CHECKPOINT),
            configured_at: None,
            lock_timeout: std::time::Duration::from_secs(DEFAULT_CUDA_LOCK_TIMEOUT_S),
        }
    }
}

impl CriuConf {
    /// Names of the binaries inside the bundle (`bin/<name>`).
    pub fn bin_names(&self) -> Vec<String> {
        self.bins.iter().filter_map(|b| file_name(b)).collect()
    }
}

/// Which configuration applies: `explicit` (--ckpt-conf) > $RCTR_CKPT_CONF > /etc/rctr >
/// built-in.
pub fn locate(explicit: Option<&Path>) -> ConfOrigin {
    if let Some(p) = explicit {
        return ConfOrigin::Flag(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENV_CONF).filter(|v| !v.is_empty()) {
        return ConfOrigin::Env(PathBuf::from(p));
    }
    if Path::new(SYSTEM_CONF).exists() {
        return ConfOrigin::System(PathBuf::from(SYSTEM_CONF));
    }
    ConfOrigin::BuiltIn
}

/// The host's standard library directories that exist, in the dynamic linker's spirit:
/// multiarch first, then the legacy ones.
pub fn system_lib_dirs() -> Vec<PathBuf> {
    let triplet = match std::env::consts::ARCH {
        "x86_64" => Some("x86_64-linux-gnu"),
        "aarch64" => Some("aarch64-linux-gnu"),
        "riscv64" => Some("riscv64-linux-gnu"),
        "powerpc64" => Some("powerpc64le-linux-gnu"),
        _ => None,
    };
    let mut dirs = Vec::new();
    if let Some(t) = triplet {
        dirs.push(PathBuf::from(format!("/lib/{t}")));
        dirs.push(PathBuf::from(format!("/usr/lib/{t}")));
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

impl CkptConf {
    /// Locates ([`locate`]), reads and validates the configuration, resolving the engine it
    /// names as the default.
    pub fn load(explicit: Option<&Path>) -> Result<Self> {
        Self::load_inner(explicit, None)
    }

    /// Like [`CkptConf::load`], but resolves what `engine` needs instead of the default
    /// engine: a checkpoint of the application-level engine never needs CRIU.
    pub fn load_for(explicit: Option<&Path>, engine: Engine) -> Result<Self> {
        Self::load_inner(explicit, Some(engine))
    }

    fn load_inner(explicit: Option<&Path>, engine: Option<Engine>) -> Result<Self> {
        let origin = locate(explicit);
        match origin.path() {
            None => Self::resolve_text(BUILTIN_CONF, origin, engine),
            Some(p) => {
                let path = p.to_path_buf();
                let text = Self::read_file(&path, &origin)?;
                Self::resolve_text(&text, origin, engine)
            }
        }
    }

    /// Reads and validates the file at `path`; `origin` tells how it was chosen.
    pub fn from_file(path: &Path, origin: ConfOrigin) -> Result<Self> {
        let text = Self::read_file(path, &origin)?;
        Self::from_yaml(&text, origin)
    }

    fn read_file(path: &Path, origin: &ConfOrigin) -> Result<String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let how = match origin {
                ConfOrigin::Env(_) => format!(" (named by ${ENV_CONF})"),
                _ => String::new(),
            };
            anyhow!(
                "cannot read checkpoint engine config {}{how}: {e}",
                path.display()
            )
        })?;
        trust::ensure_conf_file_safe(path)?;
        Ok(text)
    }

    /// Parses and validates `text`, resolving every file the default engine needs on this
    /// host.
    pub fn from_yaml(text: &str, origin: ConfOrigin) -> Result<Self> {
        Self::resolve_text(text, origin, None)
    }

    fn resolve_text(text: &str, origin: ConfOrigin, engine: Option<Engine>) -> Result<Self> {
        let raw = parse(text, &origin)?;
        let need_criu = engine.unwrap_or(raw.engine) == Engine::Criu;
        Resolver {
            text,
            origin: &origin,
        }
        .resolve(raw, need_criu)
    }

    /// The CRIU engine's settings, or why there are none.
    pub fn criu(&self) -> Result<&CriuConf> {
        self.criu.as_ref().ok_or_else(|| {
            anyhow!(
                "{}: the CRIU engine was not loaded (this configuration was read for another \
                 engine)",
                self.origin
            )
        })
    }
}

fn parse(text: &str, origin: &ConfOrigin) -> Result<RawConf> {
    let has_content = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "---");
    if !has_content {
        bail!("{origin}: the file is empty; it needs at least `engine: criu` and `bins:` (or `engine: app`)");
    }
    serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(loc) => {
            // serde_yaml appends " at line L column C"; we put the place first instead.
            let msg = e.to_string();
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let msg = msg.strip_suffix(&suffix).unwrap_or(&msg);
            anyhow!("{origin}:{}:{}: {msg}", loc.line(), loc.column())
        }
        None => anyhow!("{origin}: {e}"),
    })
}

/// Turns the raw settings into host files, with errors pointing into the text.
struct Resolver<'a> {
    text: &'a str,
    origin: &'a ConfOrigin,
}

impl Resolver<'_> {
    /// "<file>:<line>: " for the first line holding `needle`, or "<file>: ".
    fn at(&self, needle: &str) -> String {
        match line_of(self.text, needle) {
            Some(n) => format!("{}:{n}: ", self.origin),
            None => format!("{}: ", self.origin),
        }
    }

    fn resolve(&self, raw: RawConf, need_criu: bool) -> Result<CkptConf> {
        let keep = raw.keep.unwrap_or(DEFAULT_KEEP);
        if keep == 0 {
            bail!("{}keep must be at least 1", self.at("keep:"));
        }
        let app = self.app(&raw)?;
        let criu = if need_criu {
            Some(self.criu(&raw)?)
        } else {
            None
        };
        Ok(CkptConf {
            origin: self.origin.clone(),
            engine: raw.engine,
            keep,
            app,
            criu,
        })
    }

    fn app(&self, raw: &RawConf) -> Result<AppSettings> {
        let mut s = AppSettings::default();
        let Some(a) = &raw.app else {
            return Ok(s);
        };
        if let Some(sig) = &a.signal {
            s.signal = parse_signal(sig).ok_or_else(|| {
                anyhow!("{}app: unknown signal {sig:?} (e.g. SIGUSR1)", self.at(sig))
            })?;
            if matches!(
                s.signal,
                nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP
            ) {
                bail!(
                    "{}app: {sig} cannot be caught by an application",
                    self.at(sig)
                );
            }
        }
        if let Some(t) = a.timeout {
            if t == 0 {
                bail!(
                    "{}app: timeout must be at least 1 (seconds)",
                    self.at("timeout:")
                );
            }
            s.timeout = std::time::Duration::from_secs(t);
        }
        if let Some(d) = &a.dir {
            let p = Path::new(d);
            let plain = p.is_absolute()
                && p.components().count() > 1
                && p.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )
                });
            if !plain {
                bail!(
                    "{}app: dir {d:?} must be an absolute path inside the container, without '.' or '..'",
                    self.at(d)
                );
            }
            s.dir = p.to_path_buf();
        }
        Ok(s)
    }

    fn criu(&self, raw: &RawConf) -> Result<CriuConf> {
        let bins = self.bins(raw)?;
        let libs = self.libs(raw)?;
        let lib_paths = self.lib_paths(raw, &bins)?;
        let loader = match &raw.loader {
            None => None,
            Some(l) => Some(self.trusted_file("loader", l)?),
        };

        let closure = closure::closure(&ClosureRequest {
            bins: &bins,
            extra_libs: &libs,
            search_dirs: &lib_paths,
            loader: loader.as_deref(),
        })
        .map_err(|e| {
            anyhow!(
                "{}cannot resolve the engine's libraries: {e:#}; add the directory holding it \
                 to lib-paths, or install the package providing it",
                self.origin_prefix()
            )
        })?;
        for lib in &closure.libs {
            trust::ensure_root_controlled(&lib.path).map_err(|e| {
                anyhow!("{}engine library {}: {e:#}", self.origin_prefix(), lib.name)
            })?;
        }

        Ok(CriuConf {
            origin: self.origin.clone(),
            bins,
            libs,
            lib_paths,
            loader,
            closure,
            cuda: self.cuda(raw)?,
        })
    }

    fn cuda(&self, raw: &RawConf) -> Result<CudaSettings> {
        let mut s = CudaSettings::default();
        let Some(c) = &raw.cuda_checkpoint else {
            return Ok(s);
        };
        if let Some(p) = &c.path {
            if !Path::new(p).is_absolute() {
                bail!("{}cuda-checkpoint: path {p:?} must be absolute", self.at(p));
            }
            s.path = PathBuf::from(p);
            s.configured_at = Some(self.at(p).trim_end_matches([' ', ':']).to_string());
        }
        if let Some(t) = c.lock_timeout {
            if t == 0 {
                bail!(
                    "{}cuda-checkpoint: lock-timeout must be at least 1 (seconds)",
                    self.at("lock-timeout:")
                );
            }
            s.lock_timeout = std::time::Duration::from_secs(t);
        }
        Ok(s)
    }

    fn origin_prefix(&self) -> String {
        format!("{}: ", self.origin)
    }

    fn bins(&self, raw: &RawConf) -> Result<Vec<PathBuf>> {
        if raw.bins.is_empty() {
            bail!(
                "{}bins is empty or missing: the criu engine needs at least the criu binary",
                self.at("bins")
            );
        }
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for b in &raw.bins {
            let at = self.at(b);
            let path = Path::new(b);
            if !path.is_absolute() {
                bail!("{at}bins: {b:?} must be an absolute path");
            }
            if !path.exists() {
                if file_name(path).as_deref() == Some("criu") {
                    bail!(
                        "{at}CRIU not found at {b}: {INSTALL_HINT}, or point bins at an \
                         installed criu (4.2 or newer)"
                    );
                }
                bail!("{at}engine binary {b} does not exist");
            }
            let name =
                file_name(path).with_context(|| format!("{at}bins: {b:?} has no file name"))?;
            if !names.insert(name.clone()) {
                bail!(
                    "{at}bins: two binaries are named {name}; the bundle holds them as bin/{name}"
                );
            }
            let bytes = std::fs::read(path).with_context(|| format!("{at}cannot read {b}"))?;
            if !elf::is_elf(&bytes) {
                bail!("{at}engine binary {b} is not an ELF executable (scripts cannot be bundled)");
            }
            trust::ensure_root_controlled(path).map_err(|e| anyhow!("{at}{e:#}"))?;
            out.push(path.to_path_buf());
        }
        Ok(out)
    }

    fn libs(&self, raw: &RawConf) -> Result<Vec<LibSpec>> {
        raw.libs
            .iter()
            .map(|l| {
                if l.starts_with('/') {
                    Ok(LibSpec::Path(self.trusted_file("libs", l)?))
                } else if l.is_empty() || l.contains('/') {
                    bail!(
                        "{}libs: {l:?} must be an absolute path or a plain file name",
                        self.at(l)
                    )
                } else {
                    Ok(LibSpec::Name(l.clone()))
                }
            })
            .collect()
    }

    fn lib_paths(&self, raw: &RawConf, bins: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = Vec::new();
        match &raw.lib_paths {
            Some(dirs) => {
                for d in dirs {
                    let at = self.at(d);
                    let p = Path::new(d);
                    if !p.is_absolute() {
                        bail!("{at}lib-paths: {d:?} must be an absolute path");
                    }
                    if !p.is_dir() {
                        bail!("{at}lib-paths: directory {d} does not exist");
                    }
                    out.push(p.to_path_buf());
                }
            }
            None => {
                // A private prefix's libraries (<prefix>/bin/criu -> <prefix>/lib) must win
                // over the system's: that is where its glibc is.
                for b in bins {
                    if let Some(prefix) = b.parent().and_then(Path::parent) {
                        let lib = prefix.join("lib");
                        if lib.is_dir() && !out.contains(&lib) {
                            out.push(lib);
                        }
                    }
                }
                for d in system_lib_dirs() {
                    if !out.contains(&d) {
                        out.push(d);
                    }
                }
            }
        }
        Ok(out)
    }

    fn trusted_file(&self, key: &str, value: &str) -> Result<PathBuf> {
        let at = self.at(value);
        let p = Path::new(value);
        if !p.is_absolute() {
            bail!("{at}{key}: {value:?} must be an absolute path");
        }
        if !p.is_file() {
            bail!("{at}{key}: {value} does not exist");
        }
        trust::ensure_root_controlled(p).map_err(|e| anyhow!("{at}{e:#}"))?;
        Ok(p.to_path_buf())
    }
}

/// 1-based number of the first non-comment line containing `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let code = l.split(" #").next().unwrap_or(l);
            !l.trim_start().starts_with('#') && code.contains(needle)
        })
        .map(|i| i + 1)
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name().and_then(|n| n.to_str()).map(str::to_string)
}

/// `SIGUSR1`, `USR1` or a number.
fn parse_signal(text: &str) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_read_with_or_without_sig_and_as_numbers() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("SIGUSR2"), Some(Signal::SIGUSR2));
        assert_eq!(parse_signal("usr1"), Some(Signal::SIGUSR1));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("99"), None);
    }

    #[test]
    fn app_only_configuration_needs_no_criu() {
        let c = CkptConf::from_yaml(
            "engine: app\napp:\n  signal: USR2\n  timeout: 5\n  dir: /ckpt-out\n",
            ConfOrigin::BuiltIn,
        )
        .unwrap();
        assert_eq!(c.engine, Engine::App);
        assert!(c.criu.is_none());
        assert!(c.criu().is_err());
        assert_eq!(c.app.signal, nix::sys::signal::Signal::SIGUSR2);
        assert_eq!(c.app.timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.app.dir, PathBuf::from("/ckpt-out"));
    }

    #[test]
    fn bad_app_settings_name_their_line() {
        for (text, want) in [
            ("engine: app\napp:\n  signal: SIGFOO\n", ":3:"),
            ("engine: app\napp:\n  signal: KILL\n", "cannot be caught"),
            ("engine: app\napp:\n  timeout: 0\n", ":3:"),
            ("engine: app\napp:\n  dir: ../x\n", ":3:"),
            ("engine: app\napp:\n  dir: /a/../b\n", "without"),
            ("engine: app\napp:\n  colour: red\n", "unknown field"),
        ] {
            let err = CkptConf::from_yaml(text, ConfOrigin::BuiltIn).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "{text:?}: {msg}");
        }
    }
}
