//! A real two-node Slurm cluster on one machine, for the tests that move jobs between nodes.
//!
//! Each node is a network namespace with an address of its own on a bridge (a veth pair per
//! node) and a UTS namespace whose hostname is the node's name; its slurmd runs in both
//! (`NodeName=n1 NodeAddr=<n1's address>`). slurmctld and munged run on the machine itself,
//! slurmctld reached at the bridge's address. The file system is the machine's, so `$HOME`
//! is shared by the nodes as a cluster file system is. A job runs in its node's namespaces
//! (it descends from that node's slurmd): a server listening on 0.0.0.0 in a job on n1
//! answers on n1's address only.
//!
//! The addresses are test-only: 10.213.X.0/24 with the first X no interface of the machine
//! uses; nodes get .1, .2, the bridge .254. Names carry the owning test process (pid and
//! start time), so a run killed outright (SIGKILL) blocks nothing: the next start removes
//! the namespaces and bridges of owners that are gone, after `SlurmCluster` has killed the
//! jobs they left.
//!
//! Start-up takes about two seconds; [`TwoNodeCluster::shared`] starts one per test process.

use crate::run::try_output_with_timeout;
use crate::slurm::{find_program, process_identity, Layout, NodeSpec, SlurmCluster};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The nodes of the cluster.
pub const NODES: [&str; 2] = ["n1", "n2"];

/// Network namespaces are /run/netns/rctr-e2e-<pid>-<start>-<node>.
const NETNS_PREFIX: &str = "rctr-e2e-";
const NETNS_DIR: &str = "/run/netns";
/// A bridge's alias (`ip link set BR alias ...`) names its owner: "rctr-e2e <pid> <start>".
const ALIAS_PREFIX: &str = "rctr-e2e ";
/// Held while stale networks are removed and a free subnet is chosen and taken.
const LOCK_FILE: &str = "/run/rctr-e2e-net.lock";
/// The subnets tried: 10.213.X.0/24.
const SUBNET: [u8; 2] = [10, 213];
/// The bridge's host number in each subnet.
const BRIDGE_HOST: u8 = 254;
const IP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the two-node cluster cannot run here (a facility missing), or None.
pub fn missing_netns_facilities() -> Option<String> {
    if find_program("ip").is_none() {
        return Some("the `ip` program (iproute2) is missing: run `make deps`".into());
    }
    for ns in ["net", "uts"] {
        if !Path::new(&format!("/proc/self/ns/{ns}")).exists() {
            return Some(format!("the kernel has no {ns} namespaces"));
        }
    }
    None
}

/// Runs `ip ARGS...`; an error with its stderr when it fails.
fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(find_program("ip").unwrap_or_else(|| "ip".into()));
    cmd.args(args);
    let out = try_output_with_timeout(cmd, IP_TIMEOUT).map_err(|e| anyhow!(e))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One node's network: its namespace and address.
struct NetNode {
    name: String,
    netns: String,
    addr: Ipv4Addr,
}

/// A bridge on this machine and one network namespace per node, joined to it by veth pairs.
/// Dropping it (or [`NodeNetwork::remove`]) deletes them.
pub struct NodeNetwork {
    bridge: String,
    bridge_addr: Ipv4Addr,
    nodes: Vec<NetNode>,
    removed: AtomicBool,
}

