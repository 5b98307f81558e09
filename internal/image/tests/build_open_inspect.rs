//! End-to-end tests of the image layer: build SIFs from directories, images and definition
//! files, open them back, inspect them, and refuse bad inputs with clear messages.

use rctr_image::{
    build, build_with, inspect, BuildOptions, BuildReport, ImageKind, ImageSource, InspectItem,
    DEFAULT_RUNSCRIPT, INSPECT_METADATA_OBJECT,
};
use rctr_sif::{DataType, SifBuilder, SifImage};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::leftovers;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "ls", "cat", "echo", "true", "env", "id"];

/// [`build`] with relative `From:` and `%files` paths taken from `base` (the tests run in
/// parallel, so they cannot change the current directory).
fn build_in(base: &Path, out: &Path, source: &Path, force: bool) -> anyhow::Result<BuildReport> {
    let opts = BuildOptions {
        force,
        base_dir: Some(base),
        ..Default::default()
    };
    build_with(out, source, &opts)
}

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A root filesystem holding busybox (package busybox-static) with hard-linked applets and a
/// few files of our own. None if busybox is not installed.
fn busybox_rootfs(dir: &Path) -> Option<PathBuf> {
    if !Path::new(BUSYBOX).is_file() {
        println!("{BUSYBOX} missing (install busybox-static): test skipped");
        return None;
    }
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("usr/share/data")).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        fs::hard_link(root.join("bin/busybox"), root.join("bin").join(applet)).unwrap();
    }
    symlink("busybox", root.join("bin/uname")).unwrap();
    fs::write(
        root.join("usr/share/data/hello.txt"),
        b"hello from the image\n",
    )
    .unwrap();
    fs::write(root.join("usr/share/data/secret"), b"0600\n").unwrap();
    fs::set_permissions(
        root.join("usr/share/data/secret"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    Some(root)
}

#[test]
fn builds_from_a_busybox_directory_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = busybox_rootfs(dir.path()) else {
        return;
    };
    let out = dir.path().join("bb.sif");
    let report = build(&out, &root, false).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.output, out);
    assert!(leftovers(dir.path()).is_empty());

    let img = ImageSource::open(&out).unwrap();
    assert_eq!(img.kind, ImageKind::Sif);
    assert_eq!(img.path, fs::canonicalize(&out).unwrap());
    assert!(
        img.squashfs_offset > 0 && img.squashfs_offset.is_multiple_of(4096),
        "offset {}",
        img.squashfs_offset
    );
    let size = img.squashfs_size.unwrap();
    assert!(img.squashfs_offset + size <= fs::metadata(&out).unwrap().len());
    assert_eq!(img.arch.as_deref(), Some(rctr_sif::host_arch()));

    let busybox = fs::read(BUSYBOX).unwrap();
    assert_eq!(img.read_file("/bin/busybox").unwrap().unwrap(), busybox);
    assert_eq!(img.read_file("/bin/uname").unwrap().unwrap(), busybox);
    assert_eq!(
        img.read_file("/usr/share/data/hello.txt").unwrap().unwrap(),
        b"hello from the image\n"
    );
    let reader = img.squashfs().unwrap();
    let sh = reader.metadata("/bin/sh").unwrap().unwrap();
    assert_eq!(
        sh.inode,
        reader.metadata("/bin/busybox").unwrap().unwrap().inode,
        "applets stay hard links"
    );
    assert_eq!(sh.nlink as usize, APPLETS.len() + 1);
    assert_eq!(
        reader
            .metadata("/usr/share/data/secret")
            .unwrap()
            .unwrap()
            .mode,
        0o600
    );

    // Apptainer's layout.
    assert_eq!(
        img.read_file("/.singularity.d/runscript").unwrap().unwrap(),
        DEFAULT_RUNSCRIPT.as_bytes()
    );
    assert_eq!(
        img.read_file("/singularity").unwrap().unwrap(),
        DEFAULT_RUNSCRIPT.as_bytes()
    );
    for f in [
        "actions/exec",
        "actions/run",
        "actions/shell",
        "actions/start",
        "actions/test",
        "env/01-base.sh",
        "env/90-environment.sh",
        "env/99-base.sh",
        "env/99-runtimevars.sh",
        "startscript",
        "labels.json",
        "Singularity",
    ] {
        assert!(
            img.exists(Path::new("/.singularity.d").join(f)).unwrap(),
            "/.singularity.d/{f} missing"
        );
    }
    for d in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "var/tmp",
        "home",
        "root",
        "etc",
        ".singularity.d/libs",
    ] {
        assert!(
            reader
                .metadata(Path::new("/").join(d))
                .unwrap()
                .unwrap()
                .kind
                == rctr_squashfs::EntryKind::Dir,
            "/{d}"
        );
    }
    for (link, target) in [
        (".exec", ".singularity.d/actions/exec"),
        (".run", ".singularity.d/actions/run"),
        ("environment", ".singularity.d/env/90-environment.sh"),
    ] {
        assert_eq!(
            reader
                .read_link(Path::new("/").join(link))
                .unwrap()
                .unwrap(),
            Path::new(target)
        );
    }
    let deffile = format!(
        "bootstrap: localimage\nfrom: {}\n",
        fs::canonicalize(&root).unwrap().display()
    );
    assert_eq!(
        img.read_file("/.singularity.d/Singularity")
            .unwrap()
            .unwrap(),
        deffile.as_bytes()
    );

    // SIF objects: definition, labels, Apptainer inspect metadata.
    let sif = SifImage::open(&out).unwrap();
    let def = sif.find_object(DataType::Deffile).unwrap();
    assert_eq!(sif.read_object(def.id).unwrap(), deffile.as_bytes());
    let names: Vec<String> = sif
        .descriptors()
        .iter()
        .filter(|d| d.data_type == DataType::GenericJson)
        .map(|d| d.name())
        .collect();
    assert!(
        names.contains(&INSPECT_METADATA_OBJECT.to_string())
            && names.contains(&"labels.json".to_string()),
        "{names:?}"
    );

    // squashfs-tools sees the same tree at the partition offset.
    let out_ls = Command::new("unsquashfs")
        .arg("-o")
        .arg(img.squashfs_offset.to_string())
        .arg("-lln")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        out_ls.status.success(),
        "{}",
        String::from_utf8_lossy(&out_ls.stderr)
    );
    let listing = String::from_utf8(out_ls.stdout).unwrap();
    assert!(listing.contains("squashfs-root/bin/sh\n"), "{listing}");
    assert!(
        listing.contains("squashfs-root/singularity -> .singularity.d/runscript"),
        "{listing}"
    );

    // Inspect: labels by default, Apptainer's build labels.
    let m = inspect(&out, &[]).unwrap();
    let labels = &m.data.attributes.labels;
    assert_eq!(labels["org.label-schema.build-arch"], rctr_sif::host_arch());
    assert_eq!(labels["org.label-schema.schema-version"], "1.0");
    assert_eq!(
        labels["org.label-schema.usage.singularity.deffile.bootstrap"],
        "localimage"
    );
    assert!(labels["org.label-schema.build-date"].ends_with("_UTC"));
    assert!(
        m.data.attributes.runscript.is_empty(),
        "only labels unless asked"
    );
    let m = inspect(
        &out,
        &[
            InspectItem::Runscript,
            InspectItem::Deffile,
            InspectItem::Environment,
        ],
    )
    .unwrap();
    assert_eq!(m.data.attributes.runscript, DEFAULT_RUNSCRIPT.trim_end());
    assert_eq!(m.data.attributes.deffile, deffile.trim_end());
    assert!(m
        .data
        .attributes
        .environment
        .contains_key("/.singularity.d/env/90-environment.sh"));
    assert!(m.data.attributes.labels.is_empty());
}

