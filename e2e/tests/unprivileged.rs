//! Users who are not root (real accounts made with useradd): containers in a user
//! namespace with the image served by squashfuse, instances and application-level
//! checkpoints in their own $HOME/.rctr, and no way into another user's.

use rctr_e2e::*;

/// Two checks every unprivileged test starts with; None (reason printed) to skip.
fn user(test: &str, tag: &str) -> Option<RealUser> {
    if let Some(why) = unprivileged_missing() {
        eprintln!("skipped {test}: {why}");
        return None;
    }
    RealUser::create(test, tag)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_user_runs_a_sif_with_the_root_modes_rules() {
    let test = "a_user_runs_a_sif_with_the_root_modes_rules";
    let Some(a) = user(test, "a") else { return };
    let img = a.image(&apptainer_busybox_sif());
    // The caller's own ids inside, no capability, no gaining any by exec.
    let out = a.ok([
        "exec",
        &img,
        "sh",
        "-c",
        "id -u; id -g; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; echo $HOME",
    ]);
    let uid = a.sh("id -u");
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], uid, "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert_eq!(
        lines.last().copied(),
        Some(a.home.to_str().unwrap()),
        "{out}"
    );
    // The exit status is the command's.
    let out = a.rctr(["exec", &img, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    // The home is bound read-write; a read-only bind stays read-only.
    let out = a.ok([
        "exec",
        "-B",
        "/etc:/mnt/hostetc:ro",
        &img,
        "sh",
        "-c",
        "echo hi > $HOME/written && cat /mnt/hostetc/hostname >/dev/null && (touch /mnt/hostetc/x 2>/dev/null && echo WROTE || echo ro)",
    ]);
    assert_eq!(out.trim(), "ro");
    assert_eq!(
        std::fs::read_to_string(a.home.join("written")).unwrap(),
        "hi\n"
    );
    // --contain --pid: a minimal /dev whose nodes work, own pid namespace.
    let out = a.ok([
        "exec",
        "--contain",
        "--pid",
        &img,
        "sh",
        "-c",
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && ls /proc/1/ >/dev/null && echo ok",
    ]);
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["4", "ok"]);
    // --fakeroot: root inside, still nothing more on the host; root's home is /root, where
    // the user's own home is bound (as Apptainer's).
    let out = a.ok([
        "exec",
        "--fakeroot",
        &img,
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map; echo $HOME; echo fake > /root/from-fakeroot",
    ]);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields, ["0", "0", &uid, "1", "/root"], "{out}");
    assert_eq!(
        std::fs::read_to_string(a.home.join("from-fakeroot")).unwrap(),
        "fake\n"
    );
    // An explicit --home still wins.
    let out = a.ok([
        "exec",
        "--fakeroot",
        "--home",
        &format!("{}:/work", a.home.display()),
        &img,
        "sh",
        "-c",
        "echo $HOME",
    ]);
    assert_eq!(out.trim(), "/work");
}

#[test]
fn without_fuse_a_user_gets_one_clear_line() {
    let test = "without_fuse_a_user_gets_one_clear_line";
    let Some(a) = user(test, "f") else { return };
    let img = a.image(&apptainer_busybox_sif());
    // The image cannot be served: squashfuse is nowhere on this PATH, nor... the system
    // copy exists, so hide FUSE itself instead: a user who cannot open /dev/fuse.
    let fuse = std::path::Path::new("/dev/fuse");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fuse).unwrap().permissions().mode();
    std::fs::set_permissions(fuse, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = a.rctr(["exec", &img, "true"]);
    std::fs::set_permissions(fuse, std::fs::Permissions::from_mode(mode & 0o777)).unwrap();
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("FUSE is not available"), "{err}");
    assert_no_panic(&err, "exec without FUSE");
}

