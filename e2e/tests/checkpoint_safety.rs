//! Checkpoint safety: a checkpoint interrupted by SIGKILL (of rctr, of the engine, of both), a
//! full disk, damaged or swapped images, concurrent checkpoints, and hostile names, state
//! directories and engine configurations. In every case the previous generation must stay
//! restorable and nothing half-written may ever be restored.
//!
//! The counter server answers `request:<n>` and keeps n only in memory, so the answer after a
//! restart tells exactly which generation was restored: a generation dumped when the count was
//! c restarts answering c + 1.

use rctr_e2e::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CKPT: &str = "ex";

// ---------------------------------------------------------------------------------------------
// Private helpers (the shared harness lacks these).
// ---------------------------------------------------------------------------------------------

fn gen_dir(env: &TestEnv, name: &str, generation: u32) -> PathBuf {
    env.checkpoint_dir(name)
        .join(format!("gen-{generation:06}"))
}

/// The n of a `request:<n>` answer.
fn count_of(answer: &str) -> u32 {
    answer
        .strip_prefix("request:")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer from the counter server: {answer:?}"))
}

/// One request, giving up (None) when the server does not answer in time: after a killed
/// engine the application may be frozen or gone, which the caller handles.
fn try_request(port: u16) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let text = text.trim_end().to_string();
    text.starts_with("request:").then_some(text)
}

/// `rctr instance start --ckpt-launch CKPT IMG NAME PORT`, waiting until it serves.
fn launch(env: &TestEnv, ckpt: &str, img: &str, name: &str, port: u16) {
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        ckpt,
        img,
        name,
        &port.to_string(),
    ]);
    env.wait_for_instance_port(name, port);
}

/// `rctr instance start --ckpt-restart CKPT [--generation G] IMG NAME PORT`, waiting until it
/// serves.
fn restart(env: &TestEnv, ckpt: &str, generation: Option<u32>, img: &str, name: &str, port: u16) {
    let mut args = vec![
        "instance".to_string(),
        "start".into(),
        "--ckpt-restart".into(),
        ckpt.into(),
    ];
    if let Some(g) = generation {
        args.extend(["--generation".into(), g.to_string()]);
    }
    args.extend([img.to_string(), name.to_string(), port.to_string()]);
    env.ok(&args);
    env.wait_for_instance_port(name, port);
}

/// `rctr checkpoint instance --json EXTRA... INSTANCE`; returns the new generation.
fn checkpoint(env: &TestEnv, instance: &str, extra: &[&str]) -> u32 {
    let mut args = vec!["checkpoint", "instance", "--json"];
    args.extend_from_slice(extra);
    args.push(instance);
    generation_of_report(&env.ok(&args))
}

fn generation_of_report(json: &str) -> u32 {
    let doc: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| {
        panic!("`checkpoint instance --json` printed invalid JSON ({e}):\n{json}")
    });
    doc["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("`checkpoint instance --json` has no generation:\n{json}"))
        as u32
}

/// The generations `rctr checkpoint list NAME --json` shows, and the one marked latest.
fn listing(env: &TestEnv, name: &str) -> (Vec<u32>, Option<u32>) {
    let text = env.ok(["checkpoint", "list", name, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("`checkpoint list {name} --json` printed invalid JSON ({e}):\n{text}")
    });
    let gens = doc["generations"].as_array().unwrap_or_else(|| {
        panic!("`checkpoint list {name} --json` has no generations array:\n{text}")
    });
    let numbers: Vec<u32> = gens
        .iter()
        .map(|g| g["generation"].as_u64().expect("generation number") as u32)
        .collect();
    let latest: Vec<u32> = gens
        .iter()
        .filter(|g| g["latest"].as_bool() == Some(true))
        .map(|g| g["generation"].as_u64().expect("generation number") as u32)
        .collect();
    assert!(
        latest.len() <= 1,
        "several generations marked latest:\n{text}"
    );
    (numbers, latest.first().copied())
}

/// Asserts `rctr checkpoint verify NAME --generation G` succeeds.
fn assert_verifies(env: &TestEnv, name: &str, generation: u32) {
    let out = env.cmd([
        "checkpoint",
        "verify",
        name,
        "--generation",
        &generation.to_string(),
    ]);
    assert!(
        out.status.success(),
        "generation {generation} of {name} is published but does not verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Names in `dir` starting with `prefix` (e.g. ".tmp-").
fn entries_starting_with(dir: &Path, prefix: &str) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Every path under `root` (not following symlinks), relative, with its kind.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let kind = e
                .file_type()
                .map(|t| {
                    if t.is_dir() {
                        "/"
                    } else if t.is_symlink() {
                        "@"
                    } else {
                        ""
                    }
                })
                .unwrap_or("?");
            out.insert(format!(
                "{}{kind}",
                p.strip_prefix(root).unwrap_or(&p).display()
            ));
            if kind == "/" {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

fn kill9(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions; a vanished pid just gives ESRCH.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// The processes of one `rctr checkpoint instance` run started as `rctr_pid`: the command
/// itself and the checkpoint process it runs in a session of its own (a fork of it, same
/// command line, which stages `.tmp-gen-NNNNNN-<its pid>`).
fn rctr_pids_of(rctr_pid: u32, cmdline: &[u8]) -> Vec<i32> {
    let mut pids = vec![rctr_pid as i32];
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if pid != rctr_pid as i32
            && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == cmdline)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Engine processes dumping for checkpoint runs of `rctr_pids`: they run
/// `criu dump ... -D /.checkpoint/.tmp-gen-NNNNNN-<pid>`, which tells them apart from other
/// tests' engines.
fn engine_pids_of(rctr_pids: &[i32]) -> Vec<i32> {
    let suffixes: Vec<String> = rctr_pids.iter().map(|p| format!("-{p}")).collect();
    let mut pids = vec![];
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_dump = args.iter().any(|a| *a == b"dump");
        let ours = args.iter().any(|a| {
            let a = String::from_utf8_lossy(a);
            a.starts_with("/.checkpoint/.tmp-gen-") && suffixes.iter().any(|s| a.ends_with(s))
        });
        if is_dump && ours {
            pids.push(pid);
        }
    }
    pids
}

/// An exclusive flock on a checkpoint's `.lock`, as rctr takes it; released on drop.
struct HeldLock {
    _file: fs::File,
}

impl HeldLock {
    fn try_take(dir: &Path) -> Option<HeldLock> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(".lock"))
            .unwrap_or_else(|e| panic!("cannot open {}/.lock: {e}", dir.display()));
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (rc == 0).then_some(HeldLock { _file: file })
    }

    fn take(dir: &Path) -> HeldLock {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(".lock"))
            .unwrap_or_else(|e| panic!("cannot open {}/.lock: {e}", dir.display()));
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock {}/.lock: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        HeldLock { _file: file }
    }
}

