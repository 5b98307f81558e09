//! Reading files out of a squashfs image without mounting it, also when the image sits at an
//! offset inside another file (the system partition of a SIF).

use crate::ffi;
use crate::handle::{check, describe, Malloced, Object};
use crate::io::RangeFile;
use crate::options::Compression;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::VecDeque;
use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::ptr;

pub(crate) type Inode = Malloced<ffi::sqfs_inode_generic_t>;

const NO_XATTRS: u32 = 0xffff_ffff;
const SUPERBLOCK_SIZE: u64 = 96;
/// Like the kernel's limit on nested symlinks (ELOOP).
const MAX_SYMLINKS: u32 = 40;

/// Type of an entry in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

/// Metadata of one inode in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (mode & 0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    /// File size; symlink target length; for directories the on-disk listing size.
    pub size: u64,
    /// squashfs inode number (hard links share one).
    pub inode: u32,
    pub nlink: u32,
    /// (major, minor) of device nodes.
    pub rdev: Option<(u32, u32)>,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    pub metadata: Metadata,
}

/// Superblock facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquashfsInfo {
    /// None for a compressor id this crate does not know.
    pub compression: Option<Compression>,
    pub block_size: u32,
    /// Size of the filesystem in bytes (without the 4 KiB padding).
    pub bytes_used: u64,
    pub inode_count: u32,
    pub mkfs_time: u32,
}

/// An open squashfs image. Not thread-safe (libsquashfs readers keep a cursor), but can be
/// moved between threads.
pub struct SquashfsReader {
    // Field order is drop order: readers before the compressor and file they use.
    dir_reader: Object<ffi::sqfs_dir_reader_t>,
    data_reader: Object<ffi::sqfs_data_reader_t>,
    xattr_reader: Object<ffi::sqfs_xattr_reader_t>,
    id_table: Object<ffi::sqfs_id_table_t>,
    _compressor: Object<ffi::sqfs_compressor_t>,
    file: Box<RangeFile>,
    /// Boxed: the directory reader keeps a pointer to it.
    superblock: Box<ffi::sqfs_super_t>,
    path: PathBuf,
    offset: u64,
}

// SAFETY: the libsquashfs objects are plain heap data, not tied to a thread; the type is !Sync
// (raw pointers), so they are never used from two threads at once.
unsafe impl Send for SquashfsReader {}

impl std::fmt::Debug for SquashfsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SquashfsReader")
            .field("path", &self.path)
            .field("offset", &self.offset)
            .finish()
    }
}

