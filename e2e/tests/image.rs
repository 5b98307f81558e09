//! `rctr build` and `rctr sif`: images built from a directory or a definition file are valid
//! SIFs whose squashfs partition holds exactly the source tree; bad inputs fail cleanly.

use rctr_e2e::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (start, end) of the squashfs partition in `rctr sif list` output (siftool's table:
/// `ID |GROUP |LINK |start-end |FS (Squashfs/*System/amd64)`).
fn squashfs_partition(list: &str) -> Option<(u64, u64)> {
    list.lines().find_map(|line| {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 5 || !cols[4].contains("Squashfs") {
            return None;
        }
        let (start, end) = cols[3].split_once('-')?;
        Some((start.parse().ok()?, end.parse().ok()?))
    })
}

/// A busybox rootfs with a few extra entries of each kind, in `env`'s work dir.
fn source_tree(env: &TestEnv) -> PathBuf {
    let src = env.work().join("rootfs");
    busybox_rootfs(&src).unwrap();
    fs::create_dir_all(src.join("data/nested/deeper")).unwrap();
    fs::write(src.join("data/hello.txt"), "hello from the source tree\n").unwrap();
    fs::write(
        src.join("data/nested/deeper/binary"),
        (0..=255u8).cycle().take(70_000).collect::<Vec<u8>>(),
    )
    .unwrap();
    fs::write(src.join("data/empty"), "").unwrap();
    fs::set_permissions(
        src.join("data/hello.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("nested/deeper/binary", src.join("data/link")).unwrap();
    src
}

fn build(env: &TestEnv, out: &Path, source: &Path) {
    env.ok([OsStr::new("build"), out.as_os_str(), source.as_os_str()]);
}

#[test]
fn build_from_directory_makes_a_sif_with_a_squashfs_partition() {
    let env = TestEnv::new("build_from_directory_makes_a_sif_with_a_squashfs_partition");
    let src = source_tree(&env);
    let sif = env.work().join("out.sif");
    build(&env, &sif, &src);
    let list = env.ok(["sif", "list", &sif.display().to_string()]);
    let (start, end) =
        squashfs_partition(&list).unwrap_or_else(|| panic!("no Squashfs partition in:\n{list}"));
    let size = fs::metadata(&sif).unwrap().len();
    assert!(
        start > 0 && start < end && end <= size,
        "partition {start}-{end} in a {size}-byte file"
    );
    // The partition starts with the squashfs magic "hsqs".
    let bytes = fs::read(&sif).unwrap();
    assert_eq!(&bytes[start as usize..start as usize + 4], b"hsqs");
}

/// Unmounts on drop, so a failed comparison leaves no mount behind.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Asserts that every entry under `src` exists under `image` with the same type, mode,
/// symlink target and contents.
fn assert_tree_contained(src: &Path, image: &Path, rel: &Path) {
    for entry in fs::read_dir(src.join(rel)).unwrap() {
        let entry = entry.unwrap();
        let rel = rel.join(entry.file_name());
        let (a, b) = (src.join(&rel), image.join(&rel));
        let ma = fs::symlink_metadata(&a).unwrap();
        let mb = fs::symlink_metadata(&b)
            .unwrap_or_else(|e| panic!("{} missing from the image: {e}", rel.display()));
        assert_eq!(
            ma.file_type(),
            mb.file_type(),
            "{}: type differs",
            rel.display()
        );
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&a).unwrap(),
                fs::read_link(&b).unwrap(),
                "{}: link target",
                rel.display()
            );
            continue;
        }
        assert_eq!(
            ma.permissions().mode() & 0o7777,
            mb.permissions().mode() & 0o7777,
            "{}: mode differs",
            rel.display()
        );
        if ma.is_dir() {
            assert_tree_contained(src, image, &rel);
        } else {
            assert!(
                fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                "{}: contents differ",
                rel.display()
            );
        }
    }
}