/// Waits until nothing holds the checkpoint's lock: an engine orphaned by a killed rctr keeps
/// it (inherited) until it is done, and only then is the state settled.
fn wait_lock_free(dir: &Path, timeout: Duration) {
    let free = wait_until(timeout, || HeldLock::try_take(dir).is_some());
    assert!(
        free,
        "{}/.lock is still held {timeout:?} after the checkpoint ended",
        dir.display()
    );
}

/// A tmpfs mounted over a test's `$HOME`. On drop it stops the instances started under that
/// `$HOME` (they hold files on it) and unmounts it, so a failing test leaves no mount behind.
struct TmpfsHome {
    dir: PathBuf,
}

impl TmpfsHome {
    fn mount(dir: &Path, size_bytes: u64) -> TmpfsHome {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        TmpfsHome {
            dir: dir.to_path_buf(),
        }
    }

    fn resize(&self, size_bytes: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size_bytes}")])
            .arg(&self.dir)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "remount {} to {size_bytes} bytes: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// (bytes used, bytes available).
    fn usage(&self) -> (u64, u64) {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes())
            .expect("no NUL in path");
        // SAFETY: statvfs writes only into the struct we pass.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statvfs {}", self.dir.display());
        let frag = st.f_frsize;
        ((st.f_blocks - st.f_bfree) * frag, st.f_bavail * frag)
    }
}

