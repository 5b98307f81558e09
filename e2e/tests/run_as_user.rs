//! Root running a job as a real user (`--security uid:N`, made with useradd): the
//! application and `exec` into it take the user's ids with no capability, and the
//! README flow checkpoints and restarts it as that user (the engine dumps it with the
//! user's ids, so it needs no CAP_SYS_RESOURCE, which root lacks on some hosts).

use rctr_e2e::*;
use std::os::unix::fs::MetadataExt;

fn status_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_default()
        .trim()
}

#[test]
fn root_checkpoints_and_restarts_a_server_that_runs_as_a_user() {
    let test = "root_checkpoints_and_restarts_a_server_that_runs_as_a_user";
    if !require_root_and_criu(test) {
        return;
    }
    let Some(user) = RealUser::create(test, "s") else {
        return;
    };
    let uid = String::from_utf8_lossy(&user.sh("id -u").stdout)
        .trim()
        .to_string();
    let security = format!("uid:{uid}");
    let env = TestEnv::new(test);
    let img = path_str(&server_image());
    let port = free_port();
    let p = port.to_string();

    env.ok(["checkpoint", "create", "ex"]);
    env.ok([
        "instance",
        "start",
        "--security",
        &security,
        "--ckpt-launch",
        "ex",
        &img,
        "server",
        &p,
    ]);
    env.wait_for_instance_port("server", port);
    assert_eq!(request(port), "request:1");
    assert_eq!(request(port), "request:2");
    let status = status_of(env.app_pid("server"));
    assert!(
        field(&status, "Uid:").split_whitespace().all(|u| u == uid),
        "{status}"
    );
    assert_eq!(field(&status, "CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field(&status, "NoNewPrivs:"), "1", "{status}");
    let inside = env.ok(["exec", "instance://server", "sh", "-c", "id -u; id -un"]);
    assert_eq!(
        inside.lines().collect::<Vec<_>>(),
        vec![uid.as_str(), user.name.as_str()],
        "{inside}"
    );

    env.ok(["checkpoint", "instance", "server"]);
    assert_eq!(
        request(port),
        "request:3",
        "the server stops after a checkpoint"
    );
    env.ok(["instance", "stop", "server"]);
    env.ok([
        "instance",
        "start",
        "--security",
        &security,
        "--ckpt-restart",
        "ex",
        &img,
        "restarted-server",
        &p,
    ]);
    env.wait_for_instance_port("restarted-server", port);
    assert_eq!(
        request(port),
        "request:3",
        "the restarted server should continue from the checkpoint"
    );
    let status = status_of(env.app_pid("restarted-server"));
    assert!(
        field(&status, "Uid:").split_whitespace().all(|u| u == uid),
        "the restored server is not the user's: {status}"
    );
    // The engine wrote the images as the user; root's checkpoint holds only root's files.
    let dir = env.home().join(".rctr/checkpoint/criu/ex");
    let mut seen = 0;
    for entry in walk(&dir) {
        let md = std::fs::symlink_metadata(&entry).unwrap();
        assert_eq!(md.uid(), 0, "{} is not root's", entry.display());
        assert_eq!(md.mode() & 0o077, 0, "{} is not private", entry.display());
        seen += 1;
    }
    assert!(seen > 5, "only {seen} files in {}", dir.display());
    env.ok(["instance", "stop", "restarted-server"]);
    env.ok(["checkpoint", "delete", "ex"]);
}

#[test]
fn only_root_may_run_a_container_as_another_user() {
    let test = "only_root_may_run_a_container_as_another_user";
    let Some(user) = RealUser::create(test, "t") else {
        return;
    };
    if let Some(why) = unprivileged_missing() {
        eprintln!("skipped {test}: {why}");
        return;
    }
    let img = user.image(&apptainer_busybox_sif());
    let out = user.rctr(["exec", "--security", "uid:0", &img, "id", "-u"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = assert_one_line_error(&err, "--security as a user");
    assert!(line.contains("only root"), "{line}");
    // And bad values are one line for root too.
    let env = TestEnv::new(test);
    let (_, err) = env.fails(["exec", "--security", "seccomp:x.json", &img, "true"]);
    let line = assert_one_line_error(&err, "--security seccomp");
    assert!(line.contains("seccomp"), "{line}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
