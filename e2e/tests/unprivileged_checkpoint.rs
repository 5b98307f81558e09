//! Users who are not root checkpoint and restart their own instances with CRIU through the
//! checkpoint helper (rctr installed setuid root by etc/setup/install-suid.sh), real users
//! made with useradd: the README flow, nobody reaching anyone else's, and the helper doing
//! nothing but what it is for.

use rctr_e2e::*;
use std::process::{Command, Stdio};

struct Setup {
    helper: SuidHelper,
    users: Vec<RealUser>,
}

/// The helper and `n` users pointed at it; None (reason printed) to skip.
fn setup(test: &str, n: usize) -> Option<Setup> {
    if !require_root_and_criu(test) {
        return None;
    }
    if let Some(why) = unprivileged_missing() {
        eprintln!("skipped {test}: {why}");
        return None;
    }
    let mut helper = SuidHelper::install(test)?;
    let mut users = vec![];
    for tag in ["a", "b", "c"].iter().take(n) {
        let mut u = RealUser::create(test, &format!("k{tag}"))?;
        helper.enable_for(&mut u);
        users.push(u);
    }
    Some(Setup { helper, users })
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn field(pid: i32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// The host pid of the application of the helper's instance `name` for `uid`.
fn app_pid(uid: u32, name: &str) -> i32 {
    let state = SuidHelper::state_of(uid).join(".rctr/instances");
    for host in std::fs::read_dir(&state).unwrap().flatten() {
        let rec = host.path().join("root").join(format!("{name}.json"));
        if let Ok(text) = std::fs::read_to_string(&rec) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            return v["app_host_pid"].as_i64().unwrap() as i32;
        }
    }
    panic!("no record of {name} under {}", state.display());
}

#[test]
fn a_user_runs_the_readme_flow_with_criu_through_the_helper() {
    let test = "a_user_runs_the_readme_flow_with_criu_through_the_helper";
    let Some(s) = setup(test, 1) else { return };
    assert!(s.helper.is_setuid_root());
    let a = &s.users[0];
    let uid = a.uid();
    let img = a.image(&server_image());
    let port = free_port();
    let p = port.to_string();

    a.ok(["checkpoint", "create", "ex"]);
    a.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "ex",
        &img,
        "server",
        &p,
    ]);
    wait_for_port(port, std::time::Duration::from_secs(30));
    assert_eq!(request(port), "request:1");
    assert_eq!(request(port), "request:2");
    // The application is the user's, with nothing more.
    let pid = app_pid(uid, "server");
    assert!(
        field(pid, "Uid:")
            .split_whitespace()
            .all(|u| u == uid.to_string()),
        "uid of the application: {}",
        field(pid, "Uid:")
    );
    assert_eq!(field(pid, "CapEff:"), "0000000000000000");
    assert_eq!(field(pid, "NoNewPrivs:"), "1");
    assert!(a.ok(["instance", "list"]).contains("server"));

    a.ok(["checkpoint", "instance", "server"]);
    a.ok(["instance", "stop", "server"]);
    a.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "ex",
        &img,
        "restarted-server",
        &p,
    ]);
    wait_for_port(port, std::time::Duration::from_secs(30));
    assert_eq!(
        request(port),
        "request:3",
        "the restarted server should continue the count"
    );
    let pid = app_pid(uid, "restarted-server");
    assert!(field(pid, "Uid:")
        .split_whitespace()
        .all(|u| u == uid.to_string()));

    let listed = a.ok(["checkpoint", "list"]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("ex "))
        .unwrap_or_else(|| panic!("ex not in `checkpoint list`:\n{listed}"));
    assert!(row.contains("restarted-server"), "{row}");
    // The application's output is in the user's own directory.
    let logs = a.sh("cat $HOME/.rctr/instances/*/*/server.out");
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("answered request:2"),
        "{}",
        String::from_utf8_lossy(&logs.stdout)
    );
    // The images (the process's memory) are root's: not even their owner reads them.
    let state = SuidHelper::state_of(uid);
    let out = a.sh(&format!("ls {} 2>&1", state.display()));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // In use: refused in one line, as for root.
    let out = a.rctr(["checkpoint", "delete", "ex"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        assert_one_line_error(&err, "delete in use").contains("restarted-server"),
        "{err}"
    );
    a.ok(["instance", "stop", "restarted-server"]);
    a.ok(["checkpoint", "delete", "ex"]);
    assert!(!a.ok(["checkpoint", "list"]).contains("ex "));
    assert!(!a.ok(["instance", "list"]).contains("server"));
}

