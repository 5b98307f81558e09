//! What a user who is not root must not get through rctr (real accounts made with useradd):
//! root's files through binds, symlinks, `..` in names or image paths, swapped checkpoint
//! directories or manifests, or `--ckpt-conf`; root trusting a user's checkpoint, directory
//! or configuration; a writable engine bundle; privileges kept inside the container. Each
//! test fails if its attack works.

use rctr_e2e::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

fn user(test: &str, tag: &str) -> Option<RealUser> {
    if let Some(why) = unprivileged_missing() {
        eprintln!("skipped {test}: {why}");
        return None;
    }
    RealUser::create(test, tag)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Root's files the attacks aim at, in a root-owned directory users can traverse:
/// `secret` (0600, a marker that must never show), `victim` (0644, must never change),
/// `locked/` (0700).
struct RootFiles {
    dir: PathBuf,
    marker: String,
}

impl RootFiles {
    fn new(test: &str) -> RootFiles {
        let dir = tempfile::Builder::new()
            .prefix("rctr-e2e-rootfiles-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let marker = format!("TOPSECRET-{test}-{}", std::process::id());
        let put = |name: &str, body: &str, mode: u32| {
            std::fs::write(dir.join(name), body).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        };
        put("secret", &format!("{marker}\n"), 0o600);
        put("victim", "victim\n", 0o644);
        std::fs::create_dir(dir.join("locked")).unwrap();
        std::fs::set_permissions(dir.join("locked"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        put("locked/inner", &format!("{marker}\n"), 0o644);
        RootFiles { dir, marker }
    }

    fn path(&self, name: &str) -> String {
        path_str(&self.dir.join(name))
    }

    /// Nothing leaked, changed or added.
    fn assert_untouched(&self, out: &str, what: &str) {
        assert!(
            !out.contains(&self.marker),
            "{what}: root's secret leaked:\n{out}"
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.join("victim")).unwrap(),
            "victim\n",
            "{what}: root's file was written"
        );
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let expected: Vec<String> = ["locked", "secret", "victim"]
            .iter()
            .map(|s| s.to_string())
            .chain(
                names
                    .iter()
                    .filter(|n| n.ends_with(".sif") || n.starts_with("suid"))
                    .cloned(),
            )
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            names, expected,
            "{what}: a file appeared in root's directory"
        );
    }
}

impl Drop for RootFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn binds_symlinks_and_image_paths_do_not_reach_roots_files() {
    let test = "binds_symlinks_and_image_paths_do_not_reach_roots_files";
    let Some(a) = user(test, "a") else { return };
    let img = a.image(&apptainer_busybox_sif());
    let root = RootFiles::new("binds");
    let home = path_str(&a.home);
    let out = a.sh(&format!(
        "ln -s {0}/secret ~/link-secret && ln -s {0} ~/link-dir",
        root.dir.display()
    ));
    assert!(out.status.success(), "{}", text(&out));

    // Binds of root's file, directory and private directory, directly and through the
    // user's symlinks; with the user's ids and with --fakeroot (root inside, but root's
    // files are not mapped into the namespace, so it may not override their modes).
    let binds = [
        format!("{}:/s", root.path("secret")),
        format!("{}:/d", path_str(&root.dir)),
        format!("{}:/l", root.path("locked")),
        format!("{home}/link-secret:/ls"),
        format!("{home}/link-dir:/ld"),
    ];
    let script = "echo ran; cat /s /ls /d/secret /ld/secret /d/../d/secret /l/inner; ls /l; \
                  echo pwned >> /d/victim; echo pwned > /s; echo pwned > /ld/victim; \
                  touch /d/new /ld/new /l/new; chmod 666 /d/victim; echo end";
    for fakeroot in [false, true] {
        let mut args: Vec<String> = vec!["exec".into()];
        if fakeroot {
            args.push("--fakeroot".into());
        }
        for b in &binds {
            args.extend(["-B".to_string(), b.clone()]);
        }
        args.extend([img.clone(), "sh".into(), "-c".into(), script.into()]);
        let out = a.rctr(&args);
        let all = text(&out);
        let what = format!("binds (fakeroot: {fakeroot})");
        // The attack really ran inside (so the test can fail), and got nowhere.
        assert!(
            all.contains("ran") && all.contains("end"),
            "{what}: did not run:\n{all}"
        );
        assert!(all.contains("Permission denied"), "{what}:\n{all}");
        root.assert_untouched(&all, &what);
    }

    // Image paths: a root-only copy of the image, reached directly, through `..` and
    // through the user's symlink; root's secret given as the image.
    let private = root.dir.join("private.sif");
    std::fs::copy(apptainer_busybox_sif(), &private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = a.sh(&format!("ln -s {} ~/link.sif", private.display()));
    assert!(out.status.success());
    let dotdot = format!(
        "{home}/../../{}/../{}/private.sif",
        root.dir.parent().unwrap().display(),
        root.dir.display()
    );
    for image in [
        path_str(&private),
        format!("{home}/link.sif"),
        dotdot,
        root.path("secret"),
    ] {
        for verb in [
            &["exec", &image, "cat", "/etc/hostname"][..],
            &["inspect", &image][..],
            &["instance", "start", &image, "stolen"][..],
        ] {
            let out = a.rctr(verb);
            let all = text(&out);
            assert_ne!(out.status.code(), Some(0), "{verb:?} worked:\n{all}");
            assert_one_line_error(&String::from_utf8_lossy(&out.stderr), &format!("{verb:?}"));
            root.assert_untouched(&all, &format!("{verb:?}"));
        }
    }
    assert!(!a.ok(["instance", "list"]).contains("stolen"));

    // Files rctr itself reads for the user: --ckpt-conf, --env-file.
    let secret = root.path("secret");
    for args in [
        vec!["checkpoint", "create", "c", "--ckpt-conf", &secret],
        vec!["checkpoint", "check", "--ckpt-conf", &secret],
        vec!["exec", "--env-file", &secret, &img, "env"],
    ] {
        let out = a.rctr(&args);
        let all = text(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?} worked:\n{all}");
        root.assert_untouched(&all, &format!("{args:?}"));
    }
    for engine in ["app", "criu"] {
        let made = a.home.join(".rctr/checkpoint").join(engine).join("c");
        assert!(!made.exists(), "{} was created", made.display());
    }
}

#[test]
fn hostile_names_as_a_user_create_nothing_anywhere() {
    let test = "hostile_names_as_a_user_create_nothing_anywhere";
    let Some(a) = user(test, "n") else { return };
    let img = a.image(&app_image());
    a.ok(["checkpoint", "create", "ok", "--engine", "app"]);
    a.ok(["instance", "list"]);
    let before = tree_of(&a.home);
    let escape = format!("/tmp/rctr-e2e-escape-{}", std::process::id());
    let names = [
        "../x".to_string(),
        "../../../../../../tmp/rctr-e2e-escape".into(),
        escape.clone(),
        "a/b".into(),
        "..".into(),
        ".".into(),
        "-x".into(),
        "x y".into(),
    ];
    for name in &names {
        let launch = format!("--ckpt-launch={name}");
        let name_flag = format!("--name={name}");
        let cases: Vec<Vec<&str>> = vec![
            vec!["instance", "start", "--", &img, name, "true"],
            vec!["instance", "stop", "--", name],
            vec!["checkpoint", "create", "--engine", "app", "--", name],
            vec!["checkpoint", "delete", "--force", "--", name],
            vec!["checkpoint", "list", "--", name],
            vec!["checkpoint", "instance", "--", name],
            vec!["instance", "start", &launch, &img, "j", "true"],
            vec!["exec", "--ckpt-launch", "ok", &name_flag, &img, "true"],
        ];
        for args in cases {
            let out = a.rctr(&args);
            assert_ne!(out.status.code(), Some(0), "{args:?} worked");
            let err = String::from_utf8_lossy(&out.stderr);
            let line = assert_one_line_error(&err, &format!("{args:?}"));
            assert!(line.contains("name"), "{args:?}: {line}");
        }
    }
    // --dir into root's directories.
    for dir in ["/etc", "/root", "/var/lib"] {
        let out = a.rctr(["checkpoint", "create", "d", "--engine", "app", "--dir", dir]);
        assert_ne!(out.status.code(), Some(0), "--dir {dir} worked");
        assert_one_line_error(&String::from_utf8_lossy(&out.stderr), dir);
        assert!(!Path::new(dir).join("d").exists(), "{dir}/d was created");
    }
    assert_eq!(
        tree_of(&a.home),
        before,
        "refused commands changed the home"
    );
    for p in [escape.as_str(), "/tmp/rctr-e2e-escape", "/x"] {
        assert!(!Path::new(p).exists(), "{p} was created");
    }
}

/// Every path under `dir` (what refused commands must not change).
fn tree_of(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p.clone());
            }
            out.push(path_str(p.strip_prefix(dir).unwrap()));
        }
    }
    out.sort();
    out
}

