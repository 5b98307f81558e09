//! Checkpoint/restart of real application shapes: several processes, several threads, a file
//! held open for appending, established TCP connections, the Apptainer-built busybox image;
//! and the checkpoint commands' own options and listings (`--stop`, `--json`, `list`, `delete`).
//!
//! Counters that keep running after a checkpoint (`--leave-running`) are checked the same way
//! throughout: the value the restored application writes first must lie after the last value
//! seen before the checkpoint and at most one past the last value seen when it returned.

use rctr_e2e::*;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a freshly started or restored application gets to show progress.
const PROGRESS: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Images and scripts

/// The Python image with a startscript that execs its arguments, so a test can run any script
/// (the shared server image's startscript always runs the counter server).
fn python_exec_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    if let Some(p) = IMAGE.get() {
        return p.clone();
    }
    let _one = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = IMAGE.get() {
        return p.clone();
    }
    let scratch = scratch_dir().join("python-exec");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", scratch.display()));
    let rootfs = scratch.join("rootfs");
    python_rootfs(&rootfs).unwrap_or_else(|e| panic!("assembling the Python rootfs: {e:#}"));
    let def = scratch.join("python-exec.def");
    let text = format!(
        "Bootstrap: localimage\nFrom: {}\n\n%startscript\n    exec \"$@\"\n",
        rootfs.display()
    );
    std::fs::write(&def, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", def.display()));
    let sif = scratch.join("python-exec.sif");
    build_sif(&sif, &def).unwrap_or_else(|e| panic!("building the python-exec image: {e:#}"));
    IMAGE.get_or_init(|| sif).clone()
}

/// Three threads, each appending its own counter (1, 2, 3, ...) to `<dir>/t<k>`; the main
/// thread only waits for them.
const THREADS_PY: &str = r#"
import sys, threading, time

def count_into(path):
    n = 0
    while True:
        n += 1
        with open(path, "a") as f:
            f.write(f"{n}\n")
        time.sleep(0.05)

workers = [threading.Thread(target=count_into, args=(f"{sys.argv[1]}/t{k}",)) for k in range(3)]
for w in workers:
    w.start()
for w in workers:
    w.join()
"#;

/// A server that keeps every client connection open and answers each line it receives with
/// `count:<n>`, n counting all lines of all clients from 1. It prints `connection ended`
/// whenever a read on a client socket reports the end of the connection.
const CONN_SERVER_PY: &str = r#"
import selectors, socket, sys

port = int(sys.argv[1])
sel = selectors.DefaultSelector()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(16)
sel.register(server, selectors.EVENT_READ)
print("listening", flush=True)
count = 0
pending = {}
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock is server:
            conn, _ = server.accept()
            sel.register(conn, selectors.EVENT_READ)
            pending[conn] = b""
            continue
        try:
            data = sock.recv(4096)
        except OSError as e:
            print(f"read error: {e}", flush=True)
            data = b""
        if not data:
            print("connection ended", flush=True)
            sel.unregister(sock)
            sock.close()
            del pending[sock]
            continue
        pending[sock] += data
        while b"\n" in pending[sock]:
            _, pending[sock] = pending[sock].split(b"\n", 1)
            count += 1
            sock.sendall(f"count:{count}\n".encode())
"#;

/// A shell loop printing 1, 2, 3, ... to stdout every 100 ms.
const LOOP_SH: &str = "i=0\nwhile :; do i=$((i+1)); echo $i; sleep 0.1; done\n";

/// Writes `files` into `<work>/scr` (bound at /scr by the tests) and returns that directory.
fn script_dir(env: &TestEnv, files: &[(&str, &str)]) -> PathBuf {
    let dir = env.work().join("scr");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    dir
}

/// An empty `<work>/data` (bound at /data by the tests).
fn data_dir(env: &TestEnv) -> PathBuf {
    let dir = env.work().join("data");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn bind(host: &Path, inside: &str) -> String {
    format!("{}:{inside}", host.display())
}

// ---------------------------------------------------------------------------------------------
// Counters written to files

fn file_len(path: &Path) -> usize {
    std::fs::metadata(path).map_or(0, |m| m.len() as usize)
}

fn wait_for_lines(path: &Path, offset: usize, n: usize, what: &str) {
    assert!(
        wait_until(PROGRESS, || complete_lines(path, offset).len() >= n),
        "{what}: fewer than {n} new lines in {} after {PROGRESS:?}; it holds:\n{}",
        path.display(),
        String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default())
    );
}

