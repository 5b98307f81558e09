//! What a restored application gets back beyond memory and files: its SysV IPC objects live in
//! the container's own IPC namespace and come back with it.

use rctr_e2e::*;
use std::time::Duration;

fn ok_lines(env: &TestEnv, name: &str) -> Vec<String> {
    complete_lines(&env.instance_log(name), 0)
}

#[test]
fn sysv_semaphores_queues_and_shared_memory_come_back() {
    let test = "sysv_semaphores_queues_and_shared_memory_come_back";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    env.ok(["checkpoint", "create", "ipc"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "ipc",
        &img,
        "hold",
        "/opt/sysv_holder",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || ok_lines(&env, "hold")
            .iter()
            .any(|l| l == "ok 3")),
        "the holder never ran: {:?}",
        ok_lines(&env, "hold")
    );
    // Its objects are the container's own: the host does not see them.
    let pid = env.app_pid("hold");
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/ipc")).unwrap();
    assert_ne!(
        ns(&pid.to_string()),
        ns("self"),
        "the container shares the host's IPC namespace"
    );
    env.ok(["checkpoint", "instance", "hold"]);
    env.ok(["instance", "stop", "hold"]);
    env.ok(["instance", "start", "--ckpt-restart", "ipc", &img, "hold2"]);
    assert!(
        wait_until(Duration::from_secs(20), || ok_lines(&env, "hold2").len()
            >= 5),
        "the restored holder printed nothing: {:?}",
        ok_lines(&env, "hold2")
    );
    let lines = ok_lines(&env, "hold2");
    assert!(
        lines.iter().all(|l| l.starts_with("ok ")),
        "the restored holder lost its objects: {lines:?}"
    );
    let first: u64 = lines[0].strip_prefix("ok ").unwrap().parse().unwrap();
    assert!(first > 3, "restored, not restarted: {lines:?}");
    assert!(env.instance_names().contains(&"hold2".to_string()));
}