impl Drop for TmpfsHome {
    fn drop(&mut self) {
        if let Ok(bin) = try_rctr_bin() {
            let mut cmd = Command::new(bin);
            cmd.args(["instance", "stop", "--all", "--force"])
                .env("HOME", &self.dir);
            let _ = try_output_with_timeout(cmd, Duration::from_secs(60));
        }
        let unmounted = wait_until(Duration::from_secs(10), || {
            Command::new("umount")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fault injection: SIGKILL during a checkpoint.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kill {
    /// SIGKILL the `rctr checkpoint instance` process after a delay from its start.
    Rctr,
    /// SIGKILL the engine (criu dump) a delay after it appears.
    Engine,
    /// SIGKILL the engine, then rctr at once.
    Both,
}

const FAULTS: [Kill; 3] = [Kill::Rctr, Kill::Engine, Kill::Both];
/// Checkpoints that a fault must interrupt, and the most attempts made to get there (a
/// fault that lands after an idle server's ~10 ms dump interrupts nothing).
const INTERRUPTIONS: usize = 12;
const FAULT_RUNS: usize = 48;

#[test]
fn sigkill_during_checkpoint_never_loses_or_corrupts_a_generation() {
    const T: &str = "sigkill_during_checkpoint_never_loses_or_corrupts_a_generation";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    let dir = env.checkpoint_dir(CKPT);
    env.ok(["checkpoint", "create", CKPT]);
    launch(&env, CKPT, &img, "srv", port);

    // Generation -> the count the server had when it was dumped.
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    let c = count_of(&request(port));
    let started = Instant::now();
    assert_eq!(checkpoint(&env, "srv", &["--keep", "3"]), 1);
    // Faults are spread over the whole length of an uninterrupted checkpoint.
    let full_ms = (started.elapsed().as_millis() as u64).max(20);
    counts.insert(1, c);

    let mut interrupted = BTreeMap::<&str, usize>::new();
    let mut restarts_with_tmp_present = 0;
    let mut revived = 0;
    let mut sample_error = String::new();
    let mut runs = FAULT_RUNS;
    for run in 0..FAULT_RUNS {
        let fault = FAULTS[run % FAULTS.len()];
        let (before, latest_before) = listing(&env, CKPT);
        let latest_before = latest_before.expect("a latest generation");
        let max_before = *before.last().expect("at least one generation");
        // A distinct count per attempt: restoring anything but a published generation shows.
        let c = count_of(&request(port));

        let err_file = env.work().join(format!("fault-{run}.err"));
        let mut child = env
            .command(["checkpoint", "instance", "--keep", "3", "--json", "srv"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_file).expect("create stderr file"))
            .spawn()
            .expect("spawn rctr checkpoint instance");
        let rctr_pid = child.id();
        // Everything of this rctr run: the command and its checkpoint process.
        let rctr_cmdline = {
            let mut c = path_str(&rctr_bin()).into_bytes();
            for a in ["checkpoint", "instance", "--keep", "3", "--json", "srv"] {
                c.push(0);
                c.extend_from_slice(a.as_bytes());
            }
            c.push(0);
            c
        };
        let all_rctr = || rctr_pids_of(rctr_pid, &rctr_cmdline);
        let delay = match fault {
            Kill::Rctr => Duration::from_millis((run as u64 * 37) % (full_ms + full_ms / 5)),
            // CRIU's own part is a fifth of the whole or less (an idle server's dump takes
            // ~10 ms): faults spread over it.
            _ => Duration::from_millis((run as u64 * 7) % (full_ms / 5).max(4)),
        };
        match fault {
            Kill::Rctr => {
                std::thread::sleep(delay);
                for pid in all_rctr() {
                    kill9(pid);
                }
            }
            Kill::Engine | Kill::Both => {
                let mut engine = vec![];
                let deadline = Instant::now() + Duration::from_secs(10);
                while engine.is_empty()
                    && Instant::now() < deadline
                    && child.try_wait().expect("try_wait").is_none()
                {
                    engine = engine_pids_of(&all_rctr());
                }
                std::thread::sleep(delay);
                let rctr = all_rctr();
                for pid in engine_pids_of(&rctr) {
                    kill9(pid);
                }
                if fault == Kill::Both {
                    for pid in rctr {
                        kill9(pid);
                    }
                }
            }
        }
        let status = child.wait().expect("wait for rctr");
        let stderr = fs::read_to_string(&err_file).unwrap_or_default();
        let what = format!("run {run} ({fault:?} after {delay:?})");
        wait_lock_free(&dir, Duration::from_secs(30));

        let (after, latest_after) = listing(&env, CKPT);
        let latest_after = latest_after.expect("a latest generation");
        let new_gen = max_before + 1;
        for g in &after {
            assert!(
                before.contains(g) || *g == new_gen,
                "{what}: unexpected generation {g} (before: {before:?}, after: {after:?})"
            );
        }
        if after.contains(&new_gen) {
            counts.insert(new_gen, c);
        }
        match (status.code(), status.signal()) {
            (Some(0), _) => {
                assert_eq!(
                    latest_after, new_gen,
                    "{what}: rctr succeeded, so generation {new_gen} must be the latest"
                );
                assert!(after.len() <= 3, "{what}: --keep 3 left {after:?}");
            }
            (Some(_), _) => {
                *interrupted
                    .entry("engine killed, rctr reported it")
                    .or_default() += 1;
                let line = assert_one_line_error(&stderr, &what);
                assert!(
                    line.contains("srv") && line.contains("previous checkpoint is unchanged"),
                    "{what}: the error should name the instance and say the previous checkpoint is kept: {line}"
                );
                assert!(
                    line.contains("killed by signal 9 (SIGKILL)") && !line.contains("tun"),
                    "{what}: the error should say the engine was killed, not quote unrelated log lines: {line}"
                );
                if sample_error.is_empty() {
                    sample_error = line.to_string();
                }
                assert_eq!(
                    after, before,
                    "{what}: a failed checkpoint changed the generations"
                );
                assert_eq!(
                    latest_after, latest_before,
                    "{what}: a failed checkpoint moved latest"
                );
                let tmps = entries_starting_with(&dir, ".tmp-");
                assert!(
                    tmps.is_empty(),
                    "{what}: the failed checkpoint left {tmps:?}"
                );
            }
            (None, _) => {
                *interrupted
                    .entry(if fault == Kill::Rctr {
                        "rctr killed"
                    } else {
                        "engine and rctr killed"
                    })
                    .or_default() += 1;
                assert!(
                    latest_after == latest_before || latest_after == new_gen,
                    "{what}: latest is {latest_after}, expected {latest_before} or {new_gen}"
                );
                assert!(
                    after.len() <= 4,
                    "{what}: more generations than --keep 3 plus one unpruned: {after:?}"
                );
            }
        }
        // Whatever was published is complete.
        for g in after.iter().filter(|g| !before.contains(g)) {
            assert_verifies(&env, CKPT, *g);
        }

        // The application must still serve; if the killed engine left it frozen or dead, the
        // checkpoint brings it back.
        let total: usize = interrupted.values().sum();
        let last = run == FAULT_RUNS - 1 || (total >= INTERRUPTIONS && run % 4 == 3);
        let must_restart = run % 4 == 3 || last;
        let alive = try_request(port);
        if alive.is_none() || must_restart {
            let tmp_present = !entries_starting_with(&dir, ".tmp-").is_empty();
            env.ok(["instance", "stop", "--force", "srv"]);
            restart(&env, CKPT, None, &img, "srv", port);
            let answer = request(port);
            assert_eq!(
                count_of(&answer),
                counts[&latest_after] + 1,
                "{what}: restart restored something other than generation {latest_after} (dumped at count {}; counts: {counts:?}; app {})",
                counts[&latest_after],
                if alive.is_some() { "was alive" } else { "was not answering" }
            );
            if tmp_present {
                restarts_with_tmp_present += 1;
            }
            if alive.is_none() {
                revived += 1;
            }
        }
        if last {
            runs = run + 1;
            break;
        }
    }

    // One clean checkpoint removes every leftover and verifies; each kept generation restores.
    let c = count_of(&request(port));
    let g = checkpoint(&env, "srv", &["--keep", "3"]);
    counts.insert(g, c);
    assert!(
        entries_starting_with(&dir, ".tmp-").is_empty(),
        "a successful checkpoint left stale .tmp-* dirs"
    );
    // Pruned generations are deleted in the background: wait for that, not for time.
    assert!(
        wait_until(Duration::from_secs(20), || entries_starting_with(
            &dir, ".trash-"
        )
        .is_empty()),
        "pruned generations (.trash-*) were never deleted"
    );
    let (gens, latest) = listing(&env, CKPT);
    assert_eq!(latest, Some(g));
    let newest_three: Vec<u32> = counts.keys().rev().take(3).rev().copied().collect();
    assert_eq!(
        gens, newest_three,
        "--keep 3 should leave the newest three published generations"
    );
    for &g in &gens {
        assert_verifies(&env, CKPT, g);
        env.ok(["instance", "stop", "--force", "srv"]);
        restart(&env, CKPT, Some(g), &img, "srv", port);
        assert_eq!(
            count_of(&request(port)),
            counts[&g] + 1,
            "generation {g} restored the wrong state"
        );
    }

    let total: usize = interrupted.values().sum();
    eprintln!(
        "{T}: {total}/{runs} checkpoints interrupted {interrupted:?}; {revived} times the application \
         no longer answered and was restarted; {restarts_with_tmp_present} restarts had a .tmp-* dir beside \
         the generations; engine-kill error: {sample_error}"
    );
    // The test means nothing if the faults mostly landed after the checkpoint was done.
    assert!(
        total >= INTERRUPTIONS,
        "only {total} of {runs} faults interrupted a checkpoint: {interrupted:?}"
    );
    assert!(
        interrupted.len() >= 2,
        "faults interrupted checkpoints in too few ways: {interrupted:?}"
    );
}

/// A checkpoint directory may hold a complete-looking `.tmp-*` (rctr killed after the engine
/// finished) and a `latest` naming it: restart must still take the newest published generation.
#[test]
fn restart_never_uses_an_unpublished_tmp_generation() {
    const T: &str = "restart_never_uses_an_unpublished_tmp_generation";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    let dir = env.checkpoint_dir(CKPT);
    env.ok(["checkpoint", "create", CKPT]);
    launch(&env, CKPT, &img, "srv", port);
    let c1 = count_of(&request(port));
    assert_eq!(checkpoint(&env, "srv", &[]), 1);
    let c2 = count_of(&request(port));
    assert_eq!(checkpoint(&env, "srv", &[]), 2);
    assert!(c2 > c1);
    env.ok(["instance", "stop", "srv"]);

    // Generation 2 as an interrupted checkpoint leaves it: complete, but never renamed.
    let tmp = dir.join(".tmp-gen-000002-4242");
    fs::rename(gen_dir(&env, CKPT, 2), &tmp).unwrap();
    assert_eq!(fs::read_to_string(dir.join("latest")).unwrap().trim(), "2");
    assert_eq!(
        listing(&env, CKPT),
        (vec![1], Some(1)),
        "a .tmp-* dir is listed as a generation"
    );
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        CKPT,
        "--generation",
        "2",
        &img,
        "srv",
        &port.to_string(),
    ]);
    let line = assert_one_line_error(&stderr, "--generation of an unpublished generation");
    assert!(line.contains("no generation 2"), "{line}");
    assert!(env.instance_names().is_empty());

    restart(&env, CKPT, None, &img, "srv", port);
    assert_eq!(
        count_of(&request(port)),
        c1 + 1,
        "restart did not restore generation 1 (count {c1})"
    );

    // The next checkpoint takes the number back and sweeps the leftover.
    let c3 = count_of(&request(port));
    assert_eq!(checkpoint(&env, "srv", &[]), 2);
    assert!(
        !tmp.exists(),
        "the stale {} survived a checkpoint",
        tmp.display()
    );
    env.ok(["instance", "stop", "srv"]);
    restart(&env, CKPT, None, &img, "srv", port);
    assert_eq!(count_of(&request(port)), c3 + 1);
}

// ---------------------------------------------------------------------------------------------
// Disk full.
// ---------------------------------------------------------------------------------------------

/// Total size of the files in a directory (flat: generations are).
fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn checkpoint_on_a_full_disk_fails_cleanly_and_the_previous_generation_restores() {
    const T: &str = "checkpoint_on_a_full_disk_fails_cleanly_and_the_previous_generation_restores";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    let disk = TmpfsHome::mount(env.home(), 64 << 20);
    env.ok(["checkpoint", "create", CKPT]);
    launch(&env, CKPT, &img, "srv", port);
    let c1 = count_of(&request(port));
    assert_eq!(checkpoint(&env, "srv", &["--keep", "0"]), 1);

    // Leave room for half a generation: the first fitted, the second cannot.
    let gen_size = dir_size(&gen_dir(&env, CKPT, 1));
    let (used, _) = disk.usage();
    disk.resize((used + gen_size / 2).div_ceil(4096) * 4096);
    let (_, room) = disk.usage();
    assert!(
        room < gen_size,
        "{room} bytes free, a generation takes {gen_size}"
    );

    for attempt in 1..=2 {
        let c = count_of(&request(port));
        let (code, stderr) = env.fails(["checkpoint", "instance", "--keep", "0", "srv"]);
        let what = format!("checkpoint #{attempt} on a full disk");
        let line = assert_one_line_error(&stderr, &what);
        assert!(code != 0);
        assert!(
            line.contains("No space left on device") && line.contains("srv") && line.contains("previous checkpoint is unchanged"),
            "{what}: the error should say the disk is full, name the instance and keep the previous checkpoint: {line}"
        );
        let dir = env.checkpoint_dir(CKPT);
        let leftovers = entries_starting_with(&dir, ".tmp-");
        assert!(leftovers.is_empty(), "{what}: left {leftovers:?}");
        assert_eq!(
            listing(&env, CKPT),
            (vec![1], Some(1)),
            "{what}: generations changed"
        );
        // The half-written images were removed: the space is back (logs may have grown a bit).
        let (_, free) = disk.usage();
        assert!(
            free + (64 << 10) >= room,
            "{what}: {free} bytes free afterwards, {room} before"
        );
        // The application did not suffer from the failed dump.
        assert_eq!(
            count_of(&request(port)),
            c + 1,
            "{what}: the server lost its state"
        );
    }
    assert_verifies(&env, CKPT, 1);

    env.ok(["instance", "stop", "srv"]);
    restart(&env, CKPT, None, &img, "srv", port);
    assert_eq!(
        count_of(&request(port)),
        c1 + 1,
        "the previous generation did not restore"
    );

    // With room again, checkpoints work again.
    disk.resize(64 << 20);
    let c = count_of(&request(port));
    assert_eq!(checkpoint(&env, "srv", &["--keep", "0"]), 2);
    env.ok(["instance", "stop", "srv"]);
    restart(&env, CKPT, None, &img, "srv", port);
    assert_eq!(count_of(&request(port)), c + 1);
    drop(disk);
}

// ---------------------------------------------------------------------------------------------
// Corruption and a different image.
// ---------------------------------------------------------------------------------------------

/// The first file of `dir` whose name starts with `prefix` and ends with ".img", the largest
/// if several.
fn image_file(dir: &Path, prefix: &str) -> PathBuf {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(prefix) && n.ends_with(".img")
        })
        .map(|e| (e.metadata().unwrap().len(), e.path()))
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no {prefix}*.img in {}", dir.display()))
        .1
}

