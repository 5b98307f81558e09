//! Output of the siftool-compatible formatters compared byte for byte with siftool's own
//! golden files, for every golden file in the corpus.

mod common;

use common::{corpus, sylabs, testdata};
use rctr_sif::{siftool, DataType, SifImage};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// `TwoGroupsSignedPGP` -> `two-groups-signed-pgp` (acronyms stay one word).
fn kebab(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev_lower = chars[i - 1].is_ascii_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev_lower || (chars[i - 1].is_ascii_uppercase() && next_lower) {
                out.push('-');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Golden files of one siftool test, as (test case name, expected bytes).
fn goldens(test: &str) -> Vec<(String, Vec<u8>)> {
    let dir = testdata().join("siftool-golden").join(test);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no golden files in {}", dir.display());
    out
}

fn open(file: &str) -> SifImage {
    SifImage::open(&sylabs(file)).unwrap_or_else(|e| panic!("{e:#}"))
}

fn assert_same(case: &str, got: &[u8], want: &[u8]) {
    assert!(
        got == want,
        "{case}: output differs from golden file\n--- got ---\n{}\n--- want ---\n{}",
        String::from_utf8_lossy(got),
        String::from_utf8_lossy(want)
    );
}

#[test]
fn kebab_case_names() {
    assert_eq!(kebab("TwoGroupsSignedPGP"), "two-groups-signed-pgp");
    assert_eq!(kebab("OneObjectOCIRootIndex"), "one-object-oci-root-index");
    assert_eq!(kebab("EmptyID"), "empty-id");
}

#[test]
fn list_matches_every_golden_file() {
    let cases = goldens("TestApp_List");
    for (name, want) in &cases {
        let image = open(&format!("{}.sif", kebab(name)));
        assert_same(name, &siftool::format_list(image.descriptors()), want);
    }
    assert_eq!(cases.len(), 19);
}

#[test]
fn header_matches_every_golden_file() {
    let cases = goldens("TestApp_Header");
    for (name, want) in &cases {
        let image = open(&format!("{}.sif", kebab(name)));
        assert_same(name, &siftool::format_header(image.header()), want);
    }
    assert_eq!(cases.len(), 19);
}

#[test]
fn info_matches_every_golden_file() {
    let cases = goldens("TestApp_Info");
    for (name, want) in &cases {
        let (file, id) = match name.as_str() {
            "DataPartitionRaw" => ("two-groups-signed-pgp.sif".to_string(), 1),
            "DataPartitionSquashFS" => ("two-groups-signed-pgp.sif".to_string(), 2),
            "DataPartitionEXT3" => ("two-groups-signed-pgp.sif".to_string(), 3),
            "DataSignature" => ("two-groups-signed-pgp.sif".to_string(), 4),
            other => (format!("one-object-{}.sif", kebab(other)), 1),
        };
        let image = open(&file);
        let d = image.descriptor(id).unwrap();
        let got = siftool::format_info(d).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_same(name, &got, want);
    }
    assert_eq!(cases.len(), 10);
}

#[test]
fn every_corpus_image_lists_and_shows_info_for_each_object() {
    for path in corpus() {
        let image = SifImage::open(&path).unwrap_or_else(|e| panic!("{e:#}"));
        let list = siftool::format_list(image.descriptors());
        let lines = list
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        assert_eq!(lines, 3 + image.descriptors().len(), "{}", path.display());
        for d in image.descriptors() {
            siftool::format_info(d).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        }
    }
}

#[test]
fn dump_returns_the_object_bytes() {
    let image = open("one-object-generic-json.sif");
    assert_eq!(image.read_object(1).unwrap(), b"{}");

    let image = open("one-object-crypt-message.sif");
    let mut out = Vec::new();
    assert_eq!(image.copy_object(1, &mut out).unwrap(), 4);
    assert_eq!(out, [0xfe, 0xfe, 0xf0, 0xf0]);

    // OCI objects carry the digest of their own bytes: an independent check of offsets.
    for file in ["one-object-oci-blob.sif", "one-object-oci-root-index.sif"] {
        let image = open(file);
        let d = image.descriptor(1).unwrap();
        let mut data = Vec::new();
        image.copy_object(1, &mut data).unwrap();
        assert_eq!(data, image.read_object(1).unwrap());
        let digest = format!("sha256:{:x}", Sha256::digest(&data));
        assert_eq!(digest, d.oci_digest().unwrap(), "{file}");
    }
}

#[test]
fn apptainer_image_has_a_mountable_primary_partition() {
    let path: PathBuf = testdata().join("apptainer/busybox_amd64.sif");
    let image = SifImage::open(&path).unwrap();
    let part = image.primary_system_partition().unwrap();
    assert_eq!(part.fs_type, rctr_sif::FsType::Squash);
    assert_eq!(part.arch, "amd64");
    assert_eq!(part.offset % 4096, 0);
    let data = image.read_object(part.id).unwrap();
    assert_eq!(
        &data[..4],
        b"hsqs",
        "partition starts with the squashfs magic"
    );
    let def = image.find_object(DataType::Deffile).expect("deffile");
    let def = image.read_object(def.id).unwrap();
    assert!(
        def.starts_with(b"BootStrap: docker"),
        "{}",
        String::from_utf8_lossy(&def)
    );
}

#[test]
fn sylabs_primary_partition_is_the_squashfs_one() {
    let image = open("two-groups.sif");
    let part = image.primary_system_partition().unwrap();
    assert_eq!((part.id, part.offset, part.size), (2, 36864, 4096));
    assert_eq!(part.part_type, rctr_sif::PartType::PrimSys);
    assert_eq!(part.arch, "386");
    let err = open("one-object-sbom.sif")
        .primary_system_partition()
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no primary system partition"),
        "{err:#}"
    );
}
