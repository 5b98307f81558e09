//! `rctr instance start|list|stop`: a Python server instance, logs, many instances at once,
//! clean stops, and errors.

use rctr_e2e::*;
use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::time::Duration;

#[test]
fn server_instance_counts_requests_and_stop_frees_its_port() {
    if !require_root("server_instance_counts_requests_and_stop_frees_its_port") {
        return;
    }
    let env = TestEnv::new("server_instance_counts_requests_and_stop_frees_its_port");
    let img = path_str(&server_image());
    let port = free_port();
    let p = port.to_string();

    env.ok(["instance", "start", &img, "srv", &p]);
    env.wait_for_instance_port("srv", port);
    let answers: Vec<String> = (0..3).map(|_| request(port)).collect();
    assert_eq!(answers, ["request:1", "request:2", "request:3"]);
    assert_eq!(table_first_column(&env.ok(["instance", "list"])), ["srv"]);
    assert_eq!(env.instance_names(), ["srv"]);

    env.ok(["instance", "stop", "srv"]);
    assert!(
        !is_listening(port),
        "port {port} still listened on after `instance stop` returned"
    );
    assert!(
        env.instance_names().is_empty(),
        "srv still listed after stop"
    );

    // The port is free at once: a new server binds it and starts counting from 1.
    env.ok(["instance", "start", &img, "srv2", &p]);
    env.wait_for_instance_port("srv2", port);
    assert_eq!(request(port), "request:1");
    env.ok(["instance", "stop", "srv2"]);
}

#[test]
fn instance_start_does_not_keep_the_callers_stdout_and_stderr() {
    if !require_root("instance_start_does_not_keep_the_callers_stdout_and_stderr") {
        return;
    }
    let env = TestEnv::new("instance_start_does_not_keep_the_callers_stdout_and_stderr");
    // As in `out=$(rctr instance start ...)`: the caller reads the pipe until EOF, which comes
    // only when every process holding its write end is gone.
    let mut cmd = env.command([
        "instance",
        "start",
        &path_str(&busybox_exec_image()),
        "quiet",
        "sleep",
        "100000",
    ]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (tx, eof) = channel();
    std::thread::spawn(move || {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = out.read_to_end(&mut a);
        let _ = err.read_to_end(&mut b);
        let _ = tx.send(String::from_utf8_lossy(&b).into_owned());
    });
    let status = child.wait().unwrap();
    let stderr = eof.recv_timeout(Duration::from_secs(5));
    assert!(status.success(), "instance start failed: {stderr:?}");
    assert!(
        stderr.is_ok(),
        "`instance start` exited but its stdout/stderr stayed open: the detached instance inherited them \
         (a script doing out=$(rctr instance start ...) would hang)"
    );
    assert_eq!(env.instance_names(), ["quiet"]);
    env.ok(["instance", "stop", "quiet"]);
}

#[test]
fn instance_stdout_goes_to_its_growing_log_file() {
    if !require_root("instance_stdout_goes_to_its_growing_log_file") {
        return;
    }
    let env = TestEnv::new("instance_stdout_goes_to_its_growing_log_file");
    // Apptainer's image has an empty startscript; replace it by a bind, as Apptainer users can.
    let script = env.work().join("startscript");
    fs::write(
        &script,
        "#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let bind = format!("{}:/.singularity.d/startscript:ro", path_str(&script));
    env.ok([
        "instance",
        "start",
        "--bind",
        &bind,
        &path_str(&apptainer_busybox_sif()),
        "ticker",
    ]);

    let log = env.instance_log("ticker");
    let size = || fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(10), || size() > 0),
        "{} stays empty",
        log.display()
    );
    let first = size();
    assert!(
        wait_until(Duration::from_secs(10), || size() > first),
        "{} stopped growing at {first} bytes",
        log.display()
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("tick 1\ntick 2\n"),
        "unexpected log contents:\n{text}"
    );
    env.ok(["instance", "stop", "ticker"]);
}

