//! Just enough ELF to compute a dynamic-library closure: the program interpreter (PT_INTERP)
//! and the dynamic section's DT_NEEDED / DT_RPATH / DT_RUNPATH / DT_SONAME strings.
//!
//! Hand-written rather than a dependency: it reads five things from two tables, and every
//! offset is bounds-checked so a corrupt or hostile file yields an error, never a panic.

use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;

const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;
const DT_SONAME: u64 = 14;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// What kind of machine code a file holds; libraries must match their binary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfKind {
    pub class64: bool,
    pub little_endian: bool,
    pub machine: u16,
}

/// The dynamic-linking facts of one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub kind: ElfKind,
    /// PT_INTERP: the loader the kernel would start, e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interp: Option<String>,
    pub needed: Vec<String>,
    pub soname: Option<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

/// Whether `bytes` start with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<ElfInfo> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a usable ELF file", path.display()))
}

/// Bounds-checked, endian-aware reads from the file image.
struct Reader<'a> {
    b: &'a [u8],
    le: bool,
    class64: bool,
}

impl Reader<'_> {
    fn slice(&self, off: u64, len: u64) -> Result<&[u8]> {
        let start = usize::try_from(off).ok();
        let end = off.checked_add(len).and_then(|e| usize::try_from(e).ok());
        match (start, end) {
            (Some(s), Some(e)) if e <= self.b.len() => Ok(&self.b[s..e]),
            _ => bail!("truncated: wants bytes {off}..+{len} of {}", self.b.len()),
        }
    }
    fn u16(&self, off: u64) -> Result<u16> {
        let s: [u8; 2] = self.slice(off, 2)?.try_into()?;
        Ok(if self.le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }
    fn u32(&self, off: u64) -> Result<u32> {
        let s: [u8; 4] = self.slice(off, 4)?.try_into()?;
        Ok(if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }
    fn u64(&self, off: u64) -> Result<u64> {
        let s: [u8; 8] = self.slice(off, 8)?.try_into()?;
        Ok(if self.le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    }
    /// A word: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, off: u64) -> Result<u64> {
        if self.class64 {
            self.u64(off)
        } else {
            self.u32(off).map(u64::from)
        }
    }
    /// A NUL-terminated string starting at `off` and ending before `limit`.
    fn cstr(&self, off: u64, limit: u64) -> Result<String> {
        ensure!(off < limit, "string offset {off} outside its table");
        let s = self.slice(off, limit - off)?;
        let end = s
            .iter()
            .position(|&c| c == 0)
            .context("unterminated string")?;
        String::from_utf8(s[..end].to_vec()).context("string is not UTF-8")
    }
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// Parses the ELF image in `bytes`.
pub fn parse(bytes: &[u8]) -> Result<ElfInfo> {
    ensure!(is_elf(bytes), "no ELF magic");
    ensure!(bytes.len() >= 16, "truncated ELF header");
    let class64 = match bytes[4] {
        1 => false,
        2 => true,
        c => bail!("unknown ELF class {c}"),
    };
    let le = match bytes[5] {
        1 => true,
        2 => false,
        d => bail!("unknown ELF data encoding {d}"),
    };
    let r = Reader {
        b: bytes,
        le,
        class64,
    };
    let machine = r.u16(18)?;
    let (phoff, phentsize, phnum) = if class64 {
        (r.u64(32)?, r.u16(54)?, r.u16(56)?)
    } else {
        (u64::from(r.u32(28)?), r.u16(42)?, r.u16(44)?)
    };
    let min_phent = if class64 { 56 } else { 32 };
    ensure!(
        phnum == 0 || phentsize >= min_phent,
        "program header entries of {phentsize} bytes are too small"
    );

    let mut segments = Vec::with_capacity(usize::from(phnum));
    for i in 0..u64::from(phnum) {
        let p = phoff
            .checked_add(i * u64::from(phentsize))
            .context("program header offset overflows")?;
        segments.push(if class64 {
            Segment {
                kind: r.u32(p)?,
                offset: r.u64(p + 8)?,
                vaddr: r.u64(p + 16)?,
                filesz: r.u64(p + 32)?,
            }
        } else {
            Segment {
                kind: r.u32(p)?,
                offset: u64::from(r.u32(p + 4)?),
                vaddr: u64::from(r.u32(p + 8)?),
                filesz: u64::from(r.u32(p + 16)?),
            }
        });
    }

    let mut info = ElfInfo {
        kind: ElfKind {
            class64,
            little_endian: le,
            machine,
        },
        interp: None,
        needed: Vec::new(),
        soname: None,
        rpath: Vec::new(),
        runpath: Vec::new(),
    };

    if let Some(s) = segments.iter().find(|s| s.kind == PT_INTERP) {
        let raw = r.slice(s.offset, s.filesz)?;
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        let interp = String::from_utf8(raw[..end].to_vec()).context("PT_INTERP is not UTF-8")?;
        ensure!(!interp.is_empty(), "empty PT_INTERP");
        info.interp = Some(interp);
    }

    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
        return Ok(info); // statically linked
    };

    // Dynamic entries hold string *offsets*; collect them, then read the strings once the
    // string table's address (DT_STRTAB, a virtual address) and size are known.
    let entsize = if class64 { 16 } else { 8 };
    let (mut strtab, mut strsz) = (None, None);
    let mut strings: Vec<(u64, u64)> = Vec::new();
    for i in 0..dynamic.filesz / entsize {
        let e = dynamic.offset + i * entsize;
        let tag = r.word(e)?;
        let val = r.word(e + entsize / 2)?;
        match tag {
            DT_NULL => break,
            DT_STRTAB => strtab = Some(val),
            DT_STRSZ => strsz = Some(val),
            DT_NEEDED | DT_SONAME | DT_RPATH | DT_RUNPATH => strings.push((tag, val)),
            _ => {}
        }
    }
    if strings.is_empty() {
        return Ok(info);
    }
    let strtab_vaddr = strtab.context("dynamic section has no DT_STRTAB")?;
    let strtab_off = segments
        .iter()
        .filter(|s| s.kind == PT_LOAD)
        .find(|s| strtab_vaddr >= s.vaddr && strtab_vaddr - s.vaddr < s.filesz)
        .map(|s| strtab_vaddr - s.vaddr + s.offset)
        .context("DT_STRTAB is outside every loadable segment")?;
    let limit = match strsz {
        Some(sz) => strtab_off.checked_add(sz).context("DT_STRSZ overflows")?,
        None => bytes.len() as u64,
    };
    for (tag, off) in strings {
        let at = strtab_off
            .checked_add(off)
            .context("string offset overflows")?;
        let s = r.cstr(at, limit)?;
        match tag {
            DT_NEEDED => info.needed.push(s),
            DT_SONAME => info.soname = Some(s),
            DT_RPATH => info.rpath.extend(split_path_list(&s)),
            _ => info.runpath.extend(split_path_list(&s)),
        }
    }
    Ok(info)
}

fn split_path_list(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(':').filter(|p| !p.is_empty()).map(str::to_string)
}

/// The glibc release a libc or loader image announces ("... release version 2.43 ..."), used
/// to refuse pairing a loader with a libc.so.6 of another glibc build (they share private ABI).
pub fn glibc_release(bytes: &[u8]) -> Option<String> {
    const MARK: &[u8] = b"release version ";
    let start = bytes.windows(MARK.len()).position(|w| w == MARK)? + MARK.len();
    let v: Vec<u8> = bytes[start..]
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == b'.')
        .copied()
        .collect();
    let v = String::from_utf8(v).ok()?;
    let v = v.trim_end_matches('.');
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_dynamic_system_binary() {
        let info = read(Path::new("/bin/ls")).unwrap();
        assert!(info.interp.as_deref().unwrap().contains("ld-linux"));
        assert!(info.needed.iter().any(|n| n == "libc.so.6"), "{info:?}");
        assert!(info.soname.is_none());
    }

    #[test]
    fn reads_the_soname_of_a_library() {
        let libc = [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("a glibc libc.so.6");
        let info = read(Path::new(libc)).unwrap();
        assert_eq!(info.soname.as_deref(), Some("libc.so.6"));
    }

    #[test]
    fn statically_linked_binary_has_no_interp_or_needed() {
        let Ok(info) = read(Path::new("/bin/busybox")) else {
            eprintln!("skipped: /bin/busybox (package busybox-static) not installed");
            return;
        };
        if info.interp.is_some() {
            eprintln!("skipped: /bin/busybox is dynamically linked here");
            return;
        }
        assert!(info.needed.is_empty());
    }

    #[test]
    fn rejects_garbage_and_truncation_without_panicking() {
        assert!(parse(b"#!/bin/sh\n").is_err());
        let ls = std::fs::read("/bin/ls").unwrap();
        for cut in [4, 16, 40, 64, 200, 1000] {
            assert!(parse(&ls[..cut]).is_err(), "cut at {cut} parsed");
        }
        let mut bad_class = ls.clone();
        bad_class[4] = 9;
        assert!(parse(&bad_class).is_err());
    }

    #[test]
    fn finds_glibc_release() {
        assert_eq!(
            glibc_release(b"xx GNU C Library stable release version 2.36.\n").as_deref(),
            Some("2.36")
        );
        assert_eq!(glibc_release(b"nothing here"), None);
    }
}
