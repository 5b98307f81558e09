//! Builds images from trees holding every kind of entry and checks them three ways: with
//! squashfs-tools (`unsquashfs -lln`, `unsquashfs -d`), with our reader, and with our extractor.

use rctr_squashfs::{build_from_dir, BuildOptions, Compression, EntryKind, SquashfsReader};
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn set_mtime(path: &Path, secs: i64) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn set_xattr(path: &Path, key: &str, value: &[u8]) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

fn list_xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return Vec::new();
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let k = CString::new(name).unwrap();
        let mut buf = vec![0u8; 65536];
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(len >= 0);
        buf.truncate(len as usize);
        out.push((k.into_string().unwrap(), buf));
    }
    out.sort();
    out
}

/// Incompressible bytes, so images have a predictable minimum size.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x = 0x2545F4914F6CDD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Everything we expect an image to preserve about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    rdev: Option<(u32, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
    /// Smallest relative path of the entries sharing this inode (hard links), else None.
    /// The smallest, not the first met: directory order differs between file systems.
    hardlink_group: Option<PathBuf>,
}

fn summarize(root: &Path) -> BTreeMap<PathBuf, Summary> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut inode_of: HashMap<PathBuf, (u64, u64)> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_block_device() {
            "bdev"
        } else if ft.is_char_device() {
            "cdev"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            let smallest = inodes.entry(key).or_insert_with(|| rel.clone());
            if rel < *smallest {
                *smallest = rel.clone();
            }
            inode_of.insert(rel.clone(), key);
        }
        let rdev = (ft.is_block_device() || ft.is_char_device())
            .then(|| (libc::major(meta.rdev()), libc::minor(meta.rdev())));
        out.insert(
            rel.clone(),
            Summary {
                kind,
                // symlink permission bits are meaningless (and not settable on Linux)
                mode: if ft.is_symlink() {
                    0
                } else {
                    meta.mode() & 0o7777
                },
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                content: ft.is_file().then(|| fs::read(&path).unwrap()),
                link: ft.is_symlink().then(|| fs::read_link(&path).unwrap()),
                rdev,
                xattrs: list_xattrs(&path),
                hardlink_group: None,
            },
        );
        if ft.is_dir() {
            for e in fs::read_dir(&path).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    // Second pass: every member of a group is named after the group's smallest path.
    for (rel, key) in inode_of {
        out.get_mut(&rel).unwrap().hardlink_group = Some(inodes[&key].clone());
    }
    out
}

