//! SifBuilder writes images that read back identically, and that the kernel can mount.

use rctr_sif::{host_arch, siftool, DataType, FsType, PartType, SifBuilder, SifImage};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

const DEFFILE: &[u8] = b"Bootstrap: localimage\nFrom: base.sif\n\n%runscript\n    echo hi\n";
const LABELS: &[u8] = br#"{"org.label-schema.schema-version":"1.0","maintainer":"me"}"#;

/// A file that starts like a squashfs image, with `len` bytes of varied content.
fn fake_squashfs(dir: &Path, len: usize) -> PathBuf {
    let mut bytes = b"hsqs".to_vec();
    let mut x: u32 = 12345;
    while bytes.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        bytes.push((x >> 16) as u8);
    }
    let path = dir.join("rootfs.sqfs");
    std::fs::write(&path, &bytes).unwrap();
    path
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn full_image_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = fake_squashfs(dir.path(), 3 * 1024 * 1024 + 17);
    let out = dir.path().join("out.sif");
    let before = now();
    SifBuilder::new()
        .deffile(DEFFILE.to_vec())
        .labels_json(LABELS.to_vec())
        .system_partition(&squashfs, "arm64")
        .write(&out)
        .unwrap();

    let image = SifImage::open(&out).unwrap();
    let h = image.header();
    assert_eq!(h.launch_script(), b"#!/usr/bin/env run-singularity\n");
    assert_eq!(h.version(), "01");
    assert_eq!(h.primary_arch(), "arm64");
    assert!(!h.id_is_nil());
    assert!(
        h.created_at >= before && h.created_at <= now(),
        "{}",
        h.created_at
    );
    assert_eq!(h.modified_at, h.created_at);
    assert_eq!((h.descriptors_total, h.descriptors_free), (48, 45));
    assert_eq!((h.descriptors_offset, h.descriptors_size), (4096, 48 * 585));
    assert_eq!(h.data_offset, 32176);
    let file_len = std::fs::metadata(&out).unwrap().len() as i64;
    assert_eq!(h.data_offset + h.data_size, file_len);

    let ds = image.descriptors();
    let types: Vec<_> = ds.iter().map(|d| d.data_type).collect();
    assert_eq!(
        types,
        [
            DataType::Deffile,
            DataType::GenericJson,
            DataType::Partition
        ]
    );
    assert_eq!(ds.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(ds
        .iter()
        .all(|d| d.group_id() == 1 && d.linked_id() == (0, false)));
    assert_eq!(ds[1].name(), "labels.json");
    // Small objects are packed right after the table, the partition is page aligned.
    assert_eq!(ds[0].offset, 32176);
    assert_eq!(ds[1].offset, 32176 + DEFFILE.len() as i64);
    assert_eq!(ds[2].offset % 4096, 0);
    assert_eq!(
        ds[2].offset,
        ((ds[1].offset + ds[1].size) as u64).next_multiple_of(4096) as i64
    );
    assert_eq!(
        ds[2].size_with_padding,
        ds[2].offset - (ds[1].offset + ds[1].size) + ds[2].size
    );

    assert_eq!(image.read_object(1).unwrap(), DEFFILE);
    assert_eq!(image.read_object(2).unwrap(), LABELS);
    assert_eq!(
        image.read_object(3).unwrap(),
        std::fs::read(&squashfs).unwrap()
    );
    let def = image.find_object(DataType::Deffile).unwrap();
    assert_eq!(def.id, 1);

    let part = image.primary_system_partition().unwrap();
    assert_eq!(part.id, 3);
    assert_eq!(part.offset, ds[2].offset as u64);
    assert_eq!(part.size, std::fs::metadata(&squashfs).unwrap().len());
    assert_eq!(
        (part.fs_type, part.part_type),
        (FsType::Squash, PartType::PrimSys)
    );
    assert_eq!(part.arch, "arm64");

    let list = String::from_utf8(siftool::format_list(image.descriptors())).unwrap();
    assert!(list.contains("|Def.FILE\n"), "{list}");
    assert!(list.contains("|JSON.Generic\n"), "{list}");
    assert!(list.contains("|FS (Squashfs/*System/arm64)\n"), "{list}");

    let mode = std::fs::metadata(&out).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o111,
        0o111,
        "SIF images are executable, mode {mode:o}"
    );
}

