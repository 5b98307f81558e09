//! A real one-node Slurm cluster for end-to-end tests: its own munged, slurmctld and slurmd,
//! all configured, logging and keeping state in one temporary directory.
//!
//! Nothing here touches the machine's own Slurm or munge: the daemons listen on free high
//! ports and on a munge socket of their own, and every client command run through
//! [`SlurmCluster::command`] reads this cluster's `slurm.conf` (`SLURM_CONF`). Jobs inherit
//! `SLURM_CONF` from `sbatch` (which exports the submitter's environment unless told
//! `--export=NONE`), so `scontrol` or `scancel` inside a batch script talk to the same cluster.
//!
//! Start-up takes about a second; [`SlurmCluster::shared`] still starts one cluster per test
//! process, stopped at process exit, so that tests need not each wait for it.
//!
//! A test process killed outright (SIGKILL, Ctrl-C) cannot stop its cluster. Its daemons die
//! with it (they are spawned with `PR_SET_PDEATHSIG`); the next [`SlurmCluster::start`] kills
//! the jobs they left running and removes their directory.
//!
//! The settings that matter (see [`slurm_conf`]):
//! - `AuthInfo=...,cred_expire=5`: Slurm holds a requeued job until `now + cred_expire + 1`
//!   (`batch_requeue_fini()`: the old step credentials must expire first). The default of
//!   120 s would make every requeue wait two minutes; 5 s is the smallest value accepted.
//! - `SchedulerParameters=sched_interval=1`: a job whose begin time has passed is only started
//!   by the next full scheduling pass, every 60 s by default.
//! - `SlurmUser=root`, `SlurmdUser=root`: the tests run as root, and so do their jobs (Slurm
//!   runs root's jobs unless a partition sets `DisableRootJobs=YES`).
//! - `ProctrackType=proctrack/linuxproc`, `TaskPlugin=task/none`: no cgroups needed.
//! - `SlurmdParameters=config_overrides`: the node is what slurm.conf says, so a few MB of
//!   difference between the configured and the detected memory never drains it.

use crate::net::free_port;
use crate::run::try_output_with_timeout;
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The cluster directories' name prefix, in the temporary directory.
const DIR_PREFIX: &str = "rctr-e2e-slurm-";
/// The file in a cluster's directory naming the test process that owns it.
const OWNER_FILE: &str = "owner";

/// The programs a cluster needs: the daemons, then the clients the helper runs.
pub const SLURM_PROGRAMS: &[&str] = &[
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "scontrol",
    "sinfo",
    "squeue",
    "scancel",
];

/// Deadline for one client command (`sbatch`, `scontrol`, ...).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up may take before it is declared failed (usually about a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often job and node states are polled.
const POLL: Duration = Duration::from_millis(100);

/// Job states after which a job does not run again by itself (it may still be requeued by hand).
const FINAL_STATES: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
];

/// The path of `program`: found on `$PATH`, else in the sbin directories a non-login root
/// shell may lack. None when it is not installed.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The programs of [`SLURM_PROGRAMS`] that are not installed.
pub fn missing_slurm_programs() -> Vec<&'static str> {
    SLURM_PROGRAMS
        .iter()
        .copied()
        .filter(|p| find_program(p).is_none())
        .collect()
}

/// What this machine offers each node of a test cluster.
struct Machine {
    /// The short hostname: slurmctld only runs on a host named in `SlurmctldHost`.
    hostname: String,
    cpus: u32,
    memory_mb: u64,
}

impl Machine {
    fn this_one() -> Result<Machine> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("cannot read /proc/sys/kernel/hostname")?;
        // slurmd looks itself up by its short hostname.
        let hostname = hostname.trim().split('.').next().unwrap_or("").to_string();
        if hostname.is_empty() {
            bail!("this machine has no hostname");
        }
        // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let meminfo =
            std::fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
        let mem_kb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no MemTotal line in /proc/meminfo"))?;
        Ok(Machine {
            hostname,
            cpus: u32::try_from(cpus).unwrap_or(1).max(1),
            memory_mb: (mem_kb / 1024).max(1),
        })
    }
}

