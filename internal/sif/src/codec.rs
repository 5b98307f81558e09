//! Little-endian field codec for the packed structs of the SIF format (Go `encoding/binary`
//! layout: no padding between fields).

/// Reads fields in order from a fixed-size record. Callers check the record length first,
/// so out-of-range reads cannot happen for the layouts in this crate.
pub(crate) struct FieldReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> FieldReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        FieldReader { buf, pos: 0 }
    }

    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // A short record yields zero-filled fields instead of a panic.
        let end = (self.pos + N).min(self.buf.len());
        let start = self.pos.min(end);
        out[..end - start].copy_from_slice(&self.buf[start..end]);
        self.pos += N;
        out
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    pub(crate) fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.bytes())
    }

    pub(crate) fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.bytes())
    }
}

/// Appends fields in order.
#[derive(Default)]
pub(crate) struct FieldWriter {
    pub(crate) buf: Vec<u8>,
}

impl FieldWriter {
    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn i32(&mut self, v: i32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
}

/// The bytes before the first NUL-free tail: Go's `bytes.TrimRight(b, "\x00")`.
pub(crate) fn trim_nuls(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |i| i + 1);
    &b[..end]
}

/// Copies `src` into a zero-filled fixed-size field.
pub(crate) fn fixed<const N: usize>(src: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = src.len().min(N);
    out[..n].copy_from_slice(&src[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_is_little_endian_and_never_panics() {
        let mut r = FieldReader::new(&[1, 0, 0, 0, 0xff]);
        assert_eq!(r.u32(), 1);
        assert_eq!(r.u8(), 0xff);
        assert_eq!(r.i64(), 0, "past the end reads zeros");
    }

    #[test]
    fn trim_nuls_trims_only_the_tail() {
        assert_eq!(trim_nuls(b"a\0b\0\0"), b"a\0b");
        assert_eq!(trim_nuls(b"\0\0"), b"");
    }
}