#[test]
fn a_process_that_switched_uid_is_explained_where_root_cannot_dump_it() {
    let test = "a_process_that_switched_uid_is_explained_where_root_cannot_dump_it";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    env.ok(["checkpoint", "create", "uid"]);
    env.ok([
        "instance", "start", "--ckpt-launch", "uid", &img, "dropper", "python3", "-c",
        "import os, time\nos.setgid(65534)\nos.setuid(65534)\nprint('dropped', flush=True)\nwhile True: time.sleep(0.05)",
    ]);
    assert!(wait_until(Duration::from_secs(20), || ok_lines(
        &env, "dropper"
    )
    .iter()
    .any(|l| l == "dropped")));
    let out = env.cmd(["checkpoint", "instance", "dropper"]);
    if has_cap_sys_resource() {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = assert_one_line_error(&stderr, "dumping a uid-switching process");
    assert!(
        line.contains("Can't get rlimit") && line.contains("CAP_SYS_RESOURCE"),
        "the cause is not shown: {line}"
    );
    assert!(
        env.instance_names().contains(&"dropper".to_string()),
        "the application survives"
    );
    let check = env.cmd(["checkpoint", "check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("lacks CAP_SYS_RESOURCE"), "{text}");
}

#[test]
fn the_containers_own_tmpfs_contents_come_back_even_after_a_clean_exit() {
    let test = "the_containers_own_tmpfs_contents_come_back_even_after_a_clean_exit";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    // A private /tmp (--contain) with a file held open and appended to, a file in /dev/shm,
    // and a tmpfs the application mounts itself; on SIGTERM it cleans all of them up, as MPI
    // does with its session directory.
    let app = "mkdir -p /tmp/own && mount -t tmpfs -o size=1m,mode=750 tmpfs /tmp/own && \
               echo mine > /tmp/own/f && echo segment > /dev/shm/seg && \
               trap 'rm -rf /tmp/own/f /dev/shm/seg /tmp/held; exit 0' TERM; \
               exec 4>>/tmp/held; i=0; \
               while :; do i=$((i+1)); echo $i >&4; echo $i; usleep 20000; done";
    env.ok(["checkpoint", "create", "tf"]);
    env.ok([
        "instance",
        "start",
        "--contain",
        "--ckpt-launch",
        "tf",
        &img,
        "tf1",
        "sh",
        "-c",
        app,
    ]);
    assert!(wait_until(Duration::from_secs(20), || ok_lines(
        &env, "tf1"
    )
    .len()
        > 5));
    env.ok(["checkpoint", "instance", "tf1"]);
    // Still running after the checkpoint (it was stopped only while its tmpfs was saved).
    let n = ok_lines(&env, "tf1").len();
    assert!(
        wait_until(Duration::from_secs(10), || ok_lines(&env, "tf1").len()
            > n + 3),
        "the application did not continue after the checkpoint"
    );
    env.ok(["instance", "stop", "tf1"]);
    env.ok(["instance", "start", "--ckpt-restart", "tf", &img, "tf2"]);
    assert!(
        wait_until(Duration::from_secs(20), || ok_lines(&env, "tf2").len() > 3),
        "the restored application printed nothing: {}",
        std::fs::read_to_string(env.instance_err_log("tf2")).unwrap_or_default()
    );
    let cat = |path: &str| env.ok(["exec", "instance://tf2", "cat", path]);
    assert_eq!(cat("/tmp/own/f").trim(), "mine");
    assert_eq!(cat("/dev/shm/seg").trim(), "segment");
    let held: Vec<u64> = cat("/tmp/held")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    for w in held.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the held file continues: {held:?}");
    }
    let mounts = cat("/proc/self/mountinfo");
    let own = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/tmp/own"))
        .unwrap_or_else(|| panic!("/tmp/own is not mounted again:\n{mounts}"));
    assert!(own.contains("tmpfs") && own.contains("size=1024k"), "{own}");
}

#[test]
fn stacked_and_empty_tmpfs_mounts_of_the_application_come_back_with_their_options() {
    let test = "stacked_and_empty_tmpfs_mounts_of_the_application_come_back_with_their_options";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    // In the container's own /tmp (--contain): a tmpfs with a file, a second tmpfs over one of its directories that hides a file
    // there, and an empty tmpfs; the application holds the hidden file's neighbour open.
    let app = "set -e; mkdir -p /tmp/data && mount -t tmpfs -o size=2m,mode=750,nr_inodes=500 low /tmp/data && \
               echo lower > /tmp/data/f && mkdir /tmp/data/sub && echo hidden > /tmp/data/sub/g && \
               mount -t tmpfs -o size=1m,mode=700,uid=7,gid=8 high /tmp/data/sub && \
               echo upper > /tmp/data/sub/h && \
               mkdir -p /tmp/empty && mount -t tmpfs -o size=512k,mode=711,nosuid,noexec none /tmp/empty && \
               exec 4</tmp/data/f; i=0; \
               while :; do i=$((i+1)); echo $i; usleep 20000; done";
    env.ok(["checkpoint", "create", "st"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "st",
        &img,
        "st1",
        "sh",
        "-c",
        app,
    ]);
    assert!(wait_until(Duration::from_secs(20), || ok_lines(
        &env, "st1"
    )
    .len()
        > 5));
    env.ok(["checkpoint", "instance", "--stop", "st1"]);
    env.ok(["instance", "start", "--ckpt-restart", "st", &img, "st2"]);
    assert!(
        wait_until(Duration::from_secs(20), || ok_lines(&env, "st2").len() > 3),
        "the restored application printed nothing: {}",
        std::fs::read_to_string(env.instance_err_log("st2")).unwrap_or_default()
    );
    let sh = |script: &str| env.ok(["exec", "instance://st2", "sh", "-c", script]);
    assert_eq!(sh("cat /tmp/data/f").trim(), "lower");
    assert_eq!(sh("cat /tmp/data/sub/h").trim(), "upper");
    assert_eq!(sh("ls -A /tmp/empty").trim(), "");
    let mounts = sh("cat /proc/self/mountinfo");
    let at = |point: &str| -> Vec<&str> {
        mounts
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(point))
            .collect()
    };
    let (data, sub, empty) = (at("/tmp/data"), at("/tmp/data/sub"), at("/tmp/empty"));
    assert!(
        data.len() == 1 && sub.len() == 1 && empty.len() == 1,
        "the application's tmpfs mounts are not all mounted again, once each:\n{mounts}"
    );
    let has = |line: &str, opts: &[&str]| {
        line.contains(" - tmpfs ") && opts.iter().all(|o| line.contains(o))
    };
    assert!(
        has(data[0], &["size=2048k", "nr_inodes=500", "mode=750"]),
        "{}",
        data[0]
    );
    assert!(
        has(sub[0], &["size=1024k", "mode=700", "uid=7", "gid=8"]),
        "{}",
        sub[0]
    );
    let empty_flags = empty[0].split(' ').nth(5).unwrap_or("");
    assert!(
        has(empty[0], &["size=512k", "mode=711"])
            && empty_flags.contains("nosuid")
            && empty_flags.contains("noexec"),
        "{}",
        empty[0]
    );
    // Stacked in the same order: /tmp/data/sub sits on /tmp/data.
    let field = |l: &str, n: usize| l.split(' ').nth(n).unwrap_or("").to_string();
    assert_eq!(field(sub[0], 1), field(data[0], 0), "{mounts}");
    // The file hidden under the upper mount came back too (the exec shares the
    // application's mounts: this is the last look).
    let under = sh("umount /tmp/data/sub && cat /tmp/data/sub/g");
    assert_eq!(under.trim(), "hidden");
    env.ok(["instance", "stop", "st2"]);
}

/// Busy loops on every core while alive.
struct CpuLoad(Vec<std::process::Child>);

impl CpuLoad {
    fn start() -> CpuLoad {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuLoad(
            (0..n)
                .map(|_| {
                    std::process::Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Tests that compare the host's lock tables before and after hold this, so that another
/// test's dump (whose table exists while it runs) is not taken for a leak.
static HOST_LOCK_TABLES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn watch_host_lock_tables() -> std::sync::MutexGuard<'static, ()> {
    HOST_LOCK_TABLES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// CRIU's network lock tables in the host's network namespace.
fn criu_lock_tables() -> Vec<String> {
    let out = std::process::Command::new("nft")
        .args(["list", "tables", "inet"])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("CRIU-"))
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

#[test]
fn a_killed_checkpoint_never_kills_the_application() {
    let test = "a_killed_checkpoint_never_kills_the_application";
    if !require_root_and_criu(test) {
        return;
    }
    let _tables = watch_host_lock_tables();
    let env = TestEnv::new(test);
    let img = path_str(&server_image());
    let port = free_port();
    env.ok(["checkpoint", "create", "storm"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "storm",
        &img,
        "srv",
        &port.to_string(),
    ]);
    env.wait_for_instance_port("srv", port);
    let tables_before = criu_lock_tables();
    let _load = CpuLoad::start();
    // A small deterministic generator: the delays spread over 0-150 ms.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut expected = 0;
    for round in 0..100 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 150);
        let mut cmd = env.command(["checkpoint", "instance", "srv"]);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(delay);
        // The whole process group, as a batch system does after its grace time.
        // SAFETY: kill with the (negated) process group id of our own child.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        expected += 1;
        assert_eq!(
            request(port),
            format!("request:{expected}"),
            "round {round} (killed after {delay:?}): the application stopped answering"
        );
    }
    // The checkpoints whose callers were killed finish on their own; a normal one after them
    // works, and its generation restores.
    env.ok(["checkpoint", "instance", "srv"]);
    env.ok(["checkpoint", "verify", "storm"]);
    env.ok(["instance", "stop", "srv"]);
    env.ok(["instance", "start", "--ckpt-restart", "storm", &img, "srv2"]);
    env.wait_for_instance_port("srv2", port);
    assert_eq!(request(port), format!("request:{}", expected + 1));
    let left: Vec<String> = criu_lock_tables()
        .into_iter()
        .filter(|t| !tables_before.contains(t))
        .collect();
    assert!(left.is_empty(), "network lock tables left behind: {left:?}");
}

/// One process holding both ends of a loopback TCP connection, echoing a counter through it.
const TCP_PAIR: &str = "import socket, sys, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', 5555))
srv.listen(1)
client = socket.create_connection(('127.0.0.1', 5555))
server, _ = srv.accept()
n = 0
while True:
    n += 1
    client.sendall(b'%d\\n' % n)
    got = server.recv(64)
    if not got:
        print('connection closed', flush=True)
        sys.exit(3)
    print('echo', got.decode().strip(), flush=True)
    time.sleep(0.02)
";

#[test]
fn tcp_established_brings_connections_back_live() {
    let test = "tcp_established_brings_connections_back_live";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    env.ok(["checkpoint", "create", "tcp"]);
    env.ok([
        "instance",
        "start",
        "--net",
        "--ckpt-launch",
        "tcp",
        &img,
        "pair",
        "python3",
        "-c",
        TCP_PAIR,
    ]);
    assert!(wait_until(Duration::from_secs(20), || ok_lines(
        &env, "pair"
    )
    .len()
        > 5));
    env.ok(["checkpoint", "instance", "--stop", "pair"]);
    let last: u64 = ok_lines(&env, "pair")
        .last()
        .and_then(|l| l.strip_prefix("echo ")?.parse().ok())
        .unwrap();
    // Live: the connection between its own two ends comes back and the echo goes on.
    env.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "tcp",
        "--tcp-established",
        &img,
        "pair2",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || ok_lines(&env, "pair2").len()
            > 5),
        "{:?}\n--- err:\n{}\n--- restore log:\n{}",
        ok_lines(&env, "pair2"),
        std::fs::read_to_string(env.instance_err_log("pair2")).unwrap_or_default(),
        std::fs::read_to_string(
            env.checkpoint_dir("tcp")
                .join("logs/restore-gen-000001.log")
        )
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Error") || l.contains("Warn"))
        .collect::<Vec<_>>()
        .join("\n")
    );
    let lines = ok_lines(&env, "pair2");
    assert_eq!(lines[0], format!("echo {}", last + 1), "{lines:?}");
    assert!(lines.iter().all(|l| l.starts_with("echo ")), "{lines:?}");
    env.ok(["instance", "stop", "pair2"]);
    // By default the connection comes back closed, and the application sees it.
    env.ok(["instance", "start", "--ckpt-restart", "tcp", &img, "pair3"]);
    let err = || std::fs::read_to_string(env.instance_err_log("pair3")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || ok_lines(&env, "pair3")
            .iter()
            .any(|l| l == "connection closed")
            || err().contains("Error")),
        "the closed connection went unnoticed: {:?} {}",
        ok_lines(&env, "pair3"),
        err()
    );
}

/// A server that answers every line of its one client with a running count, on one
/// connection that stays open.
const LINE_COUNTER: &str = "import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', int(sys.argv[1])))
srv.listen(1)
conn, _ = srv.accept()
f = conn.makefile('rwb')
n = 0
for line in f:
    n += 1
    f.write(b'%d\\n' % n)
    f.flush()
";

/// Instance "srv" running [`LINE_COUNTER`] on `port`, launched on a new checkpoint `ckpt`, and
/// one client connection to it (with a reader on the same socket).
fn line_counter_instance(
    env: &TestEnv,
    ckpt: &str,
    img: &str,
    port: u16,
) -> (std::net::TcpStream, std::io::BufReader<std::net::TcpStream>) {
    env.ok(["checkpoint", "create", ckpt]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        ckpt,
        img,
        "srv",
        "python3",
        "-c",
        LINE_COUNTER,
        &port.to_string(),
    ]);
    env.wait_for_instance_port("srv", port);
    let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let reader = std::io::BufReader::new(conn.try_clone().unwrap());
    (conn, reader)
}

