//! OCI and Docker images as build sources (`docker-archive:`, `oci:`, `oci-archive:`, and
//! `docker://` through the registry client): the manifest for this host's platform, its
//! layers applied in order with their whiteouts, and the image config turned into
//! Apptainer's /.singularity.d environment, runscript and labels.

mod config;
mod layers;
pub(crate) mod layout;

use crate::deffile::{Definition, OciKind};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Fills `rootfs` from the OCI/Docker image `from` of `kind`.
pub(crate) fn populate(
    def: &Definition,
    kind: OciKind,
    from: &str,
    rootfs: &Path,
    registry: &crate::registry::RegistryOptions,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let shown = match kind {
        OciKind::Registry => format!("docker://{from}"),
        _ => format!("{}:{from}", kind.agent()),
    };
    let scratch = rootfs.with_extension("oci-src");
    let result = (|| -> Result<()> {
        let image = match kind {
            OciKind::DockerArchive => {
                let tar = def.base_dir.join(from);
                unpack_archive(&tar, &scratch)?;
                layout::docker_archive(&scratch)?
            }
            OciKind::LayoutArchive => {
                let (file, tag) = split_tag(from);
                unpack_archive(&def.base_dir.join(file), &scratch)?;
                layout::oci_layout(&scratch, tag)?
            }
            OciKind::Layout => {
                let (dir, tag) = split_tag(from);
                layout::oci_layout(&def.base_dir.join(dir), tag)?
            }
            OciKind::Registry => crate::registry::fetch(from, registry)?,
        };
        std::fs::create_dir(rootfs)
            .with_context(|| format!("cannot create {}", rootfs.display()))?;
        let bar = crate::progress::spinner(String::new());
        for (i, layer) in image.layers.iter().enumerate() {
            rctr_log::debug!("build: layer {}/{}: {layer}", i + 1, image.layers.len());
            bar.set_message(format!("unpacking layer {}/{}", i + 1, image.layers.len()));
            let file = image.blobs.open_verified(layer)?;
            layers::apply_layer(file, rootfs, warnings)
                .with_context(|| format!("layer {} ({layer})", i + 1))?;
        }
        bar.finish_and_clear();
        config::write_image_config(rootfs, &image.config)
    })();
    crate::fsutil::remove_tree(&scratch);
    result.with_context(|| shown)
}

/// `PATH:TAG` → (PATH, Some(TAG)); a colon inside the last path component only.
fn split_tag(from: &str) -> (&str, Option<&str>) {
    match from.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !tag.is_empty() => (path, Some(tag)),
        _ => (from, None),
    }
}

/// Unpacks an image archive (a plain tar file) into `dir`.
fn unpack_archive(tar: &Path, dir: &PathBuf) -> Result<()> {
    let file =
        std::fs::File::open(tar).with_context(|| format!("cannot open {}", tar.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tar::Archive::new(file)
        .unpack(dir)
        .with_context(|| format!("{} is not a readable tar archive", tar.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_off_the_last_component() {
        assert_eq!(split_tag("img.tar:v1"), ("img.tar", Some("v1")));
        assert_eq!(split_tag("/a/dir"), ("/a/dir", None));
        assert_eq!(split_tag("./x:y/z"), ("./x:y/z", None));
    }
}
