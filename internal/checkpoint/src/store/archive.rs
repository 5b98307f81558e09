//! One-file checkpoint archives: `checkpoint export` and `checkpoint import`, for hosts that
//! share no file system.
//!
//! An archive is a zstd-compressed tar stream holding one generation:
//!
//! ```text
//! rctr-archive.json          format, checkpoint name, engine, generation, the manifest's checksum
//! generation/manifest.json   the generation's manifest: every other file's size and BLAKE3
//! generation/<file>...       the engine's files (regular files only)
//! ```
//! Tar because it streams both ways (export writes while reading the images, import verifies
//! while unpacking, through a pipe if need be: `ssh` or `sbcast`), every host can list it
//! (`tar --zstd -tvf`), and compression covers the whole stream. The zstd frame carries its
//! own checksum, and every file is checked against the manifest, whose own checksum is in the
//! index: a damaged or truncated archive is refused. Import unpacks into a hidden checkpoint
//! ([`super::Incoming`]) through the store's stage/publish, so the checkpoint appears by one
//! rename only once everything verified.

use super::{CheckpointStore, Manifest};
use crate::engine::EngineKind;
use crate::integrity::FileSum;
use anyhow::{anyhow, bail, Context, Result};
use rctr_state::validate_name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// The first entry: what the archive holds.
const INDEX: &str = "rctr-archive.json";
/// The directory of the generation's files in the archive.
const GENERATION: &str = "generation";
const MANIFEST: &str = "manifest.json";
const FORMAT: &str = "rctr-checkpoint-archive";
const VERSION: u32 = 1;
/// Bounds on what is read into memory, whatever a damaged header claims.
const MAX_INDEX: u64 = 1 << 20;
const MAX_MANIFEST: u64 = 64 << 20;
/// zstd's default level: fast, and process memory compresses well at it.
const LEVEL: i32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Index {
    format: String,
    version: u32,
    checkpoint: String,
    engine: EngineKind,
    generation: u32,
    /// The host it was exported on.
    host: String,
    manifest: FileSum,
    /// Bytes of all the generation's files (for progress).
    total_bytes: u64,
}

/// Told how far an export or import is, in bytes of checkpoint data.
pub trait Progress {
    fn start(&mut self, _total: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self) {}
}

/// No progress shown.
pub struct Quiet;
impl Progress for Quiet {}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub checkpoint: String,
    pub generation: u32,
    pub files: usize,
    /// Bytes of checkpoint data (uncompressed).
    pub bytes: u64,
}

/// What an import made.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The new checkpoint's name.
    pub checkpoint: String,
    pub engine: EngineKind,
    pub generation: u32,
    /// The checkpoint and generation it was exported from, and on which host.
    pub from_checkpoint: String,
    pub from_generation: u32,
    pub from_host: String,
    pub bytes: u64,
}

