//! From the user's run options to a container plan, with Apptainer's defaults:
//! home, /tmp, /var/tmp and the current directory bound, the caller's identity
//! added to passwd/group, the environment passed through.

use crate::binds::{parse_bind_specs, parse_bind_specs_from};
use crate::env::{container_env, EnvOptions};
use crate::plan::{ContainerPlan, DevMode, Identity, MountEntry, RootSource};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    pub bind: Vec<String>,
    pub home: Option<String>,
    pub no_home: bool,
    pub pwd: Option<String>,
    pub contain: bool,
    pub cleanenv: bool,
    pub env: Vec<String>,
    pub env_file: Option<PathBuf>,
    pub writable_tmpfs: bool,
    /// Changes go into the image itself (`--writable`; sandbox directories only).
    #[serde(default)]
    pub writable: bool,
    pub pid: bool,
    pub net: bool,
    /// Binds from the site configuration (`bind path`), applied before all others.
    #[serde(default)]
    pub site_bind: Vec<String>,
    /// Binds from the environment: (variable, value), e.g. APPTAINER_BIND.
    #[serde(default)]
    pub env_bind: Vec<(String, String)>,
    /// Default mounts left out (`--no-mount`).
    #[serde(default)]
    pub no_mount: NoMount,
    #[serde(default)]
    pub no_eval: bool,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub no_init: bool,
    /// Size limit of the session tmpfs (`--writable-tmpfs` changes), MiB.
    #[serde(default = "default_session_size")]
    pub session_size_mib: u64,
    /// The host's NVIDIA driver inside the container (`--nv`).
    #[serde(default)]
    pub nv: bool,
    /// As a user who is not root: be root (uid 0) inside the container's user namespace.
    #[serde(default)]
    pub fakeroot: bool,
    /// Root only: run the container's processes as this user (`--security uid:N,gid:N`).
    #[serde(default)]
    pub run_as: Option<crate::plan::RunAs>,
}

/// Apptainer's `sessiondir max size` default.
pub const DEFAULT_SESSION_SIZE_MIB: u64 = 64;

fn default_session_size() -> u64 {
    DEFAULT_SESSION_SIZE_MIB
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            bind: vec![],
            home: None,
            no_home: false,
            pwd: None,
            contain: false,
            cleanenv: false,
            env: vec![],
            env_file: None,
            writable_tmpfs: false,
            writable: false,
            pid: false,
            net: false,
            site_bind: vec![],
            env_bind: vec![],
            no_mount: NoMount::default(),
            no_eval: false,
            hostname: None,
            no_init: false,
            session_size_mib: DEFAULT_SESSION_SIZE_MIB,
            nv: false,
            fakeroot: false,
            run_as: None,
        }
    }
}

/// Default mounts `--no-mount` can leave out (Apptainer's names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoMount {
    pub home: bool,
    pub tmp: bool,
    pub cwd: bool,
    /// All of the site configuration's `bind path` entries.
    pub bind_paths: bool,
    /// Site `bind path` entries left out by destination.
    pub destinations: Vec<PathBuf>,
}

impl NoMount {
    /// Parses `--no-mount` values: comma-separated `home`, `tmp`, `cwd`, `bind-paths`
    /// or the absolute destination of a site `bind path`.
    pub fn parse(values: &[String]) -> Result<NoMount> {
        let mut out = NoMount::default();
        for item in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
            match item {
                "" => {}
                "home" => out.home = true,
                "tmp" => out.tmp = true,
                "cwd" => out.cwd = true,
                "bind-paths" => out.bind_paths = true,
                p if p.starts_with('/') => out.destinations.push(PathBuf::from(p)),
                "proc" | "sys" | "dev" | "devpts" | "hostfs" => bail!(
                    "--no-mount {item}: rctr always mounts it (supported: home, tmp, cwd, bind-paths, or a bind path destination)"
                ),
                other => bail!(
                    "--no-mount {other:?}: unknown mount (supported: home, tmp, cwd, bind-paths, or a bind path destination)"
                ),
            }
        }
        Ok(out)
    }
}

/// Host directories where binding the current directory would shadow the image.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys",
    "/usr", "/var",
];

fn is_system_dir(p: &Path) -> bool {
    SYSTEM_DIRS.iter().any(|d| p == Path::new(d))
        || p.starts_with("/proc")
        || p.starts_with("/sys")
        || p.starts_with("/dev")
        || p.starts_with("/usr")
}