#[test]
fn built_image_mounts_and_holds_the_source_tree() {
    if !require_root("built_image_mounts_and_holds_the_source_tree") {
        return;
    }
    let env = TestEnv::new("built_image_mounts_and_holds_the_source_tree");
    let src = source_tree(&env);
    let sif = env.work().join("out.sif");
    build(&env, &sif, &src);
    let list = env.ok(["sif", "list", &sif.display().to_string()]);
    let (offset, _) =
        squashfs_partition(&list).unwrap_or_else(|| panic!("no Squashfs partition in:\n{list}"));
    let mnt = env.work().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount")
        .args(["-t", "squashfs", "-o", &format!("loop,ro,offset={offset}")])
        .arg(&sif)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the kernel refused to mount the squashfs partition at offset {offset}"
    );
    let _mounted = Mounted(mnt.clone());
    assert_tree_contained(&src, &mnt, Path::new(""));
}

#[test]
fn build_from_definition_file_sets_the_runscript() {
    if !require_root("build_from_definition_file_sets_the_runscript") {
        return;
    }
    let env = TestEnv::new("build_from_definition_file_sets_the_runscript");
    let src = env.work().join("rootfs");
    busybox_rootfs(&src).unwrap();
    let def = env.work().join("image.def");
    fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%runscript\n    echo \"runscript got: $*\"\n",
            src.display()
        ),
    )
    .unwrap();
    let sif = env.work().join("def.sif");
    build(&env, &sif, &def);
    let out = env.ok(["run", &sif.display().to_string(), "a", "b c"]);
    assert_eq!(out, "runscript got: a b c\n");
}

#[test]
fn build_refuses_an_existing_output_without_force() {
    let env = TestEnv::new("build_refuses_an_existing_output_without_force");
    let src = env.work().join("rootfs");
    busybox_rootfs(&src).unwrap();
    let sif = env.work().join("out.sif");
    fs::write(&sif, "precious").unwrap();
    let (sif_s, src_s) = (sif.display().to_string(), src.display().to_string());
    let (_, stderr) = env.fails(["build", &sif_s, &src_s]);
    assert_one_line_error(&stderr, "build over an existing file");
    assert_eq!(
        fs::read_to_string(&sif).unwrap(),
        "precious",
        "the existing file was changed"
    );
    env.ok(["build", "--force", &sif_s, &src_s]);
    let list = env.ok(["sif", "list", &sif_s]);
    assert!(
        squashfs_partition(&list).is_some(),
        "--force did not write a SIF:\n{list}"
    );
}

#[test]
fn bad_inputs_fail_with_one_line_errors() {
    let env = TestEnv::new("bad_inputs_fail_with_one_line_errors");
    let w = env.work();
    let src = w.join("rootfs");
    busybox_rootfs(&src).unwrap();
    let good = w.join("good.sif");
    build(&env, &good, &src);
    let bytes = fs::read(&good).unwrap();
    let (start, _) =
        squashfs_partition(&env.ok(["sif", "list", &good.display().to_string()])).unwrap();
    fs::write(w.join("header-only.sif"), &bytes[..100]).unwrap();
    fs::write(w.join("cut-data.sif"), &bytes[..start as usize + 4096]).unwrap();
    fs::write(w.join("text.sif"), "just some text\n").unwrap();
    fs::write(
        w.join("unknown-section.def"),
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%bogus\n    echo hi\n",
            src.display()
        ),
    )
    .unwrap();
    fs::write(w.join("docker.def"), "Bootstrap: docker\nFrom: busybox\n").unwrap();

    let cases: &[&[&str]] = &[
        &["build", "out1.sif", "no-such-dir"],
        &["build", "out2.sif", "unknown-section.def"],
        &["build", "out3.sif", "docker.def"],
        &["build", "out4.sif", "cut-data.sif"],
        &["sif", "list", "no-such.sif"],
        &["sif", "list", "text.sif"],
        &["sif", "list", "header-only.sif"],
        &["sif", "header", "header-only.sif"],
        &["sif", "dump", "99", "good.sif"],
        &["inspect", "cut-data.sif"],
        &["inspect", "text.sif"],
    ];
    for args in cases {
        let (_, stderr) = env.fails(*args);
        assert_one_line_error(&stderr, &format!("rctr {}", args.join(" ")));
    }
    for out in ["out1.sif", "out2.sif", "out3.sif", "out4.sif"] {
        assert!(!w.join(out).exists(), "a failed build left {out} behind");
    }
}

