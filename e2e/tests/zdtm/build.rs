//! Building CRIU's zdtm test programs from the source of the installed CRIU version, once:
//! the tarball is unpacked and built under `<target>/zdtm-cache/`, and a later run only
//! rebuilds what changed (make).

use anyhow::{bail, ensure, Context, Result};
use rctr_e2e::{build_sif, busybox_rootfs, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where etc/setup/fetch-criu-source.sh puts the tarball.
const SOURCE_DIR: &str = "/var/cache/rctr/criu-source";
/// What install-criu.sh records about the installed CRIU.
const PACKAGES: &str = "/opt/rctr/criu/PACKAGES";

const ZDTM_RUN_C: &str = include_str!("zdtm_run.c");

/// The CRIU source tarball of the installed version: `$RCTR_CRIU_SOURCE`, else the one
/// fetch-criu-source.sh downloaded. Err: why there is none (a reason to skip).
pub fn source_tarball() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RCTR_CRIU_SOURCE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let packages = std::fs::read_to_string(PACKAGES)
        .map_err(|e| format!("cannot read {PACKAGES} ({e}): run `make deps`"))?;
    let version = packages
        .lines()
        .find_map(|l| l.strip_prefix("criu="))
        .ok_or_else(|| format!("{PACKAGES} names no criu version"))?;
    let upstream = version.rsplit_once('-').map_or(version, |(u, _)| u);
    let upstream = upstream.split_once(':').map_or(upstream, |(_, u)| u);
    let prefix = format!("criu_{upstream}.orig.tar.");
    std::fs::read_dir(SOURCE_DIR)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix)))
        })
        .ok_or_else(|| {
            format!("the source of CRIU {upstream} is not in {SOURCE_DIR}: run `make deps` (etc/setup/fetch-criu-source.sh)")
        })
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!("{what} failed ({}):\n{}", out.status, tail.join("\n"));
    }
    Ok(())
}

/// Unpacks the tarball (once) and builds `tests` statically, plus the zdtm_run wrapper.
/// Returns the directory holding the test binaries and zdtm_run.
pub fn build(tarball: &Path, tests: &[&str]) -> Result<PathBuf> {
    let cache = workspace_root().join("target/zdtm-cache");
    let stem = tarball
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .split(".orig.tar")
                .next()
                .unwrap_or("criu")
                .to_string()
        })
        .unwrap_or_else(|| "criu".into());
    let tree = cache.join(&stem);
    let unpacked = tree.join(".unpacked");
    if !unpacked.exists() {
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::create_dir_all(&tree)?;
        run(
            Command::new("tar")
                .arg("-xf")
                .arg(tarball)
                .arg("-C")
                .arg(&tree)
                .args(["--strip-components=1", "--wildcards", "*/test/zdtm/*"]),
            "unpacking the CRIU source",
        )?;
        std::fs::write(&unpacked, "")?;
    }
    let statics = tree.join("test/zdtm/static");
    ensure!(
        statics.is_dir(),
        "{} missing after unpacking",
        statics.display()
    );
    // Static binaries: the test image has no C library. -k: one test that does not build
    // is reported as such, the others still run.
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let _ = Command::new("make")
        .arg("-C")
        .arg(&statics)
        .arg(format!("-j{jobs}"))
        .arg("-k")
        .arg("CC=gcc -static")
        .args(tests)
        .output()
        .context("cannot run make (install build-essential: make deps)")?;
    let wrapper_src = cache.join("zdtm_run.c");
    let wrapper = statics.join("zdtm_run");
    if std::fs::read_to_string(&wrapper_src).ok().as_deref() != Some(ZDTM_RUN_C)
        || !wrapper.exists()
    {
        std::fs::write(&wrapper_src, ZDTM_RUN_C)?;
        run(
            Command::new("gcc")
                .args(["-O2", "-Wall", "-static", "-o"])
                .arg(&wrapper)
                .arg(&wrapper_src),
            "gcc zdtm_run.c",
        )?;
    }
    Ok(statics)
}

/// The image the tests run in inside rctr: busybox, /zdtm/<test> and /zdtm/zdtm_run, a /w
/// mount point for the test's work directory; its startscript runs its arguments.
pub fn image(bins: &Path, tests: &[&str], scratch: &Path) -> Result<PathBuf> {
    let rootfs = scratch.join("zdtm-rootfs");
    busybox_rootfs(&rootfs)?;
    std::fs::create_dir_all(rootfs.join("zdtm"))?;
    std::fs::create_dir_all(rootfs.join("w"))?;
    for name in tests.iter().copied().chain(["zdtm_run"]) {
        let from = bins.join(name);
        if from.exists() {
            std::fs::copy(&from, rootfs.join("zdtm").join(name))
                .with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    let def = scratch.join("zdtm.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%startscript\n    exec \"$@\"\n",
            rootfs.display()
        ),
    )?;
    let sif = scratch.join("zdtm.sif");
    build_sif(&sif, &def)?;
    Ok(sif)
}