/// The user root runs a container as: their passwd entry and home directory.
fn run_as_user(run_as: &crate::plan::RunAs) -> Result<(nix::unistd::User, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "--security uid:{}: only root may run a container as another user",
            run_as.uid
        );
    }
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(run_as.uid))
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "--security uid:{}: no passwd entry for that uid on this host; create the user or give another uid",
                run_as.uid
            )
        })?;
    let home = user.dir.clone();
    Ok((user, home))
}

fn host_user() -> Result<(nix::unistd::User, PathBuf)> {
    let uid = nix::unistd::geteuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .with_context(|| format!("no passwd entry for uid {uid}"))?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| user.dir.clone());
    Ok((user, home))
}

/// A home directory that is not there fails now, naming where it came from (not later as a
/// bind mount the user never asked for).
fn check_home_source(src: Option<&Path>, spec: Option<&str>) -> Result<()> {
    let Some(src) = src else { return Ok(()) };
    if src.is_dir() {
        return Ok(());
    }
    let what = if src.exists() {
        "is not a directory"
    } else {
        "does not exist"
    };
    match spec {
        Some(spec) => bail!(
            "--home {spec}: {} {what}; create it or give another directory",
            src.display()
        ),
        None => bail!(
            "home directory {} ($HOME) {what}; create it, or use --home DIR, --no-home or --contain",
            src.display()
        ),
    }
}

