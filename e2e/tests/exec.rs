//! `rctr exec` / `rctr run` on the busybox SIF built by Apptainer: output, exit codes, binds,
//! environment, --contain, signals, repeated and concurrent use without leaks, and errors.

use rctr_e2e::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

fn image() -> String {
    apptainer_busybox_sif().display().to_string()
}

/// Waits for `child` with a deadline; kills it and panics when the deadline passes.
fn wait_child(mut child: Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let pid = child.id() as i32;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => status.unwrap_or_else(|e| panic!("{what}: wait failed: {e}")),
        Err(_) => {
            // SAFETY: pid is our child, not reaped yet (the waiter has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{what}: still running after {timeout:?}");
        }
    }
}

#[test]
fn exec_prints_the_command_output() {
    if !require_root("exec_prints_the_command_output") {
        return;
    }
    let env = TestEnv::new("exec_prints_the_command_output");
    assert_eq!(env.ok(["exec", &image(), "echo", "hello"]), "hello\n");
}

#[test]
fn run_evaluates_the_images_runscript() {
    if !require_root("run_evaluates_the_images_runscript") {
        return;
    }
    let env = TestEnv::new("run_evaluates_the_images_runscript");
    // Apptainer's OCI runscript evals its arguments: the arithmetic happens in the container.
    assert_eq!(
        env.ok(["run", &image(), "echo", "sum $((6*7))"]),
        "sum 42\n"
    );
}

#[test]
fn exit_status_is_the_commands() {
    if !require_root("exit_status_is_the_commands") {
        return;
    }
    let env = TestEnv::new("exit_status_is_the_commands");
    for code in [0, 1, 7, 255] {
        let out = env.cmd(["exec", &image(), "sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.status.code(), Some(code), "sh -c 'exit {code}'");
    }
}

#[test]
fn missing_command_exits_127_with_a_message() {
    if !require_root("missing_command_exits_127_with_a_message") {
        return;
    }
    let env = TestEnv::new("missing_command_exits_127_with_a_message");
    let (code, stderr) = env.fails(["exec", &image(), "no-such-command-e2e"]);
    assert_eq!(code, 127, "stderr:\n{stderr}");
    let line = assert_one_line_error(&stderr, "missing command");
    assert!(
        line.contains("no-such-command-e2e"),
        "the message should name the command: {line}"
    );
}

#[test]
fn read_only_bind_cannot_be_written() {
    if !require_root("read_only_bind_cannot_be_written") {
        return;
    }
    let env = TestEnv::new("read_only_bind_cannot_be_written");
    let dir = env.work().join("ro");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("f"), "host data\n").unwrap();
    let bind = format!("{}:/e2e-ro:ro", path_str(&dir));
    assert_eq!(
        env.ok(["exec", "--bind", &bind, &image(), "cat", "/e2e-ro/f"]),
        "host data\n"
    );
    let out = env.cmd([
        "exec",
        "--bind",
        &bind,
        &image(),
        "sh",
        "-c",
        "echo x > /e2e-ro/new",
    ]);
    assert!(
        !out.status.success(),
        "writing into a read-only bind succeeded"
    );
    assert!(!dir.join("new").exists(), "the write reached the host");
}

#[test]
fn read_write_bind_reaches_the_host() {
    if !require_root("read_write_bind_reaches_the_host") {
        return;
    }
    let env = TestEnv::new("read_write_bind_reaches_the_host");
    let dir = env.work().join("rw");
    fs::create_dir(&dir).unwrap();
    for bind in [
        format!("{}:/e2e-rw", path_str(&dir)),
        format!("{}:/e2e-rw:rw", path_str(&dir)),
    ] {
        let _ = fs::remove_file(dir.join("new"));
        env.ok([
            "exec",
            "--bind",
            &bind,
            &image(),
            "sh",
            "-c",
            "echo from-container > /e2e-rw/new",
        ]);
        assert_eq!(
            fs::read_to_string(dir.join("new")).unwrap(),
            "from-container\n",
            "--bind {bind}"
        );
    }
    // Without a destination, the source path is used inside too.
    env.ok([
        "exec",
        "--bind",
        &path_str(&dir),
        &image(),
        "sh",
        "-c",
        &format!("echo same-path > {}/same", path_str(&dir)),
    ]);
    assert_eq!(fs::read_to_string(dir.join("same")).unwrap(), "same-path\n");
}

#[test]
fn bind_destination_missing_in_the_image_is_created() {
    if !require_root("bind_destination_missing_in_the_image_is_created") {
        return;
    }
    let env = TestEnv::new("bind_destination_missing_in_the_image_is_created");
    let dir = env.work().join("src");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("f"), "found\n").unwrap();
    let missing = env.cmd(["exec", &image(), "test", "-e", "/e2e/made/here"]);
    assert_eq!(
        missing.status.code(),
        Some(1),
        "/e2e/made/here should not exist in the image"
    );
    let bind = format!("{}:/e2e/made/here", path_str(&dir));
    assert_eq!(
        env.ok(["exec", "--bind", &bind, &image(), "cat", "/e2e/made/here/f"]),
        "found\n"
    );
}

