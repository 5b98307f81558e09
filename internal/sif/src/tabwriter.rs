//! A port of the parts of Go's `text/tabwriter` that siftool uses (space padding, no flags),
//! so column alignment matches siftool byte for byte, including odd input such as names
//! containing tabs or newlines.
//!
//! Cells end at '\t' or '\v'; lines end at '\n' or '\f'. The last cell of a line is not part of
//! any column. A column's width is the widest cell of the consecutive lines ("block") that have
//! that column, plus the padding. Widths count UTF-8 runes, each invalid byte as one, like Go.

/// One line's cells: (text, width in runes).
type Line = Vec<(Vec<u8>, usize)>;

pub(crate) struct TabWriter {
    padding: usize,
    text: Vec<u8>,
}

impl TabWriter {
    pub(crate) fn new(padding: usize) -> Self {
        TabWriter {
            padding,
            text: Vec::new(),
        }
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.text.extend_from_slice(bytes);
    }

    pub(crate) fn write_str(&mut self, s: &str) {
        self.write(s.as_bytes());
    }

    /// Aligns everything written and returns the result.
    pub(crate) fn finish(self) -> Vec<u8> {
        let lines = split_lines(&self.text);
        let mut out = Vec::with_capacity(self.text.len() * 2);
        let mut widths = Vec::new();
        format_block(&lines, 0, lines.len(), &mut widths, self.padding, &mut out);
        out
    }
}

fn split_lines(text: &[u8]) -> Vec<Line> {
    let mut lines = vec![Vec::new()];
    let mut start = 0;
    for (i, &c) in text.iter().enumerate() {
        if matches!(c, b'\t' | b'\x0b' | b'\n' | b'\x0c') {
            let cell = text[start..i].to_vec();
            let width = rune_count(&cell);
            lines.last_mut().expect("never empty").push((cell, width));
            start = i + 1;
            if matches!(c, b'\n' | b'\x0c') {
                lines.push(Vec::new());
            }
        }
    }
    // Go terminates a pending cell at flush only if it holds text.
    let tail = text[start..].to_vec();
    if !tail.is_empty() {
        let width = rune_count(&tail);
        lines.last_mut().expect("never empty").push((tail, width));
    }
    lines
}

fn rune_count(b: &[u8]) -> usize {
    b.utf8_chunks()
        .map(|chunk| chunk.valid().chars().count() + chunk.invalid().len())
        .sum()
}

/// Go's `(*Writer).format`: lays out lines [line0, line1) given the widths of the columns to
/// the left, recursing into each block that has one more column.
fn format_block(
    lines: &[Line],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    padding: usize,
    out: &mut Vec<u8>,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        write_lines(lines, line0, this, widths, out);
        line0 = this;
        let mut width = 0;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].1 + padding);
            this += 1;
        }
        widths.push(width);
        format_block(lines, line0, this, widths, padding, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, line0, line1, widths, out);
}

fn write_lines(lines: &[Line], from: usize, to: usize, widths: &[usize], out: &mut Vec<u8>) {
    for (i, line) in lines.iter().enumerate().take(to).skip(from) {
        for (j, (text, width)) in line.iter().enumerate() {
            out.extend_from_slice(text);
            if let Some(&cell_width) = widths.get(j) {
                out.resize(out.len() + cell_width.saturating_sub(*width), b' ');
            }
        }
        if i + 1 < lines.len() {
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tab(padding: usize, s: &str) -> String {
        let mut w = TabWriter::new(padding);
        w.write_str(s);
        String::from_utf8(w.finish()).unwrap()
    }

    #[test]
    fn aligns_columns_by_block() {
        assert_eq!(tab(1, "a:\t1\nlong:\t2\n"), "a:    1\nlong: 2\n");
        assert_eq!(tab(2, "\tx:\t1\n\tyy:\t2\n"), "  x:   1\n  yy:  2\n");
        // A line without the column ends the block.
        assert_eq!(tab(1, "a:\t1\nbreak\nlong:\t2\n"), "a: 1\nbreak\nlong: 2\n");
    }

    #[test]
    fn counts_runes_not_bytes() {
        // "é:" is 2 runes (3 bytes): padded to the 4-rune column like "ab:".
        assert_eq!(tab(1, "é:\t1\nab:\t2\n"), "é:  1\nab: 2\n");
    }
}