/// One node of a test cluster: the slurmd that serves it and where that slurmd runs.
#[derive(Clone, Debug)]
pub(crate) struct NodeSpec {
    /// The node's name in slurm.conf (and its hostname when it has a namespace).
    pub name: String,
    /// The address slurmctld reaches the node's slurmd at.
    pub addr: Ipv4Addr,
    /// The network namespace slurmd runs in, given a UTS namespace of its own whose hostname
    /// is `name`; None: this machine's own network and hostname.
    pub netns: Option<PathBuf>,
}

/// Where a test cluster's daemons live.
pub(crate) struct Layout {
    /// The address slurmctld is reached at, by the clients and by every slurmd.
    pub controller_addr: Ipv4Addr,
    pub nodes: Vec<NodeSpec>,
}

impl Layout {
    /// One node on this machine, named after it, everything on 127.0.0.1.
    fn this_machine(machine: &Machine) -> Layout {
        Layout {
            controller_addr: Ipv4Addr::LOCALHOST,
            nodes: vec![NodeSpec {
                name: machine.hostname.clone(),
                addr: Ipv4Addr::LOCALHOST,
                netns: None,
            }],
        }
    }
}

/// The cluster's slurm.conf: everything lives in `dir`, the daemons listen on the given ports.
/// Every node offers the whole machine (`config_overrides`: slurmd does not check it).
fn slurm_conf(
    dir: &Path,
    machine: &Machine,
    layout: &Layout,
    ctld_port: u16,
    slurmd_port: u16,
) -> String {
    let d = dir.display();
    let Machine {
        hostname,
        cpus,
        memory_mb,
    } = machine;
    let ctld_addr = layout.controller_addr;
    let nodes: String = layout
        .nodes
        .iter()
        .map(|n| {
            format!(
                "NodeName={} NodeAddr={} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN\n",
                n.name, n.addr
            )
        })
        .collect();
    let names = layout
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "# Written by rctr's e2e tests (e2e/src/slurm.rs) for a throwaway test cluster.
ClusterName=rctre2e
SlurmctldHost={hostname}({ctld_addr})
SlurmctldPort={ctld_port}
# Every slurmd listens on this port: each node in a network namespace has its own.
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Our own munged; a requeued job waits cred_expire+1 s before it may start again.
AuthInfo=socket={d}/munge.socket,cred_expire=5
StateSaveLocation={d}/state
# %n: the node's name, so that several slurmd on one machine keep apart.
SlurmdSpoolDir={d}/spool-%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
SlurmctldDebug=debug
SlurmdDebug=debug
# No SPANK plugins from the machine's /etc/slurm.
PlugStackConfig={d}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# Start jobs whose begin time has passed within a second, not at the next 60 s pass.
SchedulerParameters=sched_interval=1
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
# Finished jobs stay visible to `scontrol show job` for 5 minutes.
MinJobAge=300
SlurmdParameters=config_overrides
{nodes}PartitionName=debug Nodes={names} Default=YES MaxTime=UNLIMITED State=UP
"
    )
}

/// A spawned daemon and where its stdout and stderr go.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A thread that forks the daemons and lives until the cluster stops. The daemons get
/// `PR_SET_PDEATHSIG`, which fires when the *thread* that forked them ends: a dedicated thread
/// keeps them alive for as long as the cluster, and still takes them down with the test
/// process if it dies without cleaning up (killed, Ctrl-C).
struct Spawner {
    requests: Sender<(Command, Sender<std::io::Result<Child>>)>,
}

impl Spawner {
    fn new() -> Spawner {
        let (requests, incoming) = channel::<(Command, Sender<std::io::Result<Child>>)>();
        std::thread::spawn(move || {
            // Ends when the cluster drops `requests`, after it has stopped the daemons.
            for (mut cmd, reply) in incoming {
                let _ = reply.send(cmd.spawn());
            }
        });
        Spawner { requests }
    }