#[test]
fn a_client_keeps_its_connection_across_stop_and_live_restart() {
    let test = "a_client_keeps_its_connection_across_stop_and_live_restart";
    if !require_root_and_criu(test) {
        return;
    }
    use std::io::{BufRead, Write};
    let _tables = watch_host_lock_tables();
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    let port = free_port();
    let tables_before = criu_lock_tables();
    let (conn, mut reader) = line_counter_instance(&env, "live", &img, port);
    let mut ask = |what: &str| -> String {
        (&conn)
            .write_all(b"x\n")
            .unwrap_or_else(|e| panic!("{what}: write: {e}"));
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("{what}: read: {e}"));
        line.trim().to_string()
    };
    assert_eq!(ask("before"), "1");
    assert_eq!(ask("before"), "2");
    env.ok(["checkpoint", "instance", "--stop", "srv"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "live",
        "--tcp-established",
        &img,
        "srv2",
    ]);
    assert_eq!(ask("after the live restart"), "3");
    assert_eq!(ask("after the live restart"), "4");
    assert!(
        !criu_lock_tables()
            .iter()
            .any(|t| !tables_before.contains(t)),
        "the live restore left the network lock: {:?}",
        criu_lock_tables()
    );
}

#[test]
fn a_plain_restart_lets_held_connections_go() {
    let test = "a_plain_restart_lets_held_connections_go";
    if !require_root_and_criu(test) {
        return;
    }
    use std::io::{BufRead, Write};
    let _tables = watch_host_lock_tables();
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    let port = free_port();
    let (mut conn, mut reader) = line_counter_instance(&env, "held", &img, port);
    conn.write_all(b"x\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "1");
    // Stopping holds the connection for a live restore: the lock table stays. It is the one
    // named after the run id CRIU recorded in the images (other dumps on this host may hold
    // tables of their own meanwhile).
    env.ok(["checkpoint", "instance", "--stop", "srv"]);
    let inventory = find_file(&env.home().join(".rctr/checkpoint"), "inventory.img")
        .expect("the generation has CRIU's inventory.img");
    let inventory = std::fs::read(inventory).unwrap();
    let ours = |tables: Vec<String>| -> Vec<String> {
        tables
            .into_iter()
            .filter(|t| {
                let id = t.trim().trim_start_matches("table inet CRIU-");
                !id.is_empty() && inventory.windows(id.len()).any(|w| w == id.as_bytes())
            })
            .collect()
    };
    let held = ours(criu_lock_tables());
    assert_eq!(
        held.len(),
        1,
        "one lock table held for the stopped dump: {held:?}; all: {:?}; recorded run id in {:?}",
        criu_lock_tables(),
        String::from_utf8_lossy(&inventory)
    );
    // A restart without --tcp-established lets it go: the client is told, not left hanging.
    env.ok(["instance", "start", "--ckpt-restart", "held", &img, "srv2"]);
    let left: Vec<String> = criu_lock_tables()
        .into_iter()
        .filter(|t| held.contains(t))
        .collect();
    assert!(left.is_empty(), "the plain restart left the lock: {left:?}");
    let _ = conn.write_all(b"x\n");
    let mut after = String::new();
    match reader.read_line(&mut after) {
        Ok(0) | Err(_) => {}
        Ok(_) => panic!("the old connection still answered after a plain restart: {after:?}"),
    }
}

/// The first file named `name` under `dir`, depth first.
fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

/// Connects to itself over and over, holding each connection a moment.
const SELF_CONNECTING: &str = "import socket, sys, time
port = int(sys.argv[1])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', port))
srv.listen(8)
n = 0
while True:
    c = socket.create_connection(('127.0.0.1', port))
    s, _ = srv.accept()
    time.sleep(0.002)
    c.close()
    s.close()
    n += 1
    if n % 200 == 0:
        print('cycles', n, flush=True)
    time.sleep(0.002)
";

/// An application with no TCP connection is dumped without the network lock (it only costs
/// nftables transactions), but one that connects between rctr's look at its sockets and
/// CRIU's freeze is dumped again under the lock: no generation holds a connection saved
/// unlocked.
#[test]
fn a_connection_made_during_an_unlocked_dump_is_dumped_again_under_the_lock() {
    let test = "a_connection_made_during_an_unlocked_dump_is_dumped_again_under_the_lock";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    let port = free_port().to_string();
    env.ok(["checkpoint", "create", "sc"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "sc",
        &img,
        "selfc",
        "python3",
        "-c",
        SELF_CONNECTING,
        &port,
    ]);
    assert!(wait_until(Duration::from_secs(20), || !ok_lines(
        &env, "selfc"
    )
    .is_empty()));
    let (mut unlocked, mut with_connections) = (0, 0);
    for round in 0..20 {
        let out = env.run(env.command(["--debug", "checkpoint", "instance", "selfc"]));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "round {round}: {err}");
        let last_dump = err
            .lines()
            .rfind(|l| l.contains("checkpoint engine (dump):"))
            .unwrap_or_else(|| panic!("no dump command in the debug output: {err}"))
            .to_string();
        let gen = env.checkpoint_dir("sc").join(format!(
            "gen-{:06}",
            std::fs::read_to_string(env.checkpoint_dir("sc").join("latest"))
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap()
        ));
        let streams = std::fs::read_dir(&gen)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("tcp-stream-"));
        let skip = last_dump.contains("--network-lock skip");
        assert!(
            !(streams && skip),
            "round {round}: generation {} holds a connection dumped without the network lock: {last_dump}",
            gen.display()
        );
        unlocked += usize::from(skip);
        with_connections += usize::from(streams);
    }
    eprintln!("{unlocked} of 20 dumps without the lock, {with_connections} holding a connection");
    // It keeps running, connecting to itself.
    let before = ok_lines(&env, "selfc").len();
    assert!(wait_until(Duration::from_secs(20), || ok_lines(
        &env, "selfc"
    )
    .len()
        > before));
    env.ok(["instance", "stop", "selfc"]);
}