/// The user's checkpoint `name` with one generation of the fib job (app engine).
fn checkpoint_with_a_generation(a: &RealUser, img: &str, name: &str) -> PathBuf {
    a.ok(["checkpoint", "create", name, "--engine", "app"]);
    a.ok([
        "instance",
        "start",
        "--ckpt-launch",
        name,
        img,
        "job",
        "python3",
        "/opt/fib.py",
        "0.02",
    ]);
    let dir = a.home.join(".rctr/checkpoint/app").join(name);
    // The application saves itself when asked; it must be computing first.
    let out_log = a
        .home
        .join(".rctr/instances")
        .read_dir()
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join(&a.name)
        .join("job.out");
    assert!(
        wait_until(std::time::Duration::from_secs(30), || {
            std::fs::read_to_string(&out_log)
                .unwrap_or_default()
                .contains("fib(5)")
        }),
        "no fib(5) line in {}",
        out_log.display()
    );
    a.ok(["checkpoint", "instance", "job"]);
    a.ok(["instance", "stop", "job"]);
    assert!(dir.join("gen-000001/manifest.json").is_file());
    dir
}

#[test]
fn a_users_swapped_checkpoint_dir_or_manifest_is_refused() {
    let test = "a_users_swapped_checkpoint_dir_or_manifest_is_refused";
    let Some(a) = user(test, "s") else { return };
    let img = a.image(&app_image());
    let root = RootFiles::new("swap");
    let dir = checkpoint_with_a_generation(&a, &img, "ck");
    let restart: Vec<&str> = vec![
        "instance",
        "start",
        "--ckpt-restart",
        "ck",
        &img,
        "job2",
        "python3",
        "/opt/fib.py",
        "0.02",
    ];
    let verbs: Vec<Vec<&str>> = vec![vec!["checkpoint", "verify", "ck"], restart.clone()];
    let refused = |what: &str| {
        // Listing may show a damaged generation; it must not show what the link points to.
        root.assert_untouched(&text(&a.rctr(["checkpoint", "list", "ck"])), what);
        for args in &verbs {
            let out = a.rctr(args);
            let all = text(&out);
            assert_ne!(
                out.status.code(),
                Some(0),
                "{what}: {args:?} worked:\n{all}"
            );
            assert_one_line_error(
                &String::from_utf8_lossy(&out.stderr),
                &format!("{what}: {args:?}"),
            );
            root.assert_untouched(&all, what);
        }
        a.rctr(["instance", "stop", "job2"]);
    };
    // The manifest swapped for a symlink to root's secret, then to root's writable-by-root
    // victim (which a restart or checkpoint must not touch).
    let manifest = dir.join("gen-000001/manifest.json");
    let out = a.sh(&format!(
        "mv {0} {0}.real && ln -s {1} {0}",
        manifest.display(),
        root.path("secret")
    ));
    assert!(out.status.success(), "{}", text(&out));
    refused("manifest -> root's secret");
    a.sh(&format!("rm {0} && mv {0}.real {0}", manifest.display()));
    // The whole checkpoint directory swapped for a symlink to root's directory, and to a
    // copy of itself.
    for target in [path_str(&root.dir), format!("{}.real", dir.display())] {
        let out = a.sh(&format!(
            "mv {0} {0}.real && ln -s {1} {0}",
            dir.display(),
            target
        ));
        assert!(out.status.success(), "{}", text(&out));
        refused(&format!("checkpoint dir -> {target}"));
        for args in [
            vec!["checkpoint", "delete", "--force", "ck"],
            vec!["checkpoint", "create", "--engine", "app", "ck"],
        ] {
            let out = a.rctr(&args);
            assert_ne!(out.status.code(), Some(0), "{target}: {args:?} worked");
            root.assert_untouched(&text(&out), &format!("{args:?}"));
        }
        a.sh(&format!("rm {0} && mv {0}.real {0}", dir.display()));
    }
    // Put back, it verifies and restarts again (so the refusals were about the swaps).
    a.ok(["checkpoint", "verify", "ck"]);
    a.ok(&restart);
    a.ok(["instance", "stop", "job2"]);
}

