//! Checkpoint archives: a round trip, and every damaged or hostile archive refused with one
//! line and nothing left behind.

use super::archive::{export, generation_file, import, Quiet};
use super::tests::{dump, fixture, FakeEngine, Fixture};
use super::*;
use std::os::unix::fs::PermissionsExt;

/// Checkpoint "c" with two generations; the export of the newest.
fn exported(f: &Fixture) -> Vec<u8> {
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    dump(f, &ckpt, &e, 0).unwrap();
    dump(f, &ckpt, &e, 0).unwrap();
    let mut out = vec![];
    let r = export(&f.store, "c", None, &mut out, &mut Quiet).unwrap();
    assert_eq!((r.generation, r.files), (2, 2));
    out
}

fn import_bytes(f: &Fixture, bytes: &[u8], name: Option<&str>) -> Result<archive::ImportReport> {
    import(&f.store, bytes, "test.tar.zst", name, None, &mut Quiet)
}

/// Everything under the store's engine directories (hidden entries included).
fn everything(f: &Fixture) -> Vec<String> {
    let mut v = vec![];
    for kind in EngineKind::ALL {
        let dir = f._tmp.path().join("checkpoint").join(kind.as_str());
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            v.push(format!("{kind}/{}", e.file_name().to_string_lossy()));
        }
    }
    v.sort();
    v
}

/// Asserts a one-line refusal naming the archive as damaged, and that nothing was left.
fn refused(f: &Fixture, bytes: &[u8], what: &str) -> String {
    let before = everything(f);
    let err = match import_bytes(f, bytes, Some("imported")) {
        Ok(_) => panic!("{what}: the import succeeded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(!err.contains('\n'), "{what}: not one line: {err}");
    assert!(
        err.starts_with(
            "archive test.tar.zst is damaged or not a checkpoint archive, nothing imported: "
        ),
        "{what}: {err}"
    );
    assert_eq!(
        everything(f),
        before,
        "{what}: something was left behind ({err})"
    );
    assert!(!f.store.exists("imported").unwrap(), "{what}");
    err
}

#[test]
fn an_archive_round_trips_every_file_privately() {
    let f = fixture();
    let bytes = exported(&f);
    // zstd: the 10 kB page file of sevens shrinks.
    assert!(bytes.len() < 5000, "{} bytes", bytes.len());
    let g = fixture();
    let r = import_bytes(&g, &bytes, None).unwrap();
    assert_eq!(
        (
            r.checkpoint.as_str(),
            r.generation,
            r.from_generation,
            r.engine
        ),
        ("c", 1, 2, EngineKind::App)
    );
    let ckpt = g.store.open("c").unwrap();
    let gen = ckpt.select(None).unwrap();
    ckpt.verify(&gen, None, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(gen.dir.join("state.txt")).unwrap(),
        "count 2\n"
    );
    assert_eq!(
        std::fs::read(gen.dir.join("sub/pages.img")).unwrap(),
        vec![7u8; 10_000]
    );
    let orig = f.store.open("c").unwrap().generation(2).unwrap().manifest;
    assert_eq!(gen.manifest.files, orig.files);
    assert_eq!(gen.manifest.host, orig.host);
    assert!(gen.manifest.host.is_some());
    assert_eq!(gen.manifest.instance, orig.instance);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&gen.dir.join("state.txt")), 0o600);
    assert_eq!(mode(&gen.dir.join("sub/pages.img")), 0o600);
    assert_eq!(mode(&gen.dir.join("sub")), 0o700);
    assert_eq!(mode(&gen.dir), 0o700);
    // Nothing hidden is left once it is done.
    assert_eq!(everything(&g), vec!["app/c".to_string()]);
}

