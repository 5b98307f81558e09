//! Packs a directory tree into a squashfs image with libsquashfs, the way mksquashfs lays it
//! out: file data first (compressed by the multithreaded block processor, duplicate blocks and
//! fragments merged), then inodes, directories, fragment, export, id and xattr tables.

use crate::ffi;
use crate::handle::{alloc_inode, check, Malloced, Object};
use crate::io::RangeFile;
use crate::options::{BuildOptions, BuildStats};
use crate::tree::{Kind, NodeId, Tree};
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::raw::c_int;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr;

const NO_XATTRS: u32 = 0xffff_ffff;
/// Images are padded to this, like mksquashfs does, so they can be loop-mounted.
const DEVBLK_SIZE: u64 = 4096;
/// Read size when streaming file data into the block processor.
const READ_CHUNK: usize = 1 << 20;

/// Builds a squashfs image of the directory `src` into the new file `out` (which must not
/// exist). On failure `out` is removed.
pub fn build_from_dir(src: &Path, out: &Path, opts: &BuildOptions) -> Result<BuildStats> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(out)
        .with_context(|| format!("creating squashfs image {}", out.display()))?;
    match write_image(src, file, out, opts) {
        Ok(stats) => Ok(stats),
        Err(err) => {
            let _ = std::fs::remove_file(out);
            Err(err)
        }
    }
}

/// Builds a squashfs image of `src` into the already open `file` (truncated first, written from
/// offset 0). `name` is only used in messages. On error the file holds a partial image: the
/// caller removes it.
pub fn write_image(src: &Path, file: File, name: &Path, opts: &BuildOptions) -> Result<BuildStats> {
    validate(opts)?;
    file.set_len(0)
        .with_context(|| format!("truncating {}", name.display()))?;
    let tree = Tree::scan(src)?;
    let mut writer = ImageWriter::new(file, name, opts)?;
    let mut stats = BuildStats {
        warnings: tree.warnings.clone(),
        ..Default::default()
    };
    writer.write_file_data(&tree, &mut stats)?;
    writer.write_metadata(&tree, opts)?;
    stats.inodes = tree.order.len() as u32;
    stats.image_size = writer.file.file().metadata().map(|m| m.len()).unwrap_or(0);
    Ok(stats)
}

fn validate(opts: &BuildOptions) -> Result<()> {
    let bs = opts.block_size;
    if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
        bail!("invalid squashfs block size {bs}: must be a power of two from 4096 to 1048576");
    }
    Ok(())
}

/// Inodes the block processor creates and keeps updating until it is finished; freed here if
/// the build stops early. Boxed so the slot addresses libsquashfs holds stay put.
struct FileInodes(Vec<Option<Box<*mut ffi::sqfs_inode_generic_t>>>);

impl FileInodes {
    fn take(&mut self, id: NodeId) -> Result<Malloced<ffi::sqfs_inode_generic_t>> {
        let slot = self
            .0
            .get_mut(id)
            .and_then(Option::take)
            .context("file inode missing")?;
        Malloced::new(*slot, "file inode")
    }
}

impl Drop for FileInodes {
    fn drop(&mut self) {
        for slot in self.0.iter().flatten() {
            if !slot.is_null() {
                // SAFETY: allocated by the block processor with malloc, not yet handed out.
                unsafe { ffi::sqfs_free(slot.cast()) };
            }
        }
    }
}

/// The libsquashfs writer objects. Field order is drop order: users before what they use.
struct ImageWriter<'a> {
    dir_writer: Object<ffi::sqfs_dir_writer_t>,
    dirent_writer: Object<ffi::sqfs_meta_writer_t>,
    inode_writer: Object<ffi::sqfs_meta_writer_t>,
    xattr_writer: Object<ffi::sqfs_xattr_writer_t>,
    id_table: Object<ffi::sqfs_id_table_t>,
    block_processor: Object<ffi::sqfs_block_processor_t>,
    file_inodes: FileInodes,
    frag_table: Object<ffi::sqfs_frag_table_t>,
    _block_writer: Object<ffi::sqfs_block_writer_t>,
    compressor: Object<ffi::sqfs_compressor_t>,
    file: Box<RangeFile>,
    superblock: ffi::sqfs_super_t,
    name: &'a Path,
}

