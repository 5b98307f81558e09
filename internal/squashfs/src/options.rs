//! How an image is built.

use crate::ffi;

/// Compression of data and metadata blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zlib, level 9: what mksquashfs and therefore Apptainer use by default.
    Gzip,
    /// zstd, level 15: smaller and much faster to decompress, needs kernel >= 4.14.
    Zstd,
    Xz,
    Lz4,
    Lzo,
    Lzma,
}

impl Compression {
    pub(crate) fn id(self) -> ffi::SQFS_COMPRESSOR {
        match self {
            Compression::Gzip => ffi::SQFS_COMP_GZIP,
            Compression::Zstd => ffi::SQFS_COMP_ZSTD,
            Compression::Xz => ffi::SQFS_COMP_XZ,
            Compression::Lz4 => ffi::SQFS_COMP_LZ4,
            Compression::Lzo => ffi::SQFS_COMP_LZO,
            Compression::Lzma => ffi::SQFS_COMP_LZMA,
        }
    }

    pub(crate) fn from_id(id: u16) -> Option<Compression> {
        Some(match id as ffi::SQFS_COMPRESSOR {
            ffi::SQFS_COMP_GZIP => Compression::Gzip,
            ffi::SQFS_COMP_ZSTD => Compression::Zstd,
            ffi::SQFS_COMP_XZ => Compression::Xz,
            ffi::SQFS_COMP_LZ4 => Compression::Lz4,
            ffi::SQFS_COMP_LZO => Compression::Lzo,
            ffi::SQFS_COMP_LZMA => Compression::Lzma,
            _ => return None,
        })
    }

    /// The name mksquashfs and unsquashfs use.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lz4 => "lz4",
            Compression::Lzo => "lzo",
            Compression::Lzma => "lzma",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Options for [`crate::build_from_dir`]. The defaults match `mksquashfs DIR OUT -noappend`
/// as Apptainer runs it: gzip, 128 KiB blocks, NFS-exportable, all cores.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub compression: Compression,
    /// Data block size in bytes: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Compression threads; 0 means one per available core.
    pub workers: usize,
    /// Filesystem creation time stored in the superblock. None: $SOURCE_DATE_EPOCH if set
    /// (reproducible builds), else now.
    pub mkfs_time: Option<u32>,
    /// Write the export table (lets the kernel export the mount over NFS), as mksquashfs does.
    pub exportable: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            compression: Compression::Gzip,
            block_size: 128 * 1024,
            workers: 0,
            mkfs_time: None,
            exportable: true,
        }
    }
}

impl BuildOptions {
    pub(crate) fn effective_workers(&self) -> u32 {
        let n = if self.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.workers
        };
        n.clamp(1, 256) as u32
    }

    pub(crate) fn effective_mkfs_time(&self) -> u32 {
        if let Some(t) = self.mkfs_time {
            return t;
        }
        if let Some(t) = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse().ok())
        {
            return t;
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
            .unwrap_or(0)
    }
}

/// What a build did.
#[derive(Debug, Clone, Default)]
pub struct BuildStats {
    /// Inodes in the image (directory entries that are hard links share one).
    pub inodes: u32,
    pub regular_files: u64,
    /// File data read from the source.
    pub bytes_read: u64,
    /// Size of the image file, padded to 4 KiB.
    pub image_size: u64,
    /// Things that could not be stored, one line each (e.g. POSIX ACL xattrs).
    pub warnings: Vec<String>,
}