#[test]
fn environment_options_and_prefixed_host_variables() {
    if !require_root("environment_options_and_prefixed_host_variables") {
        return;
    }
    let env = TestEnv::new("environment_options_and_prefixed_host_variables");
    let img = image();
    let echo_foo = |opts: &[&str], host: &[(&str, &str)]| -> String {
        let mut args = vec!["exec"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[&img, "sh", "-c", "echo \"FOO=${FOO-unset}\""]);
        let mut cmd = env.command(&args);
        for (k, v) in host {
            cmd.env(k, v);
        }
        env.ok_cmd(cmd).trim_end().to_string()
    };
    assert_eq!(echo_foo(&[], &[]), "FOO=unset");
    assert_eq!(echo_foo(&["--env", "FOO=bar"], &[]), "FOO=bar");
    assert_eq!(
        echo_foo(&[], &[("APPTAINERENV_FOO", "from-apptainerenv")]),
        "FOO=from-apptainerenv"
    );
    assert_eq!(
        echo_foo(&[], &[("RCTRENV_FOO", "from-rctrenv")]),
        "FOO=from-rctrenv"
    );
    // Precedence: APPTAINERENV_ < RCTRENV_ < --env.
    assert_eq!(
        echo_foo(&[], &[("APPTAINERENV_FOO", "a"), ("RCTRENV_FOO", "r")]),
        "FOO=r"
    );
    assert_eq!(
        echo_foo(&["--env", "FOO=e"], &[("RCTRENV_FOO", "r")]),
        "FOO=e"
    );
    // Plain host variables pass, except with --cleanenv.
    assert_eq!(echo_foo(&[], &[("FOO", "host")]), "FOO=host");
    assert_eq!(echo_foo(&["--cleanenv"], &[("FOO", "host")]), "FOO=unset");
}

#[test]
fn contain_gives_an_empty_home_and_a_private_tmp() {
    if !require_root("contain_gives_an_empty_home_and_a_private_tmp") {
        return;
    }
    let env = TestEnv::new("contain_gives_an_empty_home_and_a_private_tmp");
    fs::write(env.home().join("marker-in-home"), "").unwrap();
    let host_tmp = tempfile::Builder::new()
        .prefix("rctr-e2e-tmp-marker-")
        .tempfile_in("/tmp")
        .unwrap();
    let marker = path_str(host_tmp.path());
    let inside_name = format!("/tmp/rctr-e2e-from-container-{}", std::process::id());
    let probe =
        format!("ls -A \"$HOME\"; test -e {marker} && echo host-tmp-visible; touch {inside_name}");

    let open = env.ok(["exec", &image(), "sh", "-c", &probe]);
    assert!(
        open.contains("marker-in-home"),
        "without --contain the home should be bound:\n{open}"
    );
    assert!(
        open.contains("host-tmp-visible"),
        "without --contain /tmp should be the host's:\n{open}"
    );
    assert!(
        Path::new(&inside_name).exists(),
        "without --contain a file made in /tmp should reach the host"
    );
    fs::remove_file(&inside_name).unwrap();

    let contained = env.ok(["exec", "--contain", &image(), "sh", "-c", &probe]);
    assert_eq!(
        contained, "",
        "with --contain home must be empty and host /tmp invisible"
    );
    assert!(
        !Path::new(&inside_name).exists(),
        "with --contain /tmp must be private"
    );
}

