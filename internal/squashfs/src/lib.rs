//! rctr-squashfs: build squashfs images from a directory tree and read files out of them
//! (also at an offset inside a SIF) without mounting, on top of the system libsquashfs
//! (squashfs-tools-ng), without shelling out to mksquashfs/unsquashfs.
//!
//! ```no_run
//! use rctr_squashfs::{build_from_dir, BuildOptions, SquashfsReader};
//! # fn main() -> anyhow::Result<()> {
//! build_from_dir("rootfs".as_ref(), "out.sqfs".as_ref(), &BuildOptions::default())?;
//! let image = SquashfsReader::open("out.sqfs".as_ref(), 0)?;
//! let runscript = image.read_file("/.singularity.d/runscript")?;
//! # Ok(()) }
//! ```

mod extract;
mod ffi;
mod handle;
pub mod hostfs;
mod io;
mod options;
mod read;
mod tree;
mod write;

pub use extract::ExtractReport;
pub use options::{BuildOptions, BuildStats, Compression};
pub use read::{DirEntry, EntryKind, Metadata, SquashfsInfo, SquashfsReader};
pub use write::{build_from_dir, write_image};

/// The squashfs superblock magic, "hsqs" on disk.
pub const MAGIC: &[u8; 4] = b"hsqs";

/// Whether `bytes` (the start of a file or partition) begins with the squashfs magic.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}