/// One counter file around a checkpoint: the last value before it, the last value when it
/// returned, and the file's length once the instance was stopped.
struct Counter {
    path: PathBuf,
    before: u64,
    after: u64,
    stopped_len: usize,
}

impl Counter {
    fn before(path: PathBuf) -> Counter {
        let before = last_number(&path);
        Counter {
            path,
            before,
            after: 0,
            stopped_len: 0,
        }
    }

    fn checkpointed(&mut self) {
        self.after = last_number(&self.path);
    }

    fn stopped(&mut self) {
        self.stopped_len = file_len(&self.path);
    }

    /// Waits for the restored application's first three values (written after
    /// `stopped_len`) and checks that they continue the checkpointed count, one by one.
    fn assert_continues(&self, what: &str) {
        wait_for_lines(&self.path, self.stopped_len, 3, what);
        let new = numbers_from(&self.path, self.stopped_len);
        let first = new[0];
        assert!(
            first > self.before && first <= self.after + 1,
            "{what}: the restored counter in {} wrote {first} first; at checkpoint time it was at {}..{} (a fresh start would write 1)",
            self.path.display(),
            self.before,
            self.after
        );
        assert_eq!(
            &new[..3],
            &[first, first + 1, first + 2],
            "{what}: the restored counter in {} does not count on by one",
            self.path.display()
        );
    }
}

/// Checkpoints `instance` and stops it, following each counter file in `files` through both.
fn checkpoint_and_stop(env: &TestEnv, instance: &str, files: &[PathBuf]) -> Vec<Counter> {
    let mut counters: Vec<Counter> = files.iter().cloned().map(Counter::before).collect();
    env.ok(["checkpoint", "instance", instance]);
    counters.iter_mut().for_each(Counter::checkpointed);
    env.ok(["instance", "stop", instance]);
    counters.iter_mut().for_each(Counter::stopped);
    counters
}

// ---------------------------------------------------------------------------------------------
// Processes and threads of an instance

/// The pids (inside the instance) of the processes `ps` shows with `marker` in their command
/// line, leaving out pid 1 (rctr's init, whose own command line holds the application's).
fn ps_pids_with(env: &TestEnv, instance: &str, marker: &str) -> BTreeSet<u32> {
    let out = env.ok(["exec", &format!("instance://{instance}"), "ps"]);
    out.lines()
        .skip(1)
        .filter(|l| l.contains(marker))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .filter(|&pid| pid != 1)
        .collect()
}

/// The thread ids, as the instance's pid namespace numbers them, of host process `pid`.
fn namespace_tids(pid: i32) -> BTreeSet<u32> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {dir}: {e}"));
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
            line.split_whitespace().last()?.parse().ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 4. Several processes, several threads

#[test]
fn multi_process_shell_comes_back_with_every_worker_counting_on() {
    let test = "multi_process_shell_comes_back_with_every_worker_counting_on";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let data = data_dir(&env);
    let data_bind = bind(&data, "/data");
    // A parent shell waiting for two background workers, each with its own counter file.
    let script = "w() { i=0; while :; do i=$((i+1)); echo $i >> /data/$1; sleep 0.05; done; }; \
                  w a & w b & wait";
    let marker = "w a & w b & wait";

    env.ok(["checkpoint", "create", "procs"]);
    let start = |ckpt_flag: &str, name: &str| {
        env.ok([
            "instance", "start", ckpt_flag, "procs", "-B", &data_bind, &img, name, "sh", "-c",
            script,
        ]);
    };
    start("--ckpt-launch", "workers");
    let files = [data.join("a"), data.join("b")];
    for f in &files {
        wait_for_lines(f, 0, 5, "before the checkpoint");
    }
    // A worker forking `sleep` briefly shows twice: wait for the steady parent + 2 workers.
    let mut pids = BTreeSet::new();
    assert!(
        wait_until(PROGRESS, || {
            pids = ps_pids_with(&env, "workers", marker);
            pids.len() == 3
        }),
        "expected the parent shell and 2 workers in `ps`, found pids {pids:?}"
    );

    let counters = checkpoint_and_stop(&env, "workers", &files);

    start("--ckpt-restart", "workers2");
    let mut restored = BTreeSet::new();
    assert!(
        wait_until(PROGRESS, || {
            restored = ps_pids_with(&env, "workers2", marker);
            restored == pids
        }),
        "the restored instance should run the same 3 shell processes (pids {pids:?}), `ps` shows {restored:?}"
    );
    for c in &counters {
        c.assert_continues("multi-process restart");
    }
    env.ok(["instance", "stop", "workers2"]);
}

