//! Reading CRIU's `stats-dump` image: how long the application was frozen.
//!
//! The file is two 32-bit magics, a 32-bit length, then a protobuf StatsEntry
//! whose field 1 is DumpStatsEntry { freezing_time = 1, frozen_time = 2, ... }
//! in microseconds. A few lines of varint decoding beat a protobuf dependency.

use std::path::Path;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DumpStats {
    pub freezing_us: u64,
    pub frozen_us: u64,
    pub memdump_us: u64,
    pub memwrite_us: u64,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A protobuf field value: a varint, or the (start, len) of a length-delimited one.
#[derive(Debug, Clone, Copy)]
enum Value {
    Varint(u64),
    Bytes(usize, usize),
}

/// The fields of a protobuf message, with their numbers.
fn fields(buf: &[u8]) -> Vec<(u64, Value)> {
    let mut out = vec![];
    let mut pos = 0;
    while pos < buf.len() {
        let Some(key) = varint(buf, &mut pos) else {
            break;
        };
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => match varint(buf, &mut pos) {
                Some(v) => out.push((field, Value::Varint(v))),
                None => break,
            },
            2 => {
                let Some(len) = varint(buf, &mut pos) else {
                    break;
                };
                let len = len as usize;
                if pos + len > buf.len() {
                    break;
                }
                out.push((field, Value::Bytes(pos, len)));
                pos += len;
            }
            5 => pos += 4,
            1 => pos += 8,
            _ => break,
        }
    }
    out
}

pub fn parse_dump_stats(bytes: &[u8]) -> Option<DumpStats> {
    let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
    let entry = bytes.get(12..12 + len)?;
    let (start, dlen) = fields(entry).into_iter().find_map(|(f, v)| match (f, v) {
        (1, Value::Bytes(start, len)) => Some((start, len)),
        _ => None,
    })?;
    let mut s = DumpStats::default();
    for (f, v) in fields(&entry[start..start + dlen]) {
        let Value::Varint(v) = v else { continue };
        match f {
            1 => s.freezing_us = v,
            2 => s.frozen_us = v,
            3 => s.memdump_us = v,
            4 => s.memwrite_us = v,
            _ => {}
        }
    }
    Some(s)
}

pub fn read_dump_stats(images_dir: &Path) -> Option<DumpStats> {
    parse_dump_stats(&std::fs::read(images_dir.join("stats-dump")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_hand_encoded_stats_entry() {
        // DumpStatsEntry { freezing_time: 300, frozen_time: 5, memdump_time: 1, memwrite_time: 2 }
        let inner = [0x08, 0xac, 0x02, 0x10, 0x05, 0x18, 0x01, 0x20, 0x02];
        let mut entry = vec![0x0a, inner.len() as u8];
        entry.extend_from_slice(&inner);
        let mut file = vec![0u8; 8];
        file.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        file.extend_from_slice(&entry);
        let s = parse_dump_stats(&file).unwrap();
        assert_eq!(
            s,
            DumpStats {
                freezing_us: 300,
                frozen_us: 5,
                memdump_us: 1,
                memwrite_us: 2
            }
        );
    }

    #[test]
    fn garbage_is_none_not_panic() {
        assert_eq!(parse_dump_stats(&[1, 2, 3]), None);
        assert_eq!(
            parse_dump_stats(&[0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 1]),
            None
        );
    }
}