/// Builds a tree with every kind of entry squashfs can hold; returns whether xattrs and
/// device nodes could be created here.
fn make_tree(root: &Path) -> (bool, bool) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir(root.join("private")).unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("hello.txt"), b"hello world\n").unwrap();
    // Several 128 KiB blocks plus a tail that goes into a fragment.
    let big: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(root.join("sub/big.bin"), &big).unwrap();
    // A file with an all-zero (sparse) block in the middle.
    let mut sparse = vec![7u8; 131072];
    sparse.extend(vec![0u8; 262144]);
    sparse.extend(vec![9u8; 1000]);
    fs::write(root.join("sub/sparse.bin"), &sparse).unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(root.join("hello.txt"), root.join("sub/hello-hardlink")).unwrap();
    fs::hard_link(
        root.join("hello.txt"),
        root.join("sub/deeper/hello-hardlink2"),
    )
    .unwrap();
    symlink("../hello.txt", root.join("sub/rel-link")).unwrap();
    symlink("/sub/big.bin", root.join("abs-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    symlink("sub", root.join("dir-link")).unwrap();
    let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap();
    let devices = if is_root() {
        let c = CString::new(root.join("null").as_os_str().as_bytes()).unwrap();
        let b = CString::new(root.join("loop-dev").as_os_str().as_bytes()).unwrap();
        let big_minor = CString::new(root.join("big-minor").as_os_str().as_bytes()).unwrap();
        unsafe {
            assert_eq!(
                libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)),
                0
            );
            assert_eq!(
                libc::mknod(b.as_ptr(), libc::S_IFBLK | 0o660, libc::makedev(7, 0)),
                0
            );
            assert_eq!(
                libc::mknod(
                    big_minor.as_ptr(),
                    libc::S_IFCHR | 0o600,
                    libc::makedev(240, 300)
                ),
                0
            );
        }
        // mknod applies the umask
        fs::set_permissions(root.join("null"), fs::Permissions::from_mode(0o666)).unwrap();
        fs::set_permissions(root.join("loop-dev"), fs::Permissions::from_mode(0o660)).unwrap();
        true
    } else {
        println!("not root: skipping device nodes and foreign ownership");
        false
    };
    if is_root() {
        let c = CString::new(root.join("private").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 1234, 5678) }, 0);
        let c = CString::new(root.join("sub/rel-link").as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 42, 43) }, 0);
    }
    let xattrs = set_xattr(&root.join("hello.txt"), "user.greeting", b"hi")
        && set_xattr(&root.join("sub"), "user.dir", b"\x00binary\xff")
        && set_xattr(&root.join("sub/big.bin"), "user.a", b"1")
        && set_xattr(&root.join("sub/big.bin"), "user.b", b"2");
    if is_root() {
        assert!(set_xattr(
            &root.join("setuid"),
            "trusted.note",
            b"root only"
        ));
        assert!(set_xattr(
            &root.join("sub/rel-link"),
            "trusted.on-link",
            b"x"
        ));
    }
    if !xattrs {
        println!(
            "filesystem under {} has no user xattrs: xattr checks skipped",
            root.display()
        );
    }
    // Distinct, old timestamps, set last (creating entries touches directory mtimes).
    let mut t = 1_000_000_000;
    for rel in [
        "empty",
        "hello.txt",
        "sub/big.bin",
        "sub/sparse.bin",
        "setuid",
        "sub/rel-link",
        "abs-link",
        "dangling",
        "fifo",
        "socket",
        "sub/deeper",
        "sub",
        "private",
    ] {
        t += 3600;
        set_mtime(&root.join(rel), t);
    }
    set_mtime(root, 1_500_000_000);
    (xattrs, devices)
}

fn build(src: &Path, out: &Path) {
    let opts = BuildOptions {
        mkfs_time: Some(1_600_000_000),
        ..Default::default()
    };
    let stats = build_from_dir(src, out, &opts).expect("build");
    assert!(stats.inodes > 10, "{stats:?}");
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
}

#[test]
fn unsquashfs_extracts_what_we_packed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let img = dir.path().join("img.sqfs");
    build(&src, &img);

    let dest = dir.path().join("unsquashed");
    let out = Command::new("unsquashfs")
        .arg("-d")
        .arg(&dest)
        .arg(&img)
        .output()
        .expect("run unsquashfs");
    assert!(
        out.status.success(),
        "unsquashfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (want, got) = (summarize(&src), summarize(&dest));
    for (path, s) in &want {
        assert_eq!(got.get(path), Some(s), "entry {}", path.display());
    }
    assert_eq!(want.len(), got.len());
}

