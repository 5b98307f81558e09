//! Finding an image's config and layers: an OCI image layout (index.json, blobs/ALG/HEX),
//! or a `docker save` archive (manifest.json naming the config and layer files).

use anyhow::{anyhow, bail, Context, Result};
use oci_spec::image::{Arch, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where an image's blobs are, by digest.
#[derive(Debug)]
pub(crate) enum Blobs {
    /// An OCI layout's blobs/ALG/HEX, checked against their digests.
    Layout(PathBuf),
    /// A docker archive's files, by the names in manifest.json (the digests are the
    /// uncompressed layers' and are not checked).
    Files(PathBuf),
}

impl Blobs {
    /// The blob `name` (a digest, or a file in a docker archive), its content checked
    /// against its digest where the format allows it.
    pub(crate) fn open_verified(&self, name: &str) -> Result<File> {
        match self {
            Blobs::Files(dir) => {
                let path = inside(dir, name)?;
                File::open(&path).with_context(|| format!("cannot open {}", path.display()))
            }
            Blobs::Layout(dir) => {
                let path = blob_path(dir, name)?;
                let mut file = File::open(&path).with_context(|| format!("missing blob {name}"))?;
                verify(&mut file, name)?;
                File::open(&path).with_context(|| format!("cannot open {}", path.display()))
            }
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_verified(name)?
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {name}"))?;
        Ok(buf)
    }
}

/// Checks `file` has the sha256 `digest`.
pub(crate) fn verify(file: &mut File, digest: &str) -> Result<()> {
    let Some(want) = digest.strip_prefix("sha256:") else {
        bail!("blob {digest}: only sha256 digests are supported");
    };
    let mut h = Sha256::new();
    std::io::copy(file, &mut h).with_context(|| format!("cannot read blob {digest}"))?;
    let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != want {
        bail!("blob {digest} is corrupt (its content hashes to sha256:{got})");
    }
    Ok(())
}

/// `dir/blobs/ALG/HEX` of a digest, which must be ALG:HEX with plain characters.
fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| anyhow!("{digest:?} is not a digest"))?;
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    if !plain(alg) || !plain(hex) {
        bail!("{digest:?} is not a digest");
    }
    Ok(dir.join("blobs").join(alg).join(hex))
}

/// `name` under `dir`, refusing absolute paths and `..`.
fn inside(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = Path::new(name);
    if p.is_absolute()
        || p.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        bail!("archive names file {name:?} outside itself");
    }
    Ok(dir.join(p))
}

/// An image ready to unpack: its config and its layers, base first.
pub(crate) struct Image {
    pub blobs: Blobs,
    pub config: ImageConfiguration,
    pub layers: Vec<String>,
}

fn host_arch() -> Arch {
    match rctr_sif::host_arch() {
        "amd64" => Arch::Amd64,
        "arm64" => Arch::ARM64,
        "ppc64le" => Arch::PowerPC64le,
        "s390x" => Arch::s390x,
        "386" => Arch::i386,
        other => Arch::Other(other.to_string()),
    }
}

/// The manifest for this host from a manifest or an index (the one whose platform is
/// linux on this architecture).
pub(crate) fn pick_manifest(
    bytes: &[u8],
    media_type: Option<&MediaType>,
    load: &dyn Fn(&str) -> Result<Vec<u8>>,
) -> Result<ImageManifest> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
    let is_index =
        value.get("manifests").is_some() || matches!(media_type, Some(MediaType::ImageIndex));
    if !is_index {
        return serde_json::from_value(value).context("not an OCI image manifest");
    }
    let index: ImageIndex = serde_json::from_value(value).context("not an OCI image index")?;
    let arch = host_arch();
    let chosen = index
        .manifests()
        .iter()
        .find(|m| {
            m.platform()
                .as_ref()
                .is_none_or(|p| p.architecture() == &arch && p.os() == &Os::Linux)
        })
        .ok_or_else(|| {
            anyhow!(
                "the image has no linux/{} variant; pull one built for this host",
                rctr_sif::host_arch()
            )
        })?;
    let digest = chosen.digest().to_string();
    pick_manifest(&load(&digest)?, Some(chosen.media_type()), load)
}

/// An OCI image layout directory; `tag` picks among several images by their ref name.
pub(crate) fn oci_layout(dir: &Path, tag: Option<&str>) -> Result<Image> {
    let index_path = dir.join("index.json");
    let text = std::fs::read(&index_path).with_context(|| {
        format!(
            "{} is not an OCI image layout (no readable index.json)",
            dir.display()
        )
    })?;
    let index: ImageIndex = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a valid OCI index", index_path.display()))?;
    let refs: Vec<_> = index.manifests().iter().collect();
    let name_of = |m: &oci_spec::image::Descriptor| {
        m.annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name").cloned())
    };
    let chosen = match tag {
        Some(t) => refs
            .iter()
            .find(|m| name_of(m).as_deref() == Some(t))
            .ok_or_else(|| {
                let names: Vec<String> = refs.iter().filter_map(|m| name_of(m)).collect();
                anyhow!(
                    "no image tagged {t:?} in {} (it has: {})",
                    dir.display(),
                    names.join(", ")
                )
            })?,
        None if refs.len() == 1 => refs[0],
        None if refs.is_empty() => bail!("{} holds no image", dir.display()),
        None => {
            let names: Vec<String> = refs.iter().filter_map(|m| name_of(m)).collect();
            bail!(
                "{} holds {} images; name one as {}:TAG (tags: {})",
                dir.display(),
                refs.len(),
                dir.display(),
                names.join(", ")
            )
        }
    };
    let blobs = Blobs::Layout(dir.to_path_buf());
    let load = |d: &str| blobs.read(d);
    let manifest = pick_manifest(
        &load(chosen.digest().as_ref())?,
        Some(chosen.media_type()),
        &load,
    )?;
    image_from_manifest(blobs, &manifest)
}

/// An image whose manifest is known: its config read, its layers listed.
pub(crate) fn image_from_manifest(blobs: Blobs, manifest: &ImageManifest) -> Result<Image> {
    let config_bytes = blobs.read(manifest.config().digest().as_ref())?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).context("the image config is not valid")?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| {
            let mt = l.media_type().to_string();
            if mt.contains("zstd") {
                bail!(
                    "layer {} is zstd-compressed, which rctr cannot unpack yet",
                    l.digest()
                );
            }
            Ok(l.digest().to_string())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Image {
        blobs,
        config,
        layers,
    })
}

/// `docker save` / `podman save` / `skopeo copy docker-archive:` output, unpacked in `dir`.
pub(crate) fn docker_archive(dir: &Path) -> Result<Image> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "Layers")]
        layers: Vec<String>,
    }
    let path = dir.join("manifest.json");
    let text = std::fs::read(&path).context(
        "not a docker-archive (no manifest.json); give an OCI archive as oci-archive:FILE",
    )?;
    let mut entries: Vec<Entry> =
        serde_json::from_slice(&text).context("manifest.json of the archive is not valid")?;
    if entries.len() != 1 {
        bail!(
            "the archive holds {} images; rctr builds from archives of one image",
            entries.len()
        );
    }
    let entry = entries.remove(0);
    let blobs = Blobs::Files(dir.to_path_buf());
    let config: ImageConfiguration = serde_json::from_slice(&blobs.read(&entry.config)?)
        .context("the image config is not valid")?;
    Ok(Image {
        blobs,
        config,
        layers: entry.layers,
    })
}
