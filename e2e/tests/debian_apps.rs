//! Real HPC and server applications from Debian's own packages (e2e/src/debian.rs builds the
//! image with debootstrap) through checkpoint, stop and restart, twice each: Open MPI with
//! mpi4py, Python's multiprocessing.shared_memory, redis, PostgreSQL.

use rctr_e2e::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The Debian image, or None with the reason printed.
fn image(test: &str) -> Option<String> {
    if !require_root_and_criu(test) {
        return None;
    }
    match debian_image() {
        Ok(p) => Some(path_str(&p)),
        Err(e) => {
            eprintln!("SKIPPED {test}: the Debian test image cannot be built here: {e}");
            None
        }
    }
}

fn lines(env: &TestEnv, name: &str) -> Vec<String> {
    complete_lines(&env.instance_log(name), 0)
}

fn wait_lines(env: &TestEnv, name: &str, more_than: usize) {
    assert!(
        wait_until(Duration::from_secs(60), || lines(env, name).len()
            > more_than),
        "instance {name} printed no more than {more_than} lines:\n{}\n--- err:\n{}",
        lines(env, name).join("\n"),
        std::fs::read_to_string(env.instance_err_log(name)).unwrap_or_default()
    );
}

const MPI_ENV: [&str; 4] = [
    "--env",
    "OMPI_ALLOW_RUN_AS_ROOT=1",
    "--env",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
];

#[test]
fn mpirun_ranks_come_back_with_bit_identical_results() {
    let test = "mpirun_ranks_come_back_with_bit_identical_results";
    let Some(img) = image(test) else { return };
    let env = TestEnv::new(test);
    env.ok(["checkpoint", "create", "mpi"]);
    let mut start = vec!["instance", "start", "--contain", "--net"];
    start.extend(MPI_ENV);
    start.extend(["--ckpt-launch", "mpi", &img, "mpi0"]);
    start.extend([
        "mpirun",
        "--oversubscribe",
        "-np",
        "2",
        "python3",
        "/opt/mpi_iter.py",
    ]);
    env.ok(&start);
    // Iteration -> the sum rank 0 printed, from every run: a restored run must agree with
    // the uninterrupted one wherever both computed an iteration.
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let record = |name: &str, seen: &mut BTreeMap<u64, String>| {
        for l in lines(&env, name) {
            let (i, s) = l.split_once(' ').expect("ITERATION SUM");
            let i: u64 = i.parse().unwrap();
            if let Some(before) = seen.insert(i, s.to_string()) {
                assert_eq!(before, s, "iteration {i} differs after a restore");
            }
        }
    };
    for cycle in 1..=2 {
        let old = format!("mpi{}", cycle - 1);
        let new = format!("mpi{cycle}");
        wait_lines(&env, &old, 20);
        env.ok(["checkpoint", "instance", &old]);
        let at = lines(&env, &old).len();
        // The uninterrupted run goes on a little past the checkpoint: the reference.
        wait_lines(&env, &old, at + 20);
        env.ok(["instance", "stop", &old]);
        record(&old, &mut seen);
        env.ok([
            "instance",
            "start",
            "--ckpt-restart",
            "mpi",
            "--tcp-established",
            &img,
            &new,
        ]);
        wait_lines(&env, &new, 40);
        let first: u64 = lines(&env, &new)[0]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            first > 20,
            "cycle {cycle}: the ranks started over at {first}"
        );
        record(&new, &mut seen);
    }
    env.ok(["instance", "stop", "mpi2"]);
}

#[test]
fn python_shared_memory_workers_come_back() {
    let test = "python_shared_memory_workers_come_back";
    let Some(img) = image(test) else { return };
    let env = TestEnv::new(test);
    env.ok(["checkpoint", "create", "shm"]);
    env.ok([
        "instance",
        "start",
        "--contain",
        "--ckpt-launch",
        "shm",
        &img,
        "shm0",
        "python3",
        "/opt/shm_workers.py",
    ]);
    let counters = |name: &str| -> Vec<(u64, u64, bool)> {
        lines(&env, name)
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.parse().ok()?,
                    f.get(3) == Some(&"ok"),
                ))
            })
            .collect()
    };
    for cycle in 1..=2 {
        let old = format!("shm{}", cycle - 1);
        let new = format!("shm{cycle}");
        wait_lines(&env, &old, 10);
        env.ok(["checkpoint", "instance", "--stop", &old]);
        let (a, b, _) = *counters(&old).last().unwrap();
        env.ok(["instance", "start", "--ckpt-restart", "shm", &img, &new]);
        wait_lines(&env, &new, 10);
        let after = counters(&new);
        assert!(
            after.iter().all(|(_, _, ok)| *ok),
            "cycle {cycle}: a worker died: {after:?}\n{}",
            std::fs::read_to_string(env.instance_err_log(&new)).unwrap_or_default()
        );
        let (a2, b2, _) = *after.last().unwrap();
        assert!(
            a2 > a && b2 > b,
            "cycle {cycle}: counters did not go on from ({a}, {b}): {after:?}"
        );
        assert!(
            after[0].0 >= a && after[0].1 >= b,
            "cycle {cycle}: restarted from scratch: {after:?}"
        );
    }
}