fn root_rctr(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(rctr_bin());
    cmd.args(args).env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    output_with_timeout(cmd, std::time::Duration::from_secs(120))
}

#[test]
fn root_does_not_trust_a_users_checkpoints_dirs_or_conf() {
    let test = "root_does_not_trust_a_users_checkpoints_dirs_or_conf";
    let Some(a) = user(test, "r") else { return };
    let img = a.image(&app_image());
    let a_uid = std::fs::metadata(&a.home).unwrap().uid().to_string();
    checkpoint_with_a_generation(&a, &img, "ck");
    // Root pointed at the user's state: "not yours", for every verb that reads it.
    for args in [
        vec!["checkpoint", "list"],
        vec!["checkpoint", "verify", "ck"],
        vec![
            "instance",
            "start",
            "--ckpt-restart",
            "ck",
            &img,
            "rooted",
            "python3",
            "/opt/fib.py",
        ],
    ] {
        let out = root_rctr(&a.home, &args, &[]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(
            out.status.code(),
            Some(0),
            "root {args:?} on A's state worked"
        );
        assert!(err.contains("not yours"), "{args:?}: {err}");
        assert_one_line_error(&err, &format!("{args:?}"));
    }
    // Root keeping its checkpoint in a directory the user owns (the user could swap it for
    // a symlink under root's writes), by --dir or $RCTR_CHECKPOINT_DIR.
    let root_home = tempfile::Builder::new()
        .prefix("rctr-e2e-roothome-")
        .tempdir()
        .unwrap();
    let theirs = a.home.join("scratch");
    assert!(a.sh("mkdir ~/scratch").status.success());
    let theirs_s = path_str(&theirs);
    for (args, env) in [
        (
            vec!["checkpoint", "create", "r1", "--dir", &theirs_s],
            vec![],
        ),
        (
            vec!["checkpoint", "create", "r1"],
            vec![("RCTR_CHECKPOINT_DIR", theirs_s.as_str())],
        ),
    ] {
        let out = root_rctr(root_home.path(), &args, &env);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.status.code(), Some(0), "{args:?} {env:?} worked");
        let line = assert_one_line_error(&err, &format!("{args:?}"));
        assert!(line.contains(&format!("belongs to uid {a_uid}")), "{line}");
        assert!(!theirs.join("r1").exists());
    }
    // Root taking engine settings from a file the user controls.
    let conf = a.home.join("conf.yaml");
    assert!(a
        .sh(&format!("echo 'engine: app' > {}", conf.display()))
        .status
        .success());
    let conf_s = path_str(&conf);
    for args in [
        vec!["checkpoint", "create", "r2", "--ckpt-conf", &conf_s],
        vec!["checkpoint", "check", "--ckpt-conf", &conf_s],
    ] {
        let out = root_rctr(root_home.path(), &args, &[]);
        let all = text(&out);
        assert_ne!(out.status.code(), Some(0), "root {args:?} worked:\n{all}");
        assert!(all.contains("neither root nor you"), "{args:?}: {all}");
    }
}

