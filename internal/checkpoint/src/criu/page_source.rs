//! rctr's own page source for a lazy restore. CRIU's lazy-pages daemon asks it for the
//! application's pages (CRIU's page-server protocol, over a socket pair handed to the
//! daemon with `--page-server --ps-socket`) and it answers from the generation's memory
//! images, checking each 1 MiB piece against its checksum (see [`crate::chunk_sums`])
//! before any byte of it leaves. So a lazy restore need not read the whole memory image
//! before the application runs, and still never hands the application a page that differs
//! from what was saved: a damaged piece stops the container instead.
//!
//! Before the restore, [`PageSource::prepare`] checks what CRIU itself reads while
//! restoring (the pieces holding memory that is not restored lazily, and whole any memory
//! image no process's lazy memory is in).

use super::pagemap::{Pagemap, PAGE_SIZE};
use crate::chunk_sums::ChunkSums;
use crate::store::Checked;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

// CRIU's page-server protocol (criu/page-xfer.c): a request or answer header is
// `struct page_server_iov { u32 cmd; u64 nr_pages; u64 vaddr; u64 dst_id; }` (32 bytes
// with its padding); the daemon asks with PS_IOV_GET and the answer carries the pages.
const HEADER: usize = 32;
const PS_IOV_ADD_F: u32 = 6;
const PS_IOV_GET: u32 = 7;
const PS_IOV_CLOSE: u32 = 0x1023;
const PS_IOV_FORCE_CLOSE: u32 = 0x1024;
const PS_CMD_BITS: u32 = 16;
const PE_PRESENT: u32 = 1 << 2;

/// How many checked pieces are kept for the next requests (the daemon's background
/// transfer reads on in order, up to 4 MiB at a time).
const KEPT_PIECES: usize = 8;

/// One process's memory as the daemon asks for it (by its pid at dump time).
#[derive(Debug)]
struct ProcessPages {
    pagemap: Pagemap,
    /// Its memory image, as the container sees it.
    image: String,
    /// Its piece checksums; none when the image was checked whole before the restore.
    sums: Option<ChunkSums>,
}

/// What the page source serves, prepared (and partly checked) before the restore.
#[derive(Debug)]
pub struct PageSource {
    processes: BTreeMap<u64, ProcessPages>,
}

