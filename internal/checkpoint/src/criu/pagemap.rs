//! CRIU's pagemap images (`pagemap-PID.img`): which pages of a process were saved, and so
//! where each range lies in its pages image (`pages-N.img`). A lazy restore reads them to
//! serve memory itself and to know which pieces the restore reads before the application
//! runs.
//!
//! Format: two magic numbers, then messages each preceded by its length (u32, little
//! endian): one `pagemap_head { pages_id = 1 }`, then `pagemap_entry { vaddr = 1,
//! compat_nr_pages = 2, in_parent = 3, flags = 4, nr_pages = 5 }` (protobuf).

use anyhow::{bail, Context, Result};
use std::path::Path;

const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
const PAGEMAP_MAGIC: u32 = 0x5608_4025;

const PE_PARENT: u32 = 1 << 0;
const PE_LAZY: u32 = 1 << 1;
const PE_PRESENT: u32 = 1 << 2;

pub const PAGE_SIZE: u64 = 4096;

/// One range of saved pages, placed in the pages image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRange {
    pub vaddr: u64,
    pub pages: u64,
    /// Where its bytes start in the pages image.
    pub offset: u64,
    /// CRIU may bring it in after the application runs (anonymous private memory).
    pub lazy: bool,
}

impl PageRange {
    pub fn len(&self) -> u64 {
        self.pages * PAGE_SIZE
    }

    pub fn end(&self) -> u64 {
        self.vaddr + self.len()
    }
}

/// A process's pagemap: its pages image and the ranges stored there, in address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pagemap {
    pub pages_id: u32,
    pub ranges: Vec<PageRange>,
}

impl Pagemap {
    pub fn read(path: &Path) -> Result<Pagemap> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Pagemap::parse(&bytes).with_context(|| format!("cannot parse {}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> Result<Pagemap> {
        let mut at = 0usize;
        let u32_at = |at: &mut usize| -> Result<u32> {
            let b = bytes
                .get(*at..*at + 4)
                .context("the image ends inside a number")?;
            *at += 4;
            Ok(u32::from_le_bytes(b.try_into()?))
        };
        if u32_at(&mut at)? != IMG_COMMON_MAGIC || u32_at(&mut at)? != PAGEMAP_MAGIC {
            bail!("not a CRIU pagemap image");
        }
        let mut messages = vec![];
        while at < bytes.len() {
            let len = u32_at(&mut at)? as usize;
            let msg = bytes
                .get(at..at + len)
                .context("the image ends inside a message")?;
            messages.push(msg);
            at += len;
        }
        let (head, entries) = messages.split_first().context("the image has no head")?;
        let pages_id = fields(head)?
            .into_iter()
            .find(|(n, _)| *n == 1)
            .context("the head names no pages image")?
            .1 as u32;
        let mut ranges = vec![];
        let mut offset = 0u64;
        for e in entries {
            let (mut vaddr, mut compat, mut nr, mut flags, mut in_parent) =
                (None, 0u64, None, None, false);
            for (n, v) in fields(e)? {
                match n {
                    1 => vaddr = Some(v),
                    2 => compat = v,
                    3 => in_parent = v != 0,
                    4 => flags = Some(v as u32),
                    5 => nr = Some(v),
                    _ => {}
                }
            }
            // As CRIU reads entries written by its older versions.
            let flags = if in_parent {
                flags.unwrap_or(0) | PE_PARENT
            } else {
                flags.unwrap_or(PE_PRESENT)
            };
            let pages = nr.unwrap_or(compat);
            let vaddr = vaddr.context("an entry has no address")?;
            if flags & PE_PARENT != 0 {
                bail!("pages kept in a parent image are not supported");
            }
            if flags & PE_PRESENT == 0 {
                continue;
            }
            let range = PageRange {
                vaddr,
                pages,
                offset,
                lazy: flags & PE_LAZY != 0,
            };
            offset = offset
                .checked_add(range.len())
                .context("the ranges overflow")?;
            ranges.push(range);
        }
        Ok(Pagemap { pages_id, ranges })
    }

    /// The range holding address `vaddr`, if any.
    pub fn find(&self, vaddr: u64) -> Option<&PageRange> {
        let i = self.ranges.partition_point(|r| r.end() <= vaddr);
        self.ranges.get(i).filter(|r| r.vaddr <= vaddr)
    }

    /// How many bytes of the pages image the ranges take.
    pub fn pages_len(&self) -> u64 {
        self.ranges.last().map(|r| r.offset + r.len()).unwrap_or(0)
    }
}

/// The varint fields of one protobuf message (field number, value); others are skipped.
fn fields(mut msg: &[u8]) -> Result<Vec<(u64, u64)>> {
    let mut out = vec![];
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((number, varint(&mut msg)?)),
            1 => msg = msg.get(8..).context("truncated field")?,
            2 => {
                let len = varint(&mut msg)? as usize;
                msg = msg.get(len..).context("truncated field")?;
            }
            5 => msg = msg.get(4..).context("truncated field")?,
            _ => bail!("unknown protobuf wire type {wire}"),
        }
    }
    Ok(out)
}

fn varint(msg: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = msg.split_first().context("truncated number")?;
        *msg = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("a number longer than 64 bits")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    /// A pagemap image as CRIU writes it: (vaddr, pages, flags) per entry.
    pub(crate) fn image(pages_id: u32, entries: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut out = vec![];
        out.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
        out.extend_from_slice(&PAGEMAP_MAGIC.to_le_bytes());
        let mut head = vec![0x08];
        put_varint(&mut head, pages_id as u64);
        out.extend_from_slice(&(head.len() as u32).to_le_bytes());
        out.extend_from_slice(&head);
        for &(vaddr, pages, flags) in entries {
            let mut m = vec![0x08];
            put_varint(&mut m, vaddr);
            m.push(0x10);
            put_varint(&mut m, pages.min(u32::MAX as u64));
            m.push(0x20);
            put_varint(&mut m, flags as u64);
            m.push(0x28);
            put_varint(&mut m, pages);
            out.extend_from_slice(&(m.len() as u32).to_le_bytes());
            out.extend_from_slice(&m);
        }
        out
    }

    pub(crate) const LAZY: u32 = PE_LAZY | PE_PRESENT;
    pub(crate) const EAGER: u32 = PE_PRESENT;

    #[test]
    fn ranges_are_placed_in_the_pages_image_in_order_and_holes_take_no_room() {
        let bytes = image(
            7,
            &[
                (0x1000, 2, EAGER),
                (0x10000, 300, LAZY),
                (0x7000_0000, 1, 0), // a zero page: not stored
                (0x7fff_0000, 3, EAGER),
            ],
        );
        let pm = Pagemap::parse(&bytes).unwrap();
        assert_eq!(pm.pages_id, 7);
        assert_eq!(pm.ranges.len(), 3);
        assert_eq!(pm.ranges[1].offset, 2 * PAGE_SIZE);
        assert!(pm.ranges[1].lazy && !pm.ranges[2].lazy);
        assert_eq!(pm.ranges[2].offset, 302 * PAGE_SIZE);
        assert_eq!(pm.pages_len(), 305 * PAGE_SIZE);
        assert_eq!(pm.find(0x10000 + 299 * PAGE_SIZE).unwrap().vaddr, 0x10000);
        assert!(pm.find(0x10000 + 300 * PAGE_SIZE).is_none());
        assert!(pm.find(0x0).is_none());
        assert!(Pagemap::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(Pagemap::parse(b"not an image").is_err());
    }
}
