//! What an Apptainer user expects of `exec`/`run`/`instance`: binds under the image's
//! symlinks, options after IMAGE, evaluated user variables, bash-isms in env scripts,
//! the host's /dev, --pwd, bind variables and the site configuration, /etc/passwd and
//! the --writable-tmpfs limit (docs/apptainer.md).

use rctr_e2e::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds `<work>/<name>.sif` from the rootfs `dir`, with `def_extra` sections if any.
fn sif(env: &TestEnv, dir: &Path, name: &str, def_extra: Option<&str>) -> String {
    let out = env.work().join(format!("{name}.sif"));
    let source = match def_extra {
        None => dir.to_path_buf(),
        Some(extra) => {
            let def = env.work().join(format!("{name}.def"));
            let text = format!("Bootstrap: localimage\nFrom: {}\n\n{extra}", dir.display());
            fs::write(&def, text).unwrap();
            def
        }
    };
    build_sif(&out, &source).unwrap_or_else(|e| panic!("{e:#}"));
    path_str(&out)
}

/// A busybox rootfs in `<work>/<name>`.
fn busybox_dir(env: &TestEnv, name: &str) -> PathBuf {
    let dir = env.work().join(name);
    busybox_rootfs(&dir).unwrap();
    dir
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Item 1: a merged-/usr image (`/bin -> usr/bin`, `/lib -> usr/lib`,
/// `/var/run -> /run`) keeps its symlinks when binds land under them.
#[test]
fn binds_under_image_symlinks_keep_the_symlinks() {
    let t = "binds_under_image_symlinks_keep_the_symlinks";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let dir = busybox_dir(&env, "merged");
    fs::create_dir_all(dir.join("usr/lib")).unwrap();
    fs::rename(dir.join("bin"), dir.join("usr/bin")).unwrap();
    symlink("usr/bin", dir.join("bin")).unwrap();
    symlink("usr/lib", dir.join("lib")).unwrap();
    fs::write(dir.join("usr/lib/marker"), "lib-marker\n").unwrap();
    fs::create_dir_all(dir.join("var")).unwrap();
    fs::create_dir_all(dir.join("run")).unwrap();
    symlink("/run", dir.join("var/run")).unwrap();
    let img = sif(&env, &dir, "merged", None);
    let data = env.work().join("d");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("hostfile"), "").unwrap();
    let d = path_str(&data);
    let out = env.ok([
        "exec",
        "-B",
        &format!("{d}:/lib/x"),
        "-B",
        &format!("{d}:/bin/x"),
        "-B",
        &format!("{d}:/var/run/x"),
        &img,
        "/bin/sh",
        "-c",
        "cat /lib/marker; for d in /usr/lib/x /usr/bin/x /run/x; do ls $d; done; \
         for l in /bin /lib /var/run; do readlink $l; done",
    ]);
    assert_eq!(
        out,
        "lib-marker\nhostfile\nhostfile\nhostfile\nusr/bin\nusr/lib\n/run\n"
    );
}

/// Item 2: options after IMAGE (or after an instance's NAME) are the container's.
#[test]
fn options_after_the_image_belong_to_the_container() {
    let t = "options_after_the_image_belong_to_the_container";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let dir = busybox_dir(&env, "rootfs");
    let img = sif(
        &env,
        &dir,
        "opts",
        Some("%runscript\n    exec /bin/sh \"$@\"\n\n%startscript\n    exec \"$@\"\n"),
    );
    assert_eq!(env.ok(["run", &img, "-c", "echo hi"]), "hi\n");
    let words = [
        "-e", "-p", "-n", "-c", "-B", "x", "-H", "y", "--pwd", "z", "--env", "A=1", "--ckpt", "j",
    ];
    let mut args = vec!["exec", &img, "printf", "[%s]"];
    args.extend(words);
    let expected: String = words.iter().map(|w| format!("[{w}]")).collect();
    assert_eq!(env.ok(&args), expected);
    // shell and test pass theirs on too.
    assert_eq!(
        env.ok(["shell", &img, "-c", "echo from-shell"]),
        "from-shell\n"
    );

    env.ok([
        "instance",
        "start",
        &img,
        "opts1",
        "sh",
        "-c",
        "echo \"args:$*\"; exec sleep 1000",
        "x",
        "-c",
        "--env",
        "A=1",
    ]);
    let log = env.instance_log("opts1");
    assert!(
        wait_until(Duration::from_secs(20), || fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("args:-c --env A=1")),
        "instance log: {:?}",
        fs::read_to_string(&log)
    );
}

/// Item 4: --env, *ENV_ and --env-file values are evaluated in the container, after the
/// image's environment; --no-eval keeps them literal.
#[test]
fn user_environment_values_are_evaluated_in_the_container() {
    let t = "user_environment_values_are_evaluated_in_the_container";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let img = path_str(&busybox_exec_image());
    let file = env.work().join("envfile");
    fs::write(&file, "FROMFILE=$HOME/f\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["exec", "--env", "PATH=$PATH:/foo", "--env-file"];
        let f = path_str(&file);
        args.push(&f);
        args.extend(extra);
        args.extend([&img, "sh", "-c", "echo \"$X|$PATH|$FROMFILE\""]);
        let mut cmd = env.command(&args);
        cmd.env("APPTAINERENV_X", "$HOME/x");
        env.ok_cmd(cmd)
    };
    let home = path_str(env.home());
    assert_eq!(run(&[]), format!("{home}/x|{DEFAULT_PATH}:/foo|{home}/f\n"));
    assert_eq!(run(&["--no-eval"]), "$HOME/x|$PATH:/foo|$HOME/f\n");
}

/// A rootfs whose env script uses `source` and `[[ ]]`, as conda, spack and oneAPI do.
fn bashism_rootfs(env: &TestEnv, name: &str) -> PathBuf {
    let dir = busybox_dir(env, name);
    fs::create_dir_all(dir.join(".singularity.d/env")).unwrap();
    fs::write(dir.join("opt/setup.sh"), "export SETUP=done\n").unwrap();
    fs::write(
        dir.join(".singularity.d/env/90-environment.sh"),
        "[[ -f /opt/setup.sh ]] && source /opt/setup.sh\n\
         if [[ \"$SETUP\" == \"done\" ]]; then export CHECK=ok; fi\n",
    )
    .unwrap();
    dir
}

/// Makes the host's `program` the image's /bin/`name`.
fn use_host_shell(dir: &Path, program: &str, name: &str) {
    install_host_program(dir, Path::new(program)).unwrap();
    let link = dir.join("bin").join(name);
    let _ = fs::remove_file(&link);
    symlink(program, &link).unwrap();
}

/// Item 5: bash-isms in env scripts work whatever the image's /bin/sh.
#[test]
fn env_scripts_with_bashisms_work_under_ash_dash_and_bash() {
    let t = "env_scripts_with_bashisms_work_under_ash_dash_and_bash";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let mut images = vec![("ash", sif(&env, &bashism_rootfs(&env, "ash"), "ash", None))];
    if Path::new("/usr/bin/dash").exists() {
        let dir = bashism_rootfs(&env, "dash");
        use_host_shell(&dir, "/usr/bin/dash", "sh");
        images.push(("dash", sif(&env, &dir, "dash", None)));
        if Path::new("/usr/bin/bash").exists() {
            use_host_shell(&dir, "/usr/bin/bash", "bash");
            images.push(("bash", sif(&env, &dir, "bash", None)));
        }
    } else {
        eprintln!("{t}: no /usr/bin/dash on this host: only busybox ash is tested");
    }
    for (shell, img) in images {
        let out = env.cmd(["exec", &img, "sh", "-c", "echo $SETUP $CHECK"]);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert_eq!(stdout_of(&out), "done ok\n", "{shell}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "{shell}: stderr: {err}");
    }
}

/// Item 6: the host's /dev (and /dev/shm) by default, a minimal one with --contain and
/// in instances; FIFOs and device nodes bind onto files.
#[test]
fn host_dev_by_default_minimal_when_contained_or_in_instances() {
    let t = "host_dev_by_default_minimal_when_contained_or_in_instances";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let img = path_str(&busybox_exec_image());
    let shm = PathBuf::from(format!("/dev/shm/rctr-e2e-{}", std::process::id()));
    fs::write(&shm, "shared\n").unwrap();
    let probe = format!(
        "cat {} 2>/dev/null || echo no-shm; [ -c /dev/loop-control ] && echo host-dev || echo minimal-dev",
        shm.display()
    );
    let plain = env.ok(["exec", &img, "sh", "-c", &probe]);
    let contained = env.ok(["exec", "--contain", &img, "sh", "-c", &probe]);
    env.ok(["instance", "start", &img, "dev1", "sleep", "1000"]);
    let instance = env.ok(["exec", "instance://dev1", "sh", "-c", &probe]);
    let _ = fs::remove_file(&shm);
    assert_eq!(plain, "shared\nhost-dev\n");
    assert_eq!(contained, "no-shm\nminimal-dev\n");
    assert_eq!(instance, "no-shm\nminimal-dev\n");

    let fifo = env.work().join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let out = env.ok([
        "exec",
        "--contain",
        "-B",
        &format!("{}:/opt/f", fifo.display()),
        "-B",
        "/dev/loop-control",
        &img,
        "sh",
        "-c",
        "[ -p /opt/f ] && echo fifo; [ -c /dev/loop-control ] && echo device",
    ]);
    assert_eq!(out, "fifo\ndevice\n");
}

/// Item 7: a missing --pwd is an error, a missing inherited directory a warning.
#[test]
fn missing_working_directory_fails_or_warns() {
    let t = "missing_working_directory_fails_or_warns";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let img = path_str(&busybox_exec_image());
    let (code, err) = env.fails(["exec", "--pwd", "/nonexistent", &img, "true"]);
    assert_eq!(code, 255, "{err}");
    let line = assert_one_line_error(&err, "--pwd /nonexistent");
    assert!(line.contains("--pwd /nonexistent"), "{line}");

    // The host's /usr/share is not bound (a system directory) and the image has none.
    let mut cmd = env.command(["exec", &img, "pwd"]);
    cmd.current_dir("/usr/share");
    let out = env.run(cmd);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout_of(&out), format!("{}\n", env.home().display()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rctr: warning: the current directory /usr/share does not exist"),
        "{err}"
    );
}

/// Item 8: bind variables, the site configuration, and --containall, --no-mount,
/// --hostname, --no-init.
#[test]
fn bind_variables_site_configuration_and_containment_options() {
    let t = "bind_variables_site_configuration_and_containment_options";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let img = path_str(&busybox_exec_image());
    let mk = |name: &str| {
        let d = env.work().join(name);
        fs::create_dir(&d).unwrap();
        fs::write(d.join(format!("in-{name}")), "").unwrap();
        path_str(&d)
    };
    let (site, a, s, r) = (mk("site"), mk("a"), mk("s"), mk("r"));
    let conf = env.work().join("rctr.conf");
    fs::write(&conf, format!("# site binds\nbind path = {site}:/site\n")).unwrap();
    let with_vars = |args: &[&str]| {
        let mut cmd = env.command(args);
        cmd.env("RCTR_CONF", &conf)
            .env("APPTAINER_BIND", format!("{a}:/a_env"))
            .env("SINGULARITY_BINDPATH", format!("{s}:/s_env"))
            .env("RCTR_BIND", format!("{r}:/r_env"));
        cmd
    };
    let out = env.ok_cmd(with_vars(&[
        "exec", &img, "ls", "/site", "/a_env", "/s_env", "/r_env",
    ]));
    for name in ["site", "a", "s", "r"] {
        assert!(out.contains(&format!("in-{name}")), "{name}: {out}");
    }
    let out = env.ok_cmd(with_vars(&[
        "exec",
        "--no-mount",
        "bind-paths",
        &img,
        "sh",
        "-c",
        "ls /site 2>/dev/null || echo no-site",
    ]));
    assert_eq!(out, "no-site\n");

    fs::write(&conf, "bind path = /tmp\nmount dev = yes\n").unwrap();
    let (_, err) = env.fails_cmd(with_vars(&["exec", &img, "true"]));
    let line = assert_one_line_error(&err, "bad site configuration");
    assert!(
        line.contains(&format!("{}:2: unknown key \"mount dev\"", conf.display())),
        "{line}"
    );

    // --containall: private home and /tmp, a clean environment, a pid namespace.
    let mut cmd = env.command([
        "exec",
        "-C",
        &img,
        "sh",
        "-c",
        "echo ${FOO-unset} $$; ls -A $HOME | wc -w; ls -A /tmp | wc -w",
    ]);
    cmd.env("FOO", "bar");
    let out = env.ok_cmd(cmd);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words[0], "unset", "{out}");
    assert!(words[1].parse::<u32>().unwrap() < 10, "{out}");
    assert_eq!(words[2..], ["0", "0"], "{out}");

    assert_eq!(
        env.ok(["exec", "-p", "--no-init", &img, "sh", "-c", "echo $$"]),
        "1\n"
    );
    assert_eq!(
        env.ok(["exec", "--hostname", "node7", &img, "hostname"]),
        "node7\n"
    );
    let host_tmp = PathBuf::from(format!("/tmp/rctr-e2e-nomount-{}", std::process::id()));
    fs::write(&host_tmp, "").unwrap();
    let probe = format!(
        "[ -e {} ] && echo host-tmp || echo image-tmp",
        host_tmp.display()
    );
    let plain = env.ok(["exec", &img, "sh", "-c", &probe]);
    let no_tmp = env.ok(["exec", "--no-mount", "tmp", &img, "sh", "-c", &probe]);
    let _ = fs::remove_file(&host_tmp);
    assert_eq!(
        (plain.as_str(), no_tmp.as_str()),
        ("host-tmp\n", "image-tmp\n")
    );
}

/// Item 9: the caller's passwd line is edited in place; no passwd file, none added.
#[test]
fn passwd_edits_the_callers_line_in_place() {
    let t = "passwd_edits_the_callers_line_in_place";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let dir = busybox_dir(&env, "pw");
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/ash\ndaemon:x:1:1::/:/bin/false\n",
    )
    .unwrap();
    let img = sif(&env, &dir, "pw", None);
    let out = env.ok(["exec", &img, "cat", "/etc/passwd"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("root:x:0:0:")
            && lines[0].ends_with(&format!(":{}:/bin/ash", env.home().display())),
        "{out}"
    );
    assert_eq!(lines[1], "daemon:x:1:1::/:/bin/false");

    fs::remove_file(dir.join("etc/passwd")).unwrap();
    fs::remove_file(dir.join("etc/group")).unwrap();
    let img = sif(&env, &dir, "nopw", None);
    assert_eq!(
        env.ok([
            "exec",
            &img,
            "sh",
            "-c",
            "[ -e /etc/passwd ] || [ -e /etc/group ] && echo made-up || echo none"
        ]),
        "none\n"
    );
}

/// Item 10: --writable-tmpfs holds 64 MiB by default, `sessiondir max size` otherwise.
#[test]
fn writable_tmpfs_is_size_limited() {
    let t = "writable_tmpfs_is_size_limited";
    if !require_root(t) {
        return;
    }
    let env = TestEnv::new(t);
    let img = path_str(&busybox_exec_image());
    let dd = |mib: u32, conf: Option<&Path>| {
        let count = format!("count={mib}");
        let mut cmd = env.command([
            "exec",
            "--writable-tmpfs",
            &img,
            "dd",
            "if=/dev/zero",
            "of=/big",
            "bs=1M",
            &count,
        ]);
        if let Some(c) = conf {
            cmd.env("RCTR_CONF", c);
        }
        env.run(cmd).status.success()
    };
    assert!(dd(8, None), "8 MiB fit in the default 64");
    assert!(!dd(80, None), "80 MiB must not fit in the default 64");
    let conf = env.work().join("rctr.conf");
    fs::write(&conf, "sessiondir max size = 16\n").unwrap();
    assert!(dd(8, Some(&conf)));
    assert!(!dd(24, Some(&conf)), "24 MiB must not fit in 16");
}
