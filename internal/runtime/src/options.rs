//! From the user's run options to a container plan, with Apptainer's defaults:
//! home, /tmp, /var/tmp and the current directory bound, the caller's identity
//! added to passwd/group, the environment passed through.

use crate::binds::parse_bind_specs;
use crate::env::{container_env, EnvOptions};
use crate::plan::{ContainerPlan, Identity, MountEntry, RootSource};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub pid: bool,
    pub net: bool,
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
    let (user, host_home) = host_user()?;
    let host_cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));

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
        None if opts.contain || opts.no_home => (None, host_home.clone()),
        None => (Some(host_home.clone()), host_home.clone()),
    };
    if !opts.no_home {
        check_home_source(home_src.as_deref(), opts.home.as_deref())?;
    }

    let mut mounts = vec![];
    for tmp in ["/tmp", "/var/tmp"] {
        mounts.push(if opts.contain {
            MountEntry::tmpfs(tmp)
        } else {
            MountEntry::bind(tmp, tmp, false)
        });
    }
    if !opts.no_home {
        mounts.push(match &home_src {
            Some(src) => MountEntry::bind(src, &home_dst, false),
            None => MountEntry::tmpfs(&home_dst),
        });
    }
    let covered = |p: &Path| mounts.iter().any(|m: &MountEntry| p.starts_with(&m.dst));
    let cwd_bound = !opts.contain && !is_system_dir(&host_cwd) && !covered(&host_cwd);
    if cwd_bound {
        mounts.push(MountEntry::bind(&host_cwd, &host_cwd, false));
    }
    let specs = parse_bind_specs(&opts.bind, &host_cwd)?;
    crate::binds::check_sources(&specs)?;
    for b in specs {
        mounts.push(MountEntry::bind(b.src, b.dst, b.readonly));
    }
    // Parents before children; otherwise keep the user's order.
    mounts.sort_by_key(|m| m.dst.components().count());

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
        },
    )?;
    let identity = Identity {
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
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
        identity: Some(identity),
        cwd,
        home: home_dst,
        env: env.base,
        env_overrides: env.overrides,
        argv,
        pid_ns: opts.pid,
        net_ns: opts.net,
        host_pts: false,
        writable_root: false,
    })
}