fn split_components(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

impl SquashfsReader {
    /// Opens the squashfs image that starts `offset` bytes into `path` and runs to the end of
    /// the file (or of the filesystem, whichever the superblock says).
    pub fn open(path: &Path, offset: u64) -> Result<SquashfsReader> {
        Self::open_range(path, offset, None)
    }

    /// Opens the squashfs image at `offset` in `path`, confined to `size` bytes if given (a SIF
    /// partition: nothing outside it is ever read).
    pub fn open_range(path: &Path, offset: u64, size: Option<u64>) -> Result<SquashfsReader> {
        let file = File::open(path)
            .with_context(|| format!("opening squashfs image {}", path.display()))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("reading metadata of {}", path.display()))?
            .len();
        let avail = file_len.saturating_sub(offset);
        let len = size.map_or(avail, |s| s.min(avail));
        if len < SUPERBLOCK_SIZE {
            bail!(
                "{}: too small to hold a squashfs superblock at offset {offset} ({len} bytes there); \
                 the file is not a squashfs image or is truncated",
                path.display()
            );
        }
        let file = RangeFile::reader(file, offset, len);
        let at = if offset > 0 {
            format!(" at offset {offset}")
        } else {
            String::new()
        };
        let mut sb = Box::new(ffi::sqfs_super_t::default());
        // SAFETY: our file object and a superblock to fill.
        let ret = unsafe { ffi::sqfs_super_read(&mut *sb, file.as_sqfs()) };
        if ret != 0 {
            let why = match ret {
                ffi::SFQS_ERROR_SUPER_MAGIC => {
                    "no squashfs magic (\"hsqs\"): not a squashfs image".to_string()
                }
                ffi::SFQS_ERROR_SUPER_VERSION => {
                    "unsupported squashfs version (only 4.0 is supported)".to_string()
                }
                ffi::SQFS_ERROR_IO => format!(
                    "read error: {}",
                    file.take_error()
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "I/O error".into())
                ),
                other => describe(other).to_string(),
            };
            bail!(
                "{}: corrupt or invalid squashfs superblock{at}: {why}",
                path.display()
            );
        }
        if sb.bytes_used > len {
            bail!(
                "{}: squashfs image{at} is truncated: the superblock says {} bytes, only {len} are there",
                path.display(),
                sb.bytes_used
            );
        }
        if sb.inode_count == 0 {
            bail!(
                "{}: corrupt squashfs superblock{at}: zero inodes",
                path.display()
            );
        }
        let comp_name = Compression::from_id(sb.compression_id)
            .map(|c| c.name().to_string())
            .unwrap_or_else(|| format!("id {}", sb.compression_id));
        let ctx = |what: &str| format!("{}: {what}", path.display());
        let out = file.as_sqfs();
        // SAFETY: objects are created from a valid superblock and our live file; each is owned by
        // an Object<> that the struct drops in dependency order.
        unsafe {
            let mut cfg = ffi::sqfs_compressor_config_t::default();
            check(
                ffi::sqfs_compressor_config_init(
                    &mut cfg,
                    sb.compression_id as ffi::SQFS_COMPRESSOR,
                    sb.block_size as usize,
                    ffi::SQFS_COMP_FLAG_UNCOMPRESS as u16,
                ),
                || {
                    ctx(&format!(
                        "squashfs compression {comp_name} is not supported"
                    ))
                },
            )?;
            let mut cmp = ptr::null_mut();
            check(ffi::sqfs_compressor_create(&cfg, &mut cmp), || {
                ctx(&format!(
                    "squashfs compression {comp_name} is not supported"
                ))
            })?;
            let compressor = Object::new(cmp, "decompressor")?;
            if sb.flags & ffi::SQFS_FLAG_COMPRESSOR_OPTIONS as u16 != 0 {
                if let Some(read_options) = (*compressor.ptr()).read_options {
                    check(read_options(compressor.ptr(), out), || {
                        ctx("reading compressor options")
                    })?;
                }
            }
            let id_table = Object::new(ffi::sqfs_id_table_create(0), "id table")?;
            check(
                ffi::sqfs_id_table_read(id_table.ptr(), out, &*sb, compressor.ptr()),
                || ctx("reading the squashfs id table"),
            )?;
            let dir_reader = Object::new(
                ffi::sqfs_dir_reader_create(&*sb, compressor.ptr(), out, 0),
                "directory reader",
            )?;
            let data_reader = Object::new(
                ffi::sqfs_data_reader_create(out, sb.block_size as usize, compressor.ptr(), 0),
                "data reader",
            )?;
            check(
                ffi::sqfs_data_reader_load_fragment_table(data_reader.ptr(), &*sb),
                || ctx("reading the squashfs fragment table"),
            )?;
            let xattr_reader = Object::new(ffi::sqfs_xattr_reader_create(0), "xattr reader")?;
            check(
                ffi::sqfs_xattr_reader_load(xattr_reader.ptr(), &*sb, out, compressor.ptr()),
                || ctx("reading the squashfs xattr table"),
            )?;
            let reader = SquashfsReader {
                dir_reader,
                data_reader,
                xattr_reader,
                id_table,
                _compressor: compressor,
                file,
                superblock: sb,
                path: path.to_path_buf(),
                offset,
            };
            // Reading the root catches a corrupt inode table early, with a clear message.
            reader.root_inode()?;
            Ok(reader)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn info(&self) -> SquashfsInfo {
        let sb = &self.superblock;
        SquashfsInfo {
            compression: Compression::from_id(sb.compression_id),
            block_size: sb.block_size,
            bytes_used: sb.bytes_used,
            inode_count: sb.inode_count,
            mkfs_time: sb.modification_time,
        }
    }

    /// "PATH in IMAGE" for messages.
    pub(crate) fn describe(&self, inner: &Path) -> String {
        format!("{} in {}", inner.display(), self.path.display())
    }

    fn fail(&self, what: &str) -> impl FnOnce() -> String + '_ {
        let what = what.to_string();
        move || match self.file.take_error() {
            Some(e) => format!("{}: {what}: {e}", self.path.display()),
            None => format!("{}: {what}", self.path.display()),
        }
    }

    pub(crate) fn root_inode(&self) -> Result<Inode> {
        let mut raw = ptr::null_mut();
        // SAFETY: live dir reader; on success we own the returned inode.
        unsafe {
            check(
                ffi::sqfs_dir_reader_get_root_inode(self.dir_reader.ptr(), &mut raw),
                self.fail("reading the root directory inode"),
            )?;
        }
        Malloced::new(raw, "root inode")
    }

    /// Entries of the directory `dir` with their inodes, in on-disk (name) order.
    pub(crate) fn read_dir_inodes(&self, dir: &Inode) -> Result<Vec<(OsString, Inode)>> {
        let rd = self.dir_reader.ptr();
        let mut out = Vec::new();
        // SAFETY: live dir reader, a directory inode; returned entries/inodes are owned by us.
        unsafe {
            check(
                ffi::sqfs_dir_reader_open_dir(rd, dir.ptr(), 0),
                self.fail("opening a directory"),
            )?;
            loop {
                let mut ent = ptr::null_mut();
                let ret = check(
                    ffi::sqfs_dir_reader_read(rd, &mut ent),
                    self.fail("reading a directory"),
                )?;
                if ret > 0 {
                    break;
                }
                let ent: Malloced<ffi::sqfs_dir_entry_t> = Malloced::new(ent, "directory entry")?;
                let len = ent.get().size as usize + 1;
                let name = std::slice::from_raw_parts(ent.get().name.as_ptr(), len).to_vec();
                let mut raw = ptr::null_mut();
                check(
                    ffi::sqfs_dir_reader_get_inode(rd, &mut raw),
                    self.fail("reading an inode"),
                )?;
                out.push((OsString::from_vec(name), Malloced::new(raw, "inode")?));
            }
        }
        Ok(out)
    }

    fn find_child(&self, dir: &Inode, name: &[u8]) -> Result<Option<Inode>> {
        let Ok(cname) = CString::new(name) else {
            return Ok(None);
        };
        let rd = self.dir_reader.ptr();
        // SAFETY: as in read_dir_inodes.
        unsafe {
            check(
                ffi::sqfs_dir_reader_open_dir(rd, dir.ptr(), 0),
                self.fail("opening a directory"),
            )?;
            let ret = ffi::sqfs_dir_reader_find(rd, cname.as_ptr());
            if ret == ffi::SQFS_ERROR_NO_ENTRY {
                return Ok(None);
            }
            check(ret, self.fail("looking up a directory entry"))?;
            // find() leaves the reader on the matching entry.
            let mut raw = ptr::null_mut();
            check(
                ffi::sqfs_dir_reader_get_inode(rd, &mut raw),
                self.fail("reading an inode"),
            )?;
            Ok(Some(Malloced::new(raw, "inode")?))
        }
    }

    /// Walks `inner` from the image root. Symlinks are resolved inside the image (absolute
    /// targets restart at the image root, `..` stops at it), the last one only if
    /// `follow_last`. A missing entry or a non-directory in the middle gives None.
    pub(crate) fn resolve(&self, inner: &Path, follow_last: bool) -> Result<Option<Inode>> {
        let mut pending: VecDeque<Vec<u8>> = split_components(inner.as_os_str().as_bytes())
            .map(<[u8]>::to_vec)
            .collect();
        let mut stack = vec![self.root_inode()?];
        let mut links = 0;
        while let Some(comp) = pending.pop_front() {
            if comp == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let cur = stack.last().expect("stack holds the root");
            if inode_kind(cur)? != EntryKind::Dir {
                return Ok(None);
            }
            let Some(child) = self.find_child(cur, &comp)? else {
                return Ok(None);
            };
            if inode_kind(&child)? == EntryKind::Symlink && (follow_last || !pending.is_empty()) {
                links += 1;
                if links > MAX_SYMLINKS {
                    bail!(
                        "{}: too many levels of symbolic links",
                        self.describe(inner)
                    );
                }
                let target = symlink_target(&child)?;
                if target.is_empty() {
                    return Ok(None);
                }
                if target.starts_with(b"/") {
                    stack.truncate(1);
                }
                for part in split_components(&target)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    pending.push_front(part.to_vec());
                }
                continue;
            }
            stack.push(child);
        }
        Ok(stack.pop())
    }

    pub(crate) fn metadata_of(&self, inode: &Inode) -> Result<Metadata> {
        let kind = inode_kind(inode)?;
        let raw = inode.get();
        // SAFETY: union fields are read according to the inode type.
        let (size, nlink, rdev) = unsafe {
            let d = &raw.data;
            match raw.base.type_ as ffi::SQFS_INODE_TYPE {
                ffi::SQFS_INODE_DIR => (d.dir.size as u64, d.dir.nlink, None),
                ffi::SQFS_INODE_EXT_DIR => (d.dir_ext.size as u64, d.dir_ext.nlink, None),
                ffi::SQFS_INODE_FILE => (d.file.file_size as u64, 1, None),
                ffi::SQFS_INODE_EXT_FILE => (d.file_ext.file_size, d.file_ext.nlink, None),
                ffi::SQFS_INODE_SLINK => (d.slink.target_size as u64, d.slink.nlink, None),
                ffi::SQFS_INODE_EXT_SLINK => {
                    (d.slink_ext.target_size as u64, d.slink_ext.nlink, None)
                }
                ffi::SQFS_INODE_BDEV | ffi::SQFS_INODE_CDEV => {
                    (0, d.dev.nlink, Some(decode_devno(d.dev.devno)))
                }
                ffi::SQFS_INODE_EXT_BDEV | ffi::SQFS_INODE_EXT_CDEV => {
                    (0, d.dev_ext.nlink, Some(decode_devno(d.dev_ext.devno)))
                }
                ffi::SQFS_INODE_FIFO | ffi::SQFS_INODE_SOCKET => (0, d.ipc.nlink, None),
                _ => (0, d.ipc_ext.nlink, None),
            }
        };
        Ok(Metadata {
            kind,
            mode: raw.base.mode as u32 & 0o7777,
            uid: self.id_lookup(raw.base.uid_idx)?,
            gid: self.id_lookup(raw.base.gid_idx)?,
            mtime: raw.base.mod_time,
            size,
            inode: raw.base.inode_number,
            nlink,
            rdev,
        })
    }

    fn id_lookup(&self, index: u16) -> Result<u32> {
        let mut id = 0;
        // SAFETY: live id table.
        unsafe {
            check(
                ffi::sqfs_id_table_index_to_id(self.id_table.ptr(), index, &mut id),
                || {
                    format!(
                        "{}: corrupt squashfs: bad uid/gid index {index}",
                        self.path.display()
                    )
                },
            )?;
        }
        Ok(id)
    }

    /// Metadata of `inner`, following symlinks; None if it does not exist (or is a dangling
    /// symlink).
    pub fn metadata(&self, inner: impl AsRef<Path>) -> Result<Option<Metadata>> {
        self.resolve(inner.as_ref(), true)?
            .map(|i| self.metadata_of(&i))
            .transpose()
    }

    /// Metadata of `inner` itself, not following a final symlink.
    pub fn symlink_metadata(&self, inner: impl AsRef<Path>) -> Result<Option<Metadata>> {
        self.resolve(inner.as_ref(), false)?
            .map(|i| self.metadata_of(&i))
            .transpose()
    }

    /// Whether `inner` exists (following symlinks, like `Path::exists`).
    pub fn exists(&self, inner: impl AsRef<Path>) -> Result<bool> {
        Ok(self.resolve(inner.as_ref(), true)?.is_some())
    }

    /// Target of the symlink `inner`; None if it does not exist; an error if it is no symlink.
    pub fn read_link(&self, inner: impl AsRef<Path>) -> Result<Option<PathBuf>> {
        let inner = inner.as_ref();
        let Some(inode) = self.resolve(inner, false)? else {
            return Ok(None);
        };
        if inode_kind(&inode)? != EntryKind::Symlink {
            bail!("{}: not a symbolic link", self.describe(inner));
        }
        Ok(Some(PathBuf::from(OsString::from_vec(symlink_target(
            &inode,
        )?))))
    }

    /// Entries of the directory `inner` (following symlinks), sorted by name.
    pub fn list_dir(&self, inner: impl AsRef<Path>) -> Result<Vec<DirEntry>> {
        let inner = inner.as_ref();
        let inode = self
            .resolve(inner, true)?
            .ok_or_else(|| anyhow!("{}: no such directory", self.describe(inner)))?;
        if inode_kind(&inode)? != EntryKind::Dir {
            bail!("{}: not a directory", self.describe(inner));
        }
        self.read_dir_inodes(&inode)?
            .into_iter()
            .map(|(name, inode)| {
                Ok(DirEntry {
                    name,
                    metadata: self.metadata_of(&inode)?,
                })
            })
            .collect()
    }

    /// Whole content of the regular file `inner` (following symlinks inside the image); None
    /// if it does not exist; an error if it is not a regular file.
    pub fn read_file(&self, inner: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let inner = inner.as_ref();
        let Some(inode) = self.resolve(inner, true)? else {
            return Ok(None);
        };
        match inode_kind(&inode)? {
            EntryKind::File => {}
            EntryKind::Dir => bail!(
                "{}: is a directory, not a regular file",
                self.describe(inner)
            ),
            _ => bail!("{}: not a regular file", self.describe(inner)),
        }
        let mut out = Vec::new();
        self.copy_data(&inode, &mut out, inner)?;
        Ok(Some(out))
    }

    /// Streams the data of a file inode into `sink`.
    pub(crate) fn copy_data(
        &self,
        inode: &Inode,
        sink: &mut dyn Write,
        inner: &Path,
    ) -> Result<u64> {
        let mut size = 0u64;
        // SAFETY: a file inode.
        unsafe { ffi::sqfs_inode_get_file_size(inode.ptr(), &mut size) };
        let chunk = (self.superblock.block_size as usize).max(4096);
        let mut buf = vec![0u8; chunk];
        let mut done = 0u64;
        while done < size {
            let want = (size - done).min(chunk as u64) as u32;
            // SAFETY: buf has `want` writable bytes.
            let got = unsafe {
                ffi::sqfs_data_reader_read(
                    self.data_reader.ptr(),
                    inode.ptr(),
                    done,
                    buf.as_mut_ptr().cast(),
                    want,
                )
            };
            check(got, self.fail(&format!("reading {}", inner.display())))?;
            if got == 0 {
                bail!(
                    "{}: file data ends early (corrupt image)",
                    self.describe(inner)
                );
            }
            sink.write_all(&buf[..got as usize])
                .with_context(|| format!("writing out {}", self.describe(inner)))?;
            done += got as u64;
        }
        Ok(done)
    }

    /// Extended attributes of `inner` (not following a final symlink), as full keys
    /// ("user.foo") and values, in on-disk order.
    pub fn xattrs(&self, inner: impl AsRef<Path>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let inner = inner.as_ref();
        let inode = self
            .resolve(inner, false)?
            .ok_or_else(|| anyhow!("{}: no such file or directory", self.describe(inner)))?;
        self.xattrs_of(&inode)
    }

    pub(crate) fn xattrs_of(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut index = NO_XATTRS;
        let xr = self.xattr_reader.ptr();
        let mut out = Vec::new();
        // SAFETY: live xattr reader; keys/values returned are owned by us.
        unsafe {
            check(
                ffi::sqfs_inode_get_xattr_index(inode.ptr(), &mut index),
                self.fail("reading an inode"),
            )?;
            if index == NO_XATTRS {
                return Ok(out);
            }
            let mut desc = ffi::sqfs_xattr_id_t::default();
            check(
                ffi::sqfs_xattr_reader_get_desc(xr, index, &mut desc),
                self.fail("reading xattrs"),
            )?;
            check(
                ffi::sqfs_xattr_reader_seek_kv(xr, &desc),
                self.fail("reading xattrs"),
            )?;
            for _ in 0..desc.count {
                let mut key = ptr::null_mut();
                check(
                    ffi::sqfs_xattr_reader_read_key(xr, &mut key),
                    self.fail("reading an xattr key"),
                )?;
                let key: Malloced<ffi::sqfs_xattr_entry_t> = Malloced::new(key, "xattr key")?;
                let mut value = ptr::null_mut();
                check(
                    ffi::sqfs_xattr_reader_read_value(xr, key.ptr(), &mut value),
                    self.fail("reading an xattr value"),
                )?;
                let value: Malloced<ffi::sqfs_xattr_value_t> = Malloced::new(value, "xattr value")?;
                // The key is stored with its namespace prefix prepended and a NUL after it.
                let k = CStr::from_ptr(key.get().key.as_ptr().cast())
                    .to_bytes()
                    .to_vec();
                let v = std::slice::from_raw_parts(
                    value.get().value.as_ptr(),
                    value.get().size as usize,
                )
                .to_vec();
                out.push((k, v));
            }
        }
        Ok(out)
    }
}

