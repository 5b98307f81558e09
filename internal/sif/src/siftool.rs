//! Text output identical to the reference tool `siftool` (`list`, `info`, `header`).
//! Functions return bytes because names and launch scripts need not be UTF-8.

use crate::descriptor::Descriptor;
use crate::gotime;
use crate::header::{Header, GO_ZERO_TIME_UNIX};
use crate::tabwriter::TabWriter;
use crate::types::DataType;
use anyhow::Result;

const RULE: &str =
    "------------------------------------------------------------------------------\n";

/// `siftool header`: the global header.
pub fn format_header(h: &Header) -> Vec<u8> {
    let mut tw = TabWriter::new(1);
    let launch = h.launch_script();
    if !launch.is_empty() {
        tw.write_str("Launch Script:\t");
        tw.write(launch.strip_suffix(b"\n").unwrap_or(launch));
        tw.write_str("\n");
    }
    tw.write_str(&format!("Version:\t{}\n", h.version()));
    if h.primary_arch() != "unknown" {
        tw.write_str(&format!("Primary Architecture:\t{}\n", h.primary_arch()));
    }
    if !h.id_is_nil() {
        tw.write_str(&format!("ID:\t{}\n", h.id_string()));
    }
    if h.created_at != GO_ZERO_TIME_UNIX {
        tw.write_str(&format!(
            "Created At:\t{}\n",
            gotime::format_utc(h.created_at)
        ));
    }
    if h.modified_at != GO_ZERO_TIME_UNIX {
        tw.write_str(&format!(
            "Modified At:\t{}\n",
            gotime::format_utc(h.modified_at)
        ));
    }
    tw.write_str(&format!("Descriptors Free:\t{}\n", h.descriptors_free));
    tw.write_str(&format!("Descriptors Total:\t{}\n", h.descriptors_total));
    tw.write_str(&format!("Descriptors Offset:\t{}\n", h.descriptors_offset));
    tw.write_str(&format!(
        "Descriptors Size:\t{}\n",
        readable_size(h.descriptors_size)
    ));
    tw.write_str(&format!("Data Offset:\t{}\n", h.data_offset));
    tw.write_str(&format!("Data Size:\t{}\n", readable_size(h.data_size)));
    tw.finish()
}

/// `siftool list`: one line per object.
pub fn format_list(descriptors: &[Descriptor]) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(RULE);
    out.push_str(&format!(
        "{:<4} {:<8} {:<8} {:<26} {}\n",
        "ID", "|GROUP", "|LINK", "|SIF POSITION (start-end)", "|TYPE"
    ));
    out.push_str(RULE);
    for d in descriptors {
        out.push_str(&format!("{:<4} ", d.id));
        match d.group_id() {
            0 => out.push_str(&format!("|{:<7} ", "NONE")),
            id => out.push_str(&format!("|{id:<7} ")),
        }
        match d.linked_id() {
            (0, _) => out.push_str(&format!("|{:<7} ", "NONE")),
            (id, true) => out.push_str(&format!("|{id:<3} (G) ")),
            (id, false) => out.push_str(&format!("|{id:<7} ")),
        }
        let position = format!("|{}-{} ", d.offset, d.offset.saturating_add(d.size));
        out.push_str(&format!("{position:<26} "));
        out.push_str(&format!("|{}{}\n", d.data_type, list_details(d)));
    }
    out.into_bytes()
}

/// The parenthesised detail siftool lists after some types. Where siftool would print nothing
/// at all (unknown signature hash), the bare type name is kept so the line stays whole.
fn list_details(d: &Descriptor) -> String {
    match d.data_type {
        DataType::Partition => d
            .partition_metadata()
            .map(|md| format!(" ({}/{}/{})", md.fs_type, md.part_type, md.arch)),
        DataType::Signature => d
            .signature_metadata()
            .map(|md| format!(" ({})", md.hash_type)),
        DataType::CryptoMessage => d
            .crypto_message_metadata()
            .map(|(ft, mt)| format!(" ({ft}/{mt})")),
        DataType::Sbom => d.sbom_metadata().map(|f| format!(" ({f})")),
        _ => Ok(String::new()),
    }
    .unwrap_or_default()
}