    /// Spawns `cmd`; with `node`, inside that network namespace (an open /run/netns file,
    /// which must stay open until this returns) and a new UTS namespace with that hostname.
    fn spawn(&self, mut cmd: Command, node: Option<(RawFd, CString)>) -> std::io::Result<Child> {
        // SAFETY: the closure runs in the forked child before exec and only calls prctl,
        // setns, unshare and sethostname, which are plain system calls (async-signal-safe);
        // it allocates nothing and takes no locks (the hostname was allocated before fork).
        // The netns descriptor is open in the parent for as long as spawn runs.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some((netns, hostname)) = &node {
                    if libc::setns(*netns, libc::CLONE_NEWNET) != 0
                        || libc::unshare(libc::CLONE_NEWUTS) != 0
                        || libc::sethostname(hostname.as_ptr(), hostname.as_bytes().len()) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let (reply, answer) = channel();
        self.requests
            .send((cmd, reply))
            .map_err(|_| std::io::Error::other("the daemon spawner thread is gone"))?;
        answer
            .recv()
            .map_err(|_| std::io::Error::other("the daemon spawner thread is gone"))?
    }
}

/// The daemons of a running cluster, until [`SlurmCluster::stop`] takes them.
struct Running {
    daemons: Vec<Daemon>,
    spawner: Spawner,
}

/// A running Slurm cluster (munged, slurmctld, one slurmd per node) in a temporary directory:
/// one node on this machine ([`SlurmCluster::start`]), or nodes in network namespaces of
/// their own (`crate::cluster::TwoNodeCluster`).
///
/// Dropping it, or calling [`SlurmCluster::stop`], kills its jobs and daemons and removes the
/// directory. It is `Sync`: tests running in parallel may share one ([`SlurmCluster::shared`]).
pub struct SlurmCluster {
    dir: PathBuf,
    conf: PathBuf,
    nodes: Vec<NodeSpec>,
    running: Mutex<Option<Running>>,
}

impl SlurmCluster {
    /// Starts a cluster of its own and waits until its node is idle (about a second).
    /// Fails when a Slurm or munge program is missing ([`missing_slurm_programs`]) or a daemon
    /// does not come up; the error then holds the ends of the daemons' logs.
    pub fn start() -> Result<SlurmCluster> {
        let missing = missing_slurm_programs();
        if !missing.is_empty() {
            bail!(
                "Slurm is not installed (missing: {}): run `make deps`",
                missing.join(", ")
            );
        }
        let machine = Machine::this_one()?;
        let layout = Layout::this_machine(&machine);
        SlurmCluster::start_with(&machine, layout)
    }

    /// Starts a cluster of the given layout and waits until all its nodes are idle.
    pub(crate) fn start_nodes(layout: Layout) -> Result<SlurmCluster> {
        let missing = missing_slurm_programs();
        if !missing.is_empty() {
            bail!(
                "Slurm is not installed (missing: {}): run `make deps`",
                missing.join(", ")
            );
        }
        SlurmCluster::start_with(&Machine::this_one()?, layout)
    }

    fn start_with(machine: &Machine, layout: Layout) -> Result<SlurmCluster> {
        sweep_abandoned_clusters();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .context("cannot create the cluster's directory")?
            .keep();
        std::fs::write(dir.join(OWNER_FILE), process_identity(std::process::id()))
            .context("cannot write the cluster's owner file")?;
        let cluster = SlurmCluster {
            conf: dir.join("slurm.conf"),
            dir,
            nodes: layout.nodes.clone(),
            running: Mutex::new(Some(Running {
                daemons: Vec::new(),
                spawner: Spawner::new(),
            })),
        };
        // On failure `cluster` is dropped here, which stops whatever did start.
        cluster.boot(machine, &layout)?;
        Ok(cluster)
    }