pub(crate) fn inode_kind(inode: &Inode) -> Result<EntryKind> {
    Ok(match inode.get().base.type_ as ffi::SQFS_INODE_TYPE {
        ffi::SQFS_INODE_DIR | ffi::SQFS_INODE_EXT_DIR => EntryKind::Dir,
        ffi::SQFS_INODE_FILE | ffi::SQFS_INODE_EXT_FILE => EntryKind::File,
        ffi::SQFS_INODE_SLINK | ffi::SQFS_INODE_EXT_SLINK => EntryKind::Symlink,
        ffi::SQFS_INODE_BDEV | ffi::SQFS_INODE_EXT_BDEV => EntryKind::BlockDevice,
        ffi::SQFS_INODE_CDEV | ffi::SQFS_INODE_EXT_CDEV => EntryKind::CharDevice,
        ffi::SQFS_INODE_FIFO | ffi::SQFS_INODE_EXT_FIFO => EntryKind::Fifo,
        ffi::SQFS_INODE_SOCKET | ffi::SQFS_INODE_EXT_SOCKET => EntryKind::Socket,
        other => bail!("corrupt squashfs: unknown inode type {other}"),
    })
}

pub(crate) fn symlink_target(inode: &Inode) -> Result<Vec<u8>> {
    let raw = inode.get();
    // SAFETY: symlink inodes carry target_size bytes of target in `extra`.
    unsafe {
        let len = match raw.base.type_ as ffi::SQFS_INODE_TYPE {
            ffi::SQFS_INODE_SLINK => raw.data.slink.target_size,
            ffi::SQFS_INODE_EXT_SLINK => raw.data.slink_ext.target_size,
            _ => bail!("not a symbolic link"),
        } as usize;
        Ok(std::slice::from_raw_parts(raw.extra.as_ptr().cast::<u8>(), len).to_vec())
    }
}

/// The kernel's new_decode_dev.
fn decode_devno(devno: u32) -> (u32, u32) {
    (
        (devno & 0xfff00) >> 8,
        (devno & 0xff) | ((devno >> 12) & 0xfff00),
    )
}
