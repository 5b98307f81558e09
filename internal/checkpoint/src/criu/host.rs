//! What CRIU on this host is and can restore: its version and the CPU features it checks.
//!
//! Both come from the engine bundle's own CRIU, run through the bundled loader exactly as the
//! checkpoints run it (here on the host: CPUID is the same in every namespace).

use super::bundle::EngineBundle;
use super::doctor::{parse_version, run_with_timeout, version_string};
use super::CRIU;
use crate::preflight::version_numbers;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
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
///
/// The CPU does not change while the host runs, so the record is made once per boot and
/// engine bundle and kept in the user's `cache`: later checkpoints copy it instead of
/// starting CRIU again.
pub fn dump_cpu(bundle: &EngineBundle, gen_dir: &Path, cache: &Path) -> Option<String> {
    let dir = gen_dir.join(CPU_DIR);
    if let Err(e) = rctr_state::ensure_private_dir(&dir) {
        rctr_log::debug!("cannot record the CPU features: {e:#}");
        return None;
    }
    let cached = cache.join(format!("cpuinfo-{}-{}.img", short(&bundle.id), boot_id()));
    if let Ok(bytes) = std::fs::read(&cached) {
        if rctr_state::write_atomic(&dir.join(CPUINFO), &bytes, 0o600).is_ok() {
            return Some(CPU_DIR.to_string());
        }
    }
    let recorded = dir
        .to_str()
        .map(|d| run(bundle, &["cpuinfo", "dump", "-D", d]));
    match recorded {
        Some(Ok((true, _))) => {
            if let Ok(bytes) = std::fs::read(dir.join(CPUINFO)) {
                let _ = rctr_state::write_atomic(&cached, &bytes, 0o600);
            }
            Some(CPU_DIR.to_string())
        }
        other => {
            rctr_log::debug!("criu cpuinfo dump failed: {other:?}");
            let _ = std::fs::remove_dir_all(&dir);
            None
        }
    }
}

/// `criu cpuinfo check` of a recorded CPU against this one: None when CRIU accepts this
/// CPU, else CRIU's reason. A record that passed once passes until the next boot (kept in
/// the user's `cache`), so restarts do not start CRIU for it every time.
pub fn check_cpu(bundle: &EngineBundle, recorded: &Path, cache: &Path) -> Result<Option<String>> {
    let Some(dir) = recorded.to_str() else {
        bail!("{} is not UTF-8", recorded.display());
    };
    let record = std::fs::read(recorded.join(CPUINFO))
        .with_context(|| format!("cannot read {}", recorded.join(CPUINFO).display()))?;
    let key = format!(
        "{}-{}-{}",
        blake3::hash(&record).to_hex(),
        short(&bundle.id),
        boot_id()
    );
    let file = cache.join("cpu-checks.json");
    let mut passed: BTreeSet<String> = rctr_state::read_json(&file).unwrap_or_default();
    if passed.contains(&key) {
        return Ok(None);
    }
    let (ok, out) = run(bundle, &["cpuinfo", "check", "-D", dir])?;
    if ok {
        passed.insert(key);
        let _ = rctr_state::write_json_atomic(&file, &passed);
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

/// The file `criu cpuinfo dump` writes.
const CPUINFO: &str = "cpuinfo.img";

/// This boot of the host (a CPU can only change across one).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
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
