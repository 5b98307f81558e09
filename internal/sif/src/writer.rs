//! Creating a SIF image the way `apptainer build` lays it out: header, a 48-slot descriptor
//! table at 4096, then the definition file and JSON objects packed unaligned, then the primary
//! squashfs system partition aligned to 4096 bytes (so it can be loop-mounted at its offset).

use crate::arch::sif_arch;
use crate::descriptor::{
    name_field, partition_extra, Descriptor, DESCRIPTOR_LEN, EXTRA_LEN, GROUP_MASK,
};
use crate::header::{Header, APPTAINER_LAUNCH_SCRIPT};
use crate::types::{DataType, FsType, PartType};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the descriptor table starts, as in the reference implementation.
const DESCRIPTORS_OFFSET: u64 = 4096;
/// Descriptor slots, as in the reference implementation.
const DESCRIPTOR_CAPACITY: usize = 48;
/// Partitions are aligned so the kernel can mount them straight from the file.
const PARTITION_ALIGNMENT: u64 = 4096;
/// All objects go to group 1, like Apptainer does.
const DEFAULT_GROUP: u32 = 1;
/// Name of the labels object added by [`SifBuilder::labels_json`].
pub const LABELS_OBJECT_NAME: &str = "labels.json";
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

/// Builds a SIF holding a squashfs system partition, optionally a definition file and labels.
#[derive(Debug, Default)]
pub struct SifBuilder {
    deffile: Option<Vec<u8>>,
    json_objects: Vec<(String, Vec<u8>)>,
    system: Option<(PathBuf, String)>,
}

/// One object to write: its descriptor fields and where its bytes come from.
struct Pending<'a> {
    data_type: DataType,
    name: &'a str,
    extra: [u8; EXTRA_LEN],
    alignment: u64,
    source: Source<'a>,
}

enum Source<'a> {
    Bytes(&'a [u8]),
    File(&'a Path),
}

impl SifBuilder {
    pub fn new() -> SifBuilder {
        SifBuilder::default()
    }

    /// Adds the definition file (a `Def.FILE` object).
    pub fn deffile(mut self, bytes: Vec<u8>) -> Self {
        self.deffile = Some(bytes);
        self
    }

    /// Adds the labels as a `JSON.Generic` object named [`LABELS_OBJECT_NAME`].
    pub fn labels_json(self, bytes: Vec<u8>) -> Self {
        self.json_object(LABELS_OBJECT_NAME, bytes)
    }

    /// Adds a named `JSON.Generic` object (objects are written sorted by name, like Apptainer).
    pub fn json_object(mut self, name: &str, bytes: Vec<u8>) -> Self {
        self.json_objects.retain(|(n, _)| n != name);
        self.json_objects.push((name.to_string(), bytes));
        self
    }

    /// Adds the primary squashfs system partition whose bytes are read from `squashfs_file`.
    /// `arch` is a Go architecture name ("amd64", see [`crate::host_arch`]).
    pub fn system_partition(mut self, squashfs_file: &Path, arch: &str) -> Self {
        self.system = Some((squashfs_file.to_path_buf(), arch.to_string()));
        self
    }

    /// Writes the SIF to `out` (create new, fails if it exists); the caller handles
    /// temp+rename. A partly written file is removed on failure.
    pub fn write(self, out: &Path) -> Result<()> {
        let shown = out.display();
        let (squashfs, arch) = self
            .system
            .as_ref()
            .ok_or_else(|| anyhow!("{shown}: cannot build SIF image without a system partition"))?;
        let arch_code = sif_arch(arch)
            .ok_or_else(|| anyhow!("{shown}: unknown architecture {arch:?} for SIF image"))?;
        check_squashfs(squashfs)?;

        let mut objects = Vec::new();
        if let Some(def) = &self.deffile {
            objects.push(Pending::bytes(DataType::Deffile, "", def));
        }
        let mut json: Vec<_> = self.json_objects.iter().collect();
        json.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, bytes) in json {
            objects.push(Pending::bytes(DataType::GenericJson, name, bytes));
        }
        objects.push(Pending {
            data_type: DataType::Partition,
            name: "",
            extra: partition_extra(FsType::Squash, PartType::PrimSys, arch_code),
            alignment: PARTITION_ALIGNMENT,
            source: Source::File(squashfs),
        });

        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o755) // SIF images are executable through their launch script.
            .open(out)
            .with_context(|| format!("cannot create SIF image {shown}"))?;
        let result = write_image(&mut file, &objects, arch_code)
            .and_then(|()| file.sync_all().map_err(Into::into));
        if let Err(err) = result {
            drop(file);
            let _ = std::fs::remove_file(out);
            return Err(err.context(format!("cannot write SIF image {shown}")));
        }
        Ok(())
    }
}

