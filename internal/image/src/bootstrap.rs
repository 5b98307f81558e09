//! Making a stage's root filesystem from its `Bootstrap:` source.

use crate::cache::cache_dir;
use crate::deffile::{Bootstrap, Definition};
use crate::fsutil::TreeCopier;
use crate::source::{ImageKind, ImageSource};
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Packages Apptainer's debootstrap agent leaves out, and the one it always adds.
const DEBOOTSTRAP_EXCLUDE: &str = "openssl,udev,debconf-i18n,e2fsprogs";

/// Creates the root filesystem at `rootfs` from the definition's bootstrap source.
pub(crate) fn populate(
    def: &Definition,
    rootfs: &Path,
    copier: &mut TreeCopier,
    registry: &crate::registry::RegistryOptions,
    warnings: &mut Vec<String>,
) -> Result<()> {
    match &def.bootstrap {
        Bootstrap::Scratch => {
            fs::create_dir(rootfs)
                .with_context(|| format!("cannot create {}", rootfs.display()))?;
            fs::set_permissions(rootfs, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot set mode of {}", rootfs.display()))?;
        }
        Bootstrap::LocalImage { from } => {
            let path = def.base_dir.join(from);
            let image = ImageSource::open(&path)
                .with_context(|| format!("{}: From: {from}", def.origin.display()))?;
            match image.kind {
                ImageKind::Sandbox => copier.copy(&image.path, rootfs)?,
                ImageKind::Sif | ImageKind::Squashfs => {
                    let reader = image
                        .squashfs()
                        .ok_or_else(|| anyhow!("{}: no squashfs reader", image.path.display()))?;
                    let report = reader.extract_to(rootfs)?;
                    warnings.extend(report.warnings);
                }
            }
        }
        Bootstrap::Debootstrap {
            os_version,
            mirror_url,
            include,
        } => debootstrap(def, os_version, mirror_url, include, rootfs)?,
        Bootstrap::Oci { kind, from } => {
            crate::oci::populate(def, *kind, from, rootfs, registry, warnings)?;
        }
    }
    Ok(())
}

/// Debian's name of the host architecture.
fn debian_arch() -> &'static str {
    match rctr_sif::host_arch() {
        "386" => "i386",
        "ppc64le" => "ppc64el",
        "arm" => "armhf",
        other => other,
    }
}

/// Runs the host's debootstrap as Apptainer's debootstrap agent does (minbase, apt
/// included), its downloaded packages kept in the user's cache for the next build.
fn debootstrap(
    def: &Definition,
    suite: &str,
    mirror: &str,
    include: &[String],
    rootfs: &Path,
) -> Result<()> {
    let shown = def.origin.display();
    if !nix_is_root() {
        bail!("{shown}: \"Bootstrap: debootstrap\" runs debootstrap, which needs root; run rctr build as root");
    }
    let cache = cache_dir(&format!("debootstrap/{suite}-{}", debian_arch()))?;
    let mut packages = vec!["apt".to_string()];
    packages.extend(include.iter().cloned());
    let mut cmd = Command::new("debootstrap");
    cmd.arg("--variant=minbase")
        .arg(format!("--exclude={DEBOOTSTRAP_EXCLUDE}"))
        .arg(format!("--include={}", packages.join(",")))
        .arg(format!("--arch={}", debian_arch()))
        .arg(format!("--cache-dir={}", cache.display()))
        .arg(suite)
        .arg(rootfs)
        .arg(mirror)
        // Its chatter goes to stderr: stdout may be a pipe the caller reads.
        .stdout(std::io::stderr());
    rctr_log::info!("rctr: debootstrap {suite} from {mirror}");
    let status = cmd.status().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("{shown}: \"Bootstrap: debootstrap\" needs the debootstrap program; install it (apt-get install debootstrap)")
        } else {
            anyhow!("{shown}: cannot run debootstrap: {e}")
        }
    })?;
    if !status.success() {
        bail!(
            "{shown}: debootstrap of {suite} from {mirror} failed ({status}); see its output \
             above (is OSVersion a suite that mirror has?)"
        );
    }
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