/// Asserts that `verify` of the newest generation and a restart from it are both refused with
/// one line containing every `needle`, and that the refused restart started nothing.
fn assert_damage_refused(env: &TestEnv, img: &str, port: u16, what: &str, needles: &[&str]) {
    let check = |line: &str, cmd: &str| {
        for n in needles {
            assert!(
                line.contains(n),
                "{what}: `{cmd}` error should contain {n:?}: {line}"
            );
        }
    };
    let (_, stderr) = env.fails(["checkpoint", "verify", CKPT]);
    check(assert_one_line_error(&stderr, what), "checkpoint verify");
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        CKPT,
        img,
        "srv",
        &port.to_string(),
    ]);
    check(
        assert_one_line_error(&stderr, what),
        "instance start --ckpt-restart",
    );
    assert!(
        env.instance_names().is_empty(),
        "{what}: an instance was started from a damaged generation"
    );
    assert!(
        !is_listening(port),
        "{what}: something listens on {port} after the refused restart"
    );
}

/// The squashfs partition of a SIF, as a file of its own (`rctr sif dump`).
fn extract_squashfs(env: &TestEnv, sif: &str, out: &Path) {
    let list = env.ok(["sif", "list", sif]);
    let id = list
        .lines()
        .find(|l| l.contains("FS (Squashfs"))
        .and_then(|l| l.split('|').next())
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no squashfs partition in `rctr sif list {sif}`:\n{list}"));
    let mut cmd = env.command(["sif", "dump", &id, sif]);
    cmd.stdout(fs::File::create(out).unwrap());
    let status = cmd.status().unwrap();
    assert!(status.success(), "rctr sif dump {id} {sif} failed");
}

