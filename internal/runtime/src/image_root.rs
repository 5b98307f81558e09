//! Which filesystem to mount for an image path: a SIF's primary squashfs
//! partition, a plain squashfs file, or a directory (sandbox).

use crate::plan::{RootKind, RootSource};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

pub fn resolve_root(image: &str) -> Result<RootSource> {
    let path = Path::new(image);
    let meta = std::fs::metadata(path)
        .with_context(|| format!("image {image} cannot be opened: check the path"))?;
    let abs =
        std::fs::canonicalize(path).with_context(|| format!("image {image} cannot be opened"))?;
    if meta.is_dir() {
        return Ok(RootSource {
            kind: RootKind::Dir,
            path: abs,
            offset: 0,
            size: 0,
        });
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("image {image} cannot be read"))?;
    if &magic == SQUASHFS_MAGIC {
        return Ok(RootSource {
            kind: RootKind::Squashfs,
            path: abs,
            offset: 0,
            size: 0,
        });
    }
    if !rctr_sif::is_sif(path)? {
        bail!("{image} is neither a SIF nor a squashfs image nor a directory");
    }
    let sif = rctr_sif::SifImage::open(path)?;
    let part = sif.primary_system_partition()?;
    if part.fs_type != rctr_sif::FsType::Squash {
        bail!(
            "{image}: its system partition is {:?}, but rctr can only run squashfs partitions",
            part.fs_type
        );
    }
    let host = rctr_sif::host_arch();
    if part.arch != host {
        bail!(
            "{image} is built for {} but this host is {host}: use an image for {host}",
            part.arch
        );
    }
    Ok(RootSource {
        kind: RootKind::Squashfs,
        path: abs,
        offset: part.offset,
        size: part.size,
    })
}