#[test]
fn unsquashfs_listing_shows_modes_owners_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (_, devices) = make_tree(&src);
    let img = dir.path().join("img.sqfs");
    build(&src, &img);
    let out = Command::new("unsquashfs")
        .arg("-lln")
        .arg(&img)
        .output()
        .expect("run unsquashfs");
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let line = |suffix: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(suffix) || l.contains(&format!("{suffix} -> ")))
            .unwrap_or_else(|| panic!("{suffix} missing from listing:\n{listing}"))
            .to_string()
    };
    assert!(line("squashfs-root/setuid").starts_with("-rwsr-xr-x"));
    assert!(line("squashfs-root/private").starts_with("drwx------"));
    assert!(line("squashfs-root/sub/rel-link -> ../hello.txt").starts_with('l'));
    assert!(line("squashfs-root/abs-link -> /sub/big.bin").starts_with('l'));
    assert!(line("squashfs-root/fifo").starts_with("prw-r-----"));
    assert!(line("squashfs-root/socket").starts_with('s'));
    assert!(line("squashfs-root/sub/big.bin").contains(" 700000 "));
    if is_root() {
        assert!(line("squashfs-root/private").contains(" 1234/5678 "));
    }
    if devices {
        assert!(line("squashfs-root/null").starts_with("crw-rw-rw-"));
        assert!(line("squashfs-root/null").contains("1,  3"));
        assert!(line("squashfs-root/loop-dev").starts_with("brw-rw----"));
        // (unsquashfs -lln prints minors > 255 wrongly, also for mksquashfs images; the
        // extraction and reader tests check big-minor's device number.)
    } else {
        println!("not root: device node listing not checked");
    }
}

#[test]
fn reader_sees_contents_metadata_links_and_xattrs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let (xattrs, devices) = make_tree(&src);
    let img = dir.path().join("img.sqfs");
    build(&src, &img);
    let r = SquashfsReader::open(&img, 0).unwrap();
    let info = r.info();
    assert_eq!(info.compression, Some(Compression::Gzip));
    assert_eq!(info.block_size, 128 * 1024);
    assert_eq!(info.mkfs_time, 1_600_000_000);

    for (rel, s) in summarize(&src) {
        let inner = Path::new("/").join(&rel);
        let m = r
            .symlink_metadata(&inner)
            .unwrap()
            .unwrap_or_else(|| panic!("{} missing", inner.display()));
        let kind = match m.kind {
            EntryKind::Dir => "dir",
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
            EntryKind::BlockDevice => "bdev",
            EntryKind::CharDevice => "cdev",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
        };
        assert_eq!(kind, s.kind, "{}", inner.display());
        if s.kind != "symlink" {
            assert_eq!(m.mode, s.mode, "mode of {}", inner.display());
        }
        assert_eq!(
            (m.uid, m.gid),
            (s.uid, s.gid),
            "owner of {}",
            inner.display()
        );
        assert_eq!(m.mtime as i64, s.mtime, "mtime of {}", inner.display());
        assert_eq!(m.rdev, s.rdev, "rdev of {}", inner.display());
        if let Some(content) = &s.content {
            assert_eq!(
                r.read_file(&inner).unwrap().as_ref(),
                Some(content),
                "{}",
                inner.display()
            );
            assert_eq!(m.size, content.len() as u64);
        }
        if let Some(link) = &s.link {
            assert_eq!(r.read_link(&inner).unwrap().as_ref(), Some(link));
        }
        let got_x: Vec<(String, Vec<u8>)> = r
            .xattrs(&inner)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), v))
            .collect();
        let mut got_x = got_x;
        got_x.sort();
        assert_eq!(got_x, s.xattrs, "xattrs of {}", inner.display());
    }
    if xattrs {
        assert_eq!(
            r.xattrs("/hello.txt").unwrap(),
            vec![(b"user.greeting".to_vec(), b"hi".to_vec())]
        );
    }
    assert_eq!(devices, r.exists("/null").unwrap());

    // Hard links share one inode and count their links.
    let a = r.metadata("/hello.txt").unwrap().unwrap();
    let b = r.metadata("/sub/hello-hardlink").unwrap().unwrap();
    let c = r.metadata("/sub/deeper/hello-hardlink2").unwrap().unwrap();
    assert_eq!(a.inode, b.inode);
    assert_eq!(a.inode, c.inode);
    assert_eq!(a.nlink, 3);
    // Directory link counts: 2 + subdirectories.
    assert_eq!(r.metadata("/sub").unwrap().unwrap().nlink, 3);
    assert_eq!(r.metadata("/private").unwrap().unwrap().nlink, 2);

    // Symlinks resolve inside the image.
    assert_eq!(
        r.read_file("/sub/rel-link").unwrap().unwrap(),
        b"hello world\n"
    );
    assert_eq!(r.read_file("/abs-link").unwrap().unwrap().len(), 700_000);
    assert_eq!(
        r.read_file("/dir-link/../hello.txt").unwrap().unwrap(),
        b"hello world\n"
    );
    assert_eq!(
        r.read_file("/dir-link/deeper/hello-hardlink2")
            .unwrap()
            .unwrap(),
        b"hello world\n"
    );
    assert!(r.read_file("/dangling").unwrap().is_none());
    assert!(!r.exists("/dangling").unwrap());
    assert!(r.symlink_metadata("/dangling").unwrap().is_some());
    assert!(r.read_file("/nope").unwrap().is_none());
    assert!(r.read_file("/hello.txt/below-a-file").unwrap().is_none());
    let err = r.read_file("/sub").unwrap_err().to_string();
    assert!(err.contains("/sub") && err.contains("directory"), "{err}");

    let names: Vec<String> = r
        .list_dir("/dir-link")
        .unwrap()
        .into_iter()
        .map(|e| e.name.into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "big.bin",
            "deeper",
            "hello-hardlink",
            "rel-link",
            "sparse.bin"
        ]
    );
    let root_names: Vec<String> = r
        .list_dir("/")
        .unwrap()
        .into_iter()
        .map(|e| e.name.into_string().unwrap())
        .collect();
    let mut sorted = root_names.clone();
    sorted.sort();
    assert_eq!(root_names, sorted, "entries come back sorted");
}

