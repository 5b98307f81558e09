//! Checks of the harness itself, independent of rctr: if these fail, the other e2e failures
//! say nothing about rctr.

use rctr_e2e::*;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::Duration;

fn chroot_run(root: &std::path::Path, argv: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("/usr/sbin/chroot");
    cmd.arg(root)
        .args(argv)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    output_with_timeout(cmd, Duration::from_secs(60))
}

#[test]
fn busybox_rootfs_runs_its_shell() {
    if !require_root("busybox_rootfs_runs_its_shell") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path()).unwrap();
    // Idempotent: a second call on the same tree works.
    busybox_rootfs(dir.path()).unwrap();
    let out = chroot_run(
        dir.path(),
        &[
            "/bin/sh",
            "-c",
            "echo $((6*7)); seq 3 | wc -l; ls -d /tmp /proc /home",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "42\n3\n/home\n/proc\n/tmp\n"
    );
}

#[test]
fn python_rootfs_runs_python_and_the_counter_server() {
    if !require_root("python_rootfs_runs_python_and_the_counter_server") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    python_rootfs(dir.path()).unwrap();
    for skipped in ["test", "idlelib", "tkinter", "ensurepip"] {
        let found = std::fs::read_dir(dir.path().join("usr/lib"))
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.path().join(skipped).exists());
        assert!(
            !found,
            "stdlib directory {skipped}/ should have been left out"
        );
    }
    let out = chroot_run(
        dir.path(),
        &[
            "/usr/bin/python3",
            "-c",
            "import socket, sys, json, ssl, hashlib; print(1)",
        ],
    );
    assert!(
        out.status.success(),
        "python3 in the rootfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");

    // The counter server, run directly in the rootfs (no rctr): answers count up from 1.
    let port = free_port();
    let mut server = Command::new("/usr/sbin/chroot")
        .arg(dir.path())
        .args([
            "/usr/bin/python3",
            "/opt/counter_server.py",
            &port.to_string(),
        ])
        .env_clear()
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let served = try_wait_for_port(port, Duration::from_secs(20));
    let answers: Vec<String> = if served {
        (0..3).map(|_| request(port)).collect()
    } else {
        vec![]
    };
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(served, "the counter server did not listen on {port}");
    assert_eq!(answers, ["request:1", "request:2", "request:3"]);
}

#[test]
fn install_host_path_reproduces_symlink_chains() {
    let root = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    // host: real/file, link -> real, chain -> link
    std::fs::create_dir(host.path().join("real")).unwrap();
    std::fs::write(host.path().join("real/file"), "data").unwrap();
    std::os::unix::fs::symlink("real", host.path().join("link")).unwrap();
    std::os::unix::fs::symlink(host.path().join("link"), host.path().join("chain")).unwrap();
    install_host_path(root.path(), &host.path().join("chain/file")).unwrap();
    let inside = root.path().join(host.path().strip_prefix("/").unwrap());
    assert!(std::fs::symlink_metadata(inside.join("chain"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::symlink_metadata(inside.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(inside.join("real/file")).unwrap(),
        "data"
    );
}

#[test]
fn port_helpers_see_listeners_and_read_answers() {
    let port = free_port();
    assert!(!is_listening(port));
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    assert!(is_listening(port));
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"request:7\n").unwrap();
    });
    wait_for_port(port, Duration::from_secs(1));
    assert_eq!(request(port), "request:7");
    server.join().unwrap();
    assert!(wait_until(Duration::from_secs(2), || !is_listening(port)));
}

#[test]
fn error_assertions_accept_and_reject() {
    assert_eq!(
        assert_one_line_error("rctr: error: no such file\n", "t"),
        "rctr: error: no such file"
    );
    assert_eq!(
        assert_error_line("log tail\nrctr: error: exited\n", "t"),
        "rctr: error: exited"
    );
    for bad in [
        "",
        "rctr: error: a\nrctr: error: b\n",
        "thread 'main' panicked at x\nrctr: error: y\n",
        "oops\n",
    ] {
        let rejected = std::panic::catch_unwind(|| {
            assert_one_line_error(bad, "t");
        })
        .is_err();
        assert!(rejected, "{bad:?} should be rejected");
    }
}

#[test]
fn process_alive_tells_running_from_exited() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    assert!(process_alive(pid));
    child.kill().unwrap();
    // Killed but not yet reaped: a zombie counts as gone.
    assert!(wait_until(Duration::from_secs(5), || !process_alive(pid)));
    child.wait().unwrap();
    assert!(!process_alive(pid));
}

#[test]
fn loop_device_probe_finds_a_backed_file() {
    if !require_root("loop_device_probe_finds_a_backed_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    assert!(loop_devices_backed_by(&file).is_empty());
    let out = Command::new("losetup")
        .args(["--find", "--show", "--read-only"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let found = loop_devices_backed_by(&file);
    let detached = Command::new("losetup")
        .arg("-d")
        .arg(&dev)
        .status()
        .unwrap();
    assert!(detached.success());
    assert_eq!(found, [dev]);
}