impl PageSource {
    /// Reads the pagemaps of generation `gen_dir` (whole-checked already), checks the parts
    /// of memory images the restore reads itself, and returns the source for the rest.
    /// `images` is the generation's directory as the container sees it.
    pub fn prepare(gen_dir: &Path, images: &str, checked: &Checked) -> Result<PageSource> {
        let mut unchecked: BTreeMap<String, ChunkSums> = match checked {
            Checked::Whole => BTreeMap::new(),
            Checked::MemoryInPieces(m) => m.clone(),
        };
        let mut processes = BTreeMap::new();
        for e in std::fs::read_dir(gen_dir)
            .with_context(|| format!("cannot read {}", gen_dir.display()))?
        {
            let name = e?.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("pagemap-")
                .and_then(|r| r.strip_suffix(".img"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let pagemap = Pagemap::read(&gen_dir.join(&name))?;
            let image_name = format!("pages-{}.img", pagemap.pages_id);
            let sums = unchecked.remove(&image_name);
            if let Some(sums) = &sums {
                if pagemap.pages_len() != sums.size() {
                    bail!(
                        "image file {} does not hold the {} bytes its pagemap {name} places in it",
                        gen_dir.join(&image_name).display(),
                        pagemap.pages_len()
                    );
                }
                // What CRIU restores before the application runs, it reads itself.
                let image = std::fs::File::open(gen_dir.join(&image_name)).with_context(|| {
                    format!("cannot read {}", gen_dir.join(&image_name).display())
                })?;
                let mut pieces: Vec<usize> = pagemap
                    .ranges
                    .iter()
                    .filter(|r| !r.lazy)
                    .flat_map(|r| sums.covering(r.offset, r.len()))
                    .collect();
                pieces.dedup();
                for i in pieces {
                    read_piece(&image, sums, i, &gen_dir.join(&image_name).display())?;
                }
            }
            processes.insert(
                pid,
                ProcessPages {
                    pagemap,
                    image: format!("{images}/{image_name}"),
                    sums,
                },
            );
        }
        // Memory images no process's pagemap names (shared memory): read by the restore
        // itself, so checked whole now.
        for (name, sums) in unchecked {
            let image = std::fs::File::open(gen_dir.join(&name))
                .with_context(|| format!("cannot read {}", gen_dir.join(&name).display()))?;
            for i in 0..sums.count() {
                read_piece(&image, &sums, i, &gen_dir.join(&name).display())?;
            }
        }
        Ok(PageSource { processes })
    }

    /// Answers the daemon on `conn` until it says it is done (Ok) or something is wrong
    /// (Err: a damaged piece, a request for memory that was not saved lazily).
    pub fn serve(self, mut conn: impl Read + Write) -> Result<Served> {
        let mut served = Served::default();
        let mut open: BTreeMap<u64, std::fs::File> = BTreeMap::new();
        let mut kept = Kept::new();
        loop {
            let mut head = [0u8; HEADER];
            match conn.read_exact(&mut head) {
                Ok(()) => {}
                // The daemon is gone: whether it had finished is init's to judge.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(served),
                Err(e) => return Err(e).context("cannot read the lazy-pages daemon's request"),
            }
            let word =
                |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
            let cmd = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
            let (nr_pages, vaddr, dst_id) = (word(8), word(16), word(24));
            match cmd & ((1 << PS_CMD_BITS) - 1) {
                PS_IOV_GET => {}
                PS_IOV_CLOSE | PS_IOV_FORCE_CLOSE => {
                    conn.write_all(&0i32.to_le_bytes())
                        .context("cannot answer the lazy-pages daemon")?;
                    return Ok(served);
                }
                other => bail!("the lazy-pages daemon sent an unknown request {other:#x}"),
            }
            let process = self.processes.get(&dst_id).with_context(|| {
                format!("the lazy-pages daemon asked for pages of process {dst_id}, which was not saved")
            })?;
            let range = process
                .pagemap
                .find(vaddr)
                .filter(|r| r.lazy && vaddr % PAGE_SIZE == 0)
                .with_context(|| {
                    format!("the lazy-pages daemon asked for {vaddr:#x} of process {dst_id}, which is not lazily restored memory")
                })?;
            let pages = nr_pages.min((range.end() - vaddr) / PAGE_SIZE);
            if pages == 0 {
                bail!("the lazy-pages daemon asked for no pages");
            }
            let offset = range.offset + (vaddr - range.vaddr);
            let file = match open.entry(dst_id) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(
                    std::fs::File::open(&process.image)
                        .with_context(|| format!("cannot read {}", process.image))?,
                ),
            };
            let data = match &process.sums {
                Some(sums) => checked_bytes(
                    file,
                    sums,
                    offset,
                    pages * PAGE_SIZE,
                    (dst_id, &mut kept, &mut served.pieces),
                    &process.image,
                )?,
                None => {
                    let mut buf = vec![0u8; (pages * PAGE_SIZE) as usize];
                    file.read_exact_at(&mut buf, offset)
                        .with_context(|| format!("cannot read {}", process.image))?;
                    buf
                }
            };
            let mut answer = [0u8; HEADER];
            answer[..4]
                .copy_from_slice(&((PE_PRESENT << PS_CMD_BITS) | PS_IOV_ADD_F).to_le_bytes());
            answer[8..16].copy_from_slice(&pages.to_le_bytes());
            answer[16..24].copy_from_slice(&vaddr.to_le_bytes());
            answer[24..32].copy_from_slice(&dst_id.to_le_bytes());
            conn.write_all(&answer)
                .and_then(|_| conn.write_all(&data))
                .context("cannot answer the lazy-pages daemon")?;
            served.pages += pages;
        }
    }
}

/// What a page source did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Served {
    pub pages: u64,
    /// Pieces read and checked (a piece read again after it was let go counts again).
    pub pieces: u64,
}

/// Recently checked pieces, by process and index.
type Kept = VecDeque<(u64, usize, Vec<u8>)>;

/// Bytes `offset..offset+len` of `file`, every piece they touch checked first, of
/// `process`, whose recently checked pieces are `kept`, counting pieces checked.
fn checked_bytes(
    file: &std::fs::File,
    sums: &ChunkSums,
    offset: u64,
    len: u64,
    (process, kept, checked): (u64, &mut Kept, &mut u64),
    what: &str,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    for i in sums.covering(offset, len) {
        if !kept.iter().any(|(p, k, _)| *p == process && *k == i) {
            let piece = read_piece(file, sums, i, &what)?;
            *checked += 1;
            if kept.len() == KEPT_PIECES {
                kept.pop_front();
            }
            kept.push_back((process, i, piece));
        }
        let (_, _, piece) = kept
            .iter()
            .find(|(p, k, _)| *p == process && *k == i)
            .expect("kept just above");
        let (start, n) = sums.range(i);
        let from = offset.max(start);
        let to = (offset + len).min(start + n as u64);
        out.extend_from_slice(&piece[(from - start) as usize..(to - start) as usize]);
    }
    if out.len() as u64 != len {
        bail!("image file {what} is shorter than its pagemap says");
    }
    Ok(out)
}

/// Piece `index` of `file` (shown as `what`), checked.
fn read_piece(
    file: &std::fs::File,
    sums: &ChunkSums,
    index: usize,
    what: &dyn std::fmt::Display,
) -> Result<Vec<u8>> {
    let (start, len) = sums.range(index);
    let mut piece = vec![0u8; len];
    file.read_exact_at(&mut piece, start)
        .with_context(|| format!("cannot read image file {what}"))?;
    if !sums.matches(index, &piece) {
        bail!(
            "image file {what} is corrupt (bytes {start}..{} do not match their checksum)",
            start + len as u64
        );
    }
    Ok(piece)
}