impl<'a> ImageWriter<'a> {
    fn new(file: File, name: &'a Path, opts: &BuildOptions) -> Result<Self> {
        let file = RangeFile::writer(file);
        let out = file.as_sqfs();
        let comp_id = opts.compression.id();
        let block_size = opts.block_size as usize;
        let workers = opts.effective_workers();

        let mut cfg = ffi::sqfs_compressor_config_t::default();
        // SAFETY: all pointers passed below are valid for the calls; objects are owned by
        // Object<> wrappers that keep them alive in dependency order.
        unsafe {
            check(
                ffi::sqfs_compressor_config_init(&mut cfg, comp_id, block_size, 0),
                || format!("configuring {} compression", opts.compression),
            )?;
            let mut cmp = ptr::null_mut();
            check(ffi::sqfs_compressor_create(&cfg, &mut cmp), || {
                format!("creating the {} compressor", opts.compression)
            })?;
            let compressor = Object::new(cmp, "compressor")?;

            let mut superblock = ffi::sqfs_super_t::default();
            check(
                ffi::sqfs_super_init(
                    &mut superblock,
                    block_size,
                    opts.effective_mkfs_time(),
                    comp_id,
                ),
                || "initializing the superblock".into(),
            )?;
            Self::io(
                &file,
                ffi::sqfs_super_write(&superblock, out),
                name,
                "writing the superblock",
            )?;
            let write_options = (*compressor.ptr())
                .write_options
                .context("compressor lacks write_options")?;
            let written = write_options(compressor.ptr(), out);
            Self::io(&file, written, name, "writing compressor options")?;
            if written > 0 {
                superblock.flags |= ffi::SQFS_FLAG_COMPRESSOR_OPTIONS as u16;
            }

            let block_writer = Object::new(
                ffi::sqfs_block_writer_create(out, DEVBLK_SIZE as usize, 0),
                "block writer",
            )?;
            let frag_table = Object::new(ffi::sqfs_frag_table_create(0), "fragment table")?;
            let block_processor = Object::new(
                ffi::sqfs_block_processor_create(
                    block_size,
                    compressor.ptr(),
                    workers,
                    (workers as usize * 10).max(20),
                    block_writer.ptr(),
                    frag_table.ptr(),
                ),
                "block processor",
            )?;
            let id_table = Object::new(ffi::sqfs_id_table_create(0), "id table")?;
            let xattr_writer = Object::new(ffi::sqfs_xattr_writer_create(0), "xattr writer")?;
            let inode_writer = Object::new(
                ffi::sqfs_meta_writer_create(out, compressor.ptr(), 0),
                "inode writer",
            )?;
            let dirent_writer = Object::new(
                ffi::sqfs_meta_writer_create(
                    out,
                    compressor.ptr(),
                    ffi::SQFS_META_WRITER_KEEP_IN_MEMORY,
                ),
                "directory table writer",
            )?;
            let flags = if opts.exportable {
                ffi::SQFS_DIR_WRITER_CREATE_EXPORT_TABLE
            } else {
                0
            };
            let dir_writer = Object::new(
                ffi::sqfs_dir_writer_create(dirent_writer.ptr(), flags),
                "directory writer",
            )?;
            Ok(ImageWriter {
                dir_writer,
                dirent_writer,
                inode_writer,
                xattr_writer,
                id_table,
                block_processor,
                file_inodes: FileInodes(Vec::new()),
                frag_table,
                _block_writer: block_writer,
                compressor,
                file,
                superblock,
                name,
            })
        }
    }

    /// Like `check`, adding the OS error libsquashfs saw through our file callbacks.
    fn io(file: &RangeFile, code: c_int, name: &Path, what: &str) -> Result<c_int> {
        check(code, || match file.take_error() {
            Some(os) => format!("{} ({}): {os}", what, name.display()),
            None => format!("{} ({})", what, name.display()),
        })
    }

    fn out(&self) -> *mut ffi::sqfs_file_t {
        self.file.as_sqfs()
    }

