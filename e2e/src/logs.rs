//! Reading the numbers a test application writes, one a line, to a log or data file.

use std::path::Path;

/// The complete lines of `path` from byte `offset` on (a line still being written is left
/// out); none when the file is missing or shorter than `offset`.
pub fn complete_lines(path: &Path, offset: usize) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let tail = bytes.get(offset..).unwrap_or_default();
    let complete = match tail.iter().rposition(|&b| b == b'\n') {
        Some(end) => &tail[..end],
        None => return vec![],
    };
    String::from_utf8_lossy(complete)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The complete lines of `path` from byte `offset` on, each parsed as a number; panics
/// naming the file at a line that is not one.
pub fn numbers_from(path: &Path, offset: usize) -> Vec<u64> {
    complete_lines(path, offset)
        .iter()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{}: line {l:?} is not a number", path.display()))
        })
        .collect()
}

/// The complete lines of `path` that are numbers, parsed (others skipped).
pub fn numeric_lines(path: &Path) -> Vec<u64> {
    complete_lines(path, 0)
        .iter()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The number on the last complete line of `path`; panics when there is none.
pub fn last_number(path: &Path) -> u64 {
    *numbers_from(path, 0)
        .last()
        .unwrap_or_else(|| panic!("{} has no complete line", path.display()))
}