#[test]
fn sigterm_to_rctr_reaches_the_container_process() {
    if !require_root("sigterm_to_rctr_reaches_the_container_process") {
        return;
    }
    let env = TestEnv::new("sigterm_to_rctr_reaches_the_container_process");
    let dir = env.work().join("m");
    fs::create_dir(&dir).unwrap();
    let mut cmd = env.command([
        "exec",
        "--bind",
        &format!("{}:/m", path_str(&dir)),
        &image(),
        "sh",
        "-c",
        "trap 'exit 42' TERM; touch /m/ready; while :; do sleep 0.1; done",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    // The trap is set once the marker exists.
    if !wait_until(Duration::from_secs(20), || dir.join("ready").exists()) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the container never created /m/ready");
    }
    // SAFETY: pid is our running child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_child(child, Duration::from_secs(20), "rctr exec after SIGTERM");
    assert_eq!(
        status.code(),
        Some(42),
        "exit status after SIGTERM: {status}"
    );
}

#[test]
fn many_sequential_and_concurrent_execs_leave_nothing_behind() {
    if !require_root("many_sequential_and_concurrent_execs_leave_nothing_behind") {
        return;
    }
    // Alone: the mount-table check must not see other tests' containers.
    let env = TestEnv::exclusive("many_sequential_and_concurrent_execs_leave_nothing_behind");
    // A private copy, so its loop devices are told apart from anything else's.
    let img: PathBuf = env.work().join("busybox.sif");
    fs::copy(apptainer_busybox_sif(), &img).unwrap();
    let img_s = path_str(&img);

    for i in 0..100 {
        let out = env.cmd(["exec", &img_s, "true"]);
        assert!(
            out.status.success(),
            "sequential exec #{i} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let children: Vec<Child> = (0..20)
        .map(|_| {
            let mut cmd = env.command(["exec", &img_s, "sh", "-c", "sleep 0.2; true"]);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let status = wait_child(
            child,
            Duration::from_secs(120),
            &format!("concurrent exec #{i}"),
        );
        assert!(status.success(), "concurrent exec #{i}: {status}");
    }

    // Loop devices auto-clear once the last mount namespace using them is gone, which the
    // kernel finishes shortly after the processes exit.
    assert_image_released(&img);
}

#[test]
fn bad_bind_specs_fail_with_one_line_errors() {
    if !require_root("bad_bind_specs_fail_with_one_line_errors") {
        return;
    }
    let env = TestEnv::new("bad_bind_specs_fail_with_one_line_errors");
    let missing = env.work().join("no-such-dir");
    let specs = [
        "/tmp:/x:bogus".to_string(),
        ":/x".to_string(),
        "/tmp:relative/dst".to_string(),
        "/tmp:/x:ro:extra".to_string(),
        format!("{}:/x", path_str(&missing)),
    ];
    for spec in &specs {
        let (_, stderr) = env.fails(["exec", "--bind", spec, &image(), "true"]);
        assert_one_line_error(&stderr, &format!("--bind {spec}"));
    }
    let (_, stderr) = env.fails([
        "exec",
        "--bind",
        &format!("{}:/x", path_str(&missing)),
        &image(),
        "true",
    ]);
    assert!(
        stderr.contains(&path_str(&missing)),
        "the error should name the missing source: {stderr}"
    );
}

#[test]
fn unusable_images_fail_with_one_line_errors() {
    if !require_root("unusable_images_fail_with_one_line_errors") {
        return;
    }
    let env = TestEnv::new("unusable_images_fail_with_one_line_errors");
    let text = env.work().join("text.sif");
    fs::write(&text, "not an image\n").unwrap();
    let truncated = env.work().join("truncated.sif");
    let bytes = fs::read(apptainer_busybox_sif()).unwrap();
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let missing = env.work().join("missing.sif");
    for img in [&missing, &text, &truncated] {
        let (_, stderr) = env.fails(["exec", &path_str(img), "true"]);
        let line = assert_one_line_error(&stderr, &format!("exec {}", img.display()));
        let name = img.file_name().unwrap().to_string_lossy();
        assert!(
            line.contains(name.as_ref()),
            "the error should name the image: {line}"
        );
    }
}

#[test]
fn contain_works_with_a_home_under_tmp() {
    if !require_root("contain_works_with_a_home_under_tmp") {
        return;
    }
    let env = TestEnv::new("contain_works_with_a_home_under_tmp");
    // Batch systems often point HOME (or --home) at a job-private directory in /tmp.
    let home = tempfile::Builder::new()
        .prefix("rctr-e2e-home-")
        .tempdir_in("/tmp")
        .unwrap();
    fs::write(home.path().join("marker-in-home"), "").unwrap();
    let mut cmd = env.command([
        "exec",
        "--contain",
        &image(),
        "sh",
        "-c",
        "echo \"$HOME\"; ls -A \"$HOME\"",
    ]);
    cmd.env("HOME", home.path());
    assert_eq!(env.ok_cmd(cmd), format!("{}\n", home.path().display()));
}

/// Whether SIGPIPE is ignored according to a /proc/PID/status text (bit 13 of SigIgn).
fn sigpipe_ignored(status: &str) -> bool {
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap_or_else(|| panic!("no SigIgn line in:\n{status}"));
    let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
    mask & (1 << (libc::SIGPIPE - 1)) != 0
}

/// Runs `rctr ARGS | head -1` (args make `yes` run in a container): the producer must die of
/// SIGPIPE once head is gone, as on the host, not loop on EPIPE or print "Broken pipe".
fn assert_yes_into_head_ends_by_sigpipe(env: &TestEnv, args: &[&str], what: &str) {
    use std::io::BufRead;
    let mut cmd = env.command(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "y\n", "{what}: first line");
    drop(stdout); // head exits
    let status = wait_child(child, Duration::from_secs(30), what);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
    assert!(!err.contains("Broken pipe"), "{what}: stderr:\n{err}");
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGPIPE),
        "{what}: status {status:?}, stderr:\n{err}"
    );
}

#[test]
fn container_processes_start_with_sigpipe_at_its_default() {
    if !require_root("container_processes_start_with_sigpipe_at_its_default") {
        return;
    }
    let env = TestEnv::new("container_processes_start_with_sigpipe_at_its_default");
    let status = env.ok(["exec", &image(), "cat", "/proc/self/status"]);
    assert!(
        !sigpipe_ignored(&status),
        "SIGPIPE ignored in exec:\n{status}"
    );
    assert_yes_into_head_ends_by_sigpipe(&env, &["exec", &image(), "yes"], "exec yes | head -1");
    // Inside the container too: `yes` dies quietly and the pipeline succeeds.
    let out = env.cmd(["exec", &image(), "sh", "-c", "yes | head -1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "y\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.is_empty(), "{out:?}");
}

#[test]
fn instance_processes_start_with_sigpipe_at_its_default() {
    if !require_root("instance_processes_start_with_sigpipe_at_its_default") {
        return;
    }
    let env = TestEnv::new("instance_processes_start_with_sigpipe_at_its_default");
    let img = path_str(&busybox_exec_image());
    env.ok(["instance", "start", &img, "pipes", "sleep", "100000"]);
    let app = fs::read_to_string(format!("/proc/{}/status", env.app_pid("pipes"))).unwrap();
    assert!(
        !sigpipe_ignored(&app),
        "SIGPIPE ignored in the application:\n{app}"
    );
    let status = env.ok(["exec", "instance://pipes", "cat", "/proc/self/status"]);
    assert!(
        !sigpipe_ignored(&status),
        "SIGPIPE ignored in exec instance://:\n{status}"
    );
    assert_yes_into_head_ends_by_sigpipe(
        &env,
        &["exec", "instance://pipes", "yes"],
        "exec instance://pipes yes | head -1",
    );
    env.ok(["instance", "stop", "pipes"]);
}
