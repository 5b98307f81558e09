//! Options shared by exec, run, shell, test and instance start.

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone, Default)]
pub struct RunOptions {
    /// Bind mount: src[:dst[:ro|rw]], repeatable, comma-separated lists allowed
    #[arg(short = 'B', long = "bind", value_name = "SPEC")]
    pub bind: Vec<String>,
    /// Home directory inside the container: src[:dst]
    #[arg(short = 'H', long)]
    pub home: Option<String>,
    /// Do not mount the home directory
    #[arg(long)]
    pub no_home: bool,
    /// Initial working directory inside the container
    #[arg(long)]
    pub pwd: Option<String>,
    /// Use minimal /dev and empty home and /tmp; do not bind the current directory
    #[arg(short = 'c', long)]
    pub contain: bool,
    /// Start with a clean environment
    #[arg(short = 'e', long)]
    pub cleanenv: bool,
    /// Set environment variables inside the container: NAME=VALUE, repeatable
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Overlay a writable tmpfs on the read-only image
    #[arg(long)]
    pub writable_tmpfs: bool,
    /// Write into the image itself (a sandbox directory made by `rctr build --sandbox`)
    #[arg(short = 'w', long)]
    pub writable: bool,
    /// Run in a private pid namespace
    #[arg(short = 'p', long)]
    pub pid: bool,
    /// Run in a private network namespace (loopback only)
    #[arg(short = 'n', long)]
    pub net: bool,
    /// Contain everything: --contain, --cleanenv and --pid
    #[arg(short = 'C', long)]
    pub containall: bool,
    /// Leave out default mounts: home, tmp, cwd, bind-paths (the site's), or a site bind
    /// path's destination; comma-separated, repeatable
    #[arg(long, value_name = "MOUNTS")]
    pub no_mount: Vec<String>,
    /// Take --env, --env-file and *ENV_ values literally instead of evaluating them in
    /// the container
    #[arg(long)]
    pub no_eval: bool,
    /// Host name inside the container (a private UTS namespace)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// With --pid, run the command itself as pid 1 instead of under rctr's init
    #[arg(long)]
    pub no_init: bool,
    /// Bring in the host's NVIDIA driver: GPU device nodes, driver libraries and tools
    /// (the list: /etc/rctr/nvliblist.conf, else rctr's own)
    #[arg(long)]
    pub nv: bool,
    /// As a user who is not root: be root inside the container (a user namespace maps
    /// you to uid 0; you gain no privilege on the host)
    #[arg(long)]
    pub fakeroot: bool,
    /// Root only: run the container's processes as another user, `uid:N` and
    /// `gid:N[:M...]` (as Apptainer's --security uid/gid)
    #[arg(long, value_name = "uid:N,gid:N")]
    pub security: Vec<String>,
}

/// Variables that turn on `--nv`, as Apptainer reads them, plus rctr's own.
const NV_VARS: &[&str] = &["SINGULARITY_NV", "APPTAINER_NV", "RCTR_NV"];

/// Whether a variable holds a true value (1, true, yes), as Apptainer's boolean ones do.
fn env_true(var: &str) -> bool {
    std::env::var(var)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Variables holding binds, lowest precedence first (all apply), as Apptainer reads
/// them, plus rctr's own.
const BIND_VARS: &[&str] = &[
    "SINGULARITY_BINDPATH",
    "SINGULARITY_BIND",
    "APPTAINER_BINDPATH",
    "APPTAINER_BIND",
    "RCTR_BIND",
];

impl RunOptions {
    /// Whether the container gets private /dev, /tmp and home.
    pub fn contained(&self) -> bool {
        self.contain || self.containall
    }

    /// The runtime's view of these options, with the site configuration's and the
    /// environment's binds.
    pub fn to_runtime(&self) -> anyhow::Result<rctr_runtime::options::RunOptions> {
        let site = rctr_runtime::site_config::SiteConfig::load()?;
        let env_bind = BIND_VARS
            .iter()
            .filter_map(|v| Some((v.to_string(), std::env::var(v).ok()?)))
            .filter(|(_, value)| !value.trim().is_empty())
            .collect();
        Ok(rctr_runtime::options::RunOptions {
            bind: self.bind.clone(),
            home: self.home.clone(),
            no_home: self.no_home,
            pwd: self.pwd.clone(),
            contain: self.contained(),
            cleanenv: self.cleanenv || self.containall,
            env: self.env.clone(),
            env_file: self.env_file.clone(),
            writable_tmpfs: self.writable_tmpfs,
            writable: self.writable,
            pid: self.pid || self.containall,
            net: self.net,
            site_bind: site.bind_paths,
            env_bind,
            no_mount: rctr_runtime::options::NoMount::parse(&self.no_mount)?,
            no_eval: self.no_eval,
            hostname: self.hostname.clone(),
            no_init: self.no_init,
            session_size_mib: site.session_size_mib,
            nv: self.nv || NV_VARS.iter().any(|v| env_true(v)),
            fakeroot: self.fakeroot,
            run_as: rctr_runtime::credentials::parse_security(&self.security)?,
        })
    }
}

/// Builds the container plan for IMAGE running `argv`.
pub fn plan_for(
    image: &str,
    opts: &RunOptions,
    argv: Vec<String>,
) -> anyhow::Result<rctr_runtime::plan::ContainerPlan> {
    let root = rctr_runtime::image_root::resolve_root(image)?;
    rctr_runtime::options::build_plan(root, image, &opts.to_runtime()?, argv)
}