#[test]
fn a_users_instance_lives_in_their_home_and_only_they_reach_it() {
    let test = "a_users_instance_lives_in_their_home_and_only_they_reach_it";
    let Some(a) = user(test, "a") else { return };
    let Some(b) = user(test, "b") else { return };
    let img = a.image(&apptainer_busybox_sif());
    a.ok(["instance", "start", &img, "web"]);
    let listed = a.ok(["instance", "list"]);
    assert!(listed.contains("web"), "{listed}");
    // Its record is under A's own $HOME/.rctr, private and A's.
    let rctr_dir = a.home.join(".rctr");
    let meta = std::fs::metadata(&rctr_dir).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let a_uid = std::fs::metadata(&a.home).unwrap().uid();
    assert_eq!(meta.uid(), a_uid);
    let out = a.ok(["exec", "instance://web", "sh", "-c", "id -u"]);
    assert_eq!(out.trim(), a_uid.to_string());

    // B, with their own home: A's instance does not exist for them.
    let out = b.rctr(["instance", "stop", "web"]);
    assert_ne!(out.status.code(), Some(0));
    assert_one_line_error(&stderr(&out), "B stops A's instance");
    // B, pointing $HOME at A's: every verb is refused with "not yours", in one line.
    let verbs: &[&[&str]] = &[
        &["instance", "list"],
        &["instance", "stop", "web"],
        &["exec", "instance://web", "true"],
        &["checkpoint", "list"],
        &["checkpoint", "instance", "web"],
        &["checkpoint", "delete", "ck"],
    ];
    for args in verbs {
        let out = b.rctr_with_home(&a.home, *args);
        let err = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?} as B succeeded");
        assert!(err.contains("not yours"), "{args:?}: {err}");
        assert_one_line_error(&err, &format!("{args:?}"));
    }
    // A's instance is still up after all that.
    assert!(a.ok(["instance", "list"]).contains("web"));
    a.ok(["instance", "stop", "web"]);
    assert!(!a.ok(["instance", "list"]).contains("web"));
}

#[test]
fn a_user_checkpoints_and_restarts_with_the_app_engine_and_others_cannot_read_it() {
    let test = "a_user_checkpoints_and_restarts_with_the_app_engine_and_others_cannot_read_it";
    let Some(a) = user(test, "a") else { return };
    let Some(b) = user(test, "b") else { return };
    let img = a.image(&app_image());
    // The README flow, as a user, with the engine that needs no privilege.
    a.ok(["checkpoint", "create", "fib", "--engine", "app"]);
    a.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "fib",
        &img,
        "job",
        "python3",
        "/opt/fib.py",
        "0.02",
    ]);
    let log = a
        .home
        .join(".rctr/instances")
        .read_dir()
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let user_dir = log.join(&a.name);
    let out_log = user_dir.join("job.out");
    let seen = |n: u32| {
        std::fs::read_to_string(&out_log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("fib({n})")))
    };
    assert!(
        wait_until(std::time::Duration::from_secs(30), || seen(5)),
        "no fib(5) line in {}",
        out_log.display()
    );
    a.ok(["checkpoint", "instance", "job"]);
    a.ok(["instance", "stop", "job"]);
    a.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "fib",
        &img,
        "job2",
        "python3",
        "/opt/fib.py",
        "0.02",
    ]);
    let out2 = user_dir.join("job2.out");
    assert!(
        wait_until(std::time::Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&out2).unwrap_or_default();
            text.lines().any(|l| l.starts_with("fib("))
        }),
        "the restarted job printed nothing"
    );
    let first = std::fs::read_to_string(&out2).unwrap_or_default();
    assert!(
        !first.contains("No loadable checkpoint"),
        "the restart did not load the checkpoint:\n{first}"
    );
    assert!(a.ok(["checkpoint", "list"]).contains("fib"));

    // B cannot read A's checkpoint (it holds A's memory), even knowing its path.
    let ck = a.home.join(".rctr/checkpoint");
    let out = b.sh(&format!(
        "find {} -type f -exec cat {{}} + >/dev/null 2>&1; ls {} 2>&1",
        ck.display(),
        ck.display()
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Permission denied"), "{text}");
    // Nor delete or restart it through rctr.
    for args in [
        &["checkpoint", "delete", "fib"][..],
        &[
            "instance",
            "start",
            "--ckpt-restart",
            "fib",
            &img,
            "stolen",
            "python3",
            "/opt/fib.py",
        ][..],
    ] {
        let out = b.rctr_with_home(&a.home, args);
        let err = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?} as B succeeded");
        assert!(err.contains("not yours"), "{args:?}: {err}");
    }
    a.ok(["instance", "stop", "job2"]);
    a.ok(["checkpoint", "delete", "fib"]);
    assert!(!a.ok(["checkpoint", "list"]).contains("fib"));
}