#[test]
fn multi_threaded_python_comes_back_with_every_thread_counting_on() {
    let test = "multi_threaded_python_comes_back_with_every_thread_counting_on";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&python_exec_image());
    let data = data_dir(&env);
    let scr = script_dir(&env, &[("threads.py", THREADS_PY)]);
    let (data_bind, scr_bind) = (bind(&data, "/data"), bind(&scr, "/scr"));

    env.ok(["checkpoint", "create", "threads"]);
    let start = |ckpt_flag: &str, name: &str| {
        env.ok([
            "instance",
            "start",
            ckpt_flag,
            "threads",
            "-B",
            &data_bind,
            "-B",
            &scr_bind,
            &img,
            name,
            "python3",
            "/scr/threads.py",
            "/data",
        ]);
    };
    start("--ckpt-launch", "py");
    let files: Vec<PathBuf> = (0..3).map(|k| data.join(format!("t{k}"))).collect();
    for f in &files {
        wait_for_lines(f, 0, 5, "before the checkpoint");
    }
    let tids = namespace_tids(env.app_pid("py"));
    assert_eq!(
        tids.len(),
        4,
        "the Python process should have its main thread and 3 workers, has threads {tids:?}"
    );

    let counters = checkpoint_and_stop(&env, "py", &files);

    start("--ckpt-restart", "py2");
    let restored = namespace_tids(env.app_pid("py2"));
    assert_eq!(
        restored, tids,
        "the restored process should have the same 4 threads (ids inside the instance)"
    );
    for c in &counters {
        c.assert_continues("multi-threaded restart");
    }
    env.ok(["instance", "stop", "py2"]);
}

// ---------------------------------------------------------------------------------------------
// 5. An open file, established connections

#[test]
fn file_held_open_for_append_is_appended_at_its_end_after_restart() {
    let test = "file_held_open_for_append_is_appended_at_its_end_after_restart";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let data = data_dir(&env);
    let data_bind = bind(&data, "/data");
    // Opened once, on fd 3, with O_APPEND; never reopened.
    let script = "exec 3>>/data/log; i=0; while :; do i=$((i+1)); echo $i >&3; sleep 0.05; done";

    env.ok(["checkpoint", "create", "openfile"]);
    let start = |ckpt_flag: &str, name: &str| {
        env.ok([
            "instance", "start", ckpt_flag, "openfile", "-B", &data_bind, &img, name, "sh", "-c",
            script,
        ]);
    };
    start("--ckpt-launch", "appender");
    let log = data.join("log");
    wait_for_lines(&log, 0, 5, "before the checkpoint");
    let mut counter = Counter::before(log.clone());
    env.ok(["checkpoint", "instance", "appender"]);
    counter.checkpointed();
    env.ok(["instance", "stop", "appender"]);
    // The file grows further after the checkpoint, beyond what the application wrote.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    writeln!(f, "written after the checkpoint").expect("appending to the log");
    drop(f);
    let grown = std::fs::read(&log).expect("the log is readable");
    counter.stopped();

    start("--ckpt-restart", "appender2");
    wait_for_lines(&log, counter.stopped_len, 3, "after the restart");
    let now = std::fs::read(&log).expect("the log is readable");
    assert!(
        now.starts_with(&grown),
        "the restored process overwrote the file instead of appending at its end:\n--- before restart:\n{}--- now:\n{}",
        String::from_utf8_lossy(&grown),
        String::from_utf8_lossy(&now)
    );
    counter.assert_continues("append after restart");
    env.ok(["instance", "stop", "appender2"]);
}