#[test]
fn twenty_parallel_instances_are_listed_and_stop_all_leaves_nothing() {
    if !require_root("twenty_parallel_instances_are_listed_and_stop_all_leaves_nothing") {
        return;
    }
    // Alone: the mount-table check must not see other tests' containers.
    let env =
        TestEnv::exclusive("twenty_parallel_instances_are_listed_and_stop_all_leaves_nothing");
    // A private copy, so its loop devices are told apart from anything else's.
    let img = env.work().join("sleeper.sif");
    fs::copy(busybox_exec_image(), &img).unwrap();
    let img_s = path_str(&img);
    let names: Vec<String> = (0..20).map(|i| format!("par{i:02}")).collect();

    std::thread::scope(|scope| {
        let starts: Vec<_> = names
            .iter()
            .map(|n| {
                scope.spawn(|| {
                    (
                        n.clone(),
                        env.cmd(["instance", "start", &img_s, n, "sleep", "100000"]),
                    )
                })
            })
            .collect();
        for h in starts {
            let (name, out) = h.join().unwrap();
            assert!(
                out.status.success(),
                "starting {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });

    let listed = env.instances_json();
    let listed_set: BTreeSet<String> = listed
        .iter()
        .filter_map(|i| i["instance"].as_str().map(str::to_string))
        .collect();
    assert_eq!(listed_set, names.iter().cloned().collect::<BTreeSet<_>>());
    let pids: Vec<i32> = listed
        .iter()
        .flat_map(|i| [i["pid"].as_i64(), i["app_pid"].as_i64()])
        .map(|p| p.unwrap_or(0) as i32)
        .collect();
    assert!(
        pids.iter().all(|&p| p > 0 && process_alive(p)),
        "every instance has a live init and application: {pids:?}"
    );

    env.ok(["instance", "stop", "--all"]);

    assert!(
        env.instance_names().is_empty(),
        "instances still listed after stop --all"
    );
    let records: Vec<String> = fs::read_dir(env.instances_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert!(records.is_empty(), "state files left behind: {records:?}");
    let alive: Vec<i32> = pids.iter().copied().filter(|&p| process_alive(p)).collect();
    assert!(
        alive.is_empty(),
        "processes still alive after stop --all: {alive:?}"
    );
    assert_image_released(&img);
}

#[test]
fn invalid_instance_names_are_refused() {
    if !require_root("invalid_instance_names_are_refused") {
        return;
    }
    let env = TestEnv::new("invalid_instance_names_are_refused");
    let img = path_str(&busybox_exec_image());
    let too_long = "a".repeat(65);
    for name in ["../x", "a/b", "-x", "", too_long.as_str()] {
        // `--` so that "-x" is taken as the name, not as an option.
        let (_, stderr) = env.fails(["instance", "start", "--", &img, name, "sleep", "100"]);
        assert_one_line_error(&stderr, &format!("instance name {name:?}"));
    }
    assert!(
        env.instance_names().is_empty(),
        "an instance was started under an invalid name"
    );
    // 64 characters is the limit, not an error.
    let longest = "b".repeat(64);
    env.ok(["instance", "start", &img, &longest, "sleep", "100"]);
    assert_eq!(env.instance_names(), vec![longest.clone()]);
    env.ok(["instance", "stop", &longest]);
}

#[test]
fn duplicate_instance_name_is_refused_and_the_first_keeps_running() {
    if !require_root("duplicate_instance_name_is_refused_and_the_first_keeps_running") {
        return;
    }
    let env = TestEnv::new("duplicate_instance_name_is_refused_and_the_first_keeps_running");
    let img = path_str(&busybox_exec_image());
    env.ok(["instance", "start", &img, "dup", "sleep", "100000"]);
    let before = env.instances_json();
    let (_, stderr) = env.fails(["instance", "start", &img, "dup", "sleep", "100000"]);
    let line = assert_one_line_error(&stderr, "duplicate instance name");
    assert!(
        line.contains("dup"),
        "the error should name the instance: {line}"
    );
    let after = env.instances_json();
    assert_eq!(before.len(), 1);
    assert_eq!(
        after.len(),
        1,
        "instances after the refused start: {after:?}"
    );
    assert_eq!(
        before[0]["pid"], after[0]["pid"],
        "the first instance was replaced"
    );
    assert!(process_alive(after[0]["pid"].as_i64().unwrap_or(0) as i32));
    env.ok(["instance", "stop", "dup"]);
}

#[test]
fn stopping_an_unknown_instance_fails() {
    if !require_root("stopping_an_unknown_instance_fails") {
        return;
    }
    let env = TestEnv::new("stopping_an_unknown_instance_fails");
    let (_, stderr) = env.fails(["instance", "stop", "no-such-instance"]);
    let line = assert_one_line_error(&stderr, "stop unknown instance");
    assert!(
        line.contains("no-such-instance"),
        "the error should name the instance: {line}"
    );
}

#[test]
fn startscript_failing_at_once_fails_the_start() {
    if !require_root("startscript_failing_at_once_fails_the_start") {
        return;
    }
    let env = TestEnv::new("startscript_failing_at_once_fails_the_start");
    let img = path_str(&busybox_exec_image());
    let (_, stderr) = env.fails([
        "instance",
        "start",
        &img,
        "broken",
        "sh",
        "-c",
        "echo boom >&2; exit 3",
    ]);
    // Lines of the application's own stderr may precede the error line.
    let line = assert_error_line(&stderr, "startscript exiting with status 3");
    assert!(
        line.contains("broken"),
        "the error should name the instance: {line}"
    );
    assert!(
        env.instance_names().is_empty(),
        "the failed instance is still listed"
    );
}

/// Starts `argv` as instance `name` and expects a failed start whose error line names the
/// instance and contains `expected`, with nothing left listed.
fn assert_failed_start(env: &TestEnv, img: &str, name: &str, argv: &[&str], expected: &str) {
    let mut args = vec!["instance", "start", img, name];
    args.extend_from_slice(argv);
    let (_, stderr) = env.fails(args);
    let line = assert_error_line(&stderr, &format!("starting {argv:?}"));
    assert!(
        line.contains(name) && line.contains(expected),
        "the error should name the instance and say {expected:?}: {line}"
    );
    assert!(
        env.instance_names().is_empty(),
        "the failed instance {name} is still listed"
    );
}

#[test]
fn an_application_that_cannot_be_executed_fails_the_start() {
    if !require_root("an_application_that_cannot_be_executed_fails_the_start") {
        return;
    }
    let env = TestEnv::new("an_application_that_cannot_be_executed_fails_the_start");
    let img = path_str(&busybox_exec_image());
    // Through the image's shell: the wrapper's exec fails, the shell exits 127 or 126.
    assert_failed_start(&env, &img, "missing", &["no-such-command"], "status 127");
    let script = env.work().join("not-executable");
    fs::write(&script, "#!/bin/sh\necho never\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let bind = format!("{}:/opt/app", path_str(&script));
    let (_, stderr) = env.fails(["instance", "start", "-B", &bind, &img, "noexec", "/opt/app"]);
    let line = assert_error_line(&stderr, "starting a non-executable file");
    assert!(
        line.contains("noexec") && line.contains("status 126"),
        "{line}"
    );

    // An image without a shell, which instances start their command with: init's own exec
    // fails, reported over its close-on-exec pipe with the reason.
    let root = env.work().join("noshell");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    assert_failed_start(
        &env,
        &path_str(&root),
        "noshell",
        &["/bin/busybox", "true"],
        "'/bin/sh' not found in the container",
    );
}

#[test]
fn an_application_exiting_at_once_fails_the_start() {
    if !require_root("an_application_exiting_at_once_fails_the_start") {
        return;
    }
    let env = TestEnv::new("an_application_exiting_at_once_fails_the_start");
    let img = path_str(&busybox_exec_image());
    assert_failed_start(&env, &img, "false", &["false"], "status 1");
    // A missing file is the application's own early failure.
    assert_failed_start(&env, &img, "nofile", &["cat", "/no/such/file"], "status 1");
    // One that keeps computing is started (and judged so without exiting).
    env.ok([
        "instance",
        "start",
        &img,
        "busy",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    assert_eq!(env.instance_names(), ["busy"]);
    env.ok(["instance", "stop", "busy"]);
}

#[test]
fn stopping_an_instance_that_already_died_cleans_it_up() {
    if !require_root("stopping_an_instance_that_already_died_cleans_it_up") {
        return;
    }
    let env = TestEnv::new("stopping_an_instance_that_already_died_cleans_it_up");
    let img = path_str(&busybox_exec_image());
    let marker = env.work().join("release");
    let bind = format!("{}:/release", path_str(env.work()));
    // The application crashes (status 3) once the test lets it: after start succeeded.
    env.ok([
        "instance",
        "start",
        "-B",
        &bind,
        &img,
        "crashy",
        "sh",
        "-c",
        "while [ ! -e /release/release ]; do sleep 0.05; done; exit 3",
    ]);
    let init_pid = env.instance_json("crashy")["pid"].as_i64().unwrap() as i32;
    std::fs::write(&marker, "go").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || !process_alive(init_pid)),
        "the instance's init did not exit after its application crashed"
    );
    // The record is still there (nobody listed it since); stop removes it without error.
    assert!(env.instances_dir().join("crashy.json").exists());
    env.ok(["instance", "stop", "crashy"]);
    assert!(!env.instances_dir().join("crashy.json").exists());
    let (_, stderr) = env.fails(["instance", "stop", "crashy"]);
    assert_one_line_error(&stderr, "stopping it a second time");
}

#[test]
fn an_application_exiting_0_on_sigterm_stops_without_the_timeout() {
    if !require_root("an_application_exiting_0_on_sigterm_stops_without_the_timeout") {
        return;
    }
    let env = TestEnv::new("an_application_exiting_0_on_sigterm_stops_without_the_timeout");
    let img = path_str(&busybox_exec_image());
    // Like redis, nginx or a Python server with a SIGTERM handler: a clean exit, status 0.
    // (`sleep & wait` lets the shell run its trap at once.)
    env.ok([
        "instance",
        "start",
        &img,
        "graceful",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' TERM; echo up; while :; do sleep 1 & wait $!; done",
    ]);
    let log = env.instance_log("graceful");
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("up")),
        "the application did not start: {}",
        log.display()
    );
    let started = std::time::Instant::now();
    env.ok(["instance", "stop", "graceful"]);
    let took = started.elapsed();
    // The stop timeout is 10 s: well under it means init did not wait for it.
    assert!(
        took < Duration::from_secs(3),
        "instance stop took {took:?} for an application that exited 0 on SIGTERM"
    );
    assert!(fs::read_to_string(&log).unwrap().contains("bye"));
    assert!(env.instance_names().is_empty());
}
