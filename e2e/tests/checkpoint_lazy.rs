//! Lazy restore (`instance start --ckpt-restart NAME --lazy-pages`): the application runs
//! while CRIU's lazy-pages daemon brings its memory in. The application, /opt/memserver,
//! holds patterned memory and checks all of it on request ("check" answers "ok N", or
//! "bad OFFSET" for a page that came back wrong), so a zero-filled or missing page is seen.
//!
//! Whatever happens to the daemon, a restored application must never answer from memory
//! that did not arrive: it either has every page, or it is killed.

use rctr_e2e::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Enough memory that the daemon is still at work when `instance start` returns, small
/// enough for a 2-core CI machine.
const MIB: &str = "256";

/// memserver's ports: one answers "pong N ok", the other checks the whole memory.
#[derive(Clone, Copy)]
struct Ports {
    ping: u16,
    check: u16,
}

impl Ports {
    fn free() -> Ports {
        let ping = free_port();
        let check = std::iter::repeat_with(free_port)
            .find(|p| *p != ping)
            .expect("free ports exist");
        Ports { ping, check }
    }
}

fn ask(port: u16) -> Result<String, String> {
    use std::io::Read;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a non-zero timeout is valid");
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .map_err(|e| format!("reading failed (got {text:?}): {e}"))?;
    Ok(text.trim_end().to_string())
}

/// A whole-memory check that must pass.
fn check_ok(ports: Ports) {
    let answer = ask(ports.check).unwrap_or_else(|e| panic!("check: {e}"));
    assert!(answer.starts_with("ok "), "memory check failed: {answer:?}");
}

/// Launches memserver under checkpoint `ckpt`, checkpoints it and stops it.
fn checkpointed_memserver(env: &TestEnv, ckpt: &str, img: &str, ports: Ports) {
    env.ok(["checkpoint", "create", ckpt]);
    let name = format!("{ckpt}-0");
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        ckpt,
        img,
        &name,
        "/opt/memserver",
        MIB,
        &ports.ping.to_string(),
        &ports.check.to_string(),
    ]);
    env.wait_for_instance_port(&name, ports.check);
    check_ok(ports);
    env.ok(["checkpoint", "instance", &name]);
    env.ok(["instance", "stop", &name]);
}

fn lazy_restart(env: &TestEnv, ckpt: &str, img: &str, name: &str) {
    env.ok([
        "instance",
        "start",
        "--ckpt-restart",
        ckpt,
        "--lazy-pages",
        img,
        name,
    ]);
}

/// Host pid of the lazy-pages daemon of instance `name`, if it still runs: a child of the
/// instance's init running the bundled engine's `lazy-pages`.
fn daemon_of(env: &TestEnv, name: &str) -> Option<i32> {
    let init = env.instance_json(name)["pid"].as_i64()? as i32;
    let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|p: &i32| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"lazy-pages"))
        })
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lazy_restore_brings_all_memory_back_and_survives_deletion() {
    if !require_root_and_criu("lazy_restore_brings_all_memory_back_and_survives_deletion") {
        return;
    }
    let env = TestEnv::new("lazy_restore_brings_all_memory_back_and_survives_deletion");
    let img = app_image();
    let img = img.to_str().unwrap();
    let ports = Ports::free();
    checkpointed_memserver(&env, "lz", img, ports);

    // Answers at once, then its whole memory is right; a checkpoint taken meanwhile waits
    // for the pages still on their way, and restores whole (eagerly).
    lazy_restart(&env, "lz", img, "lz-1");
    let pong = ask(ports.ping).expect("the lazily restored server answers");
    assert!(pong.ends_with(" ok"), "{pong}");
    env.ok(["checkpoint", "instance", "lz-1"]);
    assert_eq!(daemon_of(&env, "lz-1"), None);
    check_ok(ports);
    // The memory came from rctr's page source, checked piece by piece.
    let served = std::fs::read_to_string(
        env.checkpoint_dir("lz")
            .join("logs/page-source-gen-000001.log"),
    )
    .expect("the page source wrote its log");
    let mib: u64 = served
        .split(" MiB")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no amount served in {served:?}"));
    assert!(mib >= MIB.parse::<u64>().unwrap(), "{served}");
    env.ok(["instance", "stop", "lz-1"]);
    env.ok(["instance", "start", "--ckpt-restart", "lz", img, "lz-2"]);
    check_ok(ports);
    env.ok(["instance", "stop", "lz-2"]);

    // The checkpoint deleted while pages are still arriving: the daemon holds its files.
    lazy_restart(&env, "lz", img, "lz-3");
    let (code, err) = env.fails(["checkpoint", "delete", "lz"]);
    assert_ne!(code, 0);
    assert!(err.contains("lz-3"), "{err}");
    env.ok(["checkpoint", "delete", "--force", "lz"]);
    check_ok(ports);
    wait_until(
        "the lazy-pages daemon still runs",
        Duration::from_secs(60),
        || daemon_of(&env, "lz-3").is_none(),
    );
    check_ok(ports);
    assert!(env.instance_names().contains(&"lz-3".to_string()));
    env.ok(["instance", "stop", "lz-3"]);
}

/// The instance, whose application was just killed, is reported exited (its init follows
/// its application within moments).
fn exits_soon(env: &TestEnv) {
    wait_until(
        "the instance is not reported exited",
        Duration::from_secs(10),
        || env.ok(["instance", "list"]).contains("exited"),
    );
}

