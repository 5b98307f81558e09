//! Checkpoint/restart with CRIU: the README flow on the counting Python server, repeated
//! cycles, a stdout-writing loop whose log continues, errors, and a server with connections
//! waiting to be accepted.

use rctr_e2e::*;
use std::time::Duration;

#[test]
fn readme_flow_restart_continues_the_count() {
    if !require_root_and_criu("readme_flow_restart_continues_the_count") {
        return;
    }
    let env = TestEnv::new("readme_flow_restart_continues_the_count");
    let img = path_str(&server_image());
    let port = free_port();
    let p = port.to_string();

    env.ok(["checkpoint", "create", "ex"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "ex",
        &img,
        "server",
        &p,
    ]);
    env.wait_for_instance_port("server", port);
    assert_eq!(request(port), "request:1");
    assert_eq!(request(port), "request:2");
    env.ok(["checkpoint", "instance", "server"]);
    env.ok(["instance", "stop", "server"]);
    // At once, on the same port: nothing may still hold it.
    env.ok([
        "instance",
        "start",
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
        "the restarted server should continue the count"
    );

    assert!(
        env.checkpoint_names().contains(&"ex".to_string()),
        "`checkpoint list` does not show ex"
    );
    let entry = env
        .checkpoint_json("ex")
        .expect("ex in `checkpoint list --json`");
    assert!(
        entry["generation"].as_u64().is_some_and(|g| g >= 1),
        "no generation recorded: {entry}"
    );
    assert_eq!(entry["used_by"], serde_json::json!(["restarted-server"]));

    let (_, stderr) = env.fails(["checkpoint", "delete", "ex"]);
    let line = assert_one_line_error(&stderr, "deleting a checkpoint in use");
    assert!(
        line.contains("restarted-server"),
        "the error should name the instance using it: {line}"
    );
    assert!(
        env.checkpoint_json("ex").is_some(),
        "the refused delete removed the checkpoint"
    );

    env.ok(["instance", "stop", "restarted-server"]);
    env.ok(["checkpoint", "delete", "ex"]);
    assert!(
        env.checkpoint_json("ex").is_none(),
        "ex still listed after delete"
    );
    assert!(!env.checkpoint_names().contains(&"ex".to_string()));
}

#[test]
fn repeated_checkpoint_restart_cycles_keep_counting() {
    if !require_root_and_criu("repeated_checkpoint_restart_cycles_keep_counting") {
        return;
    }
    let env = TestEnv::new("repeated_checkpoint_restart_cycles_keep_counting");
    let img = path_str(&server_image());
    let port = free_port();
    let p = port.to_string();

    env.ok(["checkpoint", "create", "cycles"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "cycles",
        &img,
        "cyc",
        &p,
    ]);
    env.wait_for_instance_port("cyc", port);
    assert_eq!(request(port), "request:1");
    assert_eq!(request(port), "request:2");
    assert_eq!(request(port), "request:3");
    for expected in 4..=6 {
        env.ok(["checkpoint", "instance", "cyc"]);
        env.ok(["instance", "stop", "cyc"]);
        // The same name again: a stopped instance's name is free.
        env.ok([
            "instance",
            "start",
            "--ckpt-restart",
            "cycles",
            &img,
            "cyc",
            &p,
        ]);
        env.wait_for_instance_port("cyc", port);
        assert_eq!(
            request(port),
            format!("request:{expected}"),
            "after restart cycle {}",
            expected - 3
        );
    }
    env.ok(["instance", "stop", "cyc"]);
}

#[test]
fn restarted_loop_continues_its_output_from_the_checkpoint() {
    if !require_root_and_criu("restarted_loop_continues_its_output_from_the_checkpoint") {
        return;
    }
    let env = TestEnv::new("restarted_loop_continues_its_output_from_the_checkpoint");
    let img = path_str(&busybox_exec_image());
    let counter = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";

    env.ok(["checkpoint", "create", "loop"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "loop",
        &img,
        "counter",
        "sh",
        "-c",
        counter,
    ]);
    let log = env.instance_log("counter");
    assert!(
        wait_until(Duration::from_secs(20), || complete_lines(&log, 0).len()
            >= 5),
        "the counter printed fewer than 5 lines to {}",
        log.display()
    );
    let before = last_number(&log);
    env.ok(["checkpoint", "instance", "counter"]);
    let after = last_number(&log);
    env.ok(["instance", "stop", "counter"]);

    env.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "loop",
        &img,
        "counter2",
        "sh",
        "-c",
        counter,
    ]);
    let log2 = env.instance_log("counter2");
    assert!(
        wait_until(Duration::from_secs(20), || !complete_lines(&log2, 0)
            .is_empty()),
        "the restarted counter printed nothing to {}",
        log2.display()
    );
    let first = complete_lines(&log2, 0)[0]
        .trim()
        .parse::<u64>()
        .expect("the restarted counter prints numbers");
    // Dumped somewhere between `before` and `after`, so it resumes after `before`, at most
    // one past `after`; a counter started afresh would print 1.
    assert!(
        first > before && first <= after + 1 && first != 1,
        "first number after restart is {first}; at checkpoint time the log was at {before}..{after}"
    );
    env.ok(["instance", "stop", "counter2"]);
}