#[test]
fn an_existing_name_is_refused_unless_another_is_given() {
    let f = fixture();
    let bytes = exported(&f);
    let err = format!("{:#}", import_bytes(&f, &bytes, None).unwrap_err());
    assert!(
        err.contains("'c' already exists") && err.contains("--name"),
        "{err}"
    );
    assert!(!err.contains('\n'));
    let r = import_bytes(&f, &bytes, Some("c2")).unwrap();
    assert_eq!(r.checkpoint, "c2");
    assert_eq!(f.store.open("c2").unwrap().generations().unwrap(), vec![1]);
    let err = format!("{:#}", import_bytes(&f, &bytes, Some("../x")).unwrap_err());
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn a_truncated_archive_is_refused_and_leaves_nothing() {
    let f = fixture();
    let bytes = exported(&f);
    for cut in [
        0,
        10,
        bytes.len() / 4,
        bytes.len() / 2,
        bytes.len() - 20,
        bytes.len() - 1,
    ] {
        refused(
            &f,
            &bytes[..cut],
            &format!("cut at {cut} of {}", bytes.len()),
        );
    }
}

#[test]
fn a_changed_byte_anywhere_is_refused_and_leaves_nothing() {
    let f = fixture();
    let bytes = exported(&f);
    // Past zstd's frame header (its window size may change without changing the contents).
    for at in [
        0,
        20,
        40,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 10,
        bytes.len() - 2,
    ] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        refused(&f, &bad, &format!("byte {at} of {} changed", bytes.len()));
    }
}

/// One raw tar entry, its name written as is (bypassing the tar crate's own checks).
struct Raw {
    name: &'static str,
    kind: tar::EntryType,
    data: Vec<u8>,
}

