//! Object descriptors: the fixed-size records of the descriptor table, and the
//! type-specific metadata packed in their "extra" field.

use crate::arch;
use crate::codec::{fixed, trim_nuls, FieldReader, FieldWriter};
use crate::types::{DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat};
use anyhow::{bail, Result};

/// Size of one encoded descriptor.
pub const DESCRIPTOR_LEN: usize = 585;
/// Set on group IDs and on links that point at a group rather than an object.
pub const GROUP_MASK: u32 = 0xf000_0000;
const NAME_LEN: usize = 128;
pub(crate) const EXTRA_LEN: usize = 384;
/// Length of the signing entity (key fingerprint) field of signatures.
const ENTITY_LEN: usize = 256;
/// siftool shows the entity as a 20-byte (PGP v4) fingerprint.
const FINGERPRINT_LEN: usize = 20;

/// One object descriptor, field for field as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub data_type: DataType,
    pub used: bool,
    pub id: u32,
    /// Raw group field: `GROUP_MASK | group` (group 0 = no group).
    pub group_id_raw: u32,
    /// Raw link field: an object ID, or `GROUP_MASK | group`, or 0 for no link.
    pub linked_id_raw: u32,
    /// Byte offset of the object's data in the file.
    pub offset: i64,
    /// Size of the data.
    pub size: i64,
    /// Size plus the alignment padding in front of it.
    pub size_with_padding: i64,
    /// Unix seconds.
    pub created_at: i64,
    pub modified_at: i64,
    /// Deprecated by the format; kept for faithful round trips.
    pub uid: i64,
    pub gid: i64,
    pub name: [u8; NAME_LEN],
    /// Type-specific metadata (see the `*_metadata` methods).
    pub extra: [u8; EXTRA_LEN],
}

/// Metadata of a partition object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub fs_type: FsType,
    pub part_type: PartType,
    /// Go arch name, or "unknown".
    pub arch: &'static str,
}

/// Metadata of a signature object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureMetadata {
    pub hash_type: HashType,
    /// Signing key fingerprint, when present.
    pub fingerprint: Option<[u8; FINGERPRINT_LEN]>,
}

