//! Checkpoints a user can trust: one user per checkpoint, restarts that refuse what they
//! cannot apply, a deleted-and-recreated checkpoint that old instances no longer claim, open
//! files in the writable overlay (saved) and on writable binds (checked), and images kept
//! outside $HOME.

use rctr_e2e::*;
use std::time::Duration;

struct Srv<'a> {
    env: &'a TestEnv,
    img: String,
    port: u16,
}

impl<'a> Srv<'a> {
    fn new(env: &'a TestEnv) -> Srv<'a> {
        Srv {
            env,
            img: path_str(&server_image()),
            port: free_port(),
        }
    }

    fn args(&self, flag: &'a str, ckpt: &'a str, name: &'a str, extra: &[&'a str]) -> Vec<String> {
        let mut v: Vec<String> = ["instance", "start", flag, ckpt]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(self.img.clone());
        v.push(name.to_string());
        v.push(self.port.to_string());
        v
    }

    fn start(&self, flag: &'a str, ckpt: &'a str, name: &'a str, extra: &[&'a str]) {
        self.env.ok(self.args(flag, ckpt, name, extra));
        self.env.wait_for_instance_port(name, self.port);
    }

    fn refused(&self, flag: &'a str, ckpt: &'a str, name: &'a str, extra: &[&'a str]) -> String {
        let (_, stderr) = self.env.fails(self.args(flag, ckpt, name, extra));
        assert_one_line_error(&stderr, &format!("{flag} {ckpt} {extra:?}")).to_string()
    }
}

#[test]
fn a_checkpoint_in_use_is_not_restored_or_launched_twice() {
    let test = "a_checkpoint_in_use_is_not_restored_or_launched_twice";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Srv::new(&env);
    env.ok(["checkpoint", "create", "one"]);
    s.start("--ckpt-launch", "one", "a", &[]);
    assert_eq!(request(s.port), "request:1");
    let line = s.refused("--ckpt-launch", "one", "b", &[]);
    assert!(line.contains("in use by running instance(s) a"), "{line}");
    env.ok(["checkpoint", "instance", "a"]);
    let line = s.refused("--ckpt-restart", "one", "b", &[]);
    assert!(
        line.contains("in use") && line.contains("--force"),
        "{line}"
    );
    assert_eq!(
        request(s.port),
        "request:2",
        "the first instance still serves"
    );
    env.ok(["instance", "stop", "a"]);
    s.start("--ckpt-restart", "one", "b", &[]);
    assert_eq!(request(s.port), "request:2");
}

#[test]
fn a_criu_restart_refuses_what_it_cannot_change() {
    let test = "a_criu_restart_refuses_what_it_cannot_change";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Srv::new(&env);
    let data = env.work().join("data");
    std::fs::create_dir(&data).unwrap();
    let bind = format!("{}:/data", data.display());
    env.ok(["checkpoint", "create", "ch"]);
    s.start("--ckpt-launch", "ch", "a", &["-B", &bind]);
    env.ok(["checkpoint", "instance", "--stop", "a"]);

    let other = env.work().join("other");
    std::fs::create_dir(&other).unwrap();
    let other_bind = format!("{}:/data", other.display());
    let line = s.refused("--ckpt-restart", "ch", "b", &["-B", &other_bind]);
    assert!(
        line.contains("cannot change binds") && line.contains(&other_bind),
        "{line}"
    );
    let line = s.refused("--ckpt-restart", "ch", "b", &["-B", &bind, "--env", "X=1"]);
    assert!(
        line.contains("cannot change the environment") && line.contains("X=1"),
        "{line}"
    );
    // Other arguments than the checkpointed ones.
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        "ch",
        "-B",
        &bind,
        &s.img,
        "b",
        "1234",
    ]);
    let line = assert_one_line_error(&stderr, "new arguments");
    assert!(
        line.contains("arguments") && line.contains("1234"),
        "{line}"
    );

    // The recorded bind's source is gone (a restart without --bind uses the recorded ones).
    std::fs::remove_dir(&data).unwrap();
    let line = s.refused("--ckpt-restart", "ch", "b", &[]);
    assert!(
        line.contains("recorded bind") && line.contains(&data.display().to_string()),
        "{line}"
    );
    std::fs::create_dir(&data).unwrap();
    s.start("--ckpt-restart", "ch", "b", &[]);
    assert_eq!(request(s.port), "request:1");
    env.ok(["instance", "stop", "b"]);
    s.start("--ckpt-restart", "ch", "c", &["-B", &bind]);
    assert_eq!(request(s.port), "request:1");
}