#[cfg(test)]
mod tests {
    use super::super::pagemap::tests::{image, EAGER, LAZY};
    use super::*;
    use crate::chunk_sums::{hash_file_chunked, CHUNK};
    use std::os::unix::net::UnixStream;

    /// A generation directory with process 1's pagemap and pages image: an eager page,
    /// then `lazy_pages` lazy ones, each page filled with its own number.
    fn generation(lazy_pages: u64) -> (tempfile::TempDir, Checked) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pagemap-1.img"),
            image(5, &[(0x1000, 1, EAGER), (0x100000, lazy_pages, LAZY)]),
        )
        .unwrap();
        let mut pages = vec![];
        for p in 0..=lazy_pages {
            pages.extend(std::iter::repeat_n((p % 251) as u8, PAGE_SIZE as usize));
        }
        let path = dir.path().join("pages-5.img");
        std::fs::write(&path, &pages).unwrap();
        let (_, _, sums) = hash_file_chunked(&path).unwrap();
        let mut m = BTreeMap::new();
        m.insert("pages-5.img".to_string(), sums.unwrap());
        (dir, Checked::MemoryInPieces(m))
    }

    fn ask(conn: &mut UnixStream, vaddr: u64, pages: u64) -> std::io::Result<(u64, Vec<u8>)> {
        let mut req = [0u8; HEADER];
        req[..4].copy_from_slice(&PS_IOV_GET.to_le_bytes());
        req[8..16].copy_from_slice(&pages.to_le_bytes());
        req[16..24].copy_from_slice(&vaddr.to_le_bytes());
        req[24..32].copy_from_slice(&1u64.to_le_bytes());
        conn.write_all(&req)?;
        let mut head = [0u8; HEADER];
        conn.read_exact(&mut head)?;
        let got = u64::from_le_bytes(head[8..16].try_into().unwrap());
        let mut data = vec![0u8; (got * PAGE_SIZE) as usize];
        conn.read_exact(&mut data)?;
        Ok((got, data))
    }

    #[test]
    fn serves_lazy_pages_checked_and_stops_at_a_damaged_piece() {
        let lazy = 3 * CHUNK / PAGE_SIZE;
        let (dir, checked) = generation(lazy);
        let dirname = dir.path().to_str().unwrap().to_string();
        // Damage a byte in the second piece, in lazy memory.
        let path = dir.path().join("pages-5.img");
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xee], CHUNK + 100).unwrap();
        // The restore's own part (the eager page, in piece 0) is intact: prepared fine.
        let source = PageSource::prepare(dir.path(), &dirname, &checked).unwrap();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || source.serve(theirs));
        // Page 1 of the lazy range is page 2 of the image: filled with 2s; a request
        // running past the range gets what the range has.
        let (got, data) = ask(&mut ours, 0x100000 + PAGE_SIZE, 4).unwrap();
        assert_eq!(got, 4);
        assert!(data[..PAGE_SIZE as usize].iter().all(|b| *b == 2));
        let (got, _) = ask(&mut ours, 0x100000 + (lazy - 2) * PAGE_SIZE, 16).unwrap();
        assert_eq!(got, 2, "answers stop at the end of the range");
        // A page in the damaged piece: no answer, the source stops with the reason.
        assert!(ask(&mut ours, 0x100000 + CHUNK, 1).is_err());
        let err = format!("{:#}", server.join().unwrap().unwrap_err());
        assert!(err.contains("do not match their checksum"), "{err}");
    }

    #[test]
    fn a_damaged_eager_piece_is_caught_before_the_restore_and_close_is_answered() {
        let (dir, checked) = generation(2 * CHUNK / PAGE_SIZE);
        let dirname = dir.path().to_str().unwrap().to_string();
        let source = PageSource::prepare(dir.path(), &dirname, &checked).unwrap();
        // Asking for eager memory is refused; closing is answered with status 0.
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || source.serve(theirs));
        let mut close = [0u8; HEADER];
        close[..4].copy_from_slice(&PS_IOV_FORCE_CLOSE.to_le_bytes());
        ours.write_all(&close).unwrap();
        let mut status = [0u8; 4];
        ours.read_exact(&mut status).unwrap();
        assert_eq!(i32::from_le_bytes(status), 0);
        server.join().unwrap().unwrap();
        let again = PageSource::prepare(dir.path(), &dirname, &checked).unwrap();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || again.serve(theirs));
        assert!(ask(&mut ours, 0x1000, 1).is_err());
        let err = format!("{:#}", server.join().unwrap().unwrap_err());
        assert!(err.contains("not lazily restored"), "{err}");

        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("pages-5.img"))
            .unwrap();
        f.write_all_at(&[0xee], 10).unwrap();
        let err = format!(
            "{:#}",
            PageSource::prepare(dir.path(), &dirname, &checked).unwrap_err()
        );
        assert!(
            err.contains("pages-5.img is corrupt (bytes 0..1048576"),
            "{err}"
        );
    }
}
