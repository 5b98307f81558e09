//! `docker://` images from a registry (HTTP API v2): the manifest for this host (through
//! an index or manifest list), then the config and layers, each verified against its
//! digest as it streams into the user's blob cache. A blob already cached is not fetched
//! again, and an image pinned by digest whose blobs are all cached needs no network.

mod blobstore;
mod client;
mod reference;

use crate::oci::layout::{image_from_manifest, pick_manifest, Blobs, Image};
use anyhow::{bail, Context, Result};
use blobstore::{sha256_digest, BlobStore};
use client::Client;
use oci_spec::image::Descriptor;
use std::cell::RefCell;

pub use reference::Reference;

/// How to talk to registries.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegistryOptions {
    /// Plain HTTP instead of HTTPS (Apptainer's --no-https / $APPTAINER_NOHTTPS), for a
    /// registry without TLS, such as a test registry on loopback.
    pub no_https: bool,
}

/// What a fetch took from the network and from the cache.
#[derive(Debug, Default)]
struct Fetched {
    downloaded: usize,
    bytes: u64,
    cached: usize,
}

/// The image `text` (REF of docker://REF), its blobs all in the cache.
pub(crate) fn fetch(text: &str, opts: &RegistryOptions) -> Result<Image> {
    let reference = Reference::parse(text)?;
    let store = BlobStore::open()?;
    let client = RefCell::new(None::<Client>);
    let with_client = |f: &mut dyn FnMut(&mut Client) -> Result<Vec<u8>>| -> Result<Vec<u8>> {
        let mut c = client.borrow_mut();
        let c = c.get_or_insert_with(|| Client::new(&reference, opts.no_https));
        f(c)
    };
    // A manifest by digest: from the cache, else fetched and checked.
    let by_digest = |digest: &str| -> Result<Vec<u8>> {
        if let Some(bytes) = store.read(digest)? {
            // A cached copy damaged on disk is fetched again rather than trusted.
            if sha256_digest(&bytes) == digest {
                return Ok(bytes);
            }
        }
        let bytes = with_client(&mut |c| Ok(c.manifest(digest)?.0))?;
        let got = sha256_digest(&bytes);
        if got != digest {
            bail!("the registry sent a manifest for {digest} that hashes to {got} (corrupt or tampered)");
        }
        store.store_bytes(digest, &bytes)?;
        Ok(bytes)
    };
    rctr_log::verbose!("rctr: fetching docker://{reference}");
    let top = match &reference.digest {
        Some(d) => by_digest(d)?,
        None => with_client(&mut |c| {
            let (bytes, _, said) = c.manifest(reference.manifest_ref())?;
            let got = sha256_digest(&bytes);
            if let Some(said) = said.filter(|s| s.starts_with("sha256:")) {
                if said != got {
                    bail!("the manifest the registry sent hashes to {got}, not the {said} it announced (corrupt or tampered)");
                }
            }
            store.store_bytes(&got, &bytes)?;
            Ok(bytes)
        })?,
    };
    check_schema(&top)?;
    let manifest = pick_manifest(&top, None, &by_digest)?;

    let mut fetched = Fetched::default();
    let mut wanted: Vec<&Descriptor> = vec![manifest.config()];
    wanted.extend(manifest.layers().iter());
    for d in wanted {
        let digest = d.digest().to_string();
        if store.has(&digest)? {
            fetched.cached += 1;
            continue;
        }
        let size = d.size();
        let short = digest.get(7..19).unwrap_or(&digest).to_string();
        rctr_log::verbose!("rctr: downloading blob {digest} ({size} bytes)");
        let bar = crate::progress::bytes(format!("blob {short}"), size);
        let mut c = client.borrow_mut();
        let c = c.get_or_insert_with(|| Client::new(&reference, opts.no_https));
        let mut resp = c.blob(&digest)?;
        let mut reader = resp
            .body_mut()
            .with_config()
            .limit(size.saturating_add(1))
            .reader();
        store.store(&digest, &mut reader, size, &mut |n| bar.inc(n))?;
        bar.finish_and_clear();
        fetched.downloaded += 1;
        fetched.bytes += size;
    }
    rctr_log::info!(
        "rctr: {} blob(s) downloaded ({:.1} MiB), {} from the cache",
        fetched.downloaded,
        fetched.bytes as f64 / (1024.0 * 1024.0),
        fetched.cached
    );
    image_from_manifest(Blobs::Layout(store.root().to_path_buf()), &manifest)
}

/// Refuses the old schema 1 manifests, which carry no config and no digests of their own.
fn check_schema(bytes: &[u8]) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(bytes).context("the manifest is not JSON")?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) == Some(1) {
        bail!("the registry serves a schema 1 manifest, which rctr does not read; push the image again with a current tool");
    }
    Ok(())
}
