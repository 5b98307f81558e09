//! ckpt-conf.yaml: which checkpoint engine to inject into containers, loaded, validated and
//! resolved down to the exact host files (binaries, libraries, loader) the bundle will hold.
//!
//! Every error names the configuration file and, where it can, the line.

use crate::closure::{self, Closure, ClosureRequest, LibSpec};
use crate::{elf, trust};
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

/// The checkpoint engine kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Criu,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Criu => "criu",
        })
    }
}

/// The file as written; see etc/ckpt-conf.yaml for what each key means.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConf {
    engine: Engine,
    bins: Vec<String>,
    #[serde(default)]
    libs: Vec<String>,
    lib_paths: Option<Vec<String>>,
    loader: Option<String>,
    keep: Option<u32>,
}

/// A validated configuration, resolved to host files.
#[derive(Debug, Clone)]
pub struct CkptConf {
    pub origin: ConfOrigin,
    pub engine: Engine,
    /// Engine binaries (absolute paths as configured); bundled as `bin/<file name>`.
    pub bins: Vec<PathBuf>,
    /// Extra libraries from `libs:`.
    pub libs: Vec<LibSpec>,
    /// Effective library search directories (configured, or the defaults).
    pub lib_paths: Vec<PathBuf>,
    /// Explicit loader from `loader:`.
    pub loader: Option<PathBuf>,
    /// Default number of checkpoint generations to keep.
    pub keep: u32,
    /// Every library the bundle needs, loader included; all checked root-controlled.
    pub closure: Closure,
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
    /// Locates ([`locate`]), reads and validates the configuration.
    pub fn load(explicit: Option<&Path>) -> Result<Self> {
        let origin = locate(explicit);
        match origin.path() {
            None => Self::from_yaml(BUILTIN_CONF, origin),
            Some(p) => {
                let p = p.to_path_buf();
                Self::from_file(&p, origin)
            }
        }
    }

    /// Reads and validates the file at `path`; `origin` tells how it was chosen.
    pub fn from_file(path: &Path, origin: ConfOrigin) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let how = match &origin {
                ConfOrigin::Env(_) => format!(" (named by ${ENV_CONF})"),
                _ => String::new(),
            };
            anyhow!(
                "cannot read checkpoint engine config {}{how}: {e}",
                path.display()
            )
        })?;
        trust::ensure_conf_file_safe(path)?;
        Self::from_yaml(&text, origin)
    }

    /// Parses and validates `text`, resolving every file it names on this host.
    pub fn from_yaml(text: &str, origin: ConfOrigin) -> Result<Self> {
        let raw = parse(text, &origin)?;
        Resolver {
            text,
            origin: &origin,
        }
        .resolve(raw)
    }

    /// Names of the binaries inside the bundle (`bin/<name>`).
    pub fn bin_names(&self) -> Vec<String> {
        self.bins.iter().filter_map(|b| file_name(b)).collect()
    }
}

fn parse(text: &str, origin: &ConfOrigin) -> Result<RawConf> {
    let has_content = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "---");
    if !has_content {
        bail!("{origin}: the file is empty; it needs at least `engine: criu` and `bins:`");
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

    fn resolve(&self, raw: RawConf) -> Result<CkptConf> {
        let bins = self.bins(&raw)?;
        let libs = self.libs(&raw)?;
        let lib_paths = self.lib_paths(&raw, &bins)?;
        let loader = match &raw.loader {
            None => None,
            Some(l) => Some(self.trusted_file("loader", l)?),
        };
        let keep = raw.keep.unwrap_or(DEFAULT_KEEP);
        if keep == 0 {
            bail!("{}keep must be at least 1", self.at("keep:"));
        }

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

        Ok(CkptConf {
            origin: self.origin.clone(),
            engine: raw.engine,
            bins,
            libs,
            lib_paths,
            loader,
            keep,
            closure,
        })
    }

    fn origin_prefix(&self) -> String {
        format!("{}: ", self.origin)
    }

    fn bins(&self, raw: &RawConf) -> Result<Vec<PathBuf>> {
        if raw.bins.is_empty() {
            bail!(
                "{}bins is empty: name at least the criu binary",
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
                if raw.engine == Engine::Criu && file_name(path).as_deref() == Some("criu") {
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
