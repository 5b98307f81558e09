//! Which filesystem to mount for an image path: a SIF's primary squashfs
//! partition, a plain squashfs file, or a directory (sandbox).

use crate::plan::{RootKind, RootSource};
use anyhow::Result;
use rctr_image::{ImageKind, ImageSource};
use std::path::Path;

pub fn resolve_root(image: &str) -> Result<RootSource> {
    let src = ImageSource::open(Path::new(image))?;
    rctr_log::verbose!("image {}: {}", src.path.display(), src.kind);
    if src.kind != ImageKind::Sandbox {
        rctr_log::debug!(
            "image {}: squashfs at offset {}, {} bytes",
            src.path.display(),
            src.squashfs_offset,
            src.squashfs_size.unwrap_or(0)
        );
    }
    Ok(match src.kind {
        ImageKind::Sandbox => RootSource {
            kind: RootKind::Dir,
            path: src.path,
            offset: 0,
            size: 0,
        },
        ImageKind::Sif | ImageKind::Squashfs => RootSource {
            kind: RootKind::Squashfs,
            path: src.path,
            offset: src.squashfs_offset,
            size: src.squashfs_size.unwrap_or(0),
        },
    })
}