#[test]
fn damaged_or_swapped_images_are_refused_and_older_generations_still_restore() {
    const T: &str = "damaged_or_swapped_images_are_refused_and_older_generations_still_restore";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    env.ok(["checkpoint", "create", CKPT]);
    launch(&env, CKPT, &img, "srv", port);
    let c1 = count_of(&request(port));
    assert_eq!(checkpoint(&env, "srv", &[]), 1);
    let c2 = count_of(&request(port));
    assert_eq!(checkpoint(&env, "srv", &[]), 2);
    env.ok(["instance", "stop", "srv"]);
    let g2 = gen_dir(&env, CKPT, 2);
    let hint = "--generation 1";
    // Generation 1 stays intact throughout and restores whatever happened to generation 2.
    let older_restores = |what: &str| {
        assert_verifies(&env, CKPT, 1);
        restart(&env, CKPT, Some(1), &img, "srv", port);
        assert_eq!(
            count_of(&request(port)),
            c1 + 1,
            "{what}: generation 1 restored the wrong state"
        );
        env.ok(["instance", "stop", "srv"]);
    };
    let latest_restores = |what: &str| {
        env.ok(["checkpoint", "verify", CKPT]);
        restart(&env, CKPT, None, &img, "srv", port);
        assert_eq!(
            count_of(&request(port)),
            c2 + 1,
            "{what}: generation 2 restored the wrong state"
        );
        env.ok(["instance", "stop", "srv"]);
    };

    // A flipped byte in the memory pages.
    let pages = image_file(&g2, "pages-");
    let pages_name = pages.file_name().unwrap().to_string_lossy().into_owned();
    let pristine = fs::read(&pages).unwrap();
    let mut bytes = pristine.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&pages, &bytes).unwrap();
    assert_damage_refused(
        &env,
        &img,
        port,
        "flipped byte",
        &[&pages_name, "corrupt", hint],
    );
    older_restores("flipped byte");
    fs::write(&pages, &pristine).unwrap();
    latest_restores("byte flipped back");

    // A truncated page file.
    fs::write(&pages, &pristine[..pristine.len() - 4096]).unwrap();
    assert_damage_refused(
        &env,
        &img,
        port,
        "truncated pages",
        &[&pages_name, "size", hint],
    );
    fs::write(&pages, &pristine).unwrap();

    // A deleted image file.
    let core = image_file(&g2, "core-");
    let core_name = core.file_name().unwrap().to_string_lossy().into_owned();
    let core_bytes = fs::read(&core).unwrap();
    fs::remove_file(&core).unwrap();
    assert_damage_refused(
        &env,
        &img,
        port,
        "deleted file",
        &[&core_name, "missing", hint],
    );
    older_restores("deleted file");
    fs::write(&core, &core_bytes).unwrap();

    // An image file replaced by a symlink, even to identical content.
    let copy = env.work().join(&core_name);
    fs::write(&copy, &core_bytes).unwrap();
    fs::remove_file(&core).unwrap();
    std::os::unix::fs::symlink(&copy, &core).unwrap();
    assert_damage_refused(
        &env,
        &img,
        port,
        "symlinked image file",
        &[&core_name, "not a regular file", hint],
    );
    fs::remove_file(&core).unwrap();
    fs::write(&core, &core_bytes).unwrap();

    // A lost manifest.
    let manifest = g2.join("manifest.json");
    let manifest_text = fs::read(&manifest).unwrap();
    fs::remove_file(&manifest).unwrap();
    assert_damage_refused(
        &env,
        &img,
        port,
        "deleted manifest",
        &["manifest.json", "damaged", hint],
    );
    older_restores("deleted manifest");
    fs::write(&manifest, &manifest_text).unwrap();
    latest_restores("everything put back");

    // A different image is refused unless --force; the same filesystem under another name and
    // format is the same image.
    let busybox = path_str(&busybox_exec_image());
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        CKPT,
        &busybox,
        "srv",
        &port.to_string(),
    ]);
    let line = assert_one_line_error(&stderr, "restart with the busybox image");
    assert!(
        line.contains(&busybox) && line.contains("differs") && line.contains("--force"),
        "{line}"
    );
    assert!(env.instance_names().is_empty());

    let same = env.work().join("same.sqfs");
    extract_squashfs(&env, &img, &same);
    latest_restores_with(
        &env,
        &path_str(&same),
        &[],
        port,
        c2 + 1,
        "the same squashfs extracted from the SIF",
    );

    let padded = env.work().join("padded.sqfs");
    let mut data = fs::read(&same).unwrap();
    data.extend(std::iter::repeat_n(0u8, 4096));
    fs::write(&padded, &data).unwrap();
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        CKPT,
        &path_str(&padded),
        "srv",
        &port.to_string(),
    ]);
    let line = assert_one_line_error(&stderr, "restart with a different squashfs");
    assert!(
        line.contains("padded.sqfs") && line.contains("differs") && line.contains("--force"),
        "{line}"
    );
    assert!(env.instance_names().is_empty());
    // The same files, so --force restores it.
    latest_restores_with(
        &env,
        &path_str(&padded),
        &["--force"],
        port,
        c2 + 1,
        "--force with a different image",
    );
}

fn latest_restores_with(
    env: &TestEnv,
    img: &str,
    extra: &[&str],
    port: u16,
    expected: u32,
    what: &str,
) {
    let p = port.to_string();
    let mut args = vec!["instance", "start", "--ckpt-restart", CKPT];
    args.extend_from_slice(extra);
    args.extend([img, "srv", p.as_str()]);
    env.ok(&args);
    env.wait_for_instance_port("srv", port);
    assert_eq!(
        count_of(&request(port)),
        expected,
        "{what}: restored the wrong state"
    );
    env.ok(["instance", "stop", "srv"]);
}