/// Writes generation `generation` (default: the newest) of checkpoint `name` to `out`,
/// checking every file against the manifest on the way: a damaged generation is never
/// exported. Returns once the compressed stream is complete.
pub fn export(
    store: &CheckpointStore,
    name: &str,
    generation: Option<u32>,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    let ckpt = store.open(name)?;
    // Not pruned or rewritten while it is read.
    let _lock = ckpt.lock()?;
    let g = ckpt.select(generation)?;
    let damaged = |e: anyhow::Error| {
        anyhow!(
            "generation {} of checkpoint '{name}' is damaged, nothing exported: {e:#} (check it with `rctr checkpoint verify {name} --generation {}`)",
            g.number,
            g.number
        )
    };
    let manifest_bytes = std::fs::read(g.dir.join(MANIFEST))
        .with_context(|| format!("cannot read {}", g.dir.join(MANIFEST).display()))?;
    let total: u64 = g.manifest.files.values().map(|s| s.size).sum();
    let index = Index {
        format: FORMAT.into(),
        version: VERSION,
        checkpoint: name.to_string(),
        engine: ckpt.engine(),
        generation: g.number,
        host: rctr_state::hostname(),
        manifest: FileSum {
            size: manifest_bytes.len() as u64,
            blake3: blake3::hash(&manifest_bytes).to_hex().to_string(),
        },
        total_bytes: total,
    };
    let mut z = zstd::stream::write::Encoder::new(out, LEVEL).context("cannot start zstd")?;
    z.include_checksum(true).context("zstd checksum")?;
    // Compression is the slow part of an export: all cores, when there are several.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if threads > 1 {
        z.multithread(threads)
            .context("cannot start zstd's threads")?;
    }
    let mut tar = tar::Builder::new(z);
    let mtime = g.manifest.created;
    append(
        &mut tar,
        INDEX,
        &serde_json::to_vec_pretty(&index)?[..],
        mtime,
    )?;
    append(
        &mut tar,
        &format!("{GENERATION}/{MANIFEST}"),
        &manifest_bytes[..],
        mtime,
    )?;
    progress.start(total);
    for (rel, want) in &g.manifest.files {
        let path = g.dir.join(rel);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| damaged(anyhow!("cannot open {rel}: {e}")))?;
        let len = file.metadata()?.len();
        if len != want.size {
            return Err(damaged(anyhow!(
                "{rel} has size {len} instead of {}",
                want.size
            )));
        }
        let mut reader = Hashing::new(file.take(want.size), progress);
        let mut h = header(want.size, mtime);
        tar.append_data(&mut h, format!("{GENERATION}/{rel}"), &mut reader)
            .context("cannot write the archive")?;
        let (n, sum) = reader.done();
        if n != want.size || sum != want.blake3 {
            return Err(damaged(anyhow!("{rel} does not match its checksum")));
        }
    }
    let z = tar.into_inner().context("cannot write the archive")?;
    z.finish().context("cannot write the archive")?.flush()?;
    progress.finish();
    Ok(ExportReport {
        checkpoint: name.to_string(),
        generation: g.number,
        files: g.manifest.files.len(),
        bytes: total,
    })
}