#[test]
fn extract_to_reproduces_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let img = dir.path().join("img.sqfs");
    build(&src, &img);
    let dest = dir.path().join("extracted");
    let report = SquashfsReader::open(&img, 0)
        .unwrap()
        .extract_to(&dest)
        .unwrap();
    if is_root() {
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(summarize(&src), summarize(&dest));
    } else {
        println!(
            "not root: ownership and device nodes not compared ({:?})",
            report.warnings
        );
    }
    // Refuses a non-empty destination.
    let err = SquashfsReader::open(&img, 0)
        .unwrap()
        .extract_to(&dest)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn symlink_escapes_and_loops_stay_inside_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/passwd"), b"image passwd\n").unwrap();
    symlink("../../../../../etc/passwd", src.join("escape")).unwrap();
    symlink("/../../etc/passwd", src.join("abs-escape")).unwrap();
    symlink("loop-b", src.join("loop-a")).unwrap();
    symlink("loop-a", src.join("loop-b")).unwrap();
    let img = dir.path().join("img.sqfs");
    build_from_dir(&src, &img, &BuildOptions::default()).unwrap();
    let r = SquashfsReader::open(&img, 0).unwrap();
    assert_eq!(r.read_file("/escape").unwrap().unwrap(), b"image passwd\n");
    assert_eq!(
        r.read_file("/abs-escape").unwrap().unwrap(),
        b"image passwd\n"
    );
    assert_eq!(
        r.read_file("../../etc/passwd").unwrap().unwrap(),
        b"image passwd\n"
    );
    let err = r.read_file("/loop-a").unwrap_err().to_string();
    assert!(
        err.contains("too many levels of symbolic links") && err.contains("img.sqfs"),
        "{err}"
    );
}

