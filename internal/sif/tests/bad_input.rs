//! Broken or foreign files give one clear error line naming the file, and never a panic.

mod common;

use common::{corpus, sylabs};
use rctr_sif::{is_sif, siftool, SifImage};
use std::path::{Path, PathBuf};

/// Writes `bytes` to a file in `dir` and returns its path.
fn file_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn corpus_bytes(file: &str) -> Vec<u8> {
    std::fs::read(sylabs(file)).unwrap()
}

/// The error of opening `path`, checked to be one line that names the file.
fn open_error(path: &Path) -> String {
    let err = SifImage::open(path).expect_err("open should fail");
    let text = format!("{err:#}");
    assert!(!text.contains('\n'), "error is not one line: {text}");
    assert!(
        text.contains(&path.display().to_string()),
        "error does not name the file: {text}"
    );
    text
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = open_error(&dir.path().join("nope.sif"));
    assert!(text.contains("cannot open SIF image"), "{text}");
    assert!(text.contains("No such file"), "{text}");
    assert!(is_sif(&dir.path().join("nope.sif")).is_err());
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let text_file = file_with(dir.path(), "notes.txt", &[b'x'; 4096]);
    let text = open_error(&text_file);
    assert!(text.contains("not a SIF image"), "{text}");
    assert!(!is_sif(&text_file).unwrap());

    let empty = file_with(dir.path(), "empty", b"");
    assert!(open_error(&empty).contains("not a SIF image"));
    assert!(!is_sif(&empty).unwrap());
    assert!(is_sif(&sylabs("empty.sif")).unwrap());
}

#[test]
fn truncated_before_end_of_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_with(
        dir.path(),
        "short.sif",
        &corpus_bytes("one-group.sif")[..100],
    );
    let text = open_error(&path);
    assert!(text.contains("truncated SIF image"), "{text}");
    assert!(
        text.contains("shorter than the 128-byte SIF header"),
        "{text}"
    );
}

#[test]
fn truncated_descriptor_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_with(
        dir.path(),
        "short.sif",
        &corpus_bytes("one-group.sif")[..5000],
    );
    let text = open_error(&path);
    assert!(
        text.contains("descriptor table ends at byte 32176"),
        "{text}"
    );
    assert!(text.contains("5000 bytes"), "{text}");
}

#[test]
fn object_data_past_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    // Object 3 of two-groups.sif spans 40960-303104.
    let path = file_with(
        dir.path(),
        "short.sif",
        &corpus_bytes("two-groups.sif")[..100_000],
    );
    let text = open_error(&path);
    assert!(text.contains("object 3 (FS)"), "{text}");
    assert!(
        text.contains("past the end of the 100000-byte file"),
        "{text}"
    );
}

#[test]
fn unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = corpus_bytes("empty.sif");
    bytes[42..45].copy_from_slice(b"02\0");
    let text = open_error(&file_with(dir.path(), "v2.sif", &bytes));
    assert!(text.contains("unsupported SIF version \"02\""), "{text}");
}

#[test]
fn unknown_object_id() {
    let image = SifImage::open(&sylabs("one-group.sif")).unwrap();
    let err = format!("{:#}", image.read_object(9).unwrap_err());
    assert!(err.contains("no object with ID 9"), "{err}");
    assert!(err.contains("one-group.sif"), "{err}");
    assert!(image.descriptor(0).is_err());
}

/// Exercises everything a command could do with an image that opened.
fn use_image(path: &Path) {
    let Ok(image) = SifImage::open(path) else {
        return;
    };
    siftool::format_header(image.header());
    siftool::format_list(image.descriptors());
    let _ = image.primary_system_partition();
    for d in image.descriptors() {
        let _ = siftool::format_info(d);
        let mut sink = std::io::sink();
        image.copy_object(d.id, &mut sink).unwrap_or_default();
        if d.size < 1 << 20 {
            let _ = image.read_object(d.id);
        }
    }
}

/// xorshift64: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn truncations_and_corruptions_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("fuzz.sif");
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut opened = 0;
    let mut tries = 0;
    // The header and the first descriptors hold everything the reader interprets.
    let interesting = 4096 + 6 * 585;
    for path in corpus() {
        let original = std::fs::read(&path).unwrap();

        // Truncations: every byte of the header, then a spread of positions.
        let mut cuts: Vec<usize> = (0..=128).collect();
        cuts.extend((0..60).map(|_| rng.below(original.len())));
        for cut in cuts {
            std::fs::write(&target, &original[..cut.min(original.len())]).unwrap();
            use_image(&target);
            tries += 1;
        }

        // Corruptions: random bytes, and extreme values written over 8-byte fields.
        for round in 0..120 {
            let mut bytes = original.clone();
            let end = interesting.min(bytes.len());
            for _ in 0..1 + rng.below(4) {
                let pos = rng.below(end);
                if round % 2 == 0 {
                    bytes[pos] ^= 1 << rng.below(8);
                } else {
                    let extremes = [i64::MAX, i64::MIN, -1, 0, 1 << 40];
                    let value = extremes[rng.below(extremes.len())].to_le_bytes();
                    let n = value.len().min(bytes.len() - pos);
                    bytes[pos..pos + n].copy_from_slice(&value[..n]);
                }
            }
            std::fs::write(&target, &bytes).unwrap();
            if SifImage::open(&target).is_ok() {
                opened += 1;
            }
            use_image(&target);
            tries += 1;
        }
    }
    // The mutations must not all be rejected up front, or the formatters went untested.
    assert!(
        opened > tries / 10,
        "only {opened} of {tries} mutated files opened"
    );
}
