//! Checkpoint/restart with CRIU: the README flow on the counting Python server, repeated
//! cycles, a stdout-writing loop whose log continues, and errors.

use rctr_e2e::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn needs_root_and_criu(test: &str) -> bool {
    require_root(test) && require_criu(test)
}

/// The entries of `rctr checkpoint list --json`.
fn checkpoints_json(env: &TestEnv) -> Vec<serde_json::Value> {
    let text = env.ok(["checkpoint", "list", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("`checkpoint list --json` is not JSON ({e}):\n{text}"));
    doc["checkpoints"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no \"checkpoints\" array:\n{text}"))
}

fn checkpoint_entry(env: &TestEnv, name: &str) -> Option<serde_json::Value> {
    checkpoints_json(env)
        .into_iter()
        .find(|c| c["name"] == name)
}

/// The first column of `rctr checkpoint list`'s table rows.
fn listed_checkpoints(env: &TestEnv) -> Vec<String> {
    env.ok(["checkpoint", "list"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn readme_flow_restart_continues_the_count() {
    if !needs_root_and_criu("readme_flow_restart_continues_the_count") {
        return;
    }
    let env = TestEnv::new("readme_flow_restart_continues_the_count");
    let img = s(&server_image());
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
        listed_checkpoints(&env).contains(&"ex".to_string()),
        "`checkpoint list` does not show ex"
    );
    let entry = checkpoint_entry(&env, "ex").expect("ex in `checkpoint list --json`");
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
        checkpoint_entry(&env, "ex").is_some(),
        "the refused delete removed the checkpoint"
    );

    env.ok(["instance", "stop", "restarted-server"]);
    env.ok(["checkpoint", "delete", "ex"]);
    assert!(
        checkpoint_entry(&env, "ex").is_none(),
        "ex still listed after delete"
    );
    assert!(!listed_checkpoints(&env).contains(&"ex".to_string()));
}

#[test]
fn repeated_checkpoint_restart_cycles_keep_counting() {
    if !needs_root_and_criu("repeated_checkpoint_restart_cycles_keep_counting") {
        return;
    }
    let env = TestEnv::new("repeated_checkpoint_restart_cycles_keep_counting");
    let img = s(&server_image());
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

/// The complete lines of a log (a line still being written is left out).
fn complete_lines(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete.lines().map(str::to_string).collect()
}

fn last_number(path: &Path) -> u64 {
    let lines = complete_lines(path);
    let last = lines
        .last()
        .unwrap_or_else(|| panic!("{} has no complete line", path.display()));
    last.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {last:?} is not a number", path.display()))
}

#[test]
fn restarted_loop_continues_its_output_from_the_checkpoint() {
    if !needs_root_and_criu("restarted_loop_continues_its_output_from_the_checkpoint") {
        return;
    }
    let env = TestEnv::new("restarted_loop_continues_its_output_from_the_checkpoint");
    let img = s(&busybox_exec_image());
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
        wait_until(Duration::from_secs(20), || complete_lines(&log).len() >= 5),
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
        wait_until(Duration::from_secs(20), || !complete_lines(&log2)
            .is_empty()),
        "the restarted counter printed nothing to {}",
        log2.display()
    );
    let first = complete_lines(&log2)[0]
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
    if !needs_root_and_criu("checkpoint_errors_are_one_line") {
        return;
    }
    let env = TestEnv::new("checkpoint_errors_are_one_line");
    let img = s(&server_image());
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
    assert_one_line_error(&stderr, "--ckpt-launch with --ckpt-restart");

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