#[test]
fn builds_from_a_definition_file_and_rebuilds_from_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = busybox_rootfs(dir.path()) else {
        return;
    };
    let defs = dir.path().join("defs");
    fs::create_dir_all(defs.join("conf.d")).unwrap();
    fs::write(defs.join("app.conf"), b"key=value\n").unwrap();
    fs::write(defs.join("conf.d/a.conf"), b"a\n").unwrap();
    fs::write(defs.join("conf.d/b.conf"), b"b\n").unwrap();
    fs::write(defs.join("tool.sh"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(defs.join("tool.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink(&root, defs.join("base")).unwrap();
    let def_path = defs.join("app.def");
    fs::write(
        &def_path,
        "Bootstrap: localimage\nFrom: base\n\n\
         %files\n    app.conf /etc/app.conf\n    conf.d /etc/conf.d\n    conf.d/*.conf /opt/confs/\n    tool.sh\n\n\
         %environment\n    export GREETING=hello\n\n\
         %runscript\n    echo \"running with $GREETING\" \"$@\"\n\n\
         %startscript\n    exec sleep 1000\n\n\
         %test\n    test -f /etc/app.conf\n\n\
         %labels\n    Maintainer Jane Doe <jane@example.org>\n    Version 1.0\n\n\
         %help\n    This image says hello.\n",
    )
    .unwrap();
    let out = dir.path().join("app.sif");
    build_in(&defs, &out, &def_path, false).unwrap();
    let img = ImageSource::open(&out).unwrap();
    let read = |p: &str| {
        String::from_utf8(
            img.read_file(p)
                .unwrap()
                .unwrap_or_else(|| panic!("{p} missing")),
        )
        .unwrap()
    };
    assert_eq!(read("/etc/app.conf"), "key=value\n");
    assert_eq!(read("/etc/conf.d/a.conf"), "a\n");
    assert_eq!(read("/opt/confs/b.conf"), "b\n");
    assert_eq!(read("/tool.sh"), "#!/bin/sh\necho tool\n");
    assert_eq!(
        img.squashfs()
            .unwrap()
            .metadata("/tool.sh")
            .unwrap()
            .unwrap()
            .mode,
        0o755
    );
    assert_eq!(
        read("/.singularity.d/runscript"),
        "#!/bin/sh\n\n    echo \"running with $GREETING\" \"$@\"\n"
    );
    assert_eq!(
        read("/.singularity.d/startscript"),
        "#!/bin/sh\n\n    exec sleep 1000\n"
    );
    assert_eq!(
        read("/.singularity.d/test"),
        "#!/bin/sh\n\n    test -f /etc/app.conf\n"
    );
    assert_eq!(
        read("/.singularity.d/runscript.help"),
        "    This image says hello.\n"
    );
    assert!(
        read("/.singularity.d/env/90-environment.sh").ends_with("\n    export GREETING=hello\n")
    );
    assert_eq!(
        read("/.singularity.d/Singularity"),
        fs::read_to_string(&def_path).unwrap()
    );

    let m = inspect(
        &out,
        &[
            InspectItem::Labels,
            InspectItem::Runscript,
            InspectItem::Startscript,
            InspectItem::Deffile,
        ],
    )
    .unwrap();
    let a = &m.data.attributes;
    assert_eq!(a.labels["Maintainer"], "Jane Doe <jane@example.org>");
    assert_eq!(a.labels["Version"], "1.0");
    assert_eq!(
        a.labels["org.label-schema.usage.singularity.deffile.from"],
        "base"
    );
    assert_eq!(a.startscript, "#!/bin/sh\n\n    exec sleep 1000");
    assert!(a.deffile.starts_with("Bootstrap: localimage\nFrom: base"));
    let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    assert_eq!(json["type"], "container");
    assert_eq!(json["data"]["attributes"]["labels"]["Version"], "1.0");
    assert!(
        m.to_json().contains("\\u003cjane@example.org\\u003e"),
        "Go-style escaping"
    );
    let text = m.to_text();
    assert!(
        text.contains("Maintainer: Jane Doe <jane@example.org>\n")
            && text.contains("#!/bin/sh\n\n    exec sleep 1000\n")
    );

    // A second build on top of the first image keeps its files, labels and environment.
    let def2 = dir.path().join("v2.def");
    fs::write(&def2, "Bootstrap: localimage\nFrom: app.sif\n%runscript\nexec /bin/cat /etc/app.conf\n%labels\nVersion 2.0\n").unwrap();
    let out2 = dir.path().join("v2.sif");
    build_in(dir.path(), &out2, &def2, false).unwrap();
    let img2 = ImageSource::open(&out2).unwrap();
    assert_eq!(
        img2.read_file("/etc/app.conf").unwrap().unwrap(),
        b"key=value\n"
    );
    assert_eq!(
        img2.read_file("/.singularity.d/runscript")
            .unwrap()
            .unwrap(),
        b"#!/bin/sh\n\nexec /bin/cat /etc/app.conf\n"
    );
    assert_eq!(
        img2.read_file("/.singularity.d/startscript")
            .unwrap()
            .unwrap(),
        b"#!/bin/sh\n\n    exec sleep 1000\n"
    );
    let labels = inspect(&out2, &[]).unwrap().data.attributes.labels;
    assert_eq!(labels["Version"], "2.0");
    assert_eq!(labels["Maintainer"], "Jane Doe <jane@example.org>");
    assert_eq!(
        labels["org.label-schema.usage.singularity.deffile.from"],
        "app.sif"
    );
    let busybox = img2
        .squashfs()
        .unwrap()
        .metadata("/bin/sh")
        .unwrap()
        .unwrap();
    assert_eq!(
        busybox.nlink as usize,
        APPLETS.len() + 1,
        "hard links survive extraction"
    );

    // Converting an image directly works too (source is an image file, no definition).
    let out3 = dir.path().join("copy.sif");
    build(&out3, &out2, false).unwrap();
    assert_eq!(
        ImageSource::open(&out3)
            .unwrap()
            .read_file("/etc/app.conf")
            .unwrap()
            .unwrap(),
        b"key=value\n"
    );
}

#[test]
fn builds_from_scratch() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("hello"), b"#!/bin/sh\necho hi\n").unwrap();
    let def = dir.path().join("scratch.def");
    fs::write(&def, "Bootstrap: scratch\n%files\nhello /bin/hello\n").unwrap();
    let out = dir.path().join("scratch.sif");
    build_in(dir.path(), &out, &def, false).unwrap();
    let img = ImageSource::open(&out).unwrap();
    assert_eq!(
        img.read_file("/bin/hello").unwrap().unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(
        img.squashfs().unwrap().metadata("/").unwrap().unwrap().mode,
        0o755
    );
    let labels = inspect(&out, &[]).unwrap().data.attributes.labels;
    assert_eq!(
        labels["org.label-schema.usage.singularity.deffile.bootstrap"],
        "scratch"
    );
    assert!(!labels.contains_key("org.label-schema.usage.singularity.deffile.from"));
}

#[test]
fn output_is_never_clobbered_without_force_and_failures_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("bin/tool"), b"v1").unwrap();
    let out = dir.path().join("out.sif");
    fs::write(&out, b"precious").unwrap();

    let err = format!("{:#}", build(&out, &src, false).unwrap_err());
    assert!(
        err.contains("out.sif") && err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read(&out).unwrap(), b"precious");

    // A failing build with --force keeps the old file and cleans up.
    let bad_def = dir.path().join("bad.def");
    fs::write(
        &bad_def,
        "Bootstrap: localimage\nFrom: src\n%files\nno-such-file /x\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        build_in(dir.path(), &out, &bad_def, true).unwrap_err()
    );
    assert!(
        err.contains("bad.def:4") && err.contains("no-such-file") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(fs::read(&out).unwrap(), b"precious");
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );

    // Failing without an existing output leaves no output at all.
    let fresh = dir.path().join("fresh.sif");
    assert!(build_in(dir.path(), &fresh, &bad_def, false).is_err());
    assert!(!fresh.exists());
    let missing_from = dir.path().join("missing-from.def");
    fs::write(&missing_from, "Bootstrap: localimage\nFrom: nowhere.sif\n").unwrap();
    let err = format!(
        "{:#}",
        build_in(dir.path(), &fresh, &missing_from, false).unwrap_err()
    );
    assert!(
        err.contains("missing-from.def") && err.contains("nowhere.sif"),
        "{err}"
    );
    assert!(!fresh.exists());
    assert!(leftovers(dir.path()).is_empty());

    // --force replaces the old file with a valid image.
    build(&out, &src, true).unwrap();
    let img = ImageSource::open(&out).unwrap();
    assert_eq!(img.read_file("/bin/tool").unwrap().unwrap(), b"v1");
    assert!(leftovers(dir.path()).is_empty());

    // A directory as output, and an output in a missing directory.
    let err = format!("{:#}", build(&src, &src, true).unwrap_err());
    assert!(err.contains("is a directory"), "{err}");
    let err = format!(
        "{:#}",
        build(&dir.path().join("nope/x.sif"), &src, false).unwrap_err()
    );
    assert!(err.contains("does not exist"), "{err}");
    let err = format!(
        "{:#}",
        build(&fresh, &dir.path().join("no-source"), false).unwrap_err()
    );
    assert!(err.contains("no-source"), "{err}");
}

