//! The per-user cache of image blobs (manifests, configs, layers): `blobs/sha256/HEX` under
//! `<cache>/oci`, the layout of an OCI image layout's blob directory, so an image whose
//! blobs are all here is read like one. A blob is written to a private temporary file,
//! hashed as it streams in, and renamed into place only when its content matches its
//! digest: what is in the cache is always whole and right.

use super::reference::is_sha256_digest;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub(crate) struct BlobStore {
    /// The cache's root, which holds `blobs/sha256/`.
    root: PathBuf,
}

impl BlobStore {
    /// The user's blob cache (see [`crate::cache_dir`]).
    pub(crate) fn open() -> Result<BlobStore> {
        Self::at(crate::cache::cache_dir("oci")?)
    }

    pub(crate) fn at(root: PathBuf) -> Result<BlobStore> {
        let dir = root.join("blobs/sha256");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create the blob cache {}", dir.display()))?;
        Ok(BlobStore { root })
    }

    /// The directory to read cached blobs from as an OCI layout's.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, digest: &str) -> Result<PathBuf> {
        if !is_sha256_digest(digest) {
            bail!("{digest:?} is not a sha256 digest");
        }
        Ok(self
            .root
            .join("blobs/sha256")
            .join(&digest["sha256:".len()..]))
    }

    /// Whether the blob is cached (its content is checked when it is read: layers and
    /// configs by the unpacker, manifests by the caller).
    pub(crate) fn has(&self, digest: &str) -> Result<bool> {
        Ok(self.path(digest)?.is_file())
    }

    /// The cached blob's content, if it is cached.
    pub(crate) fn read(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(digest)?;
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Stores what `source` yields as blob `digest`, at most `limit` bytes, calling
    /// `progress` with each chunk's size; fails (storing nothing) unless the content hashes
    /// to `digest`.
    pub(crate) fn store(
        &self,
        digest: &str,
        source: &mut dyn Read,
        limit: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let path = self.path(digest)?;
        let dir = path.parent().expect("blob paths have a parent");
        let tmp = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        // tempfile creates it 0600: blobs may hold what users keep private.
        let mut file = tmp.as_file();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = source
                .read(&mut buf)
                .with_context(|| format!("download of {digest} broke off after {total} bytes"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > limit {
                bail!("blob {digest} is larger than the {limit} bytes its manifest gives");
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .with_context(|| format!("cannot write {}", tmp.path().display()))?;
            progress(n as u64);
        }
        let got = hex(&hasher.finalize());
        if digest["sha256:".len()..] != got {
            bail!("the registry sent content for {digest} that hashes to sha256:{got} (corrupt or tampered); nothing was kept");
        }
        file.sync_all()
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        tmp.persist(&path)
            .with_context(|| format!("cannot store {}", path.display()))?;
        Ok(())
    }

    /// Stores `bytes` (already checked against `digest` by the caller) as a blob.
    pub(crate) fn store_bytes(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        self.store(digest, &mut &bytes[..], bytes.len() as u64, &mut |_| {})
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_kept_only_when_their_digest_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::at(dir.path().to_path_buf()).unwrap();
        let good = sha256_digest(b"layer bytes");
        assert!(!store.has(&good).unwrap());
        let mut seen = 0;
        store
            .store(&good, &mut &b"layer bytes"[..], 100, &mut |n| seen += n)
            .unwrap();
        assert_eq!(seen, 11);
        assert_eq!(store.read(&good).unwrap().unwrap(), b"layer bytes");
        assert_eq!(mode_of(&store.path(&good).unwrap()), 0o600);

        let other = sha256_digest(b"something else");
        let e = store
            .store(&other, &mut &b"layer bytes"[..], 100, &mut |_| {})
            .unwrap_err();
        assert!(format!("{e}").contains("hashes to"), "{e}");
        let e = store
            .store(&other, &mut &b"something else"[..], 3, &mut |_| {})
            .unwrap_err();
        assert!(format!("{e}").contains("larger than"), "{e}");
        assert!(!store.has(&other).unwrap());
        // No partial files are left behind.
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            1
        );
        assert!(store.has("sha256:../../etc").is_err());
    }
}