impl<'a> Pending<'a> {
    fn bytes(data_type: DataType, name: &'a str, bytes: &'a [u8]) -> Self {
        Pending {
            data_type,
            name,
            extra: [0; EXTRA_LEN],
            alignment: 1,
            source: Source::Bytes(bytes),
        }
    }
}

fn write_image(file: &mut File, objects: &[Pending], arch_code: [u8; 3]) -> Result<()> {
    if objects.len() > DESCRIPTOR_CAPACITY {
        bail!(
            "too many objects ({}) for {DESCRIPTOR_CAPACITY} descriptors",
            objects.len()
        );
    }
    let now = unix_now();
    let table_size = (DESCRIPTOR_CAPACITY * DESCRIPTOR_LEN) as u64;
    let data_offset = DESCRIPTORS_OFFSET + table_size;

    let mut table = vec![Descriptor::empty(); DESCRIPTOR_CAPACITY];
    let mut end = data_offset;
    for (slot, (object, d)) in objects.iter().zip(table.iter_mut()).enumerate() {
        let offset = end.next_multiple_of(object.alignment);
        file.seek(SeekFrom::Start(offset))?;
        let size = match &object.source {
            Source::Bytes(b) => {
                file.write_all(b)?;
                b.len() as u64
            }
            Source::File(path) => copy_file_into(path, file)?,
        };
        *d = Descriptor {
            data_type: object.data_type,
            used: true,
            id: slot as u32 + 1,
            group_id_raw: GROUP_MASK | DEFAULT_GROUP,
            linked_id_raw: 0,
            offset: to_i64(offset)?,
            size: to_i64(size)?,
            size_with_padding: to_i64(offset - end + size)?,
            created_at: now,
            modified_at: now,
            uid: 0,
            gid: 0,
            name: name_field(object.name)?,
            extra: object.extra,
        };
        end = offset + size;
    }

    let encoded: Vec<u8> = table.iter().flat_map(Descriptor::encode).collect();
    file.write_all_at(&encoded, DESCRIPTORS_OFFSET)?;

    let mut header = Header::new_image(APPTAINER_LAUNCH_SCRIPT, random_uuid()?, now);
    header.arch = arch_code;
    header.descriptors_free = (DESCRIPTOR_CAPACITY - objects.len()) as i64;
    header.descriptors_total = DESCRIPTOR_CAPACITY as i64;
    header.descriptors_offset = DESCRIPTORS_OFFSET as i64;
    header.descriptors_size = table_size as i64;
    header.data_offset = data_offset as i64;
    header.data_size = to_i64(end - data_offset)?;
    file.write_all_at(&header.encode(), 0)?;
    // The file must end where the last object ends, even if that object is empty.
    file.set_len(end)?;
    Ok(())
}

/// Streams `path` into `out` at its current position (kernel copy where possible).
fn copy_file_into(path: &Path, out: &mut File) -> Result<u64> {
    let mut src = File::open(path)
        .with_context(|| format!("cannot open squashfs image {}", path.display()))?;
    io::copy(&mut src, out).with_context(|| format!("cannot copy {}", path.display()))
}

fn check_squashfs(path: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("cannot read squashfs image {}", path.display()))?;
    if &magic != SQUASHFS_MAGIC {
        bail!("{}: not a squashfs image (bad magic)", path.display());
    }
    Ok(())
}

/// A random (version 4) UUID.
fn random_uuid() -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .context("cannot read /dev/urandom for the image UUID")?;
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Ok(id)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| anyhow!("offset {v} too large for SIF"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_version_4_and_random() {
        let (a, b) = (random_uuid().unwrap(), random_uuid().unwrap());
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 0b10);
    }
}