#[test]
fn building_inside_the_source_directory_does_not_pack_itself() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("file"), b"x").unwrap();
    let out = src.join("self.sif");
    build(&out, &src, false).unwrap();
    build(&out, &src, true).unwrap();
    let img = ImageSource::open(&out).unwrap();
    assert!(!img.exists("/self.sif").unwrap());
    let names = img.list_dir("/").unwrap();
    assert!(
        names.iter().all(|n| !n.starts_with(".rctr-build-")),
        "{names:?}"
    );
    assert!(img.exists("/file").unwrap());
}

#[test]
fn definition_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.sif");
    let cases = [
        (
            "header.def",
            "Bootstrap: scratch\nFrobnicate: yes\n",
            ":2:",
            "unknown header keyword \"Frobnicate\"",
        ),
        (
            "section.def",
            "Bootstrap: scratch\n%runscript\necho\n%weird\n",
            ":4:",
            "unknown section %weird",
        ),
        (
            "post.def",
            "Bootstrap: scratch\n\n%post\n  apt-get update\n",
            ":3:",
            "%post needs a container runtime",
        ),
        (
            "agent.def",
            "Bootstrap: zypper\nFrom: alpine\n",
            ":1:",
            "\"zypper\" is not supported",
        ),
    ];
    for (name, text, line, msg) in cases {
        let def = dir.path().join(name);
        fs::write(&def, text).unwrap();
        let err = format!("{:#}", build(&out, &def, false).unwrap_err());
        assert!(
            err.contains(&format!("{name}{line}")) && err.contains(msg),
            "{name}: {err}"
        );
        assert!(!out.exists());
    }
    assert!(leftovers(dir.path()).is_empty());
}