/// `siftool info ID`: every field of one object. Errors, as siftool does, when the
/// type-specific metadata cannot be decoded.
pub fn format_info(d: &Descriptor) -> Result<Vec<u8>> {
    let mut tw = TabWriter::new(2);
    tw.write_str(&format!("\tData Type:\t{}\n", d.data_type));
    tw.write_str(&format!("\tID:\t{}\n", d.id));
    match d.group_id() {
        0 => tw.write_str("\tGroup ID:\tNONE\n"),
        id => tw.write_str(&format!("\tGroup ID:\t{id}\n")),
    }
    match d.linked_id() {
        (0, _) => tw.write_str("\tLinked ID:\tNONE\n"),
        (id, true) => tw.write_str(&format!("\tLinked ID:\t{id} (G)\n")),
        (id, false) => tw.write_str(&format!("\tLinked ID:\t{id}\n")),
    }
    tw.write_str(&format!("\tOffset:\t{}\n", d.offset));
    tw.write_str(&format!("\tSize:\t{}\n", d.size));
    if d.created_at != GO_ZERO_TIME_UNIX {
        tw.write_str(&format!(
            "\tCreated At:\t{}\n",
            gotime::format_utc(d.created_at)
        ));
    }
    if d.modified_at != GO_ZERO_TIME_UNIX {
        tw.write_str(&format!(
            "\tModified At:\t{}\n",
            gotime::format_utc(d.modified_at)
        ));
    }
    if !d.name_bytes().is_empty() {
        tw.write_str("\tName:\t");
        tw.write(d.name_bytes());
        tw.write_str("\n");
    }
    match d.data_type {
        DataType::Partition => {
            let md = d.partition_metadata()?;
            tw.write_str(&format!("\tFilesystem Type:\t{}\n", md.fs_type));
            tw.write_str(&format!("\tPartition Type:\t{}\n", md.part_type));
            tw.write_str(&format!("\tArchitecture:\t{}\n", md.arch));
        }
        DataType::Signature => {
            let md = d.signature_metadata()?;
            tw.write_str(&format!("\tHash Type:\t{}\n", md.hash_type));
            if let Some(fp) = md.fingerprint {
                let hex: String = fp.iter().map(|b| format!("{b:02X}")).collect();
                tw.write_str(&format!("\tEntity:\t{hex}\n"));
            }
        }
        DataType::CryptoMessage => {
            let (ft, mt) = d.crypto_message_metadata()?;
            tw.write_str(&format!("\tFormat Type:\t{ft}\n"));
            tw.write_str(&format!("\tMessage Type:\t{mt}\n"));
        }
        DataType::Sbom => {
            tw.write_str(&format!("\tFormat:\t{}\n", d.sbom_metadata()?));
        }
        DataType::OciBlob | DataType::OciRootIndex => {
            tw.write_str(&format!("\tDigest:\t{}\n", d.oci_digest()?));
        }
        _ => {}
    }
    Ok(tw.finish())
}

/// Size in siftool's human form: "847 B", "27 KiB", "3 MiB" (rounded to the nearest unit).
pub fn readable_size(size: i64) -> String {
    if -1024 < size && size < 1024 {
        return format!("{size} B");
    }
    let units = ['K', 'M', 'G', 'T', 'P', 'E'];
    let (mut div, mut exp) = (1024u64, 0usize);
    let mut n = size / 1024;
    while n <= -1024 || n >= 1024 {
        div *= 1024;
        exp += 1;
        n /= 1024;
    }
    let value = (size as f64 / div as f64).round();
    format!("{value:.0} {}iB", units[exp])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_sizes() {
        assert_eq!(readable_size(0), "0 B");
        assert_eq!(readable_size(1023), "1023 B");
        assert_eq!(readable_size(-1023), "-1023 B");
        assert_eq!(readable_size(1024), "1 KiB");
        assert_eq!(readable_size(28_080), "27 KiB");
        assert_eq!(readable_size(1536), "2 KiB");
        assert_eq!(readable_size(-2048), "-2 KiB");
        assert_eq!(readable_size(1024 * 1024 * 5), "5 MiB");
        assert_eq!(readable_size(i64::MAX), "8 EiB");
        assert_eq!(readable_size(i64::MIN), "-8 EiB");
    }
}
