//! Opening an image to run or inspect: a SIF file (squashfs system partition at an offset), a
//! plain squashfs file, or a sandbox directory. Everything that would make the image unusable
//! here (wrong architecture, not squashfs, corrupt superblock) is reported on open.

use crate::sandbox::resolve_in_root;
use anyhow::{bail, Context, Result};
use rctr_sif::{DataType, FsType, SifImage};
use rctr_squashfs::SquashfsReader;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Name of the SIF JSON object holding `apptainer inspect` metadata.
pub const INSPECT_METADATA_OBJECT: &str = "inspect-metadata.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A SIF file; the root filesystem is its primary squashfs system partition.
    Sif,
    /// A bare squashfs file.
    Squashfs,
    /// An unpacked root filesystem directory.
    Sandbox,
}

impl std::fmt::Display for ImageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageKind::Sif => "SIF",
            ImageKind::Squashfs => "squashfs",
            ImageKind::Sandbox => "sandbox directory",
        })
    }
}

/// An opened image. For SIF and squashfs, loop-mount `path` read-only at `squashfs_offset`
/// (limited to `squashfs_size`); a sandbox is bind-mounted.
#[derive(Debug)]
pub struct ImageSource {
    pub kind: ImageKind,
    /// Absolute path of the image file or directory.
    pub path: PathBuf,
    /// Byte offset of the squashfs filesystem in `path` (0 for plain squashfs and sandboxes).
    pub squashfs_offset: u64,
    /// Size of the squashfs partition in a SIF, or of the plain squashfs file; None for a
    /// sandbox.
    pub squashfs_size: Option<u64>,
    /// Go architecture name recorded in a SIF ("amd64"); None when the format records none.
    pub arch: Option<String>,
    reader: Option<SquashfsReader>,
    sif: Option<SifImage>,
}

fn read_head(path: &Path, len: usize) -> Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    let mut head = Vec::with_capacity(len);
    file.take(len as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read image {}", path.display()))?;
    Ok(head)
}

impl ImageSource {
    /// Opens `path` as a SIF, squashfs or sandbox image and checks it can run on this host.
    pub fn open(path: &Path) -> Result<ImageSource> {
        Self::open_checked(path, true)
    }

    /// Opens `path` to read its contents only (inspect): an image built for another
    /// architecture is fine, as with `apptainer inspect`.
    pub fn open_any_arch(path: &Path) -> Result<ImageSource> {
        Self::open_checked(path, false)
    }

    fn open_checked(path: &Path, check_arch: bool) -> Result<ImageSource> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot open image {}", path.display()))?;
        let path = std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve image path {}", path.display()))?;
        let shown = path.display();
        if meta.is_dir() {
            return Ok(ImageSource {
                kind: ImageKind::Sandbox,
                path,
                squashfs_offset: 0,
                squashfs_size: None,
                arch: None,
                reader: None,
                sif: None,
            });
        }
        if !meta.is_file() {
            bail!("{shown}: not an image (neither a regular file nor a directory)");
        }
        if rctr_sif::is_sif(&path)? {
            return Self::open_sif(path, check_arch);
        }
        if rctr_squashfs::has_magic(&read_head(&path, 4)?) {
            let reader = SquashfsReader::open(&path, 0)?;
            return Ok(ImageSource {
                kind: ImageKind::Squashfs,
                squashfs_offset: 0,
                squashfs_size: Some(meta.len()),
                arch: None,
                reader: Some(reader),
                sif: None,
                path,
            });
        }
        bail!("{shown}: not a SIF or squashfs image (no SIF or squashfs signature) and not a sandbox directory")
    }

    fn open_sif(path: PathBuf, check_arch: bool) -> Result<ImageSource> {
        let shown = path.display();
        let sif = SifImage::open(&path)?;
        let part = sif.primary_system_partition()?;
        if part.fs_type != FsType::Squash {
            bail!(
                "{shown}: the SIF system partition is {} and not squashfs; rctr only runs squashfs images \
                 (rebuild it with `apptainer build` or `rctr build`)",
                part.fs_type
            );
        }
        let host = rctr_sif::host_arch();
        if check_arch && part.arch != host {
            bail!(
                "{shown}: image architecture is {} but this host is {host}; build or pull an image for {host}",
                part.arch
            );
        }
        let reader =
            SquashfsReader::open_range(&path, part.offset, Some(part.size)).with_context(|| {
                format!(
                    "{shown}: SIF system partition {} is not a valid squashfs",
                    part.id
                )
            })?;
        Ok(ImageSource {
            kind: ImageKind::Sif,
            squashfs_offset: part.offset,
            squashfs_size: Some(part.size),
            arch: Some(part.arch),
            reader: Some(reader),
            sif: Some(sif),
            path,
        })
    }

    /// The squashfs reader of a SIF or squashfs image (None for a sandbox).
    pub fn squashfs(&self) -> Option<&SquashfsReader> {
        self.reader.as_ref()
    }

    /// The SIF container (None unless `kind` is Sif).
    pub fn sif(&self) -> Option<&SifImage> {
        self.sif.as_ref()
    }

    /// Content of the regular file `inner` inside the image (symlinks followed inside the
    /// image); None if it does not exist.
    pub fn read_file(&self, inner: impl AsRef<Path>) -> Result<Option<Vec<u8>>> {
        let inner = inner.as_ref();
        if let Some(reader) = &self.reader {
            return reader.read_file(inner);
        }
        let host = resolve_in_root(&self.path, inner, true)?;
        match std::fs::metadata(&host) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("{} in {}", inner.display(), self.path.display()))
            }
            Ok(m) if m.is_dir() => {
                bail!(
                    "{} in {}: is a directory, not a regular file",
                    inner.display(),
                    self.path.display()
                )
            }
            Ok(_) => std::fs::read(&host).map(Some).with_context(|| {
                format!("cannot read {} in {}", inner.display(), self.path.display())
            }),
        }
    }

    /// Whether `inner` exists in the image (following symlinks).
    pub fn exists(&self, inner: impl AsRef<Path>) -> Result<bool> {
        let inner = inner.as_ref();
        if let Some(reader) = &self.reader {
            return reader.exists(inner);
        }
        Ok(resolve_in_root(&self.path, inner, true)?.exists())
    }

    /// Names of the entries of directory `inner`, sorted; empty if it does not exist.
    pub fn list_dir(&self, inner: impl AsRef<Path>) -> Result<Vec<String>> {
        let inner = inner.as_ref();
        let mut names = if let Some(reader) = &self.reader {
            if !reader.exists(inner)? {
                return Ok(Vec::new());
            }
            reader
                .list_dir(inner)?
                .into_iter()
                .map(|e| e.name.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        } else {
            let host = resolve_in_root(&self.path, inner, true)?;
            match std::fs::read_dir(&host) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e).with_context(|| format!("cannot list {}", host.display())),
                Ok(it) => it
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<Vec<_>>>()
                    .with_context(|| format!("cannot list {}", host.display()))?,
            }
        };
        names.sort();
        Ok(names)
    }

    /// A SIF object's data: the definition file, or a JSON object by name.
    pub(crate) fn sif_object(
        &self,
        data_type: DataType,
        name: Option<&str>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(sif) = &self.sif else {
            return Ok(None);
        };
        let found = sif
            .descriptors()
            .iter()
            .find(|d| d.data_type == data_type && name.is_none_or(|n| d.name() == n));
        found.map(|d| sif.read_object(d.id)).transpose()
    }
}