/// Finds the primary partition descriptor of a SIF written by rctr-sif and returns the file
/// offset of its "extra" field (fs type i32, partition type i32, arch code).
fn partition_extra_offset(sif: &[u8]) -> usize {
    const TABLE: usize = 4096;
    const DESC_LEN: usize = 585;
    const EXTRA_AT: usize = 4 + 1 + 4 + 4 + 4 + 7 * 8 + 128;
    (0..48)
        .map(|i| TABLE + i * DESC_LEN)
        .find(|&d| i32::from_le_bytes(sif[d..d + 4].try_into().unwrap()) == 0x4004)
        .expect("partition descriptor")
        + EXTRA_AT
}

#[test]
fn bad_images_are_refused_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let err = format!(
        "{:#}",
        ImageSource::open(&d.join("missing.sif")).unwrap_err()
    );
    assert!(
        err.contains("missing.sif") && err.contains("No such file"),
        "{err}"
    );

    fs::write(
        d.join("notes.txt"),
        b"just some text, long enough to not be anything\n",
    )
    .unwrap();
    let err = format!("{:#}", ImageSource::open(&d.join("notes.txt")).unwrap_err());
    assert!(
        err.contains("notes.txt") && err.contains("not a SIF or squashfs image"),
        "{err}"
    );

    // A plain squashfs opens; with a corrupt superblock it does not.
    let tree = d.join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("f"), b"data").unwrap();
    let sqfs = d.join("plain.sqfs");
    rctr_squashfs::build_from_dir(&tree, &sqfs, &Default::default()).unwrap();
    let img = ImageSource::open(&sqfs).unwrap();
    assert_eq!((img.kind, img.squashfs_offset), (ImageKind::Squashfs, 0));
    assert_eq!(img.squashfs_size, Some(fs::metadata(&sqfs).unwrap().len()));
    assert_eq!(img.read_file("/f").unwrap().unwrap(), b"data");
    let mut bytes = fs::read(&sqfs).unwrap();
    bytes[28] = 7; // squashfs major version
    let corrupt = d.join("corrupt.sqfs");
    fs::write(&corrupt, &bytes).unwrap();
    let err = format!("{:#}", ImageSource::open(&corrupt).unwrap_err());
    assert!(
        err.contains("corrupt.sqfs") && err.contains("superblock"),
        "{err}"
    );

    // A SIF whose squashfs partition is corrupt.
    let good_sif = d.join("good.sif");
    SifBuilder::new()
        .system_partition(&sqfs, rctr_sif::host_arch())
        .write(&good_sif)
        .unwrap();
    let good = ImageSource::open(&good_sif).unwrap();
    let mut sif_bytes = fs::read(&good_sif).unwrap();
    sif_bytes[good.squashfs_offset as usize + 28] = 7;
    let corrupt_sif = d.join("corrupt.sif");
    fs::write(&corrupt_sif, &sif_bytes).unwrap();
    let err = format!("{:#}", ImageSource::open(&corrupt_sif).unwrap_err());
    assert!(
        err.contains("corrupt.sif") && err.contains("superblock"),
        "{err}"
    );

    // Another architecture.
    let other = if rctr_sif::host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let foreign = d.join("foreign.sif");
    SifBuilder::new()
        .system_partition(&sqfs, other)
        .write(&foreign)
        .unwrap();
    let err = format!("{:#}", ImageSource::open(&foreign).unwrap_err());
    assert!(
        err.contains("foreign.sif") && err.contains(other) && err.contains(rctr_sif::host_arch()),
        "{err}"
    );
    // Inspecting reads metadata only: any architecture will do, as with Apptainer.
    let labels = inspect(&foreign, &[]).unwrap().data.attributes.labels;
    assert!(labels.is_empty(), "{labels:?}");
    let img = ImageSource::open_any_arch(&foreign).unwrap();
    assert_eq!(img.arch.as_deref(), Some(other));

    // A primary partition that is not squashfs (patched to ext3).
    let mut ext3 = fs::read(&good_sif).unwrap();
    let at = partition_extra_offset(&ext3);
    assert_eq!(
        i32::from_le_bytes(ext3[at..at + 4].try_into().unwrap()),
        1,
        "squashfs fs type"
    );
    ext3[at..at + 4].copy_from_slice(&2i32.to_le_bytes());
    let ext3_sif = d.join("ext3.sif");
    fs::write(&ext3_sif, &ext3).unwrap();
    let err = format!("{:#}", ImageSource::open(&ext3_sif).unwrap_err());
    assert!(
        err.contains("ext3.sif") && err.contains("not squashfs"),
        "{err}"
    );
}