    /// The cluster shared by every test of this process: started by the first caller (later
    /// callers wait for it), stopped when the process exits. A failed start is not retried;
    /// every caller gets its error.
    pub fn shared() -> Result<&'static SlurmCluster> {
        static SHARED: OnceLock<std::result::Result<SlurmCluster, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(cluster)) = SHARED.get() {
                cluster.stop();
            }
        }
        SHARED
            .get_or_init(|| {
                let started = SlurmCluster::start().map_err(|e| format!("{e:#}"));
                if started.is_ok() {
                    // SAFETY: registers a plain function with no captured state; test
                    // binaries exit through exit(), which runs it.
                    unsafe { libc::atexit(stop_shared) };
                }
                started
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// The cluster's directory: slurm.conf, state, spool, pid and log files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster's slurm.conf.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The name of the cluster's first node (of a one-node cluster: this machine's short
    /// hostname).
    pub fn node(&self) -> &str {
        &self.nodes[0].name
    }

    /// The names of the cluster's nodes.
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    fn boot(&self, machine: &Machine, layout: &Layout) -> Result<()> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir.join("state"))?;
        for node in &layout.nodes {
            std::fs::create_dir_all(dir.join(format!("spool-{}", node.name)))?;
        }
        std::fs::write(dir.join("plugstack.conf"), "")?;
        let ctld_port = free_port();
        let slurmd_port = std::iter::repeat_with(free_port)
            .find(|&p| p != ctld_port)
            .expect("repeat_with never ends");
        let conf = slurm_conf(dir, machine, layout, ctld_port, slurmd_port);
        std::fs::write(&self.conf, conf)
            .with_context(|| format!("cannot write {}", self.conf.display()))?;

        let key = dir.join("munge.key");
        let mut random = [0u8; 1024];
        File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
            .context("cannot read /dev/urandom for the munge key")?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .and_then(|mut f| f.write_all(&random))
            .with_context(|| format!("cannot write {}", key.display()))?;

        let socket = dir.join("munge.socket");
        let mut munged = self.daemon_command("munged");
        munged
            .arg("--foreground")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--pid-file={}", dir.join("munged.pid").display()))
            .arg(format!("--seed-file={}", dir.join("munged.seed").display()));
        self.spawn_daemon("munged", munged, None)?;
        self.wait_until("munged to create its socket", || Ok(socket.exists()))?;

        let mut slurmctld = self.daemon_command("slurmctld");
        // -D: stay in the foreground (we are its parent); -i: ignore any saved state.
        slurmctld.arg("-D").arg("-i").arg("-f").arg(&self.conf);
        self.spawn_daemon("slurmctld", slurmctld, None)?;
        for node in &layout.nodes {
            let mut slurmd = self.daemon_command("slurmd");
            slurmd
                .arg("-D")
                .arg("-N")
                .arg(&node.name)
                .arg("-f")
                .arg(&self.conf);
            let netns = match &node.netns {
                Some(path) => Some(
                    File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
                ),
                None => None,
            };
            let namespaces = match &netns {
                Some(file) => Some((
                    file.as_raw_fd(),
                    CString::new(node.name.as_str())
                        .with_context(|| format!("node name {:?}", node.name))?,
                )),
                None => None,
            };
            self.spawn_daemon(&format!("slurmd-{}", node.name), slurmd, namespaces)?;
        }

        let names = self.node_names().join(",");
        self.wait_until(&format!("nodes {names} to be idle"), || {
            let mut sinfo = self.command("sinfo");
            sinfo.args(["-h", "-N", "-n", &names, "-o", "%T"]);
            let out = try_output_with_timeout(sinfo, CLIENT_TIMEOUT).map_err(|e| anyhow!(e))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let states: Vec<&str> = text.split_whitespace().collect();
            Ok(out.status.success()
                && states.len() == self.nodes.len()
                && states.iter().all(|s| *s == "idle"))
        })
    }

    fn daemon_command(&self, program: &str) -> Command {
        let mut cmd = self.command(program);
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }

    fn spawn_daemon(
        &self,
        name: &str,
        mut cmd: Command,
        namespaces: Option<(RawFd, CString)>,
    ) -> Result<()> {
        let log = self.dir.join(format!("{name}.stderr"));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdout(out.try_clone()?).stderr(out);
        let mut running = self.lock_running();
        let running = running
            .as_mut()
            .ok_or_else(|| anyhow!("the cluster was stopped"))?;
        let child = running
            .spawner
            .spawn(cmd, namespaces)
            .with_context(|| format!("cannot start {name}"))?;
        running.daemons.push(Daemon {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Polls `ready` during start-up; fails early when a daemon exits, with the logs.
    fn wait_until(&self, what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready()? {
                return Ok(());
            }
            if let Some(exited) = self.exited_daemon() {
                bail!("{exited} while waiting for {what}\n{}", self.logs());
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {START_TIMEOUT:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn exited_daemon(&self) -> Option<String> {
        let mut running = self.lock_running();
        running
            .as_mut()?
            .daemons
            .iter_mut()
            .find_map(|d| match d.child.try_wait() {
                Ok(Some(status)) => Some(format!("{} exited ({status})", d.name)),
                _ => None,
            })
    }

    /// The last lines of every daemon's log, for error messages.
    pub fn logs(&self) -> String {
        let mut files = vec![self.dir.join("slurmctld.log")];
        files.extend(
            self.nodes
                .iter()
                .map(|n| self.dir.join(format!("slurmd-{}.log", n.name))),
        );
        if let Some(running) = self.lock_running().as_ref() {
            files.extend(running.daemons.iter().map(|d| d.log.clone()));
        }
        let mut text = String::new();
        for file in files {
            let content = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            text.push_str(&format!("--- {} (last lines):\n", file.display()));
            for line in tail {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// A command running `program` (a Slurm client, or anything else) against this cluster:
    /// `SLURM_CONF` is set, and Slurm settings inherited from the caller's environment
    /// (`SLURM_*`, `SBATCH_*`, ... which sbatch and others read as options) are removed.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(find_program(program).unwrap_or_else(|| program.into()));
        const INHERITED: &[&str] = &[
            "SLURM_",
            "SBATCH_",
            "SALLOC_",
            "SRUN_",
            "SQUEUE_",
            "SINFO_",
            "SCANCEL_",
            "SCONTROL_",
        ];
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if INHERITED.iter().any(|prefix| k.starts_with(prefix)) {
                cmd.env_remove(&key);
            }
        }
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// Runs `program args...` against the cluster; its stdout, or an error with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(program);
        cmd.args(args);
        self.output(cmd)
    }

    fn output(&self, cmd: Command) -> Result<String> {
        let what = crate::run::describe_command(&cmd);
        let out = try_output_with_timeout(cmd, CLIENT_TIMEOUT).map_err(|e| anyhow!(e))?;
        if !out.status.success() {
            bail!(
                "`{what}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `sbatch --parsable [extra_args...] SCRIPT`, run in the script's directory (where
    /// `slurm-JOBID.out` then lands unless the script says otherwise); the job id.
    pub fn sbatch(&self, script: &Path, extra_args: &[&str]) -> Result<u32> {
        self.sbatch_with(script, extra_args, |_| {})
    }

    /// [`SlurmCluster::sbatch`], with `configure` applied to the sbatch command first (to set
    /// the environment the job inherits: `$HOME`, `$PATH`).
    pub fn sbatch_with(
        &self,
        script: &Path,
        extra_args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Result<u32> {
        self.sbatch_script_args(script, extra_args, &[], configure)
    }

    /// [`SlurmCluster::sbatch_with`], with `script_args` after the script: its `"$@"`.
    pub fn sbatch_script_args(
        &self,
        script: &Path,
        extra_args: &[&str],
        script_args: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Result<u32> {
        let script = std::path::absolute(script)
            .with_context(|| format!("cannot make {} absolute", script.display()))?;
        let mut cmd = self.command("sbatch");
        configure(&mut cmd);
        cmd.arg("--parsable")
            .args(extra_args)
            .arg(&script)
            .args(script_args);
        if let Some(parent) = script.parent() {
            cmd.current_dir(parent);
        }
        let out = self.output(cmd)?;
        // --parsable prints "JOBID" or "JOBID;CLUSTER".
        let id = out.trim().split(';').next().unwrap_or("");
        id.parse()
            .with_context(|| format!("sbatch printed {out:?}, not a job id"))
    }

    /// The job's record from `scontrol show job -o`: one line of `Key=Value` fields.
    pub fn job_record(&self, id: u32) -> Result<String> {
        let out = self.run("scontrol", &["show", "job", "-o", &id.to_string()])?;
        Ok(out.trim().to_string())
    }

    /// One field of the job's record (`JobState`, `Restarts`, `Reason`, `ExitCode`, ...).
    pub fn job_field(&self, id: u32, key: &str) -> Result<String> {
        let record = self.job_record(id)?;
        field(&record, key)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {key}= in the record of job {id}: {record}"))
    }

    /// The job's state as scontrol names it: PENDING, RUNNING, COMPLETED, FAILED, ...
    /// Finished jobs stay known for `MinJobAge` (5 minutes).
    pub fn job_state(&self, id: u32) -> Result<String> {
        self.job_field(id, "JobState")
    }

    /// How many times the job was requeued (scontrol's `Restarts=`).
    pub fn restart_count(&self, id: u32) -> Result<u32> {
        let value = self.job_field(id, "Restarts")?;
        value
            .parse()
            .with_context(|| format!("job {id} has Restarts={value}"))
    }

    /// Waits until the job is in one of `states`; returns that state. Fails at `timeout`, or
    /// as soon as the job has finished in a state not asked for; the error holds its record.
    pub fn wait_for_state(&self, id: u32, states: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.job_state(id)?;
            if states.contains(&state.as_str()) {
                return Ok(state);
            }
            if FINAL_STATES.contains(&state.as_str()) {
                bail!(
                    "job {id} ended {state}, not {}: {}",
                    states.join("/"),
                    self.job_record(id).unwrap_or_default()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "job {id} is still {state}, not {}, after {timeout:?}: {}",
                    states.join("/"),
                    self.job_record(id).unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// `scancel --signal=SIGNAL [--batch] ID`: signals the job's steps, or with `batch_only`
    /// only the batch shell (not its children).
    pub fn scancel_signal(&self, id: u32, signal: &str, batch_only: bool) -> Result<()> {
        let signal = format!("--signal={signal}");
        let id = id.to_string();
        let mut args = vec![signal.as_str()];
        if batch_only {
            args.push("--batch");
        }
        args.push(&id);
        self.run("scancel", &args).map(drop)
    }

    /// The node the job runs (or last ran) its batch script on: `BatchHost`, "" before
    /// it first started.
    pub fn job_node(&self, id: u32) -> Result<String> {
        let record = self.job_record(id)?;
        Ok(field(&record, "BatchHost").unwrap_or("").to_string())
    }

    /// `scontrol update nodename=NODE state=drain reason=REASON`: the node takes no new
    /// jobs; those running on it go on.
    pub fn drain(&self, node: &str, reason: &str) -> Result<()> {
        let (node, reason) = (format!("nodename={node}"), format!("reason={reason}"));
        self.run("scontrol", &["update", &node, "state=drain", &reason])
            .map(drop)
    }

    /// `scontrol update nodename=NODE state=resume`: a drained node takes jobs again. A node
    /// that is not drained is left as it is (scontrol would refuse).
    pub fn resume(&self, node: &str) -> Result<()> {
        if !self.node_state(node)?.starts_with("drain") {
            return Ok(());
        }
        let node = format!("nodename={node}");
        self.run("scontrol", &["update", &node, "state=resume"])
            .map(drop)
    }

    /// The node's state as `sinfo -N -o %T` names it: idle, mixed, allocated, drained,
    /// draining, down, ...
    pub fn node_state(&self, node: &str) -> Result<String> {
        let out = self.run("sinfo", &["-h", "-N", "-n", node, "-o", "%T"])?;
        Ok(out.trim().to_string())
    }

    /// Lifts the hold Slurm puts on a requeued job (it starts it no earlier than
    /// `cred_expire + 1` s after the requeue): `scontrol update jobid=ID StartTime=now` when
    /// the job is pending. True when it did so. The hold is set again when the previous run
    /// has ended, so callers repeat this while the job stays pending.
    pub fn lift_begin_time_hold(&self, id: u32) -> Result<bool> {
        if self.job_state(id)? != "PENDING" {
            return Ok(false);
        }
        match self.run(
            "scontrol",
            &["update", &format!("jobid={id}"), "StartTime=now"],
        ) {
            Ok(_) => Ok(true),
            // It started meanwhile: nothing left to lift.
            Err(_) if self.job_state(id)? != "PENDING" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `scancel ID`: cancels the job.
    pub fn scancel(&self, id: u32) -> Result<()> {
        self.run("scancel", &[&id.to_string()]).map(drop)
    }

    /// `scontrol requeue ID`: the job goes back to PENDING and runs again about 6 s later.
    pub fn requeue(&self, id: u32) -> Result<()> {
        self.run("scontrol", &["requeue", &id.to_string()])
            .map(drop)
    }

    /// Kills the cluster's jobs and daemons and removes its directory. Idempotent; drop and
    /// (for [`SlurmCluster::shared`]) process exit call it.
    pub fn stop(&self) {
        let Some(mut running) = self.lock_running().take() else {
            return;
        };
        // Jobs first: slurmstepd runs detached from slurmd and would outlive it.
        self.kill_jobs();
        for daemon in running.daemons.iter_mut().rev() {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        drop(running);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// SIGKILLs every running job and cancels the rest; waits (a few seconds at most) until
    /// no job is left running or completing.
    fn kill_jobs(&self) {
        let Ok(ids) = self.run("squeue", &["-h", "-o", "%i"]) else {
            return;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return;
        }
        let mut args = vec!["--signal=KILL", "--full"];
        args.extend(&ids);
        let _ = self.run("scancel", &args);
        let _ = self.run("scancel", &ids);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.run(
                "squeue",
                &["-h", "-t", "RUNNING,COMPLETING,SUSPENDED", "-o", "%i"],
            ) {
                Ok(left) if !left.trim().is_empty() => std::thread::sleep(POLL),
                _ => break,
            }
        }
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// "PID STARTTIME" of a live process, "" when it is gone: a pid plus its start time (in clock
/// ticks since boot, /proc/PID/stat field 22) names one process even after the pid is reused.
pub(crate) fn process_identity(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the parenthesised command name (which may hold spaces and ')').
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return String::new();
    };
    // rest starts at field 3 (state); the start time is field 22.
    match rest.split_whitespace().nth(19) {
        Some(start) => format!("{pid} {start}"),
        None => String::new(),
    }
}

/// Cleans up after test processes that died without stopping their cluster (SIGKILL, Ctrl-C).
/// Their daemons died with them (`PR_SET_PDEATHSIG`), but slurmstepd and the jobs it runs are
/// detached from slurmd and would run on: every process whose environment names an abandoned
/// cluster's slurm.conf (slurmd passes its own environment on to slurmstepd and the jobs) is
/// killed, with its descendants, and the directory removed.
fn sweep_abandoned_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_cluster = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        let Ok(owner) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue; // not a cluster's directory, or one still being set up
        };
        let owner_pid = owner.split_whitespace().next().and_then(|p| p.parse().ok());
        let abandoned = owner_pid.is_some_and(|pid| process_identity(pid) != owner.trim());
        if !is_cluster || !abandoned {
            continue;
        }
        let marker = format!("SLURM_CONF={}", dir.join("slurm.conf").display());
        // Rounds, because a process may fork between the scan and the kill.
        for _ in 0..5 {
            let victims = processes_with_env(&marker);
            if victims.is_empty() {
                break;
            }
            for pid in victims {
                // SAFETY: kill has no memory-safety preconditions; the pids are processes
                // of an abandoned test cluster (a pid reused meanwhile by something else
                // would not carry the cluster's SLURM_CONF or descend from one that does).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The processes whose environment holds `entry` ("KEY=VALUE"), and their descendants.
fn processes_with_env(entry: &str) -> Vec<libc::pid_t> {
    let mut parents: Vec<(libc::pid_t, libc::pid_t)> = Vec::new();
    let mut found: Vec<libc::pid_t> = Vec::new();
    let Ok(proc_dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry_dir in proc_dir.flatten() {
        let Some(pid) = entry_dir
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        {
            parents.push((pid, ppid));
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|kv| kv == entry.as_bytes()) {
            found.push(pid);
        }
    }
    // Add descendants until nothing new turns up.
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !found.contains(&pid) {
                found.push(pid);
            }
        }
        i += 1;
    }
    found
}

/// The value of `key` in a one-line `Key=Value Key=Value` record (values without spaces).
fn field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    record
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn field_reads_exact_keys() {
        let record = "JobId=7 JobName=x JobState=PENDING Reason=BeginTime Restarts=2 ArrayJobId=3";
        assert_eq!(field(record, "JobState"), Some("PENDING"));
        assert_eq!(field(record, "Restarts"), Some("2"));
        assert_eq!(field(record, "JobId"), Some("7"));
        assert_eq!(field(record, "Job"), None);
    }
}