impl NodeNetwork {
    /// Creates the bridge and one namespace per name, after removing those of test
    /// processes that are gone.
    pub fn create(names: &[&str]) -> Result<NodeNetwork> {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .with_context(|| format!("cannot open {LOCK_FILE}"))?;
        // SAFETY: flock on a descriptor we own; released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {LOCK_FILE}: {}",
                std::io::Error::last_os_error()
            );
        }
        sweep_abandoned_networks();
        let third = free_subnet()?;
        let subnet = |host: u8| Ipv4Addr::new(SUBNET[0], SUBNET[1], third, host);
        let owner = process_identity(std::process::id());
        let pid = std::process::id();
        let network = NodeNetwork {
            bridge: format!("rcb{pid}"),
            bridge_addr: subnet(BRIDGE_HOST),
            nodes: names
                .iter()
                .zip(1u8..)
                .map(|(name, host)| NetNode {
                    name: name.to_string(),
                    netns: format!("{NETNS_PREFIX}{}-{name}", owner.replace(' ', "-")),
                    addr: subnet(host),
                })
                .collect(),
            removed: AtomicBool::new(false),
        };
        // On failure `network` is dropped, which removes what was made.
        network.build(&owner)?;
        drop(lock);
        Ok(network)
    }

    fn build(&self, owner: &str) -> Result<()> {
        let bridge = self.bridge.as_str();
        let cidr = |addr: Ipv4Addr| format!("{addr}/24");
        ip(&["link", "add", bridge, "type", "bridge"])?;
        ip(&[
            "link",
            "set",
            bridge,
            "alias",
            &format!("{ALIAS_PREFIX}{owner}"),
        ])?;
        ip(&["addr", "add", &cidr(self.bridge_addr), "dev", bridge])?;
        ip(&["link", "set", bridge, "up"])?;
        for node in &self.nodes {
            let ns = node.netns.as_str();
            let host_end = format!("rcv{}{}", std::process::id(), node.name);
            ip(&["netns", "add", ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["link", "set", &host_end, "master", bridge, "up"])?;
            ip(&["-n", ns, "addr", "add", &cidr(node.addr), "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// The address of node `name`.
    pub fn addr(&self, name: &str) -> Option<Ipv4Addr> {
        self.nodes.iter().find(|n| n.name == name).map(|n| n.addr)
    }

    /// The address of the bridge, this machine's side.
    pub fn bridge_addr(&self) -> Ipv4Addr {
        self.bridge_addr
    }

    /// The path of node `name`'s network namespace (for `nsenter --net=PATH`).
    pub fn netns_path(&self, name: &str) -> Option<PathBuf> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| Path::new(NETNS_DIR).join(&n.netns))
    }

    /// Deletes the namespaces and the bridge (the veth pairs go with the namespaces once
    /// their last process has ended). Idempotent.
    pub fn remove(&self) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        for node in &self.nodes {
            let _ = ip(&["netns", "delete", &node.netns]);
        }
        let _ = ip(&["link", "delete", "dev", &self.bridge]);
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The first X in 1..=253 such that no interface has an address in 10.213.X.0/24.
fn free_subnet() -> Result<u8> {
    let used = ip(&["-o", "-4", "addr", "show"])?;
    let prefix = |x: u8| format!(" {}.{}.{x}.", SUBNET[0], SUBNET[1]);
    (1..=253u8)
        .find(|&x| !used.contains(&prefix(x)))
        .ok_or_else(|| anyhow!("every 10.213.X.0/24 subnet is in use on this machine"))
}

/// Whether "PID START" names a process that is gone.
fn owner_gone(identity: &str) -> bool {
    let pid = identity
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok());
    pid.is_some_and(|pid| process_identity(pid) != identity)
}

/// Deletes the namespaces and bridges of test processes that ended without removing them.
fn sweep_abandoned_networks() {
    if let Ok(entries) = std::fs::read_dir(NETNS_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
                continue;
            };
            // rest: PID-START-NODE
            let parts: Vec<&str> = rest.splitn(3, '-').collect();
            if parts.len() == 3 && owner_gone(&format!("{} {}", parts[0], parts[1])) {
                let _ = ip(&["netns", "delete", &name]);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/class/net") {
        for entry in entries.flatten() {
            let alias = std::fs::read_to_string(entry.path().join("ifalias")).unwrap_or_default();
            if let Some(owner) = alias.trim().strip_prefix(ALIAS_PREFIX) {
                if owner_gone(owner) {
                    let _ = ip(&[
                        "link",
                        "delete",
                        "dev",
                        &entry.file_name().to_string_lossy(),
                    ]);
                }
            }
        }
    }
}

/// A running two-node Slurm cluster: nodes n1 and n2, each a network and UTS namespace with
/// its own address and slurmd, and slurmctld and munged on this machine. Everything
/// [`SlurmCluster`] offers (sbatch, job states, drain and resume) works on it through `Deref`.
/// Dropping it, or [`TwoNodeCluster::stop`], kills its jobs and daemons, then removes its
/// network.
pub struct TwoNodeCluster {
    // Field order matters: the daemons and jobs go before their namespaces.
    slurm: SlurmCluster,
    network: NodeNetwork,
}

impl TwoNodeCluster {
    /// Builds the network and starts the cluster; waits until both nodes are idle.
    pub fn start() -> Result<TwoNodeCluster> {
        if let Some(missing) = missing_netns_facilities() {
            bail!("{missing}");
        }
        let network = NodeNetwork::create(&NODES)?;
        let layout = Layout {
            controller_addr: network.bridge_addr(),
            nodes: NODES
                .iter()
                .map(|name| NodeSpec {
                    name: name.to_string(),
                    addr: network.addr(name).expect("the network has every node"),
                    netns: network.netns_path(name),
                })
                .collect(),
        };
        let slurm = SlurmCluster::start_nodes(layout)?;
        Ok(TwoNodeCluster { slurm, network })
    }

    /// The cluster shared by every test of this process: started by the first caller,
    /// stopped when the process exits. A failed start is not retried.
    pub fn shared() -> Result<&'static TwoNodeCluster> {
        static SHARED: OnceLock<std::result::Result<TwoNodeCluster, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(cluster)) = SHARED.get() {
                cluster.stop();
            }
        }
        SHARED
            .get_or_init(|| {
                let started = TwoNodeCluster::start().map_err(|e| format!("{e:#}"));
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

    /// Node `name`'s address (panics for a node the cluster does not have).
    pub fn addr(&self, name: &str) -> Ipv4Addr {
        self.network
            .addr(name)
            .unwrap_or_else(|| panic!("the cluster has no node {name}"))
    }

    /// The network the nodes live on.
    pub fn network(&self) -> &NodeNetwork {
        &self.network
    }

    /// Kills the jobs and daemons, removes the directory and the network. Idempotent.
    pub fn stop(&self) {
        self.slurm.stop();
        self.network.remove();
    }
}

impl Deref for TwoNodeCluster {
    type Target = SlurmCluster;
    fn deref(&self) -> &SlurmCluster {
        &self.slurm
    }
}

impl Drop for TwoNodeCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