#[test]
fn partition_only_image_is_aligned_after_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = fake_squashfs(dir.path(), 5000);
    let out = dir.path().join("out.sif");
    SifBuilder::new()
        .system_partition(&squashfs, host_arch())
        .write(&out)
        .unwrap();
    let image = SifImage::open(&out).unwrap();
    assert_eq!(image.descriptors().len(), 1);
    assert_eq!(image.header().descriptors_free, 47);
    let part = image.primary_system_partition().unwrap();
    assert_eq!((part.id, part.offset, part.size), (1, 32768, 5000));
    assert_eq!(part.arch, host_arch());
    assert_eq!(image.header().primary_arch(), host_arch());
    assert!(image.find_object(DataType::Deffile).is_none());
}

#[test]
fn each_image_gets_its_own_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = fake_squashfs(dir.path(), 100);
    let ids: Vec<_> = ["a.sif", "b.sif"]
        .iter()
        .map(|name| {
            let out = dir.path().join(name);
            SifBuilder::new()
                .system_partition(&squashfs, "amd64")
                .write(&out)
                .unwrap();
            SifImage::open(&out).unwrap().header().id_string()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
    assert_eq!(&ids[0][14..15], "4", "version 4 UUID: {}", ids[0]);
}

#[test]
fn refuses_to_overwrite_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let squashfs = fake_squashfs(dir.path(), 100);
    let out = dir.path().join("taken.sif");
    std::fs::write(&out, b"keep me").unwrap();
    let err = SifBuilder::new()
        .system_partition(&squashfs, "amd64")
        .write(&out)
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("cannot create SIF image") && text.contains("taken.sif"),
        "{text}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}

#[test]
fn bad_builder_input_is_reported_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.sif");
    let not_squashfs = dir.path().join("plain.txt");
    std::fs::write(&not_squashfs, b"just text").unwrap();
    let squashfs = fake_squashfs(dir.path(), 100);

    let cases = [
        (SifBuilder::new(), "without a system partition"),
        (
            SifBuilder::new().system_partition(&dir.path().join("missing.sqfs"), "amd64"),
            "cannot read squashfs image",
        ),
        (
            SifBuilder::new().system_partition(&not_squashfs, "amd64"),
            "not a squashfs image",
        ),
        (
            SifBuilder::new().system_partition(&squashfs, "vax"),
            "unknown architecture \"vax\"",
        ),
        (
            SifBuilder::new()
                .json_object(&"n".repeat(200), b"{}".to_vec())
                .system_partition(&squashfs, "amd64"),
            "longer than 128 bytes",
        ),
    ];
    for (builder, expected) in cases {
        let text = format!("{:#}", builder.write(&out).unwrap_err());
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
        assert!(!text.contains('\n'), "{text}");
        assert!(!out.exists(), "partial image left behind after: {text}");
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn kernel_mounts_the_partition_at_its_offset() {
    if !is_root() {
        eprintln!("SKIPPED kernel_mounts_the_partition_at_its_offset: needs root to loop-mount");
        return;
    }
    if Command::new("mksquashfs").arg("-version").output().is_err() {
        eprintln!("SKIPPED kernel_mounts_the_partition_at_its_offset: mksquashfs not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), b"hello from squashfs\n").unwrap();
    let squashfs = dir.path().join("rootfs.sqfs");
    let status = Command::new("mksquashfs")
        .args([&rootfs, &squashfs])
        .args(["-noappend", "-quiet", "-no-progress"])
        .status()
        .unwrap();
    assert!(status.success(), "mksquashfs failed");

    let sif = dir.path().join("image.sif");
    SifBuilder::new()
        .deffile(DEFFILE.to_vec())
        .labels_json(LABELS.to_vec())
        .system_partition(&squashfs, host_arch())
        .write(&sif)
        .unwrap();
    let part = SifImage::open(&sif)
        .unwrap()
        .primary_system_partition()
        .unwrap();

    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let output = Command::new("mount")
        .args(["-t", "squashfs", "-o"])
        .arg(format!("loop,ro,offset={}", part.offset))
        .arg(&sif)
        .arg(&mountpoint)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mount failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mounted = Mounted(mountpoint.clone());
    let content = std::fs::read(mountpoint.join("etc/hello")).unwrap();
    assert_eq!(content, b"hello from squashfs\n");
    drop(mounted);
    assert!(
        !mountpoint.join("etc").exists(),
        "still mounted after umount"
    );
}