#[test]
fn reads_an_image_at_an_offset_and_within_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("file"), b"payload").unwrap();
    fs::write(src.join("noise"), pseudo_random(50_000)).unwrap();
    let img = dir.path().join("img.sqfs");
    build_from_dir(&src, &img, &BuildOptions::default()).unwrap();
    let image = fs::read(&img).unwrap();
    let mut container = vec![0xAAu8; 45056];
    container.extend_from_slice(&image);
    container.extend_from_slice(&[0x55u8; 8192]); // trailing data of another object
    let wrapped = dir.path().join("wrapped.bin");
    fs::write(&wrapped, &container).unwrap();

    let r = SquashfsReader::open(&wrapped, 45056).unwrap();
    assert_eq!(r.read_file("/file").unwrap().unwrap(), b"payload");
    let r = SquashfsReader::open_range(&wrapped, 45056, Some(image.len() as u64)).unwrap();
    assert_eq!(r.read_file("file").unwrap().unwrap(), b"payload");
    assert_eq!(r.offset(), 45056);

    let err = format!("{:#}", SquashfsReader::open(&wrapped, 0).unwrap_err());
    assert!(
        err.contains("wrapped.bin") && err.contains("not a squashfs image"),
        "{err}"
    );
    // A window too small for the filesystem it holds.
    let err = format!(
        "{:#}",
        SquashfsReader::open_range(&wrapped, 45056, Some(4096)).unwrap_err()
    );
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn corrupt_or_foreign_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("file"), pseudo_random(500_000)).unwrap();
    let img = dir.path().join("good.sqfs");
    build_from_dir(&src, &img, &BuildOptions::default()).unwrap();
    let good = fs::read(&img).unwrap();

    let mut bad_magic = good.clone();
    bad_magic[0..4].copy_from_slice(b"XXXX");
    let p = dir.path().join("bad-magic.sqfs");
    fs::write(&p, &bad_magic).unwrap();
    let err = format!("{:#}", SquashfsReader::open(&p, 0).unwrap_err());
    assert!(
        err.contains("bad-magic.sqfs") && err.contains("superblock"),
        "{err}"
    );

    let mut bad_version = good.clone();
    bad_version[28] = 9; // version_major
    let p = dir.path().join("bad-version.sqfs");
    fs::write(&p, &bad_version).unwrap();
    let err = format!("{:#}", SquashfsReader::open(&p, 0).unwrap_err());
    assert!(
        err.contains("bad-version.sqfs") && err.contains("version"),
        "{err}"
    );

    let mut bad_block = good.clone();
    bad_block[12..16].copy_from_slice(&3u32.to_le_bytes()); // block_size
    let p = dir.path().join("bad-blocksize.sqfs");
    fs::write(&p, &bad_block).unwrap();
    let err = format!("{:#}", SquashfsReader::open(&p, 0).unwrap_err());
    assert!(
        err.contains("bad-blocksize.sqfs") && err.contains("block size"),
        "{err}"
    );

    let p = dir.path().join("truncated.sqfs");
    fs::write(&p, &good[..good.len() / 3]).unwrap();
    let err = format!("{:#}", SquashfsReader::open(&p, 0).unwrap_err());
    assert!(
        err.contains("truncated.sqfs") && err.contains("truncated"),
        "{err}"
    );

    let p = dir.path().join("tiny");
    fs::write(&p, b"hsqs").unwrap();
    let err = format!("{:#}", SquashfsReader::open(&p, 0).unwrap_err());
    assert!(err.contains("tiny") && err.contains("too small"), "{err}");

    let err = format!(
        "{:#}",
        SquashfsReader::open(&dir.path().join("missing.sqfs"), 0).unwrap_err()
    );
    assert!(
        err.contains("missing.sqfs") && err.contains("No such file"),
        "{err}"
    );

    // Garbage in the inode table: the superblock is fine, the root inode is not.
    let mut bad_inodes = good.clone();
    let inode_table = u64::from_le_bytes(good[64..72].try_into().unwrap()) as usize;
    for b in &mut bad_inodes[inode_table..inode_table + 64] {
        *b = 0xff;
    }
    let p = dir.path().join("bad-inodes.sqfs");
    fs::write(&p, &bad_inodes).unwrap();
    let err = match SquashfsReader::open(&p, 0) {
        Err(e) => format!("{e:#}"),
        Ok(r) => format!("{:#}", r.read_file("/file").unwrap_err()),
    };
    assert!(err.contains("bad-inodes.sqfs"), "{err}");
}