/// [`export`] into a new file `path` (never an existing one), private (0600: it holds process
/// memory). Written beside it under a hidden name and renamed when complete, so an
/// interrupted export leaves no archive that looks whole.
pub fn export_to_file(
    store: &CheckpointStore,
    name: &str,
    generation: Option<u32>,
    path: &Path,
    progress: &mut dyn Progress,
) -> Result<ExportReport> {
    if std::fs::symlink_metadata(path).is_ok() {
        bail!(
            "{} already exists: choose another file or remove it",
            path.display()
        );
    }
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.part-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
        let report = export(store, name, generation, &mut w, progress)?;
        w.flush()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        drop(w);
        file.sync_all()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        nix::fcntl::renameat2(
            None,
            &tmp,
            None,
            path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(report)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Imports the archive read from `input` (`source` names it in messages) as a new checkpoint:
/// `name`, else the name it was exported under. Nothing appears unless every file verified.
pub fn import(
    store: &CheckpointStore,
    input: impl Read,
    source: &str,
    name: Option<&str>,
    images_in: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<ImportReport> {
    let damaged = |e: anyhow::Error| {
        anyhow!(
            "archive {source} is damaged or not a checkpoint archive, nothing imported: {}",
            one_line(&format!("{e:#}"))
        )
    };
    let z = zstd::stream::read::Decoder::new(input)
        .map_err(|e| damaged(anyhow!("cannot start zstd: {e}")))?;
    let mut tar = tar::Archive::new(z);
    let mut entries = tar.entries().map_err(|e| damaged(e.into()))?;
    let mut next = || next_entry(&mut entries);

    let index: Index = {
        let mut e = next()
            .map_err(damaged)?
            .ok_or_else(|| damaged(anyhow!("it is empty")))?;
        let bytes = small_entry(&mut e, INDEX, MAX_INDEX).map_err(damaged)?;
        serde_json::from_slice(&bytes).map_err(|e| damaged(anyhow!("{INDEX}: {e}")))?
    };
    if index.format != FORMAT {
        return Err(damaged(anyhow!("{INDEX} says format {:?}", index.format)));
    }
    if index.version > VERSION {
        bail!("archive {source} has format version {}, newer than this rctr reads ({VERSION}): import it with a newer rctr", index.version);
    }
    let new_name = name.unwrap_or(&index.checkpoint).to_string();
    validate_name("checkpoint", &new_name)?;
    if store.exists(&new_name)? {
        bail!("checkpoint '{new_name}' already exists: import under another name with --name NEW, or delete it first with `rctr checkpoint delete {new_name}`");
    }

    let manifest: Manifest = {
        let want = format!("{GENERATION}/{MANIFEST}");
        let mut e = next()
            .map_err(damaged)?
            .ok_or_else(|| damaged(anyhow!("{want} is missing")))?;
        let bytes = small_entry(&mut e, &want, MAX_MANIFEST).map_err(damaged)?;
        let sum = blake3::hash(&bytes).to_hex().to_string();
        if bytes.len() as u64 != index.manifest.size || sum != index.manifest.blake3 {
            return Err(damaged(anyhow!("{want} does not match its checksum")));
        }
        serde_json::from_slice(&bytes).map_err(|e| damaged(anyhow!("{want}: {e}")))?
    };
    if manifest.engine != index.engine {
        return Err(damaged(anyhow!(
            "the manifest is of the {} engine, the index says {}",
            manifest.engine,
            index.engine
        )));
    }
    for rel in manifest.files.keys() {
        let p = generation_file(Path::new(rel)).map_err(damaged)?;
        if p == Path::new(MANIFEST) {
            return Err(damaged(anyhow!("the manifest lists itself")));
        }
    }

    let incoming = store.begin_import(&new_name, index.engine, images_in)?;
    let ckpt = incoming.checkpoint();
    let lock = ckpt.lock()?;
    let staged = ckpt.stage(&lock)?;
    progress.start(index.total_bytes);
    let mut seen = BTreeSet::new();
    while let Some(mut entry) = next().map_err(damaged)? {
        unpack_entry(&mut entry, &staged.dir, &manifest, &mut seen, progress).map_err(damaged)?;
    }
    if let Some(missing) = manifest.files.keys().find(|k| !seen.contains(*k)) {
        return Err(damaged(anyhow!(
            "it is truncated: {GENERATION}/{missing} is missing"
        )));
    }
    // The tar end marker comes before the end of the zstd frame, whose checksum is checked
    // only when the frame is read to its end.
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(|e| damaged(anyhow!("cannot read the archive to its end: {e}")))?;
    progress.finish();

    let bytes = manifest.files.values().map(|s| s.size).sum();
    let published = ckpt.publish(&lock, staged, manifest, 0)?;
    drop(lock);
    incoming.finish(store)?;
    Ok(ImportReport {
        checkpoint: new_name,
        engine: index.engine,
        generation: published.number,
        from_checkpoint: index.checkpoint,
        from_generation: index.generation,
        from_host: index.host,
        bytes,
    })
}

/// [`import`] from file `path`.
pub fn import_file(
    store: &CheckpointStore,
    path: &Path,
    name: Option<&str>,
    images_in: Option<&Path>,
    progress: &mut dyn Progress,
) -> Result<ImportReport> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if !file.metadata()?.is_file() {
        bail!(
            "{} is not a file: name a checkpoint archive made by `rctr checkpoint export`",
            path.display()
        );
    }
    let source = path.display().to_string();
    import(
        store,
        std::io::BufReader::with_capacity(1 << 20, file),
        &source,
        name,
        images_in,
        progress,
    )
}

fn next_entry<'a, R: Read>(entries: &mut tar::Entries<'a, R>) -> Result<Option<tar::Entry<'a, R>>> {
    entries
        .next()
        .transpose()
        .context("cannot read the archive")
}

/// `text` with control characters shown as '?': a damaged header's bytes end up in the tar
/// reader's messages, and an error must stay one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A private tar header for a regular file of `size` bytes.
fn header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8], mtime: u64) -> Result<()> {
    let mut h = header(data.len() as u64, mtime);
    tar.append_data(&mut h, path, data)
        .context("cannot write the archive")
}