#[test]
fn sandbox_directories_resolve_links_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sandbox");
    fs::create_dir_all(root.join(".singularity.d/env")).unwrap();
    fs::write(
        root.join(".singularity.d/runscript"),
        "#!/bin/sh\necho sandbox\n",
    )
    .unwrap();
    fs::write(root.join(".singularity.d/labels.json"), r#"{"A": "1"}"#).unwrap();
    fs::write(
        root.join(".singularity.d/env/90-environment.sh"),
        "#!/bin/sh\nexport X=1\n",
    )
    .unwrap();
    symlink(".singularity.d/runscript", root.join("singularity")).unwrap();
    symlink("/../../../../etc/passwd", root.join("escape")).unwrap();
    let img = ImageSource::open(&root).unwrap();
    assert_eq!(img.kind, ImageKind::Sandbox);
    assert_eq!((img.squashfs_offset, img.squashfs_size), (0, None));
    assert_eq!(
        img.read_file("/singularity").unwrap().unwrap(),
        b"#!/bin/sh\necho sandbox\n"
    );
    assert!(
        img.read_file("/escape").unwrap().is_none(),
        "must not read the host's /etc/passwd"
    );
    assert!(img.read_file("/nothing").unwrap().is_none());
    let err = img.read_file("/.singularity.d").unwrap_err().to_string();
    assert!(err.contains("directory"), "{err}");
    let m = inspect(
        &root,
        &[
            InspectItem::Labels,
            InspectItem::Runscript,
            InspectItem::Environment,
        ],
    )
    .unwrap();
    assert_eq!(m.data.attributes.labels["A"], "1");
    assert_eq!(m.data.attributes.runscript, "#!/bin/sh\necho sandbox");
    assert_eq!(
        m.data.attributes.environment["/.singularity.d/env/90-environment.sh"],
        "#!/bin/sh\nexport X=1"
    );
}