pub fn build_plan(
    root: RootSource,
    image_display: &str,
    opts: &RunOptions,
    argv: Vec<String>,
) -> Result<ContainerPlan> {
    if opts.writable {
        if root.kind != crate::plan::RootKind::Dir {
            anyhow::bail!(
                "--writable needs a sandbox directory image, and {image_display} is not one; \
                 make one with `rctr build --sandbox DIR {image_display}`"
            );
        }
        if opts.writable_tmpfs {
            anyhow::bail!("--writable and --writable-tmpfs cannot be used together");
        }
    }
    if opts.run_as.is_some() && opts.fakeroot {
        bail!("--security uid and --fakeroot cannot be used together");
    }
    let (user, host_home) = match &opts.run_as {
        Some(run_as) => run_as_user(run_as)?,
        None => host_user()?,
    };
    let host_cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));

    // A --fakeroot user is root inside, whose home is /root: their own home is bound there
    // (as Apptainer does). Root itself is unchanged by --fakeroot.
    let default_dst = if opts.fakeroot && !user.uid.is_root() {
        PathBuf::from("/root")
    } else {
        host_home.clone()
    };
    let (home_src, home_dst) = match &opts.home {
        Some(spec) => {
            let mut parts = spec.splitn(2, ':');
            let src = PathBuf::from(parts.next().unwrap_or_default());
            let dst = parts
                .next()
                .map(PathBuf::from)
                .unwrap_or_else(|| src.clone());
            if !src.is_absolute() || !dst.is_absolute() {
                bail!("--home {spec}: paths must be absolute (src[:dst])");
            }
            (Some(src), dst)
        }
        None if opts.contain || opts.no_home || opts.no_mount.home => (None, default_dst),
        None => (Some(host_home.clone()), default_dst),
    };
    if !opts.no_home {
        check_home_source(home_src.as_deref(), opts.home.as_deref())?;
    }

    let mut mounts = vec![];
    for tmp in ["/tmp", "/var/tmp"] {
        if opts.no_mount.tmp {
            break;
        }
        mounts.push(if opts.contain {
            MountEntry::tmpfs(tmp)
        } else {
            MountEntry::bind(tmp, tmp, false)
        });
    }
    if !opts.no_home && !opts.no_mount.home {
        mounts.push(match &home_src {
            Some(src) => MountEntry::bind(src, &home_dst, false),
            None => MountEntry::tmpfs(&home_dst),
        });
    }
    let covered = |p: &Path| mounts.iter().any(|m: &MountEntry| p.starts_with(&m.dst));
    let cwd_bound =
        !opts.contain && !opts.no_mount.cwd && !is_system_dir(&host_cwd) && !covered(&host_cwd);
    if cwd_bound {
        mounts.push(MountEntry::bind(&host_cwd, &host_cwd, false));
    }
    for b in user_binds(opts, &host_cwd)? {
        mounts.push(MountEntry::bind(b.src, b.dst, b.readonly));
    }
    if opts.nv {
        let list = crate::nvidia::NvList::load()?;
        mounts.extend(crate::nvidia::driver_mounts(
            &list,
            &crate::nvidia::HostDriver::this_host(),
        )?);
    }
    // Parents before children; otherwise keep the user's order.
    mounts.sort_by_key(|m| m.dst.components().count());

    if let Some(name) = &opts.hostname {
        check_hostname(name)?;
    }
    let cwd = match &opts.pwd {
        Some(p) => PathBuf::from(p),
        None if opts.contain => home_dst.clone(),
        None => host_cwd.clone(),
    };

    let host_env: Vec<(String, String)> = std::env::vars().collect();
    let env = container_env(
        &host_env,
        &EnvOptions {
            cleanenv: opts.cleanenv,
            env: opts.env.clone(),
            env_file: opts.env_file.clone(),
            container_name: root.path.to_string_lossy().into_owned(),
            home: home_dst.to_string_lossy().into_owned(),
            no_eval: opts.no_eval,
        },
    )?;
    let mut env = env;
    if opts.run_as.is_some() {
        // The host's (root's) login names would describe someone else.
        for key in ["USER", "LOGNAME"] {
            env.base.retain(|(k, _)| k != key);
            env.base.push((key.to_string(), user.name.clone()));
        }
    }
    let userns = user_namespace(&user, opts.fakeroot).filter(|_| opts.run_as.is_none());
    let identity = Identity {
        uid: user.uid.as_raw(),
        gid: opts.run_as.as_ref().map_or(user.gid.as_raw(), |r| r.gid),
        name: user.name.clone(),
        gecos: user.gecos.to_string_lossy().into_owned(),
        home: home_dst.to_string_lossy().into_owned(),
        shell: "/bin/sh".into(),
    };
    Ok(ContainerPlan {
        root,
        image_display: image_display.to_string(),
        mounts,
        writable_tmpfs: opts.writable_tmpfs,
        // With --fakeroot the caller is the image's own root.
        identity: (!opts.fakeroot || userns.is_none()).then_some(identity),
        cwd,
        home: home_dst,
        env: env.base,
        env_overrides: env.overrides,
        argv,
        pid_ns: opts.pid,
        net_ns: opts.net,
        host_pts: false,
        writable_root: opts.writable,
        ipc_ns: false,
        requested: crate::plan::UserRequests {
            binds: opts.bind.clone(),
            env: opts
                .env
                .iter()
                .cloned()
                .chain(opts.env_file.iter().map(|f| format!("@{}", f.display())))
                .collect(),
        },
        // Foreground runs ask for the host's (see `DevMode`); checkpointable ones must not.
        dev: DevMode::Minimal,
        cwd_explicit: opts.pwd.is_some(),
        env_no_eval: opts.no_eval,
        hostname: opts.hostname.clone(),
        no_init: opts.no_init,
        session_size_mib: Some(opts.session_size_mib),
        userns,
        run_as: opts.run_as.clone(),
    })
}

/// A user namespace for a caller who is not root; root needs none (and is root inside
/// already, so `--fakeroot` changes nothing for root, as with Apptainer).
fn user_namespace(user: &nix::unistd::User, fakeroot: bool) -> Option<crate::plan::UserNs> {
    (!user.uid.is_root()).then(|| crate::plan::UserNs {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        fakeroot,
    })
}

/// Site binds (unless `--no-mount` leaves them out), then the environment's, then
/// `--bind`: all checked to exist on the host.
fn user_binds(opts: &RunOptions, cwd: &Path) -> Result<Vec<crate::binds::BindSpec>> {
    let mut specs = parse_bind_specs_from("bind path", &opts.site_bind, cwd)?;
    specs.retain(|b| !opts.no_mount.bind_paths && !opts.no_mount.destinations.contains(&b.dst));
    for (var, value) in &opts.env_bind {
        specs.extend(parse_bind_specs_from(
            var,
            std::slice::from_ref(value),
            cwd,
        )?);
    }
    specs.extend(parse_bind_specs(&opts.bind, cwd)?);
    crate::binds::check_sources(&specs)?;
    Ok(specs)
}

/// A valid host name (RFC 1123 label rules, up to 64 bytes as the kernel allows).
fn check_hostname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        bail!("--hostname {name:?}: use letters, digits, '-' and '.', at most 64 characters");
    }
    Ok(())
}