#[test]
fn checkpoint_errors_are_one_line() {
    if !require_root_and_criu("checkpoint_errors_are_one_line") {
        return;
    }
    let env = TestEnv::new("checkpoint_errors_are_one_line");
    let img = path_str(&server_image());
    let p = free_port().to_string();
    env.ok(["checkpoint", "create", "empty"]);

    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-launch",
        "empty",
        "--ckpt-restart",
        "empty",
        &img,
        "both",
        &p,
    ]);
    // A usage mistake: clap's full message, naming both options (not one squeezed line).
    let line = assert_usage_error(&stderr, "--ckpt-launch with --ckpt-restart");
    assert!(
        line.contains("--ckpt-launch") && line.contains("cannot be used with '--ckpt-restart"),
        "{line}"
    );

    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        "empty",
        &img,
        "nothing",
        &p,
    ]);
    let line = assert_one_line_error(&stderr, "restart from a checkpoint without images");
    assert!(
        line.contains("empty"),
        "the error should name the checkpoint: {line}"
    );

    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        "no-such-ckpt",
        &img,
        "nothing",
        &p,
    ]);
    assert_one_line_error(&stderr, "restart from a checkpoint that does not exist");
    assert!(
        env.instance_names().is_empty(),
        "a failed restart left an instance behind"
    );

    let (_, stderr) = env.fails(["checkpoint", "delete", "no-such-ckpt"]);
    assert_one_line_error(&stderr, "deleting a checkpoint that does not exist");

    let (_, stderr) = env.fails(["checkpoint", "instance", "no-such-instance"]);
    assert_one_line_error(&stderr, "checkpointing an unknown instance");

    env.ok(["instance", "start", &img, "plain", &p]);
    env.wait_for_instance_port("plain", p.parse().unwrap());
    let (_, stderr) = env.fails(["checkpoint", "instance", "plain"]);
    let line = assert_one_line_error(
        &stderr,
        "checkpointing an instance started without --ckpt-launch",
    );
    assert!(
        line.contains("plain"),
        "the error should name the instance: {line}"
    );
    assert_eq!(
        request(p.parse().unwrap()),
        "request:1",
        "the failed checkpoint disturbed the instance"
    );
    env.ok(["instance", "stop", "plain"]);
}

#[test]
fn a_server_with_connections_waiting_to_be_accepted_is_checkpointed() {
    let test = "a_server_with_connections_waiting_to_be_accepted_is_checkpointed";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&server_image());
    let port = free_port();
    let p = port.to_string();
    env.ok(["checkpoint", "create", "busy"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "busy",
        &img,
        "busy",
        &p,
    ]);
    env.wait_for_instance_port("busy", port);
    assert_eq!(request(port), "request:1");

    // A server under load has connections its application has not accepted yet. Stopped,
    // this one accepts none: the kernel completes the client's handshake and the connection
    // waits in the listening socket's queue.
    let pid = env.app_pid("busy");
    let signal = |sig: libc::c_int| {
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    };
    signal(libc::SIGSTOP);
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('T'))
            })
        }),
        "the server did not stop"
    );
    let mut waiting = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    env.ok(["checkpoint", "instance", "busy"]);
    signal(libc::SIGCONT);

    // Left running, the server accepts the waiting connection after the checkpoint and
    // answers it: nothing was lost.
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut waiting, &mut answer).unwrap();
    assert_eq!(answer.trim_end(), "request:2");
    assert_eq!(request(port), "request:3");
    env.ok(["instance", "stop", "busy"]);
    env.ok(["checkpoint", "delete", "busy"]);
}