/// A client holding one connection and sending one line per question.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let conn =
            TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("cannot connect to port {port}: {e}"));
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a non-zero timeout is valid");
        Client {
            reader: BufReader::new(conn),
        }
    }

    fn ask(&mut self) -> String {
        self.reader
            .get_mut()
            .write_all(b"next\n")
            .expect("sending a line to the server");
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("reading the server's answer");
        line.trim_end().to_string()
    }

    /// Panics unless the server's end of the connection is gone: EOF or a reset, not silence.
    fn assert_ended(&mut self, what: &str) {
        let mut rest = String::new();
        match self.reader.read_line(&mut rest) {
            Ok(0) => {}
            Ok(_) => panic!("{what}: the connection is still answering: {rest:?}"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: the connection neither ended nor answered within 10 s")
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ),
                "{what}: unexpected error on the old connection: {e}"
            ),
        }
    }
}

#[test]
fn established_connection_ends_and_new_clients_are_served_after_restart() {
    let test = "established_connection_ends_and_new_clients_are_served_after_restart";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&python_exec_image());
    let scr = script_dir(&env, &[("conn_server.py", CONN_SERVER_PY)]);
    let scr_bind = bind(&scr, "/scr");
    let port = free_port();
    let p = port.to_string();
    let start = |ckpt_flag: &str, name: &str| {
        env.command([
            "instance",
            "start",
            ckpt_flag,
            "conns",
            "-B",
            &scr_bind,
            &img,
            name,
            "python3",
            "/scr/conn_server.py",
            &p,
        ])
    };

    env.ok(["checkpoint", "create", "conns"]);
    env.ok_cmd(start("--ckpt-launch", "talker"));
    env.wait_for_instance_port("talker", port);
    let mut old = Client::connect(port);
    assert_eq!(old.ask(), "count:1");
    assert_eq!(old.ask(), "count:2");
    env.ok(["checkpoint", "instance", "talker"]);
    // The running instance keeps serving the connection the checkpoint dumped.
    assert_eq!(
        old.ask(),
        "count:3",
        "the connection stopped working after the checkpoint"
    );
    env.ok(["instance", "stop", "talker"]);
    old.assert_ended("the old client after the instance stopped");

    let began = Instant::now();
    let out = try_output_with_timeout(start("--ckpt-restart", "talker2"), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("restart with a dumped connection hung: {e}"));
    assert!(
        out.status.success(),
        "restart failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let took = began.elapsed();
    env.wait_for_instance_port("talker2", port);
    // The restored server's read on the dumped connection reports its end at once.
    let log = env.instance_log("talker2");
    assert!(
        wait_until(PROGRESS, || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("connection ended"))),
        "the restored server never saw its dumped connection end; {} holds:\n{}",
        log.display(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut new = Client::connect(port);
    assert_eq!(
        new.ask(),
        "count:3",
        "a new client should get the count continuing from the checkpoint (2), restart took {took:?}"
    );
    assert_eq!(new.ask(), "count:4");
    env.ok(["instance", "stop", "talker2"]);
}

// ---------------------------------------------------------------------------------------------
// 6. The Apptainer-built busybox image

#[test]
fn apptainer_busybox_shell_loop_continues_after_restart() {
    let test = "apptainer_busybox_shell_loop_continues_after_restart";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&apptainer_busybox_sif());
    let scr = script_dir(&env, &[("loop.sh", LOOP_SH)]);
    let scr_bind = bind(&scr, "/scr");
    // Its startscript is empty; its runscript execs its arguments.
    let run = |ckpt_flag: &str, name: &str| {
        env.ok([
            "instance",
            "run",
            ckpt_flag,
            "abox",
            "-B",
            &scr_bind,
            &img,
            name,
            "sh",
            "/scr/loop.sh",
        ]);
    };

    env.ok(["checkpoint", "create", "abox"]);
    run("--ckpt-launch", "loop");
    let log = env.instance_log("loop");
    wait_for_lines(&log, 0, 5, "the loop in the Apptainer image");
    let before = last_number(&log);
    env.ok(["checkpoint", "instance", "loop"]);
    let after = last_number(&log);
    env.ok(["instance", "stop", "loop"]);

    run("--ckpt-restart", "loop2");
    let log2 = env.instance_log("loop2");
    wait_for_lines(&log2, 0, 3, "the restored loop");
    let new = numbers_from(&log2, 0);
    let first = new[0];
    assert!(
        first > before && first <= after + 1,
        "the restored loop printed {first} first; at checkpoint time it was at {before}..{after}"
    );
    assert_eq!(&new[..3], &[first, first + 1, first + 2]);
    env.ok(["instance", "stop", "loop2"]);
}

