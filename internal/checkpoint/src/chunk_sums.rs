//! Checksums a memory image can be checked by in pieces: the BLAKE3 chaining values of its
//! 1 MiB-aligned subtrees. They combine into exactly the file's ordinary BLAKE3 checksum
//! (the one the manifest records), so computing them costs no second pass, and a lazy
//! restore can check each piece as it serves it instead of reading gigabytes before the
//! application's first page.
//!
//! They live beside the image in a sidecar file (`pages-1.img.chunks`), itself listed and
//! checksummed in the manifest like every other file.

use anyhow::{bail, Context, Result};
use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use std::path::Path;

/// The size of a piece: a power of two, so that each is one subtree of BLAKE3's tree.
pub const CHUNK: u64 = 1 << 20;

/// The sidecar's name for image `name`.
pub fn sidecar_name(name: &str) -> String {
    format!("{name}.chunks")
}

/// Whether `name` is a memory image (CRIU's `pages-N.img`): the files worth checking in
/// pieces, where nearly all of a generation's bytes are.
pub fn is_memory_image(name: &str) -> bool {
    name.strip_prefix("pages-")
        .and_then(|r| r.strip_suffix(".img"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The chaining values of every piece of one file of `size` bytes (more than [`CHUNK`]:
/// a smaller file is one piece and is simply checked whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSums {
    size: u64,
    cvs: Vec<ChainingValue>,
}

const MAGIC: &[u8; 8] = b"rctrCHK1";

impl ChunkSums {
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn count(&self) -> usize {
        self.cvs.len()
    }

    /// Offset and length of piece `index`.
    pub fn range(&self, index: usize) -> (u64, usize) {
        let start = index as u64 * CHUNK;
        (start, CHUNK.min(self.size.saturating_sub(start)) as usize)
    }

    /// The pieces that bytes `start..start+len` fall in.
    pub fn covering(&self, start: u64, len: u64) -> std::ops::Range<usize> {
        if len == 0 {
            return 0..0;
        }
        let first = (start / CHUNK) as usize;
        let last = ((start + len - 1) / CHUNK) as usize;
        first.min(self.cvs.len())..(last + 1).min(self.cvs.len())
    }

    /// Whether `data` is piece `index` as it was written.
    pub fn matches(&self, index: usize, data: &[u8]) -> bool {
        let (start, len) = self.range(index);
        data.len() == len
            && index < self.cvs.len()
            && blake3::Hasher::new()
                .set_input_offset(start)
                .update(data)
                .finalize_non_root()
                == self.cvs[index]
    }

    /// The whole file's BLAKE3 checksum, computed from the pieces.
    pub fn root(&self) -> blake3::Hash {
        let left = left_subtree_len(self.size);
        let k = (left / CHUNK) as usize;
        merge_subtrees_root(
            &subtree(&self.cvs[..k], left),
            &subtree(&self.cvs[k..], self.size - left),
            Mode::Hash,
        )
    }

    /// Checks the pieces against the whole file's recorded checksum.
    pub fn check_root(&self, size: u64, blake3_hex: &str) -> Result<()> {
        if self.size != size || self.root().to_hex().as_str() != blake3_hex {
            bail!("its piece checksums do not add up to its checksum");
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + 32 * self.cvs.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&CHUNK.to_le_bytes());
        for cv in &self.cvs {
            out.extend_from_slice(cv);
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<ChunkSums> {
        let bad = || anyhow::anyhow!("not a piece checksum file");
        let (head, rest) = bytes.split_at_checked(24).ok_or_else(bad)?;
        let size = u64::from_le_bytes(head[8..16].try_into()?);
        let chunk = u64::from_le_bytes(head[16..24].try_into()?);
        if &head[..8] != MAGIC || chunk != CHUNK || size <= CHUNK {
            return Err(bad());
        }
        let count = size.div_ceil(CHUNK);
        if rest.len() as u64 != count * 32 {
            return Err(bad());
        }
        let cvs = rest
            .chunks_exact(32)
            .map(|c| c.try_into().expect("chunks_exact gives 32 bytes"))
            .collect();
        Ok(ChunkSums { size, cvs })
    }

    pub fn read(path: &Path) -> Result<ChunkSums> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        ChunkSums::from_bytes(&bytes).with_context(|| format!("{}", path.display()))
    }
}

/// The chaining value of the subtree of `len` bytes whose pieces are `cvs`.
fn subtree(cvs: &[ChainingValue], len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_subtree_len(len);
    let k = (left / CHUNK) as usize;
    merge_subtrees_non_root(
        &subtree(&cvs[..k], left),
        &subtree(&cvs[k..], len - left),
        Mode::Hash,
    )
}

/// Hashes a file as it streams by: its ordinary checksum, and its pieces when it has more
/// than one.
pub struct ChunkedHasher {
    current: blake3::Hasher,
    /// Bytes taken into `current`.
    in_current: u64,
    done: Vec<ChainingValue>,
}

impl Default for ChunkedHasher {
    fn default() -> Self {
        ChunkedHasher {
            current: blake3::Hasher::new(),
            in_current: 0,
            done: vec![],
        }
    }
}

impl ChunkedHasher {
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.in_current == CHUNK {
                self.done.push(self.current.finalize_non_root());
                self.current = blake3::Hasher::new();
                self.current
                    .set_input_offset(self.done.len() as u64 * CHUNK);
                self.in_current = 0;
            }
            let take = ((CHUNK - self.in_current) as usize).min(data.len());
            self.current.update(&data[..take]);
            self.in_current += take as u64;
            data = &data[take..];
        }
    }

    /// The file's size and checksum (hex), and its pieces if it has more than one.
    pub fn finish(mut self) -> (u64, String, Option<ChunkSums>) {
        let size = self.done.len() as u64 * CHUNK + self.in_current;
        if self.done.is_empty() {
            return (size, self.current.finalize().to_hex().to_string(), None);
        }
        self.done.push(self.current.finalize_non_root());
        let sums = ChunkSums {
            size,
            cvs: self.done,
        };
        (size, sums.root().to_hex().to_string(), Some(sums))
    }
}

/// Hashes the file at `path` in one pass: size, checksum and pieces.
pub fn hash_file_chunked(path: &Path) -> Result<(u64, String, Option<ChunkSums>)> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = ChunkedHasher::default();
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn pieces_add_up_to_the_ordinary_checksum_at_every_shape_of_tree() {
        let c = CHUNK as usize;
        for len in [
            0,
            1,
            c,
            c + 1,
            2 * c,
            2 * c + 1024,
            3 * c - 1,
            5 * c + 77,
            8 * c,
        ] {
            let bytes = data(len);
            let mut h = ChunkedHasher::default();
            // Uneven writes, as a file grows while followed.
            for part in bytes.chunks(300_001) {
                h.update(part);
            }
            let (size, hex, sums) = h.finish();
            assert_eq!(size, len as u64);
            assert_eq!(hex, blake3::hash(&bytes).to_hex().as_str(), "len {len}");
            assert_eq!(sums.is_some(), len > c, "len {len}");
            if let Some(sums) = sums {
                sums.check_root(len as u64, &hex).unwrap();
                assert_eq!(ChunkSums::from_bytes(&sums.to_bytes()).unwrap(), sums);
                for i in 0..sums.count() {
                    let (start, n) = sums.range(i);
                    let piece = &bytes[start as usize..start as usize + n];
                    assert!(sums.matches(i, piece), "len {len} piece {i}");
                    let mut bad = piece.to_vec();
                    bad[n / 2] ^= 1;
                    assert!(!sums.matches(i, &bad), "len {len} piece {i} flipped");
                }
            }
        }
    }

    #[test]
    fn a_piece_in_the_wrong_place_or_a_damaged_sidecar_is_caught() {
        let bytes = data(3 * CHUNK as usize);
        let mut h = ChunkedHasher::default();
        h.update(&bytes);
        let (_, hex, sums) = h.finish();
        let sums = sums.unwrap();
        let first = &bytes[..CHUNK as usize];
        assert!(!sums.matches(1, first), "piece 0's bytes at piece 1");
        assert_eq!(sums.covering(CHUNK - 1, 2), 0..2);
        assert_eq!(sums.covering(CHUNK, CHUNK), 1..2);
        let mut raw = sums.to_bytes();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let damaged = ChunkSums::from_bytes(&raw).unwrap();
        assert!(damaged.check_root(sums.size(), &hex).is_err());
        assert!(ChunkSums::from_bytes(&raw[..raw.len() - 1]).is_err());
        assert!(is_memory_image("pages-12.img"));
        assert!(!is_memory_image("pages-12.img.chunks"));
        assert!(!is_memory_image("pagemap-12.img"));
    }
}