// ---------------------------------------------------------------------------------------------
// Concurrency.
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_checkpoints_are_serialised_and_no_wait_fails_fast() {
    const T: &str = "concurrent_checkpoints_are_serialised_and_no_wait_fails_fast";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    let dir = env.checkpoint_dir(CKPT);
    env.ok(["checkpoint", "create", CKPT]);
    launch(&env, CKPT, &img, "srv", port);
    assert_eq!(checkpoint(&env, "srv", &["--keep", "0"]), 1);

    const N: u32 = 10;
    let reported: Vec<u32> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..N)
            .map(|_| {
                scope.spawn(|| env.cmd(["checkpoint", "instance", "--keep", "0", "--json", "srv"]))
            })
            .collect();
        runs.into_iter()
            .enumerate()
            .map(|(i, h)| {
                let out = h.join().unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(
                    out.status.success(),
                    "concurrent checkpoint #{i} failed ({}): {stderr}",
                    out.status
                );
                assert_no_panic(&stderr, "concurrent checkpoint");
                generation_of_report(&String::from_utf8_lossy(&out.stdout))
            })
            .collect()
    });
    let distinct: BTreeSet<u32> = reported.iter().copied().collect();
    assert_eq!(
        distinct,
        (2..=N + 1).collect::<BTreeSet<u32>>(),
        "generations reported: {reported:?}"
    );
    let (gens, latest) = listing(&env, CKPT);
    assert_eq!(gens, (1..=N + 1).collect::<Vec<u32>>());
    assert_eq!(latest, Some(N + 1));
    for g in gens {
        assert_verifies(&env, CKPT, g);
    }
    assert!(entries_starting_with(&dir, ".tmp-").is_empty());

    // Another holder of the lock: --no-wait gives up at once, a plain checkpoint waits for it.
    let held = HeldLock::take(&dir);
    let started = Instant::now();
    let (_, stderr) = env.fails(["checkpoint", "instance", "--no-wait", "srv"]);
    let waited = started.elapsed();
    let line = assert_one_line_error(&stderr, "--no-wait while the lock is held");
    assert!(
        line.contains(CKPT) && line.contains("busy"),
        "the error should say checkpoint '{CKPT}' is busy: {line}"
    );
    assert!(waited < Duration::from_secs(5), "--no-wait took {waited:?}");
    assert_eq!(
        listing(&env, CKPT).0.len() as u32,
        N + 1,
        "--no-wait created a generation"
    );

    let mut waiting = env
        .command(["checkpoint", "instance", "--json", "--keep", "0", "srv"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let early = waiting.try_wait().unwrap();
    if early.is_some() {
        let _ = waiting.wait_with_output();
        panic!(
            "a checkpoint finished ({early:?}) while another process held {}/.lock",
            dir.display()
        );
    }
    assert_eq!(
        listing(&env, CKPT).0.len() as u32,
        N + 1,
        "a generation appeared while the lock was held"
    );
    drop(held);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the waiting checkpoint failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        generation_of_report(&String::from_utf8_lossy(&out.stdout)),
        N + 2
    );

    // --no-wait racing a real checkpoint: either it wins the lock and succeeds, or it is told
    // the checkpoint is busy; never anything else.
    let mut busy = 0;
    for _ in 0..5 {
        let (a, b) = std::thread::scope(|scope| {
            let a = scope.spawn(|| env.cmd(["checkpoint", "instance", "--keep", "0", "srv"]));
            let b = scope
                .spawn(|| env.cmd(["checkpoint", "instance", "--keep", "0", "--no-wait", "srv"]));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
        if !b.status.success() {
            let line =
                assert_one_line_error(&String::from_utf8_lossy(&b.stderr), "racing --no-wait")
                    .to_string();
            assert!(line.contains("busy"), "{line}");
            busy += 1;
        }
    }
    let (gens, _) = listing(&env, CKPT);
    for g in &gens {
        assert_verifies(&env, CKPT, *g);
    }
    eprintln!("{T}: --no-wait found the checkpoint busy in {busy} of 5 races");
}

// ---------------------------------------------------------------------------------------------
// Hostile input.
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_names_are_refused_and_nothing_is_created() {
    const T: &str = "hostile_names_are_refused_and_nothing_is_created";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    let p = port.to_string();
    // Everything rctr creates lazily exists first, so any new path is the names' doing.
    env.ok(["checkpoint", "create", CKPT]);
    launch(&env, CKPT, &img, "srv", port);
    assert_eq!(checkpoint(&env, "srv", &[]), 1);
    let home_before = tree(env.home());
    let work_before = tree(env.work());

    let escape = env.work().join("escape");
    let long = "a".repeat(65);
    // A NUL byte cannot reach rctr: execve takes C strings, so no argv can hold "x\0y".
    let names = [
        "../x".to_string(),
        "a/b".into(),
        "/abs".into(),
        path_str(&escape),
        "../../../../../../../../tmp/rctr-e2e-escape".into(),
        "..".into(),
        ".".into(),
        ".hidden".into(),
        "-x".into(),
        "".into(),
        long.clone(),
        "x y".into(),
        "x\ny".into(),
    ];
    let outside = [
        PathBuf::from("/abs"),
        PathBuf::from("/tmp/rctr-e2e-escape"),
        escape.clone(),
    ];
    let existed: Vec<bool> = outside.iter().map(|p| p.exists()).collect();

    for name in &names {
        let launch_flag = format!("--ckpt-launch={name}");
        let restart_flag = format!("--ckpt-restart={name}");
        // (kind of name the error must be about, command)
        let cases: Vec<(&str, Vec<&str>)> = vec![
            ("checkpoint name", vec!["checkpoint", "create", "--", name]),
            ("checkpoint name", vec!["checkpoint", "list", "--", name]),
            ("checkpoint name", vec!["checkpoint", "verify", "--", name]),
            (
                "checkpoint name",
                vec!["checkpoint", "delete", "--force", "--", name],
            ),
            ("instance name", vec!["checkpoint", "instance", "--", name]),
            (
                "checkpoint name",
                vec!["instance", "start", &launch_flag, &img, "hostile", &p],
            ),
            (
                "checkpoint name",
                vec!["instance", "start", &restart_flag, &img, "hostile", &p],
            ),
            (
                "instance name",
                vec![
                    "instance",
                    "start",
                    "--ckpt-launch",
                    CKPT,
                    "--",
                    &img,
                    name,
                    &p,
                ],
            ),
            (
                "instance name",
                vec![
                    "instance",
                    "start",
                    "--ckpt-restart",
                    CKPT,
                    "--",
                    &img,
                    name,
                    &p,
                ],
            ),
        ];
        for (kind, args) in cases {
            let what = format!("rctr {args:?}");
            let (_, stderr) = env.fails(&args);
            let line = assert_one_line_error(&stderr, &what);
            assert!(
                line.contains(kind),
                "{what}: the error should be about the {kind}: {line}"
            );
        }
    }

    assert_eq!(
        tree(env.home()),
        home_before,
        "refused commands changed the state directory"
    );
    assert_eq!(
        tree(env.work()),
        work_before,
        "refused commands created files in the working directory"
    );
    for (path, existed) in outside.iter().zip(existed) {
        assert_eq!(path.exists(), existed, "{} was created", path.display());
    }
    assert_eq!(env.instance_names(), ["srv"]);
    assert_eq!(listing(&env, CKPT), (vec![1], Some(1)));

    // The limits are limits, not errors: 64 characters and every allowed character work.
    let longest = "b".repeat(64);
    for ok in [longest.as_str(), "A-z_0.9"] {
        env.ok(["checkpoint", "create", ok]);
        assert!(env.checkpoint_dir(ok).join("meta.json").is_file());
        env.ok(["checkpoint", "delete", ok]);
    }
}

/// Runs each command and asserts a one-line refusal containing `needle`.
fn assert_all_refused(env: &TestEnv, what: &str, needle: &str, commands: &[Vec<String>]) {
    for args in commands {
        let (_, stderr) = env.fails(args);
        let line = assert_one_line_error(&stderr, &format!("{what}: rctr {args:?}"));
        assert!(
            line.contains(needle),
            "{what}: `rctr {}` should say {needle:?}: {line}",
            args.join(" ")
        );
    }
}

#[test]
fn checkpoint_dir_that_is_a_symlink_foreign_or_shared_is_refused() {
    const T: &str = "checkpoint_dir_that_is_a_symlink_foreign_or_shared_is_refused";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    let dir = env.checkpoint_dir(CKPT);
    env.ok(["checkpoint", "create", CKPT]);
    launch(&env, CKPT, &img, "srv", port);
    assert_eq!(checkpoint(&env, "srv", &[]), 1);
    let p2 = free_port().to_string();
    let commands: Vec<Vec<String>> = [
        vec!["checkpoint", "instance", "srv"],
        vec!["checkpoint", "list", CKPT],
        vec!["checkpoint", "verify", CKPT],
        vec!["checkpoint", "delete", "--force", CKPT],
        vec![
            "instance",
            "start",
            "--ckpt-restart",
            CKPT,
            &img,
            "other",
            &p2,
        ],
        vec![
            "instance",
            "start",
            "--ckpt-launch",
            CKPT,
            &img,
            "other",
            &p2,
        ],
    ]
    .iter()
    .map(|c| c.iter().map(|a| a.to_string()).collect())
    .collect();

    // <criu>/ex is a symlink to a checkpoint directory elsewhere.
    let elsewhere = env.work().join("elsewhere");
    fs::rename(&dir, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
    let inside = tree(&elsewhere);
    assert_all_refused(&env, "symlinked checkpoint dir", "symbolic link", &commands);
    assert_eq!(tree(&elsewhere), inside, "the symlink target was changed");
    fs::remove_file(&dir).unwrap();
    fs::rename(&elsewhere, &dir).unwrap();

    // The engine directory above it is a symlink.
    let engine_dir = dir.parent().unwrap().to_path_buf();
    let moved = env.work().join("criu-elsewhere");
    fs::rename(&engine_dir, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &engine_dir).unwrap();
    let inside = tree(&moved);
    assert_all_refused(&env, "symlinked engine dir", "symbolic link", &commands);
    assert_eq!(tree(&moved), inside, "the symlink target was changed");
    fs::remove_file(&engine_dir).unwrap();
    fs::rename(&moved, &engine_dir).unwrap();

    // Owned by another user.
    let inside = tree(&dir);
    std::os::unix::fs::chown(&dir, Some(12345), Some(12345)).unwrap();
    assert_all_refused(
        &env,
        "checkpoint dir owned by uid 12345",
        "owned by uid 12345",
        &commands,
    );
    std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
    assert_eq!(tree(&dir), inside);

    // Writable by the group.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o770)).unwrap();
    assert_all_refused(
        &env,
        "group-writable checkpoint dir",
        "writable by group or others",
        &commands,
    );
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(tree(&dir), inside);

    // Put back, everything works again.
    assert_eq!(env.instance_names(), ["srv"]);
    assert_eq!(checkpoint(&env, "srv", &[]), 2);
    assert_verifies(&env, CKPT, 1);
}

#[test]
fn checkpoint_files_are_private_even_under_umask_000() {
    const T: &str = "checkpoint_files_are_private_even_under_umask_000";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    let with_umask_0 = |args: &[&str]| {
        let mut cmd = env.command(args);
        // SAFETY: umask is async-signal-safe and touches nothing but the child's own mask.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::umask(0);
                Ok(())
            });
        }
        env.ok_cmd(cmd)
    };
    with_umask_0(&["checkpoint", "create", CKPT]);
    with_umask_0(&[
        "instance",
        "start",
        "--ckpt-launch",
        CKPT,
        &img,
        "srv",
        &port.to_string(),
    ]);
    env.wait_for_instance_port("srv", port);
    assert_eq!(
        app_umask(&env, "srv"),
        "0000",
        "the application does not run with the caller's umask"
    );
    for _ in 0..2 {
        with_umask_0(&["checkpoint", "instance", "srv"]);
    }
    env.ok(["instance", "stop", "srv"]);
    with_umask_0(&[
        "instance",
        "start",
        "--ckpt-restart",
        CKPT,
        &img,
        "srv",
        &port.to_string(),
    ]);
    env.wait_for_instance_port("srv", port);
    // Whatever umask the engine runs with, the restored application gets its own back.
    assert_eq!(
        app_umask(&env, "srv"),
        "0000",
        "the restored application lost its umask"
    );
    with_umask_0(&["checkpoint", "instance", "srv"]);

    // A restore reads a generation and writes nothing into it: every published generation
    // holds exactly its manifest's files.
    for g in listing(&env, CKPT).0 {
        let dir = gen_dir(&env, CKPT, g);
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let mut listed: BTreeSet<String> = manifest["files"]
            .as_object()
            .expect("manifest files")
            .keys()
            .cloned()
            .collect();
        listed.insert("manifest.json".into());
        let present = files_below(&dir);
        assert_eq!(
            present, listed,
            "generation {g} holds files its manifest does not list"
        );
    }

    // SAFETY: geteuid takes no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut wrong = vec![];
    let mut images = 0;
    let root = env.home().join(".rctr/checkpoint");
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let meta = fs::symlink_metadata(&d).unwrap();
        if meta.mode() & 0o7777 != 0o700 || meta.uid() != me {
            wrong.push(format!(
                "{} dir {:04o} uid {}",
                d.display(),
                meta.mode() & 0o7777,
                meta.uid()
            ));
        }
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                images += usize::from(e.file_name().to_string_lossy().ends_with(".img"));
                if !m.is_file() || m.mode() & 0o7777 != 0o600 || m.uid() != me {
                    wrong.push(format!(
                        "{} {:o} uid {}",
                        e.path().display(),
                        m.mode(),
                        m.uid()
                    ));
                }
            }
        }
    }
    assert!(
        images >= 3 * 5,
        "only {images} image files found under {}",
        root.display()
    );
    assert!(
        wrong.is_empty(),
        "entries under {} that are not private (dirs 0700, files 0600):\n{}",
        root.display(),
        wrong.join("\n")
    );
}