#[test]
fn the_engine_bundle_cache_is_roots_alone() {
    let test = "the_engine_bundle_cache_is_roots_alone";
    if !require_root_and_criu(test) {
        return;
    }
    let Some(a) = user(test, "e") else { return };
    // Root's engine check builds (or finds) the bundle.
    let home = tempfile::tempdir().unwrap();
    let out = root_rctr(home.path(), &["checkpoint", "check"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let cache = Path::new("/var/lib/rctr/engine-bundles");
    for d in cache.ancestors() {
        let md = std::fs::metadata(d).unwrap();
        assert_eq!(md.uid(), 0, "{} is not root's", d.display());
        assert_eq!(
            md.mode() & 0o022,
            0,
            "{} is writable by others",
            d.display()
        );
    }
    let bundles: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("bin/criu").is_file())
        .collect();
    assert!(!bundles.is_empty(), "no bundle in {}", cache.display());
    // The user can neither add a bundle, replace a file of one, nor rename one.
    let b = &bundles[0];
    let out = a.sh(&format!(
        "mkdir {0}/mine; cp /bin/true {1}/bin/criu; mv {1} {0}/moved; ln -s /tmp {0}/.index/x; \
         echo end",
        cache.display(),
        b.display()
    ));
    let all = text(&out);
    assert!(all.contains("end"), "{all}");
    assert_eq!(all.matches("Permission denied").count(), 4, "{all}");
    assert!(b.join("bin/criu").is_file() && !cache.join("mine").exists());
}

/// A tiny static program: its real/effective/saved uids, whether setuid(0) works, and the
/// first bytes of the file named by its argument if it can open it.
const SUID_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    uid_t r, e, s;
    getresuid(&r, &e, &s);
    printf("ruid=%u euid=%u suid=%u\n", r, e, s);
    printf("setuid0=%d\n", setuid(0));
    if (argc > 1) {
        char buf[128] = {0};
        int fd = open(argv[1], O_RDONLY);
        if (fd >= 0 && read(fd, buf, sizeof buf - 1) > 0) printf("read:%s\n", buf);
        else printf("denied\n");
    }
    return 0;
}
"#;