// ---------------------------------------------------------------------------------------------
// 7. checkpoint instance --stop / --json, checkpoint list, checkpoint delete

fn parse_json(text: &str, what: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not JSON ({e}):\n{text}"))
}

/// Total size of the regular files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

#[test]
fn checkpoint_json_report_and_stop_leave_a_restartable_checkpoint() {
    let test = "checkpoint_json_report_and_stop_leave_a_restartable_checkpoint";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&python_exec_image());
    let port = free_port();
    let p = port.to_string();
    let start = |ckpt_flag: &str, name: &str| {
        env.ok([
            "instance",
            "start",
            ckpt_flag,
            "rep",
            &img,
            name,
            "python3",
            "/opt/counter_server.py",
            &p,
        ]);
    };
    env.ok(["checkpoint", "create", "rep"]);
    start("--ckpt-launch", "srv");
    env.wait_for_instance_port("srv", port);
    assert_eq!(request(port), "request:1");

    // --json: a report of the new generation; the instance keeps running.
    let began = Instant::now();
    let text = env.ok(["checkpoint", "instance", "--json", "srv"]);
    let took_ms = began.elapsed().as_millis() as u64;
    let report = parse_json(&text, "`checkpoint instance --json`");
    assert_eq!(report["generation"], 1, "{report}");
    assert_eq!(report["stopped"], false, "{report}");
    let gen_dir = env.checkpoint_dir("rep").join("gen-000001");
    let size = report["size_bytes"].as_u64().unwrap_or(0);
    // The report's size covers the engine's images, written before the manifest.
    assert!(
        size > 0 && size <= tree_size(&gen_dir),
        "size_bytes {size} should be positive and at most the generation's {} bytes on disk: {report}",
        tree_size(&gen_dir)
    );
    let wall = report["wall_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no wall_ms: {report}"));
    assert!(
        wall <= took_ms,
        "wall_ms {wall} exceeds the command's own {took_ms} ms: {report}"
    );
    let frozen = report["frozen_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no frozen_ms: {report}"));
    assert!(
        frozen > 0.0 && frozen <= wall as f64,
        "frozen_ms {frozen} should be positive and within wall_ms {wall}: {report}"
    );
    assert_eq!(request(port), "request:2", "the checkpoint disturbed srv");

    // --stop: a second generation, then the instance is gone and its port free at once.
    let listed = env.instance_json("srv");
    let pids = [listed["pid"].as_i64(), listed["app_pid"].as_i64()].map(|p| p.unwrap_or(0) as i32);
    let text = env.ok(["checkpoint", "instance", "--stop", "--json", "srv"]);
    let report = parse_json(&text, "`checkpoint instance --stop --json`");
    assert_eq!(report["generation"], 2, "{report}");
    assert_eq!(report["stopped"], true, "{report}");
    assert!(
        !env.instance_names().contains(&"srv".to_string()),
        "srv is still listed after --stop"
    );
    for pid in pids {
        assert!(!process_alive(pid), "process {pid} of srv survived --stop");
    }
    assert!(
        !is_listening(port),
        "port {port} is still held after --stop"
    );

    start("--ckpt-restart", "srv2");
    env.wait_for_instance_port("srv2", port);
    assert_eq!(
        request(port),
        "request:3",
        "the restart should continue from the --stop checkpoint"
    );
    env.ok(["instance", "stop", "srv2"]);
}

/// One checkpoint's row of the `checkpoint list` table, split into its columns.
#[derive(Debug)]
struct Row {
    name: String,
    engine: String,
    created: String,
    last: String,
    size: String,
    used_by: String,
}

