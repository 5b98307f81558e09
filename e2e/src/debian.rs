//! A Debian image with real HPC and server applications from Debian's own packages, for the
//! tests that check those applications come back from a checkpoint.
//!
//! Built with the host's debootstrap (bookworm, minbase) plus the packages below, then
//! `rctr build`; once per test process and cached on disk under the target directory keyed by
//! the package list, so one `make test` builds it once. The mirror is the host's own Debian
//! mirror (from its apt sources).

use crate::images::build_sif;
use crate::paths::target_dir;
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Debian packages of the image (beyond minbase).
pub const DEBIAN_PACKAGES: &[&str] = &[
    "openmpi-bin",
    "python3-mpi4py",
    "python3",
    "redis-server",
    "redis-tools",
    "postgresql",
];

/// Programs the tests run, put in /opt of the image.
const MPI_ITER_PY: &str = include_str!("apps/mpi_iter.py");
const SHM_WORKERS_PY: &str = include_str!("apps/shm_workers.py");
const PG_START_SH: &str = include_str!("apps/pg_start.sh");

/// The host's Debian mirror, from its apt sources; Debian's default otherwise.
pub fn mirror() -> String {
    let mut texts = vec![];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in rd.flatten() {
            texts.push(std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for text in texts {
        for line in text.lines() {
            let l = line.trim();
            let url = l.strip_prefix("URIs:").map(str::trim).or_else(|| {
                l.strip_prefix("deb ")
                    .and_then(|r| r.split_whitespace().next())
            });
            if let Some(u) = url {
                if u.starts_with("http") && u.trim_end_matches('/').ends_with("/debian") {
                    return u.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

fn write_image(out: &Path, work: &Path) -> Result<()> {
    let root = work.join("root");
    let _ = std::fs::remove_dir_all(&root);
    let log = work.join("debootstrap.log");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", "--include"])
        .arg(DEBIAN_PACKAGES.join(","))
        .arg("bookworm")
        .arg(&root)
        .arg(mirror())
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(work.join("debootstrap.err"))?)
        .status()
        .context("cannot run debootstrap (apt-get install debootstrap: make deps)")?;
    if !status.success() {
        let tail: String = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ");
        bail!("debootstrap failed ({status}): {tail}");
    }
    std::fs::write(root.join("opt/mpi_iter.py"), MPI_ITER_PY)?;
    std::fs::write(root.join("opt/shm_workers.py"), SHM_WORKERS_PY)?;
    let pg = root.join("opt/pg_start.sh");
    std::fs::write(&pg, PG_START_SH)?;
    std::fs::set_permissions(&pg, std::fs::Permissions::from_mode(0o755))?;
    let def = work.join("debian.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%startscript\n    exec \"$@\"\n%runscript\n    exec \"$@\"\n",
            root.display()
        ),
    )?;
    build_sif(out, &def)?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// The image, built on first use; Err when it cannot be built here (no debootstrap, no
/// mirror): the tests say so and skip.
pub fn debian_image() -> std::result::Result<PathBuf, String> {
    static IMAGE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let key = blake_key();
            let dir = target_dir().join("e2e-cache");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let sif = dir.join(format!("debian-{key}.sif"));
            if sif.is_file() {
                return Ok(sif);
            }
            let work = dir.join(format!("debian-{key}.work"));
            std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
            let tmp = dir.join(format!("debian-{key}.sif.tmp"));
            write_image(&tmp, &work).map_err(|e| format!("{e:#}"))?;
            std::fs::rename(&tmp, &sif).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_dir_all(&work);
            Ok(sif)
        })
        .clone()
}

/// A short key of what goes into the image.
fn blake_key() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!("{DEBIAN_PACKAGES:?}{MPI_ITER_PY}{SHM_WORKERS_PY}{PG_START_SH}");
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}