#[test]
fn inspects_the_apptainer_busybox_image() {
    let sif = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/sif/apptainer/busybox_amd64.sif");
    if !sif.exists() {
        println!("{} not found: test skipped", sif.display());
        return;
    }
    if rctr_sif::host_arch() != "amd64" {
        println!("host is not amd64: test skipped");
        return;
    }
    let img = ImageSource::open(&sif).unwrap();
    assert_eq!(img.kind, ImageKind::Sif);
    assert_eq!(img.squashfs_offset, 45056);
    assert!(img
        .read_file("/.singularity.d/runscript")
        .unwrap()
        .unwrap()
        .starts_with(b"#!/bin/sh\nOCI_ENTRYPOINT"));

    let all = [
        InspectItem::Labels,
        InspectItem::Deffile,
        InspectItem::Runscript,
        InspectItem::Startscript,
        InspectItem::Environment,
    ];
    let m = inspect(&sif, &all).unwrap();
    let a = &m.data.attributes;
    assert_eq!(
        a.labels["org.label-schema.usage.singularity.version"],
        "3.8.1"
    );
    assert_eq!(
        a.labels["org.label-schema.build-date"],
        "Monday_2_August_2021_14:9:36_CDT"
    );
    assert_eq!(a.deffile, "BootStrap: docker\nFrom: busybox:1.33.1");
    assert_eq!(a.startscript, "#!/bin/sh");
    assert!(a.runscript.ends_with("exec \"$@\""));
    let env_keys: Vec<&String> = a.environment.keys().collect();
    assert_eq!(
        env_keys,
        [
            "/.singularity.d/env/10-docker2singularity.sh",
            "/.singularity.d/env/90-environment.sh"
        ]
    );

    // Reading the same from the image's files (what is done without inspect metadata) agrees.
    let labels_file = img
        .read_file("/.singularity.d/labels.json")
        .unwrap()
        .unwrap();
    let from_file: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&labels_file).unwrap();
    assert_eq!(&from_file, &a.labels);

    let json: serde_json::Value =
        serde_json::from_str(&inspect(&sif, &[]).unwrap().to_json()).unwrap();
    assert_eq!(json["type"], "container");
    assert_eq!(
        json["data"]["attributes"]["labels"]["org.label-schema.build-arch"],
        "amd64"
    );
    assert!(json["data"]["attributes"].get("runscript").is_none());
}

