//! The command line itself, as an Apptainer user meets it: usage errors that say what is
//! wrong, help with examples, -q/-v/-d, `rctr version`, `instance stop` with a pattern.

use rctr_e2e::*;

/// A usage mistake shows clap's whole message (not one squeezed line) and exits 1.
#[test]
fn usage_errors_show_what_is_wrong_and_exit_1() {
    let env = TestEnv::new("usage_errors_show_what_is_wrong_and_exit_1");
    let cases: &[(&[&str], &[&str])] = &[
        // A typo: clap's "did you mean".
        (
            &["exce", "x.sif", "true"],
            &[
                "unrecognized subcommand 'exce'",
                "similar subcommand exists: 'exec'",
            ],
        ),
        (
            &["exec", "--bnid", "/x", "x.sif", "true"],
            &["--bnid", "similar argument exists: '--bind'"],
        ),
        // Which arguments are missing.
        (
            &["exec"],
            &[
                "required arguments were not provided",
                "<IMAGE>",
                "<COMMAND>...",
            ],
        ),
        (
            &["instance", "start", "x.sif"],
            &["required arguments", "<NAME>"],
        ),
        (
            &["build", "-f", "out.sif", "src"],
            &["unexpected argument '-f'"],
        ),
        (&["-q", "-d", "version"], &["cannot be used with"]),
    ];
    for (args, wanted) in cases {
        let (code, stderr) = env.fails(*args);
        let what = format!("rctr {}", args.join(" "));
        assert_usage_error(&stderr, &what);
        assert_eq!(code, 1, "{what}: exit code\n{stderr}");
        for w in *wanted {
            assert!(stderr.contains(w), "{what}: no {w:?} in:\n{stderr}");
        }
    }
    // Help and version are not errors.
    for args in [&["--help"][..], &["exec", "--help"], &["--version"]] {
        env.ok(args);
    }
}

/// A home directory that is missing is named as such, not as a bad --bind.
#[test]
fn a_missing_home_directory_says_so() {
    if !require_root("a_missing_home_directory_says_so") {
        return;
    }
    let env = TestEnv::new("a_missing_home_directory_says_so");
    let img = path_str(&busybox_exec_image());
    let gone = env.work().join("no-such-home");
    let gone_s = path_str(&gone);

    let mut cmd = env.command(["exec", &img, "true"]);
    cmd.env("HOME", &gone);
    let (code, stderr) = env.fails_cmd(cmd);
    let line = assert_one_line_error(&stderr, "exec with a missing $HOME");
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains(&gone_s) && line.contains("$HOME") && line.contains("does not exist"),
        "{line}"
    );
    assert!(!line.contains("--bind"), "{line}");

    let (code, stderr) = env.fails(["exec", "--home", &gone_s, &img, "true"]);
    let line = assert_one_line_error(&stderr, "exec --home with a missing source");
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("--home") && line.contains(&gone_s) && !line.contains("--bind"),
        "{line}"
    );
    // Without a home mount, a missing $HOME is no obstacle.
    let mut cmd = env.command(["exec", "--no-home", &img, "true"]);
    cmd.env("HOME", &gone);
    env.ok_cmd(cmd);
}

/// Every command's help ends with examples of it.
#[test]
fn every_command_has_examples_in_its_help() {
    let env = TestEnv::new("every_command_has_examples_in_its_help");
    let commands: &[&[&str]] = &[
        &[],
        &["build"],
        &["pull"],
        &["inspect"],
        &["exec"],
        &["run"],
        &["shell"],
        &["test"],
        &["instance", "start"],
        &["instance", "stop"],
        &["checkpoint", "create"],
        &["checkpoint", "instance"],
        &["sif", "list"],
        &["version"],
    ];
    for cmd in commands {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("--help");
        let help = env.ok(&args);
        assert!(
            help.contains("\nExamples:\n") && help.contains(&format!("  rctr {}", cmd.join(" "))),
            "rctr {}: no Examples section:\n{help}",
            cmd.join(" ")
        );
    }
    // The batch-job options are shown with examples too.
    let help = env.ok(["run", "--help"]);
    assert!(help.contains("--ckpt-interval") && help.contains("rctr run --ckpt sim"));
}

#[test]
fn version_shows_rctr_and_the_engine() {
    let env = TestEnv::new("version_shows_rctr_and_the_engine");
    let out = env.ok(["version"]);
    let first = out.lines().next().unwrap_or("");
    assert!(
        first.starts_with("rctr ") && first.len() > 5,
        "first line is rctr's version:\n{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("criu ")),
        "a line on CRIU (its version, or why it is not available):\n{out}"
    );
}

