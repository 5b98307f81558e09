//! Opening and validating a SIF file, and reading its objects.

use crate::descriptor::{Descriptor, DESCRIPTOR_LEN};
use crate::header::{Header, HEADER_LEN, MAGIC, MAGIC_OFFSET, VERSION_01};
use crate::types::{DataType, FsType, PartType};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A partition located in the file, ready to be mounted at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub id: u32,
    pub offset: u64,
    pub size: u64,
    pub fs_type: FsType,
    pub part_type: PartType,
    /// Go arch name: "amd64", "arm64", ... ("unknown" if the code is not known).
    pub arch: String,
}

/// An opened, validated SIF file. Every used descriptor's data lies inside the file.
#[derive(Debug)]
pub struct SifImage {
    path: PathBuf,
    file: File,
    header: Header,
    /// Used descriptors, in table order.
    descriptors: Vec<Descriptor>,
}

/// Whether `path` starts with a SIF header (checks the magic only).
pub fn is_sif(path: &Path) -> Result<bool> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = Vec::with_capacity(MAGIC_OFFSET + MAGIC.len());
    file.take((MAGIC_OFFSET + MAGIC.len()) as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(head.get(MAGIC_OFFSET..) == Some(&MAGIC[..]))
}

impl SifImage {
    /// Opens and validates the SIF file at `path`.
    pub fn open(path: &Path) -> Result<SifImage> {
        let shown = path.display();
        let file = File::open(path).with_context(|| format!("cannot open SIF image {shown}"))?;
        let file_len = file
            .metadata()
            .with_context(|| format!("cannot stat SIF image {shown}"))?
            .len();

        let mut head = vec![0u8; HEADER_LEN.min(file_len as usize)];
        file.read_exact_at(&mut head, 0)
            .with_context(|| format!("cannot read SIF header of {shown}"))?;
        if head.get(MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()) != Some(&MAGIC[..]) {
            bail!("{shown}: not a SIF image (no SIF_MAGIC signature at byte {MAGIC_OFFSET})");
        }
        if head.len() < HEADER_LEN {
            bail!(
                "{shown}: truncated SIF image: {file_len} bytes, shorter than the \
                 {HEADER_LEN}-byte SIF header (incomplete copy or download?)"
            );
        }
        let header = Header::decode(&head);
        if header.version != VERSION_01 {
            bail!(
                "{shown}: unsupported SIF version {:?} (only version 01 is supported)",
                String::from_utf8_lossy(crate::codec::trim_nuls(&header.version))
            );
        }

        let descriptors = read_descriptor_table(&file, &header, file_len)
            .with_context(|| format!("{shown}: corrupt or truncated SIF image"))?;
        Ok(SifImage {
            path: path.to_path_buf(),
            file,
            header,
            descriptors,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Used descriptors, in table order.
    pub fn descriptors(&self) -> &[Descriptor] {
        &self.descriptors
    }

    /// The descriptor of object `id`.
    pub fn descriptor(&self, id: u32) -> Result<&Descriptor> {
        if id == 0 {
            bail!(
                "{}: invalid object ID 0 (IDs start at 1)",
                self.path.display()
            );
        }
        let mut found = self.descriptors.iter().filter(|d| d.id == id);
        match (found.next(), found.next()) {
            (Some(d), None) => Ok(d),
            (None, _) => bail!(
                "{}: no object with ID {id} (`rctr sif list` shows the IDs)",
                self.path.display()
            ),
            (Some(_), Some(_)) => bail!("{}: several objects have ID {id}", self.path.display()),
        }
    }

    /// The primary system partition (squashfs/ext3/...): offset and size in the file, fs type,
    /// arch.
    pub fn primary_system_partition(&self) -> Result<Partition> {
        let shown = self.path.display();
        let mut primaries = self.descriptors.iter().filter(|d| {
            d.partition_metadata()
                .is_ok_and(|md| md.part_type == PartType::PrimSys)
        });
        let d = match (primaries.next(), primaries.next()) {
            (Some(d), None) => d,
            (None, _) => bail!("{shown}: SIF image has no primary system partition"),
            (Some(_), Some(_)) => {
                bail!("{shown}: SIF image has several primary system partitions")
            }
        };
        let md = d.partition_metadata()?;
        Ok(Partition {
            id: d.id,
            // Validated non-negative at open.
            offset: d.offset as u64,
            size: d.size as u64,
            fs_type: md.fs_type,
            part_type: md.part_type,
            arch: md.arch.to_string(),
        })
    }

    /// Data of object `id` (the deffile, labels JSON, ...), read into memory.
    pub fn read_object(&self, id: u32) -> Result<Vec<u8>> {
        let d = self.descriptor(id)?;
        let mut data = vec![0u8; d.size as usize];
        self.file
            .read_exact_at(&mut data, d.offset as u64)
            .with_context(|| self.object_read_error(d))?;
        Ok(data)
    }

    /// Streams the data of object `id` to `out` without loading it whole; returns its size.
    pub fn copy_object(&self, id: u32, out: &mut dyn Write) -> Result<u64> {
        let d = self.descriptor(id)?;
        let mut buf = vec![0u8; 1 << 20];
        let (mut pos, end) = (d.offset as u64, (d.offset + d.size) as u64);
        while pos < end {
            let want = buf.len().min((end - pos) as usize);
            let n = match self.file.read_at(&mut buf[..want], pos) {
                Ok(0) => {
                    return Err(anyhow!("unexpected end of file"))
                        .with_context(|| self.object_read_error(d))
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).with_context(|| self.object_read_error(d)),
            };
            out.write_all(&buf[..n])
                .context("cannot write object data")?;
            pos += n as u64;
        }
        Ok(d.size as u64)
    }

    /// First object of the given data type, if any (e.g. `DataType::Deffile`).
    pub fn find_object(&self, dt: DataType) -> Option<&Descriptor> {
        self.descriptors.iter().find(|d| d.data_type == dt)
    }

    fn object_read_error(&self, d: &Descriptor) -> String {
        format!(
            "{}: cannot read object {} ({}, {} bytes at offset {})",
            self.path.display(),
            d.id,
            d.data_type,
            d.size,
            d.offset
        )
    }
}

/// Reads the descriptor table and checks that it, and the data of every used descriptor,
/// lies inside the file. Returns the used descriptors.
fn read_descriptor_table(file: &File, h: &Header, file_len: u64) -> Result<Vec<Descriptor>> {
    let (total, offset, size) = (
        h.descriptors_total,
        h.descriptors_offset,
        h.descriptors_size,
    );
    if total < 0 || offset < 0 || size < 0 {
        bail!("negative descriptor table fields in header (total {total}, offset {offset}, size {size})");
    }
    let table_len = (total as u64)
        .checked_mul(DESCRIPTOR_LEN as u64)
        .filter(|&len| len <= size as u64)
        .ok_or_else(|| {
            anyhow!("header announces {total} descriptors, more than fit in its {size}-byte table")
        })?;
    let table_end = (offset as u64).saturating_add(table_len);
    if table_end > file_len {
        bail!(
            "descriptor table ends at byte {table_end} but the file has only {file_len} bytes \
             (incomplete copy or download?)"
        );
    }

    let mut table = vec![0u8; table_len as usize];
    file.read_exact_at(&mut table, offset as u64)
        .context("cannot read descriptor table")?;

    let mut used = Vec::new();
    for record in table.chunks_exact(DESCRIPTOR_LEN) {
        let d = Descriptor::decode(record);
        if !d.used {
            continue;
        }
        let end = d
            .offset
            .checked_add(d.size)
            .filter(|_| d.offset >= 0 && d.size >= 0);
        match end {
            Some(end) if end as u64 <= file_len => used.push(d),
            _ => bail!(
                "object {} ({}) claims {} bytes at offset {}, past the end of the {file_len}-byte \
                 file (incomplete copy or download?)",
                d.id,
                d.data_type,
                d.size,
                d.offset
            ),
        }
    }
    Ok(used)
}