/// The largest memory image of the newest generation of `ckpt`.
fn largest_memory_image(env: &TestEnv, ckpt: &str) -> std::path::PathBuf {
    let latest = std::fs::read_to_string(env.checkpoint_dir(ckpt).join("latest")).unwrap();
    let gen = env
        .checkpoint_dir(ckpt)
        .join(format!("gen-{:06}", latest.trim().parse::<u32>().unwrap()));
    std::fs::read_dir(&gen)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("pages-") && n.ends_with(".img")
        })
        .max_by_key(|p| p.metadata().unwrap().len())
        .expect("a CRIU generation has a memory image")
}

#[test]
fn a_damaged_page_is_never_served_the_application_is_killed() {
    let test = "a_damaged_page_is_never_served_the_application_is_killed";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = app_image();
    let img = img.to_str().unwrap();
    let ports = Ports::free();
    checkpointed_memserver(&env, "ld", img, ports);
    // One byte of the application's patterned memory (the middle of its memory image,
    // restored lazily) changed on disk.
    let pages = largest_memory_image(&env, "ld");
    let at = pages.metadata().unwrap().len() / 2;
    let mut bytes = std::fs::read(&pages).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(&pages, &bytes).unwrap();
    drop(bytes);

    // Restored eagerly, the whole file is checked first: refused.
    let (_, err) = env.fails(["instance", "start", "--ckpt-restart", "ld", img, "ld-0"]);
    assert!(
        err.contains("is damaged") && err.contains("corrupt"),
        "{err}"
    );
    // Lazily, the damaged piece is checked when it is asked for: the application may start
    // (the start may also see it killed already), but it never runs on that page. It is
    // killed, and the logs say why.
    let out = env.cmd([
        "instance",
        "start",
        "--ckpt-restart",
        "ld",
        "--lazy-pages",
        img,
        "ld-1",
    ]);
    let answer = ask(ports.check);
    assert!(
        !answer.as_deref().is_ok_and(|a| a.starts_with("ok ")),
        "the application ran on damaged memory: {answer:?}"
    );
    wait_until(
        "the instance still runs after its page source found damage",
        Duration::from_secs(30),
        || !is_listening(ports.check) && !is_listening(ports.ping),
    );
    exits_soon(&env);
    let log = std::fs::read_to_string(
        env.checkpoint_dir("ld")
            .join("logs/page-source-gen-000001.log"),
    )
    .unwrap_or_default();
    assert!(
        log.contains(&format!(
            "{} is corrupt",
            pages.file_name().unwrap().to_string_lossy()
        )) && log.contains("do not match their checksum"),
        "{log}"
    );
    if out.status.success() {
        let err = std::fs::read_to_string(env.instance_err_log("ld-1")).unwrap_or_default();
        assert!(err.contains("page source"), "{err}");
    }
}

#[test]
fn a_lost_page_source_kills_the_application_never_corrupts_it() {
    let test = "a_lost_page_source_kills_the_application_never_corrupts_it";
    if !require_root_and_criu(test) {
        return;
    }
    let env = TestEnv::new(test);
    let img = app_image();
    let img = img.to_str().unwrap();
    let ports = Ports::free();
    checkpointed_memserver(&env, "lk", img, ports);
    // The daemon is stopped mid-transfer, then killed while the application asks for pages
    // it has not received. A restore whose daemon finished before it could be stopped
    // proves nothing: it is tried again.
    for attempt in 1..=5 {
        let name = format!("lk-{attempt}");
        lazy_restart(&env, "lk", img, &name);
        let Some(daemon) = daemon_of(&env, &name) else {
            env.ok(["instance", "stop", &name]);
            continue;
        };
        // SAFETY: kill sends a signal to a process this test found; no memory is involved.
        unsafe { libc::kill(daemon, libc::SIGSTOP) };
        let asking = std::thread::spawn(move || ask(ports.check));
        std::thread::sleep(Duration::from_millis(500));
        if asking.is_finished() {
            // Every page had arrived before the daemon stopped.
            let answer = asking.join().unwrap();
            assert!(
                answer.as_deref().is_ok_and(|a| a.starts_with("ok ")),
                "{answer:?}"
            );
            // SAFETY: as above.
            unsafe { libc::kill(daemon, libc::SIGCONT) };
            env.ok(["instance", "stop", &name]);
            continue;
        }
        // SAFETY: as above.
        unsafe { libc::kill(daemon, libc::SIGKILL) };
        let answer = asking.join().unwrap();
        assert!(
            answer.as_ref().is_err() || answer.as_ref().is_ok_and(|a| a.is_empty()),
            "the application answered after losing its page source: {answer:?}"
        );
        wait_until(
            "the instance still runs after its lazy-pages daemon died",
            Duration::from_secs(30),
            || !is_listening(ports.check),
        );
        exits_soon(&env);
        let err = std::fs::read_to_string(env.instance_err_log(&name)).unwrap_or_default();
        assert!(
            err.contains("lazy-pages daemon")
                && err.contains("killed rather than run on missing pages"),
            "{err}"
        );
        // `instance list` reported it and dropped its record.
        assert!(!env.instance_names().contains(&name));
        return;
    }
    panic!("the lazy-pages daemon finished every time before it could be stopped");
}