/// The table's rows, cut at the header's column positions (the time columns hold a space).
fn list_table(env: &TestEnv) -> Vec<Row> {
    let text = env.ok(["checkpoint", "list"]);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let words: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "NAME",
            "ENGINE",
            "CREATED",
            "LAST",
            "CHECKPOINT",
            "SIZE",
            "USED",
            "BY"
        ],
        "`checkpoint list` header"
    );
    let col = |label: &str| header.find(label).expect("label is in the header");
    let (engine, created, last, used) = (
        col("ENGINE"),
        col("CREATED"),
        col("LAST CHECKPOINT"),
        col("USED BY"),
    );
    // SIZE is right-aligned: it ends where its label ends.
    let size_end = col("SIZE") + "SIZE".len();
    let cut =
        |l: &str, a: usize, b: usize| l.get(a..b.min(l.len())).unwrap_or("").trim().to_string();
    lines
        .map(|l| {
            let last_and_size = cut(l, last, size_end);
            let (last_text, size_text) = match last_and_size.strip_prefix('-') {
                Some(rest) => ("-".to_string(), rest.trim().to_string()),
                None => {
                    // "YYYY-MM-DD HH:MM:SS" then the size.
                    let (t, s) = last_and_size.split_at(19.min(last_and_size.len()));
                    (t.to_string(), s.trim().to_string())
                }
            };
            Row {
                name: cut(l, 0, engine),
                engine: cut(l, engine, created),
                created: cut(l, created, last),
                last: last_text,
                size: size_text,
                used_by: cut(l, used, l.len()),
            }
        })
        .collect()
}

fn table_row(env: &TestEnv, name: &str) -> Row {
    list_table(env)
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("`checkpoint list` has no row for {name}"))
}

fn json_entry(env: &TestEnv, name: &str) -> serde_json::Value {
    env.checkpoint_json(name)
        .unwrap_or_else(|| panic!("`checkpoint list --json` has no entry for {name}"))
}

/// `date -u` of epoch seconds, as `YYYY-MM-DD HH:MM:SS`.
fn utc_text(secs: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .expect("date (coreutils) runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// "118.9 KiB" or "512 B" as a byte count, and the rounding error the text allows.
fn parse_size(text: &str) -> (f64, f64) {
    let (num, unit) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("size {text:?} has no unit"));
    let num: f64 = num
        .parse()
        .unwrap_or_else(|_| panic!("size {text:?} is not a number and unit"));
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => panic!("size {text:?} has an unknown unit"),
    };
    (num * scale, 0.05 * scale + 0.5)
}

/// The table row and the JSON entry of `name` agree, and both describe the checkpoint.
fn assert_listing(env: &TestEnv, name: &str, used_by: &[&str], last: Option<(u64, u64)>) {
    let row = table_row(env, name);
    let entry = json_entry(env, name);
    assert_eq!(entry["engine"], "criu", "{entry}");
    assert_eq!(row.engine, "criu", "{row:?}");
    let created = entry["created"]
        .as_u64()
        .unwrap_or_else(|| panic!("no created time: {entry}"));
    assert_eq!(row.created, utc_text(created), "CREATED column: {row:?}");
    match last {
        None => {
            assert!(entry["last_checkpoint"].is_null(), "{entry}");
            assert_eq!(row.last, "-", "LAST CHECKPOINT column: {row:?}");
        }
        Some((from, to)) => {
            let t = entry["last_checkpoint"]
                .as_u64()
                .unwrap_or_else(|| panic!("no last_checkpoint: {entry}"));
            assert!(
                (from..=to).contains(&t),
                "last_checkpoint {t} is not within the checkpoint's run {from}..={to}: {entry}"
            );
            assert_eq!(row.last, utc_text(t), "LAST CHECKPOINT column: {row:?}");
        }
    }
    let size = entry["size_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no size_bytes: {entry}"));
    let on_disk = tree_size(&env.checkpoint_dir(name));
    assert!(
        size > 0 && size <= on_disk,
        "size_bytes {size} should be positive and at most the {on_disk} bytes on disk: {entry}"
    );
    let (shown, slack) = parse_size(&row.size);
    assert!(
        (shown - size as f64).abs() <= slack,
        "SIZE column {:?} does not show size_bytes {size}",
        row.size
    );
    let users: Vec<&str> = entry["used_by"]
        .as_array()
        .unwrap_or_else(|| panic!("no used_by array: {entry}"))
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    assert_eq!(users, used_by, "used_by: {entry}");
    let column = if used_by.is_empty() {
        "-".to_string()
    } else {
        used_by.join(",")
    };
    assert_eq!(row.used_by, column, "USED BY column: {row:?}");
}

