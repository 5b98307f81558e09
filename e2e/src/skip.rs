//! Skipping tests whose requirements this machine does not meet, visibly.

use crate::cluster::{missing_netns_facilities, TwoNodeCluster};
use crate::slurm::{missing_slurm_programs, SlurmCluster};
use std::io::Write;
use std::path::Path;

/// The CRIU that etc/setup/install-criu.sh installs and rctr's default configuration uses.
pub const CRIU_BIN: &str = "/opt/rctr/criu/bin/criu";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints the skip notice straight to the terminal: the test harness captures `eprintln!`
/// of passing tests, and a silent skip would look like a pass.
fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Whether this process has CAP_SYS_RESOURCE (root lacks it on some machines, and CRIU needs
/// it to dump processes that changed their uid).
pub fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// True when running as root; otherwise prints "SKIPPED <test>: needs root".
pub fn require_root(test: &str) -> bool {
    let root = is_root();
    if !root {
        skipped(test, "needs root");
    }
    root
}

/// True when CRIU is installed; otherwise prints a SKIPPED line saying how to install it.
pub fn require_criu(test: &str) -> bool {
    let present = Path::new(CRIU_BIN).is_file();
    if !present {
        skipped(
            test,
            &format!("needs CRIU ({CRIU_BIN} missing: run `make deps`)"),
        );
    }
    present
}

/// True when running as root with CRIU installed (checkpoint tests need both); otherwise
/// prints the SKIPPED line of the first requirement missing.
pub fn require_root_and_criu(test: &str) -> bool {
    require_root(test) && require_criu(test)
}

/// Whether Slurm's and munge's programs are installed; prints a SKIPPED line when not.
fn require_slurm_programs(test: &str) -> bool {
    let missing = missing_slurm_programs();
    if !missing.is_empty() {
        skipped(
            test,
            &format!(
                "needs Slurm and munge ({} missing: run `make deps`)",
                missing.join(", ")
            ),
        );
    }
    missing.is_empty()
}

/// The test process's shared Slurm cluster ([`SlurmCluster::shared`]), started on first use.
/// None, after printing a SKIPPED line, when not running as root (the cluster's daemons and
/// jobs run as root) or when Slurm or munge is not installed. Panics when they are installed
/// but the cluster does not start: that is a failure, not a skip.
pub fn require_slurm(test: &str) -> Option<&'static SlurmCluster> {
    if !require_root(test) || !require_slurm_programs(test) {
        return None;
    }
    match SlurmCluster::shared() {
        Ok(cluster) => Some(cluster),
        Err(e) => panic!("the test Slurm cluster did not start: {e:#}"),
    }
}

/// The test process's shared two-node cluster ([`TwoNodeCluster::shared`]), started on first
/// use. None, after printing a SKIPPED line, when not running as root, when Slurm or munge is
/// not installed, or when `ip` or network/UTS namespaces are missing. Panics when all are
/// there but the cluster does not start: that is a failure, not a skip.
pub fn require_two_nodes(test: &str) -> Option<&'static TwoNodeCluster> {
    if !require_root(test) || !require_slurm_programs(test) {
        return None;
    }
    if let Some(missing) = missing_netns_facilities() {
        skipped(test, &format!("needs network namespaces: {missing}"));
        return None;
    }
    match TwoNodeCluster::shared() {
        Ok(cluster) => Some(cluster),
        Err(e) => panic!("the two-node test Slurm cluster did not start: {e:#}"),
    }
}