/// An entry that must be `want`, a regular file no bigger than `max`, read whole.
fn small_entry<R: Read>(e: &mut tar::Entry<'_, R>, want: &str, max: u64) -> Result<Vec<u8>> {
    let path = e.path()?.into_owned();
    if path != Path::new(want) {
        bail!("{} comes where {want} should", path.display());
    }
    if e.header().entry_type() != tar::EntryType::Regular || e.size() > max {
        bail!("{want} is not a regular file of at most {max} bytes");
    }
    let mut bytes = Vec::with_capacity(e.size() as usize);
    e.read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {want}"))?;
    if bytes.len() as u64 != e.size() {
        bail!("{want} is cut short");
    }
    Ok(bytes)
}

/// The path inside the generation of archive entry `path` under `generation/`.
fn entry_in_generation(path: &Path) -> Result<PathBuf> {
    let rel = path
        .strip_prefix(GENERATION)
        .map_err(|_| anyhow!("entry {} is outside {GENERATION}/", path.display()))?;
    generation_file(rel)
}

/// Checks a path inside a generation: relative, only plain names (no `..`, no `.`, no root),
/// UTF-8, not empty.
pub fn generation_file(rel: &Path) -> Result<PathBuf> {
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    if rel.as_os_str().is_empty() || !plain || rel.to_str().is_none() || rel.has_root() {
        bail!(
            "unsafe path {:?} in the archive (only plain relative names are allowed)",
            rel
        );
    }
    Ok(rel.to_path_buf())
}

/// Writes one data entry into `dir` (0600, parents 0700), checking that it is a regular file
/// the manifest lists, once, with the listed size and checksum. Directory entries are
/// accepted (directories are made as needed); links, devices and FIFOs are refused.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dir: &Path,
    manifest: &Manifest,
    seen: &mut BTreeSet<String>,
    progress: &mut dyn Progress,
) -> Result<()> {
    let path = entry.path()?.into_owned();
    let kind = entry.header().entry_type();
    if kind == tar::EntryType::Directory {
        entry_in_generation(&path)?;
        return Ok(());
    }
    if kind != tar::EntryType::Regular {
        bail!(
            "entry {} is a {}, not a regular file (an archive holds no links, devices or FIFOs)",
            path.display(),
            kind_name(kind)
        );
    }
    let rel = entry_in_generation(&path)?;
    let key = rel.to_str().unwrap_or_default().to_string();
    let Some(want) = manifest.files.get(&key) else {
        bail!("entry {} is not in the manifest", path.display());
    };
    if !seen.insert(key.clone()) {
        bail!("entry {} appears twice", path.display());
    }
    if entry.size() != want.size {
        bail!("{key} has size {} instead of {}", entry.size(), want.size);
    }
    let target = dir.join(&rel);
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let mut reader = Hashing::new(entry, progress);
    std::io::copy(&mut reader, &mut out).with_context(|| format!("cannot read {key}"))?;
    let (n, sum) = reader.done();
    if n != want.size {
        bail!("{key} is cut short ({n} of {} bytes)", want.size);
    }
    if sum != want.blake3 {
        bail!("{key} does not match its checksum");
    }
    Ok(())
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char | tar::EntryType::Block => "device",
        tar::EntryType::Fifo => "FIFO",
        _ => "special entry",
    }
}

/// Counts, hashes and reports what passes through.
struct Hashing<'p, R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
    progress: &'p mut dyn Progress,
}

impl<'p, R: Read> Hashing<'p, R> {
    fn new(inner: R, progress: &'p mut dyn Progress) -> Self {
        Hashing {
            inner,
            hasher: blake3::Hasher::new(),
            count: 0,
            progress,
        }
    }

    fn done(self) -> (u64, String) {
        (self.count, self.hasher.finalize().to_hex().to_string())
    }
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.progress.advance(n as u64);
        Ok(n)
    }
}
