//! The SIF global header: the first 128 bytes of every SIF file.

use crate::arch;
use crate::codec::{fixed, trim_nuls, FieldReader, FieldWriter};

/// Size of the encoded global header.
pub const HEADER_LEN: usize = 128;
/// `SIF_MAGIC\0`, at byte 32.
pub const MAGIC: [u8; 10] = *b"SIF_MAGIC\0";
/// Byte offset of the magic within the header (after the launch script).
pub const MAGIC_OFFSET: usize = 32;
/// The only SIF specification version there is ("01").
pub const VERSION_01: [u8; 3] = *b"01\0";
/// Launch script Apptainer writes, so that `./image.sif` runs the container.
pub const APPTAINER_LAUNCH_SCRIPT: &str = "#!/usr/bin/env run-singularity\n";
/// Unix time of Go's zero `time.Time` (year 1), which deterministic SIF images store to mean
/// "no time"; siftool omits such times.
pub const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// SIF global header, field for field as stored on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Shell line run when the image is executed; NUL padded.
    pub launch_script: [u8; 32],
    pub magic: [u8; 10],
    pub version: [u8; 3],
    /// Arch code of the primary partition ("02\0" for amd64).
    pub arch: [u8; 3],
    /// Image UUID (all zeros in deterministic images).
    pub id: [u8; 16],
    /// Unix seconds.
    pub created_at: i64,
    pub modified_at: i64,
    pub descriptors_free: i64,
    pub descriptors_total: i64,
    pub descriptors_offset: i64,
    pub descriptors_size: i64,
    pub data_offset: i64,
    pub data_size: i64,
}

impl Header {
    /// Decodes the first [`HEADER_LEN`] bytes of `buf` (zero-filled if shorter: callers check).
    pub(crate) fn decode(buf: &[u8]) -> Header {
        let mut r = FieldReader::new(buf);
        Header {
            launch_script: r.bytes(),
            magic: r.bytes(),
            version: r.bytes(),
            arch: r.bytes(),
            id: r.bytes(),
            created_at: r.i64(),
            modified_at: r.i64(),
            descriptors_free: r.i64(),
            descriptors_total: r.i64(),
            descriptors_offset: r.i64(),
            descriptors_size: r.i64(),
            data_offset: r.i64(),
            data_size: r.i64(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::default();
        w.bytes(&self.launch_script)
            .bytes(&self.magic)
            .bytes(&self.version)
            .bytes(&self.arch)
            .bytes(&self.id)
            .i64(self.created_at)
            .i64(self.modified_at)
            .i64(self.descriptors_free)
            .i64(self.descriptors_total)
            .i64(self.descriptors_offset)
            .i64(self.descriptors_size)
            .i64(self.data_offset)
            .i64(self.data_size);
        debug_assert_eq!(w.buf.len(), HEADER_LEN);
        w.buf
    }

    /// A header for a new image, before any object is added.
    pub(crate) fn new_image(launch_script: &str, id: [u8; 16], now: i64) -> Header {
        Header {
            launch_script: fixed(launch_script.as_bytes()),
            magic: MAGIC,
            version: VERSION_01,
            arch: arch::ARCH_UNKNOWN,
            id,
            created_at: now,
            modified_at: now,
            descriptors_free: 0,
            descriptors_total: 0,
            descriptors_offset: 0,
            descriptors_size: 0,
            data_offset: 0,
            data_size: 0,
        }
    }

    /// Launch script bytes without NUL padding.
    pub fn launch_script(&self) -> &[u8] {
        trim_nuls(&self.launch_script)
    }

    /// Specification version as text ("01").
    pub fn version(&self) -> String {
        String::from_utf8_lossy(trim_nuls(&self.version)).into_owned()
    }

    /// Go name of the primary architecture, or "unknown".
    pub fn primary_arch(&self) -> &'static str {
        arch::go_arch(&self.arch)
    }

    /// Image UUID in canonical text form.
    pub fn id_string(&self) -> String {
        format_uuid(&self.id)
    }

    /// Whether the image has no UUID (deterministic images).
    pub fn id_is_nil(&self) -> bool {
        self.id == [0u8; 16]
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower-case hex.
pub fn format_uuid(id: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in id.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let mut h = Header::new_image(APPTAINER_LAUNCH_SCRIPT, [7; 16], 1_600_000_000);
        h.data_size = -5;
        h.arch = *b"02\0";
        let bytes = h.encode();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(&bytes[MAGIC_OFFSET..MAGIC_OFFSET + 10], &MAGIC);
        assert_eq!(Header::decode(&bytes), h);
        assert_eq!(h.primary_arch(), "amd64");
        assert_eq!(h.launch_script(), APPTAINER_LAUNCH_SCRIPT.as_bytes());
    }

    #[test]
    fn uuid_text_form() {
        let id = [
            0x3f, 0xa8, 0x02, 0xcc, 0x35, 0x8b, 0x45, 0xe3, 0xbc, 0xc0, 0x69, 0xdc, 0x7a, 0x45,
            0xf9, 0xf8,
        ];
        assert_eq!(format_uuid(&id), "3fa802cc-358b-45e3-bcc0-69dc7a45f9f8");
    }
}