/// The `Umask:` of an instance's application, from /proc.
fn app_umask(env: &TestEnv, instance: &str) -> String {
    let pid = env.app_pid(instance);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|| panic!("no Umask in /proc/{pid}/status"))
}

#[test]
fn malformed_ckpt_conf_is_refused_naming_the_file_and_line() {
    const T: &str = "malformed_ckpt_conf_is_refused_naming_the_file_and_line";
    if !require_root_and_criu(T) {
        return;
    }
    let env = TestEnv::new(T);
    let img = path_str(&server_image());
    let port = free_port();
    env.ok(["checkpoint", "create", CKPT]);
    launch(&env, CKPT, &img, "srv", port);
    assert_eq!(checkpoint(&env, "srv", &[]), 1);

    // A root-owned copy of the engine binary that the group may write.
    let bin_dir = env.work().join("engine/bin");
    fs::create_dir_all(&bin_dir).unwrap();
    fs::set_permissions(env.work().join("engine"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&bin_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let writable_bin = bin_dir.join("criu");
    fs::copy(CRIU_BIN, &writable_bin).unwrap();
    fs::set_permissions(&writable_bin, fs::Permissions::from_mode(0o775)).unwrap();
    let wb = path_str(&writable_bin);

    let head = format!("# test configuration\nengine: criu\nbins:\n  - {CRIU_BIN}\n");
    // (file name, contents, mode, what the one-line error must contain besides the path)
    let cases: Vec<(&str, String, u32, Vec<String>)> = vec![
        (
            "bad-yaml.yaml",
            format!("{head}keep: [3\n"),
            0o600,
            vec![":5:".into()],
        ),
        (
            "unknown-key.yaml",
            format!("{head}frobnicate: 1\n"),
            0o600,
            vec![":5:".into(), "frobnicate".into()],
        ),
        (
            "missing-bin.yaml",
            "engine: criu\nbins:\n  - /nonexistent/rctr-e2e/engine\n".into(),
            0o600,
            vec![
                ":3:".into(),
                "/nonexistent/rctr-e2e/engine".into(),
                "does not exist".into(),
            ],
        ),
        (
            "writable-bin.yaml",
            format!("engine: criu\nbins:\n  - {wb}\n"),
            0o600,
            vec![
                ":3:".into(),
                wb.clone(),
                "writable by group or others".into(),
            ],
        ),
        (
            "keep-zero.yaml",
            format!("{head}keep: 0\n"),
            0o600,
            vec![":5:".into(), "keep".into()],
        ),
        (
            "empty.yaml",
            "# nothing\n".into(),
            0o600,
            vec!["empty".into()],
        ),
        (
            "group-writable.yaml",
            format!("{head}keep: 2\n"),
            0o664,
            vec!["writable by group or others".into()],
        ),
    ];
    for (file, text, mode, needles) in &cases {
        let conf = env.work().join(file);
        fs::write(&conf, text).unwrap();
        fs::set_permissions(&conf, fs::Permissions::from_mode(*mode)).unwrap();
        let conf_s = path_str(&conf);
        let p2 = free_port().to_string();
        let commands = [
            vec![
                "instance",
                "start",
                "--ckpt-launch",
                CKPT,
                "--ckpt-conf",
                &conf_s,
                &img,
                "other",
                &p2,
            ],
            vec!["checkpoint", "instance", "--ckpt-conf", &conf_s, "srv"],
            vec![
                "instance",
                "start",
                "--ckpt-restart",
                CKPT,
                "--ckpt-conf",
                &conf_s,
                &img,
                "other",
                &p2,
            ],
        ];
        for args in commands {
            let what = format!("{file}: rctr {}", args.join(" "));
            let (_, stderr) = env.fails(&args);
            let line = assert_one_line_error(&stderr, &what);
            assert!(
                line.contains(&conf_s),
                "{what}: the error should name {conf_s}: {line}"
            );
            for n in needles {
                let n = if n.starts_with(':') {
                    format!("{conf_s}{n}")
                } else {
                    n.clone()
                };
                assert!(
                    line.contains(&n),
                    "{what}: the error should contain {n:?}: {line}"
                );
            }
        }
        assert_eq!(
            env.instance_names(),
            ["srv"],
            "{file}: an instance was started"
        );
        assert_eq!(
            listing(&env, CKPT),
            (vec![1], Some(1)),
            "{file}: a generation was written"
        );
    }

    // The same file, valid, is taken: its keep: 2 prunes.
    let good = env.work().join("good.yaml");
    fs::write(&good, format!("{head}keep: 2\n")).unwrap();
    fs::set_permissions(&good, fs::Permissions::from_mode(0o600)).unwrap();
    for _ in 0..2 {
        env.ok([
            "checkpoint",
            "instance",
            "--ckpt-conf",
            &path_str(&good),
            "srv",
        ]);
    }
    assert_eq!(
        listing(&env, CKPT),
        (vec![2, 3], Some(3)),
        "keep: 2 from --ckpt-conf was not applied"
    );
}

/// Every file below `dir`, as paths relative to it (a generation's manifest lists files in
/// subdirectories that way).
fn files_below(dir: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    out
}