#[test]
fn builds_are_reproducible_and_zstd_works() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    make_tree(&src);
    let (a, b) = (dir.path().join("a.sqfs"), dir.path().join("b.sqfs"));
    build(&src, &a);
    build(&src, &b);
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "two builds of one tree differ"
    );
    assert_eq!(
        fs::metadata(&a).unwrap().len() % 4096,
        0,
        "image is padded to 4 KiB"
    );

    let z = dir.path().join("z.sqfs");
    let opts = BuildOptions {
        compression: Compression::Zstd,
        ..Default::default()
    };
    build_from_dir(&src, &z, &opts).unwrap();
    let r = SquashfsReader::open(&z, 0).unwrap();
    assert_eq!(r.info().compression, Some(Compression::Zstd));
    assert_eq!(
        r.read_file("/sub/big.bin").unwrap().unwrap(),
        fs::read(src.join("sub/big.bin")).unwrap()
    );
    let out = Command::new("unsquashfs")
        .arg("-s")
        .arg(&z)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Compression zstd"));
}

#[test]
fn output_handling() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();

    // An existing output is never overwritten.
    let existing = dir.path().join("existing.sqfs");
    fs::write(&existing, b"keep me").unwrap();
    let err = format!(
        "{:#}",
        build_from_dir(&src, &existing, &BuildOptions::default()).unwrap_err()
    );
    assert!(err.contains("existing.sqfs"), "{err}");
    assert_eq!(fs::read(&existing).unwrap(), b"keep me");

    // A failed build leaves no output behind.
    let out = dir.path().join("out.sqfs");
    let err = format!(
        "{:#}",
        build_from_dir(
            &dir.path().join("no-such-dir"),
            &out,
            &BuildOptions::default()
        )
        .unwrap_err()
    );
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(!out.exists());
    let bad = BuildOptions {
        block_size: 1000,
        ..Default::default()
    };
    assert!(build_from_dir(&src, &out, &bad)
        .unwrap_err()
        .to_string()
        .contains("block size"));
    assert!(!out.exists());

    // A single file is not a directory tree.
    let err = format!(
        "{:#}",
        build_from_dir(&src.join("f"), &out, &BuildOptions::default()).unwrap_err()
    );
    assert!(err.contains("not a directory"), "{err}");
    assert!(!out.exists());
}

#[test]
fn reads_the_apptainer_busybox_sif() {
    let sif = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/sif/apptainer/busybox_amd64.sif");
    let Ok(bytes) = fs::read(&sif) else {
        println!("{} not found: test skipped", sif.display());
        return;
    };
    // The SIF layer is another crate: find the partition by its magic.
    let offset = bytes
        .windows(4)
        .position(|w| w == b"hsqs")
        .expect("squashfs in the SIF") as u64;
    let r = SquashfsReader::open(&sif, offset).unwrap();
    assert_eq!(r.info().compression, Some(Compression::Gzip));
    let runscript =
        String::from_utf8(r.read_file("/.singularity.d/runscript").unwrap().unwrap()).unwrap();
    assert!(runscript.starts_with("#!/bin/sh"));
    // /singularity is a symlink to the runscript.
    assert_eq!(
        r.read_file("/singularity").unwrap().unwrap(),
        runscript.as_bytes()
    );
    let busybox = r.metadata("/bin/busybox").unwrap().unwrap();
    let sh = r.metadata("/bin/sh").unwrap().unwrap();
    assert_eq!(busybox.inode, sh.inode, "applets are hard links");
    assert!(busybox.nlink > 100);
    let elf = r.read_file("/bin/sh").unwrap().unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf.len() as u64, busybox.size);
}