#[test]
fn redis_keeps_its_data_and_stops_at_once() {
    let test = "redis_keeps_its_data_and_stops_at_once";
    let Some(img) = image(test) else { return };
    let env = TestEnv::new(test);
    let cli = |name: &str, args: &[&str]| -> String {
        let mut v = vec!["exec", "instance://"];
        let target = format!("instance://{name}");
        v[1] = &target;
        v.extend(["redis-cli", "-p", "6390"]);
        v.extend_from_slice(args);
        env.ok(&v).trim().to_string()
    };
    env.ok(["checkpoint", "create", "rd"]);
    env.ok([
        "instance",
        "start",
        "--contain",
        "--net",
        "--ckpt-launch",
        "rd",
        &img,
        "rd0",
        "redis-server",
        "--port",
        "6390",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    assert!(wait_until(Duration::from_secs(30), || {
        env.cmd(["exec", "instance://rd0", "redis-cli", "-p", "6390", "ping"])
            .stdout
            .starts_with(b"PONG")
    }));
    for cycle in 1..=2 {
        let old = format!("rd{}", cycle - 1);
        let new = format!("rd{cycle}");
        assert_eq!(cli(&old, &["set", &format!("before{cycle}"), "kept"]), "OK");
        env.ok(["checkpoint", "instance", &old]);
        assert_eq!(cli(&old, &["set", &format!("after{cycle}"), "lost"]), "OK");
        let t0 = Instant::now();
        env.ok(["instance", "stop", &old]);
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "instance stop of redis took {took:?}: it should not wait out its timeout"
        );
        env.ok(["instance", "start", "--ckpt-restart", "rd", &img, &new]);
        assert!(wait_until(Duration::from_secs(30), || {
            env.cmd([
                "exec",
                &format!("instance://{new}"),
                "redis-cli",
                "-p",
                "6390",
                "ping",
            ])
            .stdout
            .starts_with(b"PONG")
        }));
        for c in 1..=cycle {
            assert_eq!(cli(&new, &["get", &format!("before{c}")]), "kept");
            assert_eq!(cli(&new, &["exists", &format!("after{c}")]), "0");
        }
    }
}

#[test]
fn postgresql_comes_back_with_the_rows_of_its_checkpoint_or_says_why_not() {
    let test = "postgresql_comes_back_with_the_rows_of_its_checkpoint_or_says_why_not";
    let Some(img) = image(test) else { return };
    let env = TestEnv::new(test);
    let sql = |name: &str, q: &str| -> std::process::Output {
        env.cmd([
            "exec",
            &format!("instance://{name}"),
            "su",
            "postgres",
            "-s",
            "/bin/sh",
            "-c",
            &format!("psql -h /tmp -tAc \"{q}\""),
        ])
    };
    env.ok(["checkpoint", "create", "pg"]);
    env.ok([
        "instance",
        "start",
        "--contain",
        "--ckpt-launch",
        "pg",
        &img,
        "pg0",
        "/opt/pg_start.sh",
    ]);
    assert!(
        wait_until(Duration::from_secs(60), || sql("pg0", "select 1")
            .status
            .success()),
        "PostgreSQL never answered:\n{}",
        std::fs::read_to_string(env.instance_err_log("pg0")).unwrap_or_default()
    );
    assert!(sql(
        "pg0",
        "create table t (n int); insert into t select generate_series(1, 10)"
    )
    .status
    .success());
    let out = env.cmd(["checkpoint", "instance", "pg0"]);
    if !has_cap_sys_resource() {
        // PostgreSQL runs as user postgres: dumping it needs CAP_SYS_RESOURCE, which root
        // lacks on these machines. The error says exactly that, and the server keeps going.
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = assert_one_line_error(&stderr, "checkpointing PostgreSQL");
        assert!(
            line.contains("Can't get rlimit") && line.contains("CAP_SYS_RESOURCE"),
            "{line}"
        );
        let count = sql("pg0", "select count(*) from t");
        assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "10");
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for cycle in 1..=2 {
        let old = format!("pg{}", cycle - 1);
        let new = format!("pg{cycle}");
        if cycle > 1 {
            env.ok(["checkpoint", "instance", &old]);
        }
        let kept = String::from_utf8_lossy(&sql(&old, "select count(*) from t").stdout)
            .trim()
            .to_string();
        assert!(sql(&old, "insert into t values (-1)").status.success());
        env.ok(["instance", "stop", &old]);
        env.ok(["instance", "start", "--ckpt-restart", "pg", &img, &new]);
        assert!(wait_until(Duration::from_secs(30), || sql(
            &new, "select 1"
        )
        .status
        .success()));
        let count = sql(&new, "select count(*) from t");
        assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), kept);
    }
}