/// An image whose /bin/suidcheck is root's and mode 4755.
fn setuid_image(scratch: &Path) -> PathBuf {
    let rootfs = scratch.join("rootfs");
    busybox_rootfs(&rootfs).unwrap();
    let src = scratch.join("suid.c");
    std::fs::write(&src, SUID_C).unwrap();
    let bin = rootfs.join("bin/suidcheck");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc: {}", text(&out));
    std::os::unix::fs::chown(&bin, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let sif = scratch.join("suid.sif");
    build_sif(&sif, &rootfs).unwrap();
    sif
}

#[test]
fn setuid_binaries_in_an_image_give_a_user_nothing() {
    let test = "setuid_binaries_in_an_image_give_a_user_nothing";
    let Some(a) = user(test, "u") else { return };
    let root = RootFiles::new("suid");
    let scratch = tempfile::tempdir().unwrap();
    let sif = setuid_image(scratch.path());
    let img = a.image(&sif);
    let uid = std::fs::metadata(&a.home).unwrap().uid();
    // The image really holds a setuid-root program (root's view of it).
    let home = tempfile::tempdir().unwrap();
    let out = root_rctr(
        home.path(),
        &["exec", &img, "stat", "-c", "%a:%u", "/bin/suidcheck"],
        &[],
    );
    assert_eq!(text(&out).trim(), "4755:0", "{}", text(&out));
    // And the program does give root where setuid works: the same file on the host.
    let host_copy = root.dir.join("suidcheck-host");
    std::fs::copy(scratch.path().join("rootfs/bin/suidcheck"), &host_copy).unwrap();
    std::fs::set_permissions(&host_copy, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let out = a.sh(&path_str(&host_copy));
    std::fs::remove_file(&host_copy).unwrap();
    assert!(
        text(&out).contains("euid=0"),
        "control: setuid does not work on the host here: {}",
        text(&out)
    );

    // In the container: as the user, with --fakeroot, and in an instance.
    let bind = format!("{}:/hostroot", path_str(&root.dir));
    let probe =
        "/bin/suidcheck /hostroot/secret; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status";
    let expect_user = format!("ruid={uid} euid={uid} suid={uid}");
    let out = a.ok(["exec", "-B", &bind, &img, "sh", "-c", probe]);
    assert!(out.contains(&expect_user), "{out}");
    assert!(
        out.contains("setuid0=-1") && out.contains("denied"),
        "{out}"
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    root.assert_untouched(&out, "setuid program as the user");

    let out = a.ok(["exec", "--fakeroot", "-B", &bind, &img, "sh", "-c", probe]);
    assert!(out.contains("euid=0"), "{out}");
    assert!(out.contains("denied"), "{out}");
    root.assert_untouched(&out, "setuid program under --fakeroot");

    a.ok(["instance", "start", "-B", &bind, &img, "suid"]);
    let out = a.ok(["exec", "instance://suid", "sh", "-c", probe]);
    a.ok(["instance", "stop", "suid"]);
    assert!(
        out.contains(&expect_user) && out.contains("denied"),
        "{out}"
    );
    root.assert_untouched(&out, "setuid program in an instance");
}