impl Descriptor {
    /// Decodes one descriptor record (zero-filled if `buf` is short: callers check).
    pub(crate) fn decode(buf: &[u8]) -> Descriptor {
        let mut r = FieldReader::new(buf);
        Descriptor {
            data_type: DataType::from_code(r.i32()),
            used: r.u8() != 0,
            id: r.u32(),
            group_id_raw: r.u32(),
            linked_id_raw: r.u32(),
            offset: r.i64(),
            size: r.i64(),
            size_with_padding: r.i64(),
            created_at: r.i64(),
            modified_at: r.i64(),
            uid: r.i64(),
            gid: r.i64(),
            name: r.bytes(),
            extra: r.bytes(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::default();
        w.i32(self.data_type.code())
            .u8(u8::from(self.used))
            .u32(self.id)
            .u32(self.group_id_raw)
            .u32(self.linked_id_raw)
            .i64(self.offset)
            .i64(self.size)
            .i64(self.size_with_padding)
            .i64(self.created_at)
            .i64(self.modified_at)
            .i64(self.uid)
            .i64(self.gid)
            .bytes(&self.name)
            .bytes(&self.extra);
        debug_assert_eq!(w.buf.len(), DESCRIPTOR_LEN);
        w.buf
    }

    /// An unused (all zero) table slot.
    pub(crate) fn empty() -> Descriptor {
        Descriptor::decode(&[0u8; DESCRIPTOR_LEN])
    }

    /// Group this object belongs to, or 0 when it is in no group.
    pub fn group_id(&self) -> u32 {
        self.group_id_raw & !GROUP_MASK
    }

    /// The object or group this object is linked to (0 = none), and whether it is a group.
    pub fn linked_id(&self) -> (u32, bool) {
        (
            self.linked_id_raw & !GROUP_MASK,
            self.linked_id_raw & GROUP_MASK == GROUP_MASK,
        )
    }

    /// Name bytes without NUL padding (may be non-UTF-8).
    pub fn name_bytes(&self) -> &[u8] {
        trim_nuls(&self.name)
    }

    /// Name as text (invalid UTF-8 replaced).
    pub fn name(&self) -> String {
        String::from_utf8_lossy(self.name_bytes()).into_owned()
    }

    /// Partition metadata; errors if this is not a partition.
    pub fn partition_metadata(&self) -> Result<PartitionMetadata> {
        self.expect_type(&[DataType::Partition])?;
        let mut r = FieldReader::new(&self.extra);
        Ok(PartitionMetadata {
            fs_type: FsType::from_code(r.i32()),
            part_type: PartType::from_code(r.i32()),
            arch: arch::go_arch(&r.bytes()),
        })
    }

    /// Signature metadata; errors if this is not a signature or its hash type is unknown
    /// (as siftool does).
    pub fn signature_metadata(&self) -> Result<SignatureMetadata> {
        self.expect_type(&[DataType::Signature])?;
        let mut r = FieldReader::new(&self.extra);
        let hash_type = HashType::from_code(r.i32());
        if let HashType::Unknown(code) = hash_type {
            bail!(
                "signature object {}: unsupported hash algorithm {code}",
                self.id
            );
        }
        let entity: [u8; ENTITY_LEN] = r.bytes();
        let fingerprint: [u8; FINGERPRINT_LEN] = fixed(&entity);
        let present = fingerprint.iter().any(|&b| b != 0);
        Ok(SignatureMetadata {
            hash_type,
            fingerprint: present.then_some(fingerprint),
        })
    }

    /// Crypto message format and message type; errors if this is not a crypto message.
    pub fn crypto_message_metadata(&self) -> Result<(FormatType, MessageType)> {
        self.expect_type(&[DataType::CryptoMessage])?;
        let mut r = FieldReader::new(&self.extra);
        Ok((
            FormatType::from_code(r.i32()),
            MessageType::from_code(r.i32()),
        ))
    }

    /// SBOM format; errors if this is not an SBOM.
    pub fn sbom_metadata(&self) -> Result<SbomFormat> {
        self.expect_type(&[DataType::Sbom])?;
        Ok(SbomFormat::from_code(FieldReader::new(&self.extra).i32()))
    }

    /// OCI digest ("sha256:<hex>") of an OCI blob or root index; errors if malformed.
    pub fn oci_digest(&self) -> Result<String> {
        self.expect_type(&[DataType::OciRootIndex, DataType::OciBlob])?;
        let text = self.extra.split(|&b| b == 0).next().unwrap_or_default();
        let text = String::from_utf8_lossy(text);
        let valid = match text.split_once(':') {
            Some(("sha256", hex)) => {
                hex.len() == 64 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            }
            _ => false,
        };
        if !valid {
            bail!("object {}: malformed OCI digest {text:?}", self.id);
        }
        Ok(text.into_owned())
    }

    fn expect_type(&self, want: &[DataType]) -> Result<()> {
        if !want.contains(&self.data_type) {
            bail!(
                "object {} is of type {}, expected {}",
                self.id,
                self.data_type,
                want.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
        Ok(())
    }
}

/// Encodes partition metadata into an "extra" field.
pub(crate) fn partition_extra(fs: FsType, pt: PartType, arch_code: [u8; 3]) -> [u8; EXTRA_LEN] {
    let mut w = FieldWriter::default();
    w.i32(fs.code()).i32(pt.code()).bytes(&arch_code);
    fixed(&w.buf)
}

/// Encodes a name field.
pub(crate) fn name_field(name: &str) -> Result<[u8; NAME_LEN]> {
    if name.len() > NAME_LEN {
        bail!("object name {name:?} is longer than {NAME_LEN} bytes");
    }
    Ok(fixed(name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition() -> Descriptor {
        let mut d = Descriptor::empty();
        d.data_type = DataType::Partition;
        d.used = true;
        d.id = 3;
        d.group_id_raw = GROUP_MASK | 1;
        d.linked_id_raw = GROUP_MASK | 2;
        d.offset = 4096;
        d.size = 10;
        d.name = name_field("part").unwrap();
        d.extra = partition_extra(FsType::Squash, PartType::PrimSys, *b"04\0");
        d
    }

    #[test]
    fn encode_decode_round_trip() {
        let d = partition();
        let bytes = d.encode();
        assert_eq!(bytes.len(), DESCRIPTOR_LEN);
        assert_eq!(Descriptor::decode(&bytes), d);
    }

    #[test]
    fn groups_links_and_metadata() {
        let d = partition();
        assert_eq!(d.group_id(), 1);
        assert_eq!(d.linked_id(), (2, true));
        assert_eq!(d.name(), "part");
        let md = d.partition_metadata().unwrap();
        assert_eq!(md.fs_type, FsType::Squash);
        assert_eq!(md.part_type, PartType::PrimSys);
        assert_eq!(md.arch, "arm64");
        let err = d.signature_metadata().unwrap_err().to_string();
        assert!(err.contains("type FS, expected Signature"), "{err}");
    }

    #[test]
    fn oci_digest_is_validated() {
        let mut d = Descriptor::empty();
        d.data_type = DataType::OciBlob;
        d.extra = fixed(format!("sha256:{}", "a".repeat(64)).as_bytes());
        assert!(d.oci_digest().unwrap().starts_with("sha256:aaaa"));
        d.extra = fixed(b"sha256:XYZ");
        assert!(d.oci_digest().is_err());
    }

    #[test]
    fn name_too_long_is_an_error() {
        assert!(name_field(&"x".repeat(129)).is_err());
    }
}