#[test]
fn another_user_cannot_reach_them_through_the_helper() {
    let test = "another_user_cannot_reach_them_through_the_helper";
    let Some(s) = setup(test, 2) else { return };
    let (a, b) = (&s.users[0], &s.users[1]);
    let img_a = a.image(&server_image());
    let img_b = b.image(&server_image());
    let port = free_port();
    a.ok(["checkpoint", "create", "ex"]);
    a.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "ex",
        &img_a,
        "server",
        &port.to_string(),
    ]);
    wait_for_port(port, std::time::Duration::from_secs(30));
    a.ok(["checkpoint", "instance", "server"]);
    // B names A's instance and checkpoint: the helper only ever looks in B's own state.
    for args in [
        vec!["instance", "stop", "server"],
        vec!["checkpoint", "instance", "server"],
        vec!["checkpoint", "delete", "ex"],
        vec![
            "instance",
            "start",
            "--ckpt-restart",
            "ex",
            &img_b,
            "stolen",
            "1",
        ],
    ] {
        let out = b.rctr(&args);
        assert_ne!(out.status.code(), Some(0), "{args:?} as B succeeded");
        assert_one_line_error(&stderr(&out), &format!("{args:?}"));
    }
    assert!(!b.ok(["instance", "list"]).contains("server"));
    assert!(!b.ok(["checkpoint", "list"]).contains("ex "));
    // A's server still answers, A's checkpoint is intact.
    assert_eq!(request(port), "request:1");
    let out = b.sh(&format!(
        "ls {} 2>&1",
        SuidHelper::state_of(a.uid()).display()
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Permission denied"));
    a.ok(["instance", "stop", "server"]);
    a.ok(["checkpoint", "delete", "ex"]);
}

/// Runs the helper directly as `user` with `args`, the files at `fds` as descriptors 3, 4
/// and 5, and extra environment: what an attacker would do.
fn helper_as(
    s: &Setup,
    user: &RealUser,
    args: &[&str],
    fds: Option<[&std::path::Path; 3]>,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut script = String::from("exec ");
    if let Some([image, out, err]) = fds {
        script = format!(
            "exec 3<'{}' 4>>'{}' 5>>'{}'; exec ",
            image.display(),
            out.display(),
            err.display()
        );
    }
    script.push_str(&format!("'{}'", s.helper.path.display()));
    for a in args {
        script.push_str(&format!(" '{a}'"));
    }
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", &user.name, "--", "env"]);
    for (k, v) in env {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.args(["sh", "-c", &script])
        .current_dir(&user.files)
        .stdin(Stdio::null());
    output_with_timeout(cmd, std::time::Duration::from_secs(120))
}

#[test]
fn the_helper_does_nothing_else_and_ignores_the_callers_environment() {
    let test = "the_helper_does_nothing_else_and_ignores_the_callers_environment";
    let Some(s) = setup(test, 1) else { return };
    let a = &s.users[0];
    let img = a.image(&server_image());
    let out_log = a.files.join("x.out");
    let err_log = a.files.join("x.err");
    std::fs::write(&out_log, "").unwrap();
    std::fs::write(&err_log, "").unwrap();
    let chown = |p: &std::path::Path| {
        Command::new("chown").arg(&a.name).arg(p).status().unwrap();
    };
    chown(&out_log);
    chown(&err_log);
    let files = [
        std::path::Path::new(&img),
        out_log.as_path(),
        err_log.as_path(),
    ];

    // Verbs and names it does not take: one line each, nothing started.
    for (args, want) in [
        (vec!["exec", &img as &str, "id"], "does not do"),
        (
            vec!["launch", "--bind=/root:/mnt", "web", "1"],
            "checkpoint name",
        ),
        (vec!["stop", "*"], "instance name"),
        (vec!["create", "../../etc"], "checkpoint name"),
        (
            vec!["checkpoint", "web", "--ckpt-conf=/etc/shadow"],
            "does not take",
        ),
        (vec!["list", "--json"], "no more arguments"),
    ] {
        let out = helper_as(&s, a, &args, Some(files), &[]);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let err = stderr(&out);
        assert!(
            assert_one_line_error(&err, &format!("{args:?}")).contains(want),
            "{args:?}: {err}"
        );
    }
    // No image on descriptor 3, or one that is not a file: refused.
    let out = helper_as(&s, a, &["launch", "ex", "web", "1"], None, &[]);
    assert!(stderr(&out).contains("descriptor 3"), "{}", stderr(&out));
    let dir = a.files.clone();
    let out = helper_as(
        &s,
        a,
        &["launch", "ex", "web", "1"],
        Some([&dir, &out_log, &err_log]),
        &[],
    );
    assert!(
        stderr(&out).contains("not an image file"),
        "{}",
        stderr(&out)
    );

    // A descriptor opened with O_PATH needs no read permission: an image only root may read,
    // handed over that way, is refused (root would otherwise reopen and mount it).
    let secret = s.helper.path.with_file_name("root-only.sif");
    std::fs::copy(server_image(), &secret).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let py = format!(
        "import os; fd = os.open('{}', os.O_PATH); os.dup2(fd, 3); \
         os.dup2(os.open('{}', os.O_WRONLY|os.O_APPEND), 4); os.dup2(4, 5); \
         [os.set_inheritable(n, True) for n in (3, 4, 5)]; \
         os.execv('{}', ['rctr-suid', 'launch', 'ex', 'stolen', '1'])",
        secret.display(),
        out_log.display(),
        s.helper.path.display()
    );
    let out = a.sh(&format!("/usr/bin/python3 -c \"{py}\""));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("not an image file"),
        "{}",
        stderr(&out)
    );

    // The caller's environment does not reach root's command: no binds from APPTAINER_BIND,
    // no engine configuration of theirs, no state under a HOME they name.
    let evil_conf = a.files.join("evil.yaml");
    std::fs::write(&evil_conf, "engine: app\n").unwrap();
    let env = [
        ("APPTAINER_BIND", "/root:/mnt/rootshome"),
        ("RCTR_BIND", "/etc:/mnt/etc"),
        ("RCTR_CKPT_CONF", evil_conf.to_str().unwrap()),
        ("HOME", "/root"),
        ("LD_PRELOAD", "/nonexistent.so"),
    ];
    let out = helper_as(&s, a, &["create", "ex"], None, &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let port = free_port();
    let p = port.to_string();
    let out = helper_as(&s, a, &["launch", "ex", "web", &p], Some(files), &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_for_port(port, std::time::Duration::from_secs(30));
    let pid = app_pid(a.uid(), "web");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(
        !mounts.contains("/mnt/"),
        "a bind from the caller's environment:\n{mounts}"
    );
    assert!(!std::path::Path::new("/root/.rctr/checkpoint/criu/ex").exists());
    let listed = helper_as(&s, a, &["list"], None, &[]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("ex ") && l.contains("criu")),
        "{listed}"
    );
    // The application's environment is not the caller's either.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("LD_PRELOAD"));
    let out = helper_as(&s, a, &["stop", "web"], None, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A shell loop printing 1, 2, 3, ... every 20 ms.
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i; usleep 20000; done";

/// `rctr` as `user` in the foreground, its output appended to `out` (a batch system's
/// output file); returns the child.
fn job_as(user: &RealUser, args: &[&str], out: &std::path::Path) -> std::process::Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .unwrap();
    Command::new("chown")
        .arg(&user.name)
        .arg(out)
        .status()
        .unwrap();
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", &user.name, "--", "env"])
        .arg(format!("HOME={}", user.home.display()))
        .args(&user.env)
        .arg(user.files.join("rctr"))
        .args(args)
        .current_dir(&user.files)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

/// Signals the helper process running for this test, as a batch system signals a job's
/// main process (root, so the helper's own ids do not matter). Not its children (the
/// container's init, which shares its command line).
fn signal_helper(s: &Setup, sig: i32) {
    let exe_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let ppid_of = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| {
                st.rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)
                    .map(str::to_string)
            })
    };
    let mut sent = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) || exe_of(&pid).as_ref() != Some(&s.helper.path)
        {
            continue;
        }
        let parent = ppid_of(&pid).unwrap_or_default();
        if exe_of(&parent).as_ref() == Some(&s.helper.path) {
            continue;
        }
        // SAFETY: kill with a pid read from /proc and a valid signal number.
        unsafe { libc::kill(pid.parse().unwrap(), sig) };
        sent += 1;
    }
    assert_eq!(sent, 1, "helper processes signalled");
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not end");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_users_batch_job_checkpoints_on_a_signal_and_resumes_through_the_helper() {
    let test = "a_users_batch_job_checkpoints_on_a_signal_and_resumes_through_the_helper";
    let Some(s) = setup(test, 1) else { return };
    let a = &s.users[0];
    let img = a.image(&apptainer_busybox_sif());
    let out = a.files.join("job.out");
    let args = [
        "exec",
        "--ckpt",
        "cnt",
        "--ckpt-signal",
        "USR1",
        "--ckpt-then",
        "exit",
        &img,
        "sh",
        "-c",
        COUNTER,
    ];
    let mut job = job_as(a, &args, &out);
    assert!(
        wait_until(std::time::Duration::from_secs(30), || numeric_lines(&out)
            .len()
            >= 20),
        "the job printed nothing"
    );
    // Listed as the user's while it runs, its application the user's.
    assert!(a.ok(["instance", "list"]).contains("cnt"));
    signal_helper(&s, libc::SIGUSR1);
    let st = wait_exit(&mut job);
    let mut err = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(st.success(), "the checkpointed job exited with {st}: {err}");
    let before = last_number(&out);
    let offset = std::fs::metadata(&out).unwrap().len() as usize;

    // The same command resumes it: the count goes on from the checkpoint.
    let mut job = job_as(a, &args, &out);
    assert!(
        wait_until(std::time::Duration::from_secs(30), || numbers_from(
            &out, offset
        )
        .len()
            >= 5),
        "the resumed job printed nothing"
    );
    let after = numbers_from(&out, offset);
    assert!(
        after[0] > 1 && after[0] <= before + 1,
        "resumed at {} after stopping at {before}",
        after[0]
    );
    signal_helper(&s, libc::SIGUSR1);
    assert!(wait_exit(&mut job).success());
    assert!(a.ok(["checkpoint", "list"]).contains("cnt "));
    a.ok(["checkpoint", "delete", "cnt"]);
}