#[test]
fn checkpoint_list_shows_engine_times_size_and_users() {
    let test = "checkpoint_list_shows_engine_times_size_and_users";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let counter = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";

    env.ok(["checkpoint", "create", "listed"]);
    env.ok(["checkpoint", "create", "other"]);
    assert_listing(&env, "listed", &[], None);
    let empty_size = json_entry(&env, "listed")["size_bytes"]
        .as_u64()
        .unwrap_or(0);

    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "listed",
        &img,
        "lister",
        "sh",
        "-c",
        counter,
    ]);
    assert_listing(&env, "listed", &["lister"], None);
    assert_listing(&env, "other", &[], None);

    let from = unix_now();
    env.ok(["checkpoint", "instance", "lister"]);
    let to = unix_now();
    assert_listing(&env, "listed", &["lister"], Some((from, to)));
    let size = json_entry(&env, "listed")["size_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        size > empty_size + 4096,
        "the checkpoint's size grew only from {empty_size} to {size} bytes with a generation in it"
    );

    env.ok(["instance", "stop", "lister"]);
    assert_listing(&env, "listed", &[], Some((from, to)));
}

#[test]
fn checkpoint_delete_is_refused_in_use_works_after_stop_and_with_force() {
    let test = "checkpoint_delete_is_refused_in_use_works_after_stop_and_with_force";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    let counter = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";
    let launch = |ckpt: &str, name: &str| {
        env.ok([
            "instance",
            "start",
            "--ckpt-launch",
            ckpt,
            &img,
            name,
            "sh",
            "-c",
            counter,
        ]);
        env.ok(["checkpoint", "instance", name]);
    };

    // In use: refused, one line naming the instance, nothing removed.
    env.ok(["checkpoint", "create", "busy"]);
    launch("busy", "user");
    let dir = env.checkpoint_dir("busy");
    let files_before = tree_size(&dir);
    let (code, stderr) = env.fails(["checkpoint", "delete", "busy"]);
    assert_ne!(code, 0);
    let line = assert_one_line_error(&stderr, "deleting a checkpoint in use");
    assert!(
        line.contains("user") && line.contains("--force"),
        "the error should name the instance and the way out: {line}"
    );
    assert!(
        dir.join("gen-000001").is_dir() && tree_size(&dir) == files_before,
        "the refused delete changed {}",
        dir.display()
    );

    // Stopped: deleted, state directory gone.
    env.ok(["instance", "stop", "user"]);
    env.ok(["checkpoint", "delete", "busy"]);
    assert!(
        !dir.exists(),
        "{} is still there after delete",
        dir.display()
    );
    let listed = env.ok(["checkpoint", "list"]);
    assert!(
        !listed
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some("busy")),
        "busy is still listed after delete:\n{listed}"
    );

    // --force: deleted although in use; the instance itself is left running.
    env.ok(["checkpoint", "create", "forced"]);
    launch("forced", "holder");
    let forced_dir = env.checkpoint_dir("forced");
    env.ok(["checkpoint", "delete", "--force", "forced"]);
    assert!(
        !forced_dir.exists(),
        "{} is still there after delete --force",
        forced_dir.display()
    );
    assert!(
        env.instance_names().contains(&"holder".to_string()),
        "delete --force stopped the instance using the checkpoint"
    );
    let log = env.instance_log("holder");
    let n = numbers_from(&log, 0).len();
    wait_for_lines(&log, 0, n + 2, "the instance after delete --force");
    // Checkpointing it now fails cleanly, naming the missing checkpoint.
    let (_, stderr) = env.fails(["checkpoint", "instance", "holder"]);
    let line = assert_one_line_error(&stderr, "checkpointing into a deleted checkpoint");
    assert!(
        line.contains("forced"),
        "the error should name the checkpoint: {line}"
    );
    env.ok(["instance", "stop", "holder"]);
}