/// -d shows each step of starting a container; plain runs show none of it.
#[test]
fn debug_shows_the_steps_and_quiet_hides_info_lines() {
    if !require_root("debug_shows_the_steps_and_quiet_hides_info_lines") {
        return;
    }
    let env = TestEnv::new("debug_shows_the_steps_and_quiet_hides_info_lines");
    let img = path_str(&busybox_exec_image());
    let out = env.run(env.command(["-d", "exec", "--pid", &img, "echo", "hello"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    let steps = [
        "VERBOSE image ",
        "loop device /dev/loop",
        "namespaces: pid",
        "namespaces: mount",
        "mount /dev/loop",
        "type squashfs",
        "type overlay",
        "pivot_root into",
        "exec echo hello",
    ];
    let mut at = 0;
    for step in steps {
        let found = stderr[at..].find(step);
        assert!(
            found.is_some(),
            "-d: no {step:?} (in this order) in:\n{stderr}"
        );
        at += found.unwrap_or(0);
    }
    assert!(stderr
        .lines()
        .all(|l| l.starts_with("DEBUG") || l.starts_with("VERBOSE")));

    let out = env.run(env.command(["exec", &img, "echo", "hello"]));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no steps without -d"
    );

    // An instance start's info line is there by default and gone with -q.
    let out = env.run(env.command(["instance", "start", &img, "loud", "sleep", "100000"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("instance started successfully"), "{stderr}");
    let out = env.run(env.command(["-q", "instance", "start", &img, "quiet", "sleep", "100000"]));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "-q instance start"
    );
    let out = env.run(env.command(["-q", "instance", "stop", "*"]));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "-q instance stop");
    assert!(env.instance_names().is_empty());
}

/// `instance stop` takes the glob patterns `instance list` takes (Apptainer's `stop mysql*`).
#[test]
fn instance_stop_accepts_glob_patterns() {
    if !require_root("instance_stop_accepts_glob_patterns") {
        return;
    }
    let env = TestEnv::new("instance_stop_accepts_glob_patterns");
    let img = path_str(&busybox_exec_image());
    for name in ["web1", "web2", "db1"] {
        env.ok(["instance", "start", &img, name, "sleep", "100000"]);
    }
    let listed = table_first_column(&env.ok(["instance", "list", "web*"]));
    assert_eq!(listed, ["web1", "web2"]);
    let out = env.run(env.command(["instance", "stop", "web*"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("web1") && stderr.contains("web2"),
        "{stderr}"
    );
    assert_eq!(env.instance_names(), ["db1"]);

    let (code, stderr) = env.fails(["instance", "stop", "web?"]);
    let line = assert_one_line_error(&stderr, "a pattern matching nothing");
    assert_eq!(code, 1);
    assert!(
        line.contains("web?") && line.contains("no instance"),
        "{line}"
    );
    assert_eq!(env.instance_names(), ["db1"]);
    env.ok(["instance", "stop", "db?"]);
    assert!(env.instance_names().is_empty());
}

/// `make install` installs what the hidden `generate-docs` writes: a man page per command and
/// bash/zsh/fish completions, all from the binary's own option definitions.
#[test]
fn man_pages_and_completions_are_generated_from_the_options() {
    let env = TestEnv::new("man_pages_and_completions_are_generated_from_the_options");
    let out = env.work().join("gen");
    env.ok([std::ffi::OsStr::new("generate-docs"), out.as_os_str()]);
    for page in [
        "rctr",
        "rctr-exec",
        "rctr-build",
        "rctr-instance-stop",
        "rctr-checkpoint-create",
    ] {
        let text = std::fs::read_to_string(out.join(format!("man/{page}.1")))
            .unwrap_or_else(|e| panic!("man/{page}.1: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: not roff"
        );
        assert!(text.contains("Examples:"), "{page}: no examples");
    }
    let exec = std::fs::read_to_string(out.join("man/rctr-exec.1")).unwrap();
    assert!(
        exec.contains("ckpt\\-interval"),
        "exec's page lists the job options"
    );
    for (file, marker) in [
        ("rctr.bash", "complete"),
        ("_rctr", "#compdef rctr"),
        ("rctr.fish", "complete -c rctr"),
    ] {
        let text = std::fs::read_to_string(out.join("completions").join(file)).unwrap();
        assert!(
            text.contains(marker) && text.contains("checkpoint"),
            "{file}"
        );
    }
    // Hidden: not a command users are offered.
    assert!(!env.ok(["--help"]).contains("generate-docs"));
}

/// The binary is one file an admin copies: it needs only the C library (and GCC's unwinder,
/// part of every glibc system), not libsquashfs or its compressors.
#[test]
fn the_binary_needs_only_the_c_library() {
    let out = std::process::Command::new("ldd")
        .arg(rctr_bin())
        .output()
        .expect("ldd (libc-bin) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|lib| !lib.starts_with("linux-vdso"))
        .collect();
    assert!(!needed.is_empty(), "ldd printed nothing: {text}");
    // libm is glibc's math library, in the same package as libc (the progress bars' rate
    // estimate calls pow).
    let allowed = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "ld-linux-x86-64.so.2",
    ];
    let extra: Vec<&&str> = needed
        .iter()
        .filter(|lib| !allowed.iter().any(|a| lib.ends_with(a)))
        .collect();
    assert!(
        extra.is_empty(),
        "rctr needs more than the C library: {extra:?}\n{text}"
    );
}