/// Unmounts when dropped, also when an assertion fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn compare_trees(src: &Path, mounted: &Path) {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (a, b) = (src.join(&rel), mounted.join(&rel));
        let (ma, mb) = (
            fs::symlink_metadata(&a).unwrap(),
            fs::symlink_metadata(&b).unwrap_or_else(|e| panic!("{}: {e}", b.display())),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", rel.display());
        if !ma.file_type().is_symlink() {
            assert_eq!(
                ma.mode() & 0o7777,
                mb.mode() & 0o7777,
                "mode of {}",
                rel.display()
            );
        }
        assert_eq!(
            (ma.uid(), ma.gid()),
            (mb.uid(), mb.gid()),
            "owner of {}",
            rel.display()
        );
        if ma.is_file() {
            assert_eq!(
                fs::read(&a).unwrap(),
                fs::read(&b).unwrap(),
                "content of {}",
                rel.display()
            );
            assert_eq!(ma.nlink(), mb.nlink(), "links of {}", rel.display());
        } else if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&a).unwrap(), fs::read_link(&b).unwrap());
        } else if ma.is_dir() {
            for e in fs::read_dir(&a).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
}

#[test]
fn kernel_mounts_the_built_sif_at_its_partition_offset() {
    if !is_root() {
        println!("not root: loop-mount test skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = busybox_rootfs(dir.path()) else {
        return;
    };
    let out = dir.path().join("mount.sif");
    build(&out, &root, false).unwrap();
    let img = ImageSource::open(&out).unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "squashfs", "-o"])
        .arg(format!("loop,ro,offset={}", img.squashfs_offset))
        .arg(&out)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount failed");
    let _guard = Mount(mnt.clone());
    compare_trees(&root.join("bin"), &mnt.join("bin"));
    compare_trees(&root.join("usr"), &mnt.join("usr"));
    assert_eq!(
        fs::read(mnt.join("singularity")).unwrap(),
        DEFAULT_RUNSCRIPT.as_bytes()
    );
    let labels: serde_json::Value =
        serde_json::from_slice(&fs::read(mnt.join(".singularity.d/labels.json")).unwrap()).unwrap();
    assert_eq!(labels["org.label-schema.build-arch"], rctr_sif::host_arch());
}