/// An archive of `entries` after a consistent index and `manifest`.
fn craft(manifest: &Manifest, entries: &[Raw]) -> Vec<u8> {
    let manifest_bytes = serde_json::to_vec(manifest).unwrap();
    let index = serde_json::json!({
        "format": "rctr-checkpoint-archive",
        "version": 1,
        "checkpoint": "c",
        "engine": "app",
        "generation": 1,
        "host": "elsewhere",
        "manifest": {"size": manifest_bytes.len(), "blake3": blake3::hash(&manifest_bytes).to_hex().to_string()},
        "total_bytes": 1,
    });
    let mut all = vec![
        Raw {
            name: "rctr-archive.json",
            kind: tar::EntryType::Regular,
            data: serde_json::to_vec(&index).unwrap(),
        },
        Raw {
            name: "generation/manifest.json",
            kind: tar::EntryType::Regular,
            data: manifest_bytes,
        },
    ];
    all.extend(entries.iter().map(|r| Raw {
        name: r.name,
        kind: r.kind,
        data: r.data.clone(),
    }));
    let z = zstd::stream::write::Encoder::new(vec![], 3).unwrap();
    let mut tar = tar::Builder::new(z);
    for r in &all {
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..r.name.len()].copy_from_slice(r.name.as_bytes());
        h.set_entry_type(r.kind);
        h.set_size(r.data.len() as u64);
        h.set_mode(0o600);
        if matches!(r.kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            h.set_link_name("/etc/shadow").unwrap();
        }
        h.set_cksum();
        tar.append(&h, &r.data[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn manifest_of(files: &[(&str, &[u8])]) -> Manifest {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    dump(&f, &ckpt, &FakeEngine::new(), 0).unwrap();
    let mut m = ckpt.generation(1).unwrap().manifest;
    m.files = files
        .iter()
        .map(|(n, d)| {
            let sum = crate::integrity::FileSum {
                size: d.len() as u64,
                blake3: blake3::hash(d).to_hex().to_string(),
            };
            (n.to_string(), sum)
        })
        .collect();
    m
}

#[test]
fn a_crafted_archive_that_is_consistent_imports() {
    let f = fixture();
    let m = manifest_of(&[("state.txt", b"hello")]);
    let ok = craft(
        &m,
        &[Raw {
            name: "generation/state.txt",
            kind: tar::EntryType::Regular,
            data: b"hello".to_vec(),
        }],
    );
    import_bytes(&f, &ok, Some("imported")).unwrap();
    assert!(f.store.exists("imported").unwrap());
}

#[test]
fn hostile_entries_are_refused_and_leave_nothing() {
    let f = fixture();
    let reg = tar::EntryType::Regular;
    let m = manifest_of(&[("state.txt", b"hello")]);
    let good = || Raw {
        name: "generation/state.txt",
        kind: reg,
        data: b"hello".to_vec(),
    };
    let cases: Vec<(&str, Vec<Raw>, &str)> = vec![
        (
            "a parent path",
            vec![
                good(),
                Raw {
                    name: "generation/../../evil",
                    kind: reg,
                    data: vec![1],
                },
            ],
            "unsafe path",
        ),
        (
            "an absolute path",
            vec![
                good(),
                Raw {
                    name: "/etc/evil",
                    kind: reg,
                    data: vec![1],
                },
            ],
            "outside generation/",
        ),
        (
            "a symlink",
            vec![Raw {
                name: "generation/state.txt",
                kind: tar::EntryType::Symlink,
                data: vec![],
            }],
            "symbolic link",
        ),
        (
            "a hard link",
            vec![Raw {
                name: "generation/state.txt",
                kind: tar::EntryType::Link,
                data: vec![],
            }],
            "hard link",
        ),
        (
            "a device",
            vec![Raw {
                name: "generation/state.txt",
                kind: tar::EntryType::Char,
                data: vec![],
            }],
            "device",
        ),
        (
            "a FIFO",
            vec![Raw {
                name: "generation/state.txt",
                kind: tar::EntryType::Fifo,
                data: vec![],
            }],
            "FIFO",
        ),
        (
            "an extra file",
            vec![
                good(),
                Raw {
                    name: "generation/extra",
                    kind: reg,
                    data: vec![1],
                },
            ],
            "not in the manifest",
        ),
        ("a duplicate", vec![good(), good()], "appears twice"),
        (
            "a changed file",
            vec![Raw {
                name: "generation/state.txt",
                kind: reg,
                data: b"HELLO".to_vec(),
            }],
            "does not match its checksum",
        ),
        ("a missing file", vec![], "generation/state.txt is missing"),
    ];
    for (what, entries, says) in cases {
        let err = refused(&f, &craft(&m, &entries), what);
        assert!(err.contains(says), "{what}: {err}");
    }
    // The manifest itself may name only plain relative paths.
    let evil = manifest_of(&[("../state.txt", b"x")]);
    let err = refused(&f, &craft(&evil, &[]), "a manifest naming ..");
    assert!(err.contains("unsafe path"), "{err}");
    assert!(!f._tmp.path().join("checkpoint/state.txt").exists());
}

#[test]
fn generation_paths_must_be_plain_and_relative() {
    for ok in ["a", "sub/pages.img", "host-cpu/cpuinfo.img"] {
        assert_eq!(generation_file(Path::new(ok)).unwrap(), Path::new(ok));
    }
    for bad in ["", "/etc/passwd", "../x", "a/../../b", "./a", "a/.."] {
        assert!(generation_file(Path::new(bad)).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn an_import_can_keep_its_images_elsewhere() {
    let f = fixture();
    let bytes = exported(&f);
    let g = fixture();
    let scratch = g._tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    import(&g.store, &bytes[..], "x", None, Some(&scratch), &mut Quiet).unwrap();
    let ckpt = g.store.open("c").unwrap();
    assert_eq!(ckpt.dir(), scratch.join("c"));
    let gen = ckpt.select(None).unwrap();
    ckpt.verify(&gen, None, false).unwrap();
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("c")]);
    // A damaged one leaves nothing there either.
    let h = fixture();
    let scratch = h._tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    assert!(import(
        &h.store,
        &bytes[..bytes.len() / 2],
        "x",
        None,
        Some(&scratch),
        &mut Quiet
    )
    .is_err());
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    assert!(everything(&h).is_empty());
}