#[test]
fn a_deleted_and_recreated_checkpoint_is_not_claimed_by_the_old_instance() {
    let test = "a_deleted_and_recreated_checkpoint_is_not_claimed_by_the_old_instance";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Srv::new(&env);
    env.ok(["checkpoint", "create", "re"]);
    s.start("--ckpt-launch", "re", "old", &[]);
    env.ok(["checkpoint", "delete", "--force", "re"]);
    let (_, stderr) = env.fails(["checkpoint", "instance", "old"]);
    let line = assert_one_line_error(&stderr, "checkpoint of a deleted checkpoint");
    assert!(line.contains("has been deleted"), "{line}");
    env.ok(["checkpoint", "create", "re"]);
    let entry = env.checkpoint_json("re").unwrap();
    assert_eq!(entry["used_by"], serde_json::json!([]), "{entry}");
    let (_, stderr) = env.fails(["checkpoint", "instance", "old"]);
    let line = assert_one_line_error(&stderr, "checkpoint into the new namesake");
    assert!(line.contains("earlier checkpoint named 're'"), "{line}");
    // The new checkpoint can be launched onto: nobody uses it.
    env.ok(["instance", "stop", "old"]);
    s.start("--ckpt-launch", "re", "new", &[]);
    env.ok(["checkpoint", "instance", "new"]);
}

#[test]
fn writable_tmpfs_changes_come_back_and_changed_bind_files_are_caught() {
    let test = "files_open_on_private_tmpfs_or_changed_on_binds_are_caught";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    // --writable-tmpfs changes (a file held open, a file of the image deleted) are saved
    // with the generation and come back.
    env.ok(["checkpoint", "create", "tm"]);
    env.ok([
        "instance",
        "start",
        "--writable-tmpfs",
        "--ckpt-launch",
        "tm",
        &img,
        "overlay-holder",
        "sh",
        "-c",
        "rm /bin/seq; exec 3>/scratch; echo written >&3; while :; do usleep 50000; done",
    ]);
    assert!(wait_until(Duration::from_secs(10), || {
        env.cmd([
            "exec",
            "instance://overlay-holder",
            "test",
            "-s",
            "/scratch",
        ])
        .status
        .success()
    }));
    env.ok(["checkpoint", "instance", "--stop", "overlay-holder"]);
    env.ok([
        "instance",
        "start",
        "--writable-tmpfs",
        "--ckpt-restart",
        "tm",
        &img,
        "overlay-back",
    ]);
    let inside = env.ok([
        "exec",
        "instance://overlay-back",
        "sh",
        "-c",
        "cat /scratch; test -e /bin/seq && echo seq-is-back || echo seq-still-deleted",
    ]);
    assert_eq!(inside, "written\nseq-still-deleted\n");

    // A file open read-write on a bind, changed (same size) before the restart.
    let data = env.work().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("state"), b"0123456789").unwrap();
    let bind = format!("{}:/data", data.display());
    env.ok(["checkpoint", "create", "bf"]);
    env.ok([
        "instance",
        "start",
        "-B",
        &bind,
        "--ckpt-launch",
        "bf",
        &img,
        "holder",
        "sh",
        "-c",
        "exec 3<>/data/state; while :; do usleep 50000; done",
    ]);
    assert!(wait_until(Duration::from_secs(10), || {
        let pid = env.app_pid("holder");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() > 3)
            .unwrap_or(false)
    }));
    env.ok(["checkpoint", "instance", "--stop", "holder"]);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(data.join("state"), b"9876543210").unwrap();
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "-B",
        &bind,
        "--ckpt-restart",
        "bf",
        &img,
        "holder2",
    ]);
    let line = assert_one_line_error(&stderr, "a changed file on a bind");
    assert!(
        line.contains("state") && line.contains("same size") && line.contains("--force"),
        "{line}"
    );
    env.ok([
        "instance",
        "start",
        "-B",
        &bind,
        "--ckpt-restart",
        "bf",
        "--force",
        &img,
        "holder2",
    ]);
}

#[test]
fn checkpoint_images_can_live_outside_home() {
    let test = "checkpoint_images_can_live_outside_home";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let scratch = env.work().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let s = Srv::new(&env);
    env.ok(["checkpoint", "create", "far", "--dir", &path_str(&scratch)]);
    s.start("--ckpt-launch", "far", "a", &[]);
    assert_eq!(request(s.port), "request:1");
    env.ok(["checkpoint", "instance", "--stop", "a"]);
    assert!(scratch.join("far/gen-000001/manifest.json").is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(scratch.join("far"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    s.start("--ckpt-restart", "far", "b", &[]);
    assert_eq!(request(s.port), "request:2");
    env.ok(["instance", "stop", "b"]);
    assert!(env.checkpoint_json("far").is_some());
    // The same through $RCTR_CHECKPOINT_DIR.
    let mut cmd = env.command(["checkpoint", "create", "viaenv"]);
    cmd.env("RCTR_CHECKPOINT_DIR", &scratch);
    env.ok_cmd(cmd);
    assert!(scratch.join("viaenv/meta.json").is_file());
    let (_, stderr) = env.fails(["checkpoint", "create", "bad", "--dir", "relative/dir"]);
    assert!(assert_one_line_error(&stderr, "relative --dir").contains("absolute"));
    env.ok(["checkpoint", "delete", "far"]);
    assert!(!scratch.join("far").exists());
}
