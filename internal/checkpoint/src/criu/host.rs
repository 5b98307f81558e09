//! What CRIU on this host is and can restore: its version and the CPU features it checks.
//!
//! Both come from the engine bundle's own CRIU, run through the bundled loader exactly as the
//! checkpoints run it (here on the host: CPUID is the same in every namespace).

use super::bundle::EngineBundle;
use super::doctor::{parse_version, run_with_timeout, version_string};
use super::CRIU;
use crate::preflight::version_numbers;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The directory of a generation holding `criu cpuinfo dump`'s image. Not the images
/// directory itself: a forced restore must not be refused by CRIU reading it.
pub const CPU_DIR: &str = "host-cpu";

const TIMEOUT: Duration = Duration::from_secs(30);

fn run(bundle: &EngineBundle, args: &[&str]) -> Result<(bool, String)> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let argv = bundle.host_argv(CRIU, &args)?;
    let (code, out) = run_with_timeout(&argv, TIMEOUT)?;
    Ok((code == Some(0), out))
}

/// The bundle's CRIU version ("4.2.1"). A bundle's contents never change, so the answer is
/// kept in the user's cache by bundle id.
pub fn version(bundle: &EngineBundle, cache: &Path) -> Option<String> {
    let file = cache.join("engine-versions.json");
    let mut known: BTreeMap<String, String> = rctr_state::read_json(&file).unwrap_or_default();
    if let Some(v) = known.get(&bundle.id) {
        return Some(v.clone());
    }
    let v = match run(bundle, &["--version"]) {
        Ok((true, out)) => version_string(parse_version(&out)?),
        Ok((false, out)) => {
            rctr_log::debug!("criu --version failed: {}", out.trim());
            return None;
        }
        Err(e) => {
            rctr_log::debug!("criu --version: {e:#}");
            return None;
        }
    };
    known.insert(bundle.id.clone(), v.clone());
    let _ = rctr_state::write_json_atomic(&file, &known);
    Some(v)
}

/// Records this CPU's features (`criu cpuinfo dump`) in `<gen_dir>/host-cpu/`; returns that
/// directory's name in the generation. A failure only means no CPU check at restore.
pub fn dump_cpu(bundle: &EngineBundle, gen_dir: &Path) -> Option<String> {
    let dir = gen_dir.join(CPU_DIR);
    if let Err(e) = rctr_state::ensure_private_dir(&dir) {
        rctr_log::debug!("cannot record the CPU features: {e:#}");
        return None;
    }
    let dir_text = dir.to_str()?;
    match run(bundle, &["cpuinfo", "dump", "-D", dir_text]) {
        Ok((true, _)) => Some(CPU_DIR.to_string()),
        Ok((false, out)) => {
            rctr_log::debug!("criu cpuinfo dump failed: {}", out.trim());
            let _ = std::fs::remove_dir_all(&dir);
            None
        }
        Err(e) => {
            rctr_log::debug!("criu cpuinfo dump: {e:#}");
            let _ = std::fs::remove_dir_all(&dir);
            None
        }
    }
}

/// `criu cpuinfo check` of a recorded CPU against this one: None when CRIU accepts this
/// CPU, else CRIU's reason.
pub fn check_cpu(bundle: &EngineBundle, recorded: &Path) -> Result<Option<String>> {
    let Some(dir) = recorded.to_str() else {
        bail!("{} is not UTF-8", recorded.display());
    };
    let (ok, out) = run(bundle, &["cpuinfo", "check", "-D", dir])?;
    if ok {
        return Ok(None);
    }
    let why = out
        .lines()
        .map(str::trim)
        .find(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .or_else(|| out.lines().map(str::trim).rfind(|l| !l.is_empty()))
        .unwrap_or("no reason given");
    // "Error (criu/arch/x86/cpu.c:223): cpu: CPU instruction capabilities do not match run time"
    let why = why.rsplit_once("): ").map(|(_, r)| r).unwrap_or(why);
    Ok(Some(why.to_string()))
}

/// Whether images written by CRIU `then` may need more than CRIU `here` knows: a CRIU older
/// than the one that dumped may not read them.
pub fn older_engine(then: &str, here: &str) -> bool {
    version_numbers(here) < version_numbers(then)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_older_criu_is_a_difference() {
        assert!(older_engine("4.2.1", "4.1.0"));
        assert!(!older_engine("4.2.1", "4.2.1"));
        assert!(!older_engine("4.1.0", "4.2.1"));
        assert!(!older_engine("4.2.1", "4.10.0"));
    }
}