    fn size(&self) -> u64 {
        // SAFETY: our own callback table.
        unsafe { (*self.out()).get_size.map(|f| f(self.out())).unwrap_or(0) }
    }

    /// Streams every regular file, in inode order, through the block processor.
    fn write_file_data(&mut self, tree: &Tree, stats: &mut BuildStats) -> Result<()> {
        self.file_inodes.0.resize_with(tree.nodes.len(), || None);
        let mut buf = vec![0u8; READ_CHUNK];
        for &id in &tree.order {
            let node = &tree.nodes[id];
            if !matches!(node.kind, Kind::File) {
                continue;
            }
            let mut src = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&node.source)
                .with_context(|| format!("opening {}", node.source.display()))?;
            let slot = self.file_inodes.0[id].insert(Box::new(ptr::null_mut()));
            let slot_ptr: *mut *mut ffi::sqfs_inode_generic_t = &mut **slot;
            let proc = self.block_processor.ptr();
            // SAFETY: the slot is boxed and outlives the block processor (see FileInodes).
            unsafe {
                Self::io(
                    &self.file,
                    ffi::sqfs_block_processor_begin_file(proc, slot_ptr, ptr::null_mut(), 0),
                    self.name,
                    "starting a file",
                )?;
            }
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(e).with_context(|| format!("reading {}", node.source.display()))
                    }
                };
                stats.bytes_read += n as u64;
                // SAFETY: buf holds n initialized bytes; the processor copies them.
                unsafe {
                    Self::io(
                        &self.file,
                        ffi::sqfs_block_processor_append(proc, buf.as_ptr().cast(), n),
                        self.name,
                        &format!("packing data of {}", node.source.display()),
                    )?;
                }
            }
            // SAFETY: a file was begun above.
            unsafe {
                Self::io(
                    &self.file,
                    ffi::sqfs_block_processor_end_file(proc),
                    self.name,
                    &format!("packing data of {}", node.source.display()),
                )?;
            }
            stats.regular_files += 1;
        }
        // SAFETY: no file is open in the processor.
        unsafe {
            Self::io(
                &self.file,
                ffi::sqfs_block_processor_finish(self.block_processor.ptr()),
                self.name,
                "writing data blocks",
            )?;
        }
        Ok(())
    }

    fn xattr_index(&self, tree: &Tree, id: NodeId) -> Result<u32> {
        let node = &tree.nodes[id];
        if node.xattrs.is_empty() {
            return Ok(NO_XATTRS);
        }
        let xw = self.xattr_writer.ptr();
        let what = || format!("storing extended attributes of {}", node.source.display());
        let mut index = NO_XATTRS;
        // SAFETY: keys are NUL-terminated, values valid for their length.
        unsafe {
            check(ffi::sqfs_xattr_writer_begin(xw, 0), what)?;
            for (key, value) in &node.xattrs {
                check(
                    ffi::sqfs_xattr_writer_add(
                        xw,
                        key.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                    ),
                    what,
                )?;
            }
            check(ffi::sqfs_xattr_writer_end(xw, &mut index), what)?;
        }
        Ok(index)
    }

    /// Builds the inode of a non-directory, non-file node.
    fn special_inode(tree: &Tree, id: NodeId) -> Result<Malloced<ffi::sqfs_inode_generic_t>> {
        let node = &tree.nodes[id];
        let (inode, kind) = match &node.kind {
            Kind::Symlink { target } => {
                let inode = alloc_inode(target.len())?;
                // SAFETY: inode has target.len() bytes of payload behind it.
                unsafe {
                    let raw = inode.ptr();
                    (*raw).data.slink.nlink = node.nlink;
                    (*raw).data.slink.target_size =
                        u32::try_from(target.len()).context("symlink target too long")?;
                    ptr::copy_nonoverlapping(
                        target.as_ptr(),
                        (*raw).extra.as_mut_ptr().cast::<u8>(),
                        target.len(),
                    );
                }
                (inode, ffi::SQFS_INODE_SLINK)
            }
            Kind::BlockDev { devno } | Kind::CharDev { devno } => {
                let inode = alloc_inode(0)?;
                // SAFETY: freshly allocated, zeroed inode.
                unsafe {
                    (*inode.ptr()).data.dev.nlink = node.nlink;
                    (*inode.ptr()).data.dev.devno = *devno;
                }
                let kind = if matches!(node.kind, Kind::BlockDev { .. }) {
                    ffi::SQFS_INODE_BDEV
                } else {
                    ffi::SQFS_INODE_CDEV
                };
                (inode, kind)
            }
            Kind::Fifo | Kind::Socket => {
                let inode = alloc_inode(0)?;
                // SAFETY: freshly allocated, zeroed inode.
                unsafe { (*inode.ptr()).data.ipc.nlink = node.nlink };
                let kind = if matches!(node.kind, Kind::Fifo) {
                    ffi::SQFS_INODE_FIFO
                } else {
                    ffi::SQFS_INODE_SOCKET
                };
                (inode, kind)
            }
            Kind::Dir { .. } | Kind::File => unreachable!("handled by the caller"),
        };
        // SAFETY: as above.
        unsafe { (*inode.ptr()).base.type_ = kind as u16 };
        Ok(inode)
    }

    fn dir_inode(
        &self,
        tree: &Tree,
        id: NodeId,
        refs: &[u64],
        xattr: u32,
    ) -> Result<Malloced<ffi::sqfs_inode_generic_t>> {
        let node = &tree.nodes[id];
        let Kind::Dir { entries } = &node.kind else {
            unreachable!("not a directory")
        };
        let dw = self.dir_writer.ptr();
        let what = || format!("writing directory {}", node.source.display());
        // SAFETY: names are NUL-free (they come from readdir) and NUL-terminated here.
        unsafe {
            check(ffi::sqfs_dir_writer_begin(dw, 0), what)?;
            for (name, child) in entries {
                let cname = CString::new(name.as_bytes()).context("file name with a NUL byte")?;
                let c = &tree.nodes[*child];
                check(
                    ffi::sqfs_dir_writer_add_entry(
                        dw,
                        cname.as_ptr(),
                        c.inode_number,
                        refs[*child],
                        c.mode,
                    ),
                    what,
                )?;
            }
            check(ffi::sqfs_dir_writer_end(dw), what)?;
            // mksquashfs convention: the root's parent is inode_count + 1.
            let parent = match node.parent {
                Some(p) => tree.nodes[p].inode_number,
                None => tree.order.len() as u32 + 1,
            };
            let inode = Malloced::new(
                ffi::sqfs_dir_writer_create_inode(dw, 0, xattr, parent),
                "directory inode",
            )?;
            // libsquashfs counts every entry as a link; use the usual 2 + subdirectories.
            let raw = inode.ptr();
            if (*raw).base.type_ == ffi::SQFS_INODE_DIR as u16 {
                (*raw).data.dir.nlink = node.nlink;
            } else {
                (*raw).data.dir_ext.nlink = node.nlink;
            }
            Ok(inode)
        }
    }

    /// Writes inodes and directories in inode order (entries before their directory), then
    /// the tables and the final superblock, and pads the image.
    fn write_metadata(&mut self, tree: &Tree, opts: &BuildOptions) -> Result<()> {
        self.superblock.inode_table_start = self.size();
        let mut refs = vec![0u64; tree.nodes.len()];
        for &id in &tree.order {
            let node = &tree.nodes[id];
            let xattr = self.xattr_index(tree, id)?;
            let inode = match node.kind {
                Kind::Dir { .. } => self.dir_inode(tree, id, &refs, xattr)?,
                Kind::File => {
                    let inode = self.file_inodes.take(id)?;
                    // SAFETY: a file inode produced by the block processor, now finished.
                    unsafe {
                        if xattr != NO_XATTRS {
                            check(ffi::sqfs_inode_set_xattr_index(inode.ptr(), xattr), || {
                                format!("setting xattrs of {}", node.source.display())
                            })?;
                        }
                        // Basic file inodes have no link count field.
                        if node.nlink > 1
                            && (*inode.ptr()).base.type_ == ffi::SQFS_INODE_FILE as u16
                        {
                            check(ffi::sqfs_inode_make_extended(inode.ptr()), || {
                                format!("extending the inode of {}", node.source.display())
                            })?;
                        }
                        if (*inode.ptr()).base.type_ == ffi::SQFS_INODE_EXT_FILE as u16 {
                            (*inode.ptr()).data.file_ext.nlink = node.nlink;
                        }
                    }
                    inode
                }
                _ => {
                    let inode = Self::special_inode(tree, id)?;
                    if xattr != NO_XATTRS {
                        // SAFETY: a valid inode of a known type.
                        unsafe {
                            check(ffi::sqfs_inode_set_xattr_index(inode.ptr(), xattr), || {
                                format!("setting xattrs of {}", node.source.display())
                            })?;
                        }
                    }
                    inode
                }
            };
            // SAFETY: valid inode; id table and meta writer are live objects.
            unsafe {
                let base = &mut (*inode.ptr()).base;
                base.mode = node.mode;
                base.mod_time = node.mtime;
                base.inode_number = node.inode_number;
                let ids = self.id_table.ptr();
                check(
                    ffi::sqfs_id_table_id_to_index(ids, node.uid, &mut base.uid_idx),
                    || format!("recording owner of {}", node.source.display()),
                )?;
                check(
                    ffi::sqfs_id_table_id_to_index(ids, node.gid, &mut base.gid_idx),
                    || format!("recording group of {}", node.source.display()),
                )?;
                let (mut block, mut offset) = (0u64, 0u32);
                ffi::sqfs_meta_writer_get_position(
                    self.inode_writer.ptr(),
                    &mut block,
                    &mut offset,
                );
                refs[id] = (block << 16) | offset as u64;
                Self::io(
                    &self.file,
                    ffi::sqfs_meta_writer_write_inode(self.inode_writer.ptr(), inode.ptr()),
                    self.name,
                    "writing inodes",
                )?;
            }
        }
        let root = tree.root;
        let out = self.out();
        let cmp = self.compressor.ptr();
        let name = self.name;
        let file = &self.file;
        let sb = &mut self.superblock;
        // SAFETY: all objects are live; the superblock is ours.
        unsafe {
            Self::io(
                file,
                ffi::sqfs_meta_writer_flush(self.inode_writer.ptr()),
                name,
                "writing inodes",
            )?;
            Self::io(
                file,
                ffi::sqfs_meta_writer_flush(self.dirent_writer.ptr()),
                name,
                "writing directories",
            )?;
            sb.root_inode_ref = refs[root];
            sb.directory_table_start = (*out).get_size.map(|f| f(out)).unwrap_or(0);
            Self::io(
                file,
                ffi::sqfs_meta_write_write_to_file(self.dirent_writer.ptr()),
                name,
                "writing directories",
            )?;
            sb.inode_count = tree.order.len() as u32;
            Self::io(
                file,
                ffi::sqfs_frag_table_write(self.frag_table.ptr(), out, sb, cmp),
                name,
                "writing the fragment table",
            )?;
            if opts.exportable {
                Self::io(
                    file,
                    ffi::sqfs_dir_writer_write_export_table(
                        self.dir_writer.ptr(),
                        out,
                        cmp,
                        tree.nodes[root].inode_number,
                        refs[root],
                        sb,
                    ),
                    name,
                    "writing the export table",
                )?;
            }
            Self::io(
                file,
                ffi::sqfs_id_table_write(self.id_table.ptr(), out, sb, cmp),
                name,
                "writing the id table",
            )?;
            Self::io(
                file,
                ffi::sqfs_xattr_writer_flush(self.xattr_writer.ptr(), out, sb, cmp),
                name,
                "writing the xattr table",
            )?;
            sb.bytes_used = (*out).get_size.map(|f| f(out)).unwrap_or(0);
            Self::io(
                file,
                ffi::sqfs_super_write(sb, out),
                name,
                "writing the superblock",
            )?;
        }
        let used = self.superblock.bytes_used;
        let padded = used.div_ceil(DEVBLK_SIZE) * DEVBLK_SIZE;
        self.file
            .file()
            .set_len(padded)
            .with_context(|| format!("padding {}", self.name.display()))?;
        Ok(())
    }
}
