//! Checksums of checkpoint images and of the container image they belong to.
//!
//! BLAKE3 rather than SHA-256: images can be gigabytes of process memory and
//! are hashed on every checkpoint and before every restore, and BLAKE3 is
//! several times faster on the same CPU.

use anyhow::{bail, Context, Result};
use rctr_runtime::plan::{RootKind, RootSource};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    pub size: u64,
    pub blake3: String,
}

fn hash_reader(mut r: impl Read, limit: u64) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = limit;
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

pub fn hash_file(path: &Path) -> Result<FileSum> {
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = f.metadata()?.len();
    let blake3 =
        hash_reader(f, u64::MAX).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(FileSum { size, blake3 })
}

/// Checksums of every regular file directly in `dir` (CRIU's images are flat),
/// except `skip`.
pub fn checksum_dir(dir: &Path, skip: &[&str]) -> Result<BTreeMap<String, FileSum>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) || !e.file_type()?.is_file() {
            continue;
        }
        out.insert(name, hash_file(&e.path())?);
    }
    Ok(out)
}

/// Checks every listed file; the error names the first damaged one.
pub fn verify_files(dir: &Path, sums: &BTreeMap<String, FileSum>) -> Result<()> {
    for (name, want) in sums {
        let path = dir.join(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => bail!("image file {} is missing", path.display()),
        };
        if !meta.is_file() {
            bail!("image file {} is not a regular file", path.display());
        }
        if meta.len() != want.size {
            bail!(
                "image file {} has size {} instead of {}",
                path.display(),
                meta.len(),
                want.size
            );
        }
        if hash_file(&path)?.blake3 != want.blake3 {
            bail!(
                "image file {} is corrupt (checksum mismatch)",
                path.display()
            );
        }
    }
    Ok(())
}

/// Digest of the filesystem a container runs: the SIF's system partition or the
/// squashfs file. Directories have none (they change freely).
pub fn image_digest(root: &RootSource, cache_dir: &Path) -> Result<Option<String>> {
    if root.kind == RootKind::Dir {
        return Ok(None);
    }
    let meta = std::fs::metadata(&root.path)
        .with_context(|| format!("cannot read image {}", root.path.display()))?;
    // Hashing a large image on every checkpoint would dominate its cost: remember
    // digests by file identity and modification time.
    let key = format!(
        "{}:{}:{}:{}:{}:{}:{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        root.offset,
        root.size
    );
    let cache_file = cache_dir.join("image-digests.json");
    let mut cache: BTreeMap<String, String> =
        rctr_state::read_json(&cache_file).unwrap_or_default();
    if let Some(d) = cache.get(&key) {
        return Ok(Some(d.clone()));
    }
    let mut f = File::open(&root.path)
        .with_context(|| format!("cannot read image {}", root.path.display()))?;
    f.seek(SeekFrom::Start(root.offset))?;
    let limit = if root.size == 0 { u64::MAX } else { root.size };
    let digest = hash_reader(f, limit)
        .with_context(|| format!("cannot read image {}", root.path.display()))?;
    cache.insert(key, digest.clone());
    let _ = rctr_state::write_json_atomic(&cache_file, &cache);
    Ok(Some(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_flipped_byte_missing_file_and_size_change() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pages-1.img"), vec![7u8; 100_000]).unwrap();
        std::fs::write(dir.path().join("core-2.img"), b"core").unwrap();
        let sums = checksum_dir(dir.path(), &[]).unwrap();
        verify_files(dir.path(), &sums).unwrap();

        let mut bytes = std::fs::read(dir.path().join("pages-1.img")).unwrap();
        bytes[5000] ^= 1;
        std::fs::write(dir.path().join("pages-1.img"), &bytes).unwrap();
        let err = verify_files(dir.path(), &sums).unwrap_err().to_string();
        assert!(err.contains("pages-1.img is corrupt"), "{err}");

        std::fs::write(dir.path().join("pages-1.img"), b"short").unwrap();
        let err = verify_files(dir.path(), &sums).unwrap_err().to_string();
        assert!(err.contains("has size 5"), "{err}");

        std::fs::remove_file(dir.path().join("core-2.img")).unwrap();
        std::fs::write(dir.path().join("pages-1.img"), vec![7u8; 100_000]).unwrap();
        let err = verify_files(dir.path(), &sums).unwrap_err().to_string();
        assert!(err.contains("core-2.img is missing"), "{err}");
    }

    #[test]
    fn image_digest_covers_only_the_partition_and_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.sif");
        let mut data = vec![1u8; 4096];
        data.extend(vec![2u8; 4096]);
        std::fs::write(&img, &data).unwrap();
        let part = RootSource {
            kind: RootKind::Squashfs,
            path: img.clone(),
            offset: 4096,
            size: 4096,
        };
        let d1 = image_digest(&part, dir.path()).unwrap().unwrap();
        assert_eq!(d1, blake3::hash(&vec![2u8; 4096]).to_hex().to_string());
        assert!(dir.path().join("image-digests.json").exists());
        assert_eq!(image_digest(&part, dir.path()).unwrap().unwrap(), d1);
    }
}
