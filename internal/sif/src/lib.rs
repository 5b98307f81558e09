//! rctr-sif: pure-Rust reader and writer for the Singularity Image Format (SIF), with
//! `siftool`-compatible text output.
//!
//! A SIF file is a 128-byte global header, a table of fixed-size object descriptors, then the
//! objects' data (definition file, JSON metadata, squashfs partitions, signatures, ...).

mod arch;
mod codec;
pub mod descriptor;
mod gotime;
pub mod header;
mod image;
pub mod siftool;
mod tabwriter;
pub mod types;
mod writer;

pub use arch::host_arch;
pub use descriptor::{Descriptor, PartitionMetadata, SignatureMetadata};
pub use gotime::format_utc;
pub use header::Header;
pub use image::{is_sif, Partition, SifImage};
pub use types::{DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat};
pub use writer::{SifBuilder, LABELS_OBJECT_NAME};