/// The build staging directories (`.rctr-build-*`) in `dir`.
fn staging_dirs(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rctr-build-"))
        .collect()
}

/// Apptainer's rules: relative `From:` and `%files` sources start in the current directory
/// (not the definition file's), quoted `%files` paths may hold spaces, `-F` overwrites.
#[test]
fn build_paths_start_in_the_current_directory_and_may_be_quoted() {
    if !require_root("build_paths_start_in_the_current_directory_and_may_be_quoted") {
        return;
    }
    let env = TestEnv::new("build_paths_start_in_the_current_directory_and_may_be_quoted");
    let w = env.work();
    busybox_rootfs(&w.join("rootfs")).unwrap();
    fs::write(w.join("my file.txt"), "spaced\n").unwrap();
    fs::write(w.join("data.txt"), "data\n").unwrap();
    fs::create_dir(w.join("defs")).unwrap();
    fs::write(
        w.join("defs/app.def"),
        "Bootstrap: localimage\nFrom: rootfs\n\n%files\n    \"my file.txt\" \"/opt/with space.txt\"\n    data.txt /opt/data.txt # a comment\n",
    )
    .unwrap();
    env.ok(["build", "app.sif", "defs/app.def"]);
    let out = env.ok([
        "exec",
        "app.sif",
        "cat",
        "/opt/with space.txt",
        "/opt/data.txt",
    ]);
    assert_eq!(out, "spaced\ndata\n");

    let (code, stderr) = env.fails(["build", "app.sif", "defs/app.def"]);
    let line = assert_one_line_error(&stderr, "build over an existing image");
    assert_eq!(code, 1);
    assert!(line.contains("--force"), "{line}");
    fs::write(w.join("data.txt"), "new data\n").unwrap();
    env.ok(["build", "-F", "app.sif", "defs/app.def"]);
    let out = env.ok(["exec", "app.sif", "cat", "/opt/data.txt"]);
    assert_eq!(out, "new data\n");
    assert!(staging_dirs(w).is_empty());
}

/// A build killed with SIGKILL cannot clean up: the next build in the same directory does.
#[test]
fn a_killed_build_is_swept_by_the_next_one() {
    if !require_root("a_killed_build_is_swept_by_the_next_one") {
        return;
    }
    let env = TestEnv::new("a_killed_build_is_swept_by_the_next_one");
    let w = env.work();
    busybox_rootfs(&w.join("rootfs")).unwrap();
    fs::write(
        w.join("slow.def"),
        "Bootstrap: localimage\nFrom: rootfs\n\n%post\n    sleep 1000\n",
    )
    .unwrap();
    let mut cmd = env.command(["build", "slow.sif", "slow.def"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let locked = || {
        staging_dirs(w)
            .iter()
            .any(|d| w.join(d).join(".lock").exists() && w.join(d).join("rootfs/bin").exists())
    };
    let started = wait_until(std::time::Duration::from_secs(60), locked);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(started, "the build never staged its tree");
    let left = staging_dirs(w);
    assert_eq!(left.len(), 1, "SIGKILL leaves the tree: {left:?}");
    assert!(!w.join("slow.sif").exists());

    // The killed build's container dies with it, a moment later (PR_SET_PDEATHSIG): until
    // then its lock is still held and the tree rightly left alone.
    let lock = w.join(&left[0]).join(".lock");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || {
            std::process::Command::new("flock")
                .arg("-n")
                .arg(&lock)
                .arg("true")
                .status()
                .is_ok_and(|s| s.success())
        }),
        "the killed build's lock is still held after 10 s"
    );
    let out = env.run(env.command(["build", "next.sif", "rootfs"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&left[0]) && stderr.contains("interrupted build"),
        "the sweep is reported:\n{stderr}"
    );
    assert!(staging_dirs(w).is_empty(), "{:?}", staging_dirs(w));
}
