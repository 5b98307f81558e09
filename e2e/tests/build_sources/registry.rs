//! `rctr pull` and `docker://` builds against a real registry on loopback (Debian's
//! docker-registry, started by [`Registry`]) holding images pushed with skopeo.

use super::*;
use std::os::unix::fs::PermissionsExt;

/// `rctr ARGS` with the test's own blob cache.
fn with_cache(env: &TestEnv, cache: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = env.command(args);
    cmd.env("RCTR_CACHEDIR", cache);
    cmd
}

/// Runs `cmd`, asserts it succeeds, returns its stderr.
fn ok_err(env: &TestEnv, cmd: Command) -> String {
    let out = env.run(cmd);
    assert!(
        out.status.success(),
        "failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pull_twice_the_second_from_the_cache_and_build_from_a_registry() {
    let layout = match busybox_layout() {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let env = TestEnv::new("pull_twice_the_second_from_the_cache_and_build_from_a_registry");
    let mut registry = Registry::start(&env.work().join("registry")).unwrap();
    let l = path_str(&layout);
    let v1_digest = registry
        .push(&format!("oci:{l}:v1"), "test/busybox:v1")
        .unwrap();
    let mut push_all = Command::new("skopeo");
    push_all.args([
        "copy",
        "-q",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{l}:multi"),
        &format!("docker://{}/test/busybox:multi", registry.host()),
    ]);
    let out = output_with_timeout(push_all, BUILD_TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let host = registry.host();
    let cache = env.work().join("cache");
    let image = format!("docker://{host}/test/busybox:v1");

    // First pull: Apptainer's default name, the blobs downloaded and cached privately.
    let err = ok_err(
        &env,
        with_cache(&env, &cache, &["pull", "--no-https", &image]),
    );
    assert!(err.contains("0 from the cache"), "{err}");
    assert_eq!(env.ok(["run", "busybox_v1.sif"]), "hi from v1\n");
    assert_eq!(
        env.ok(["exec", "busybox_v1.sif", "sh", "-c", "echo $GREETING"]),
        "hello\n"
    );
    let first = registry.blob_downloads();
    assert!(first.len() >= 2, "config and layer fetched: {first:?}");
    let blobs = cache.join("oci/blobs/sha256");
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&blobs), 0o700);
    let cached: Vec<_> = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(cached.len() >= 3, "manifest, config, layer: {cached:?}");
    assert!(cached.iter().all(|p| mode(p) == 0o600), "{cached:?}");

    // Second pull: the manifest is asked for again (a tag can move), no blob is.
    let err = ok_err(
        &env,
        with_cache(&env, &cache, &["pull", "--no-https", "second.sif", &image]),
    );
    assert!(err.contains("0 blob(s) downloaded"), "{err}");
    assert_eq!(
        registry.blob_downloads(),
        first,
        "the second pull fetched blobs"
    );
    assert_eq!(env.ok(["run", "second.sif"]), "hi from v1\n");

    // An index: this host's platform is picked, not the first entry.
    env.ok_cmd(with_cache(
        &env,
        &cache,
        &[
            "pull",
            "--no-https",
            "multi.sif",
            &format!("docker://{host}/test/busybox:multi"),
        ],
    ));
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(env.ok(["run", "multi.sif"]), "hi from v1\n");
    }

    // A definition file with Bootstrap: docker, plain HTTP asked for by the variable.
    fs::write(
        env.work().join("app.def"),
        format!(
            "Bootstrap: docker\nFrom: {host}/test/busybox:v1\n\n%post\n    echo built-by-post > /built\n\n\
             %runscript\n    cat /built\n"
        ),
    )
    .unwrap();
    let mut build = with_cache(&env, &cache, &["build", "app.sif", "app.def"]);
    build.env("APPTAINER_NOHTTPS", "1");
    env.ok_cmd(build);
    assert_eq!(env.ok(["run", "app.sif"]), "built-by-post\n");
    let inspect = env.ok(["inspect", "--deffile", "app.sif"]);
    assert!(inspect.contains("Bootstrap: docker"), "{inspect}");

    // Errors are one line each: a missing tag, a digest the registry lacks, HTTPS to a
    // plain-HTTP registry.
    let bad = |args: &[&str], want: &str| {
        let (_, err) = env.fails_cmd(with_cache(&env, &cache, args));
        assert_one_line_error(&err, "rctr");
        assert!(err.contains(want), "{args:?}: {err}");
    };
    bad(
        &[
            "pull",
            "--no-https",
            "x.sif",
            &format!("docker://{host}/test/busybox:v9"),
        ],
        "the registry has no image v9",
    );
    let absent = format!("sha256:{}", "0".repeat(64));
    bad(
        &[
            "pull",
            "--no-https",
            "x.sif",
            &format!("docker://{host}/test/busybox@{absent}"),
        ],
        "the registry has no image sha256:000",
    );
    bad(&["pull", "x.sif", &image], "--no-https");
    bad(
        &["pull", "x.sif", "docker://Upper/Case"],
        "not a valid repository name",
    );

    // On a terminal (script(1) gives it one) downloads draw progress bars; the pulls
    // above, whose stderr was a pipe, drew none.
    let mut tty = Command::new("script");
    tty.args([
        "-qfec",
        &format!("{} pull --no-https tty.sif {image}", path_str(&rctr_bin())),
        "/dev/null",
    ])
    .env("HOME", env.home())
    .env("RCTR_CACHEDIR", env.work().join("tty-cache"))
    .current_dir(env.work());
    let out = output_with_timeout(tty, BUILD_TIMEOUT);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("blob ") && shown.contains("[###"),
        "no progress bar: {shown:?}"
    );
    assert!(!err.contains("[#"), "a bar was drawn into a pipe: {err}");

    // Content that does not match its digest is refused and not cached: corrupt the
    // config blob in the registry's storage and pull into an empty cache.
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            cache
                .join("oci/blobs/sha256")
                .join(v1_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let stored = registry.blob_file(&config_digest);
    let mut bytes = fs::read(&stored).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&stored, &bytes).unwrap();
    let fresh = env.work().join("fresh-cache");
    let (_, err) = env.fails_cmd(with_cache(
        &env,
        &fresh,
        &["pull", "--no-https", "x.sif", &image],
    ));
    assert_one_line_error(&err, "rctr");
    assert!(
        err.contains(&config_digest) && err.contains("hashes to"),
        "{err}"
    );
    let kept = fresh
        .join("oci/blobs/sha256")
        .join(config_digest.trim_start_matches("sha256:"));
    assert!(!kept.exists(), "a corrupt blob was cached");
    assert!(!env.work().join("x.sif").exists());

    // With the registry gone, an image pinned by digest comes from the cache alone; a tag
    // needs the registry, and its absence is one line.
    registry.stop();
    env.ok_cmd(with_cache(
        &env,
        &cache,
        &[
            "pull",
            "--no-https",
            "pinned.sif",
            &format!("docker://{host}/test/busybox@{v1_digest}"),
        ],
    ));
    assert_eq!(env.ok(["run", "pinned.sif"]), "hi from v1\n");
    bad(
        &["pull", "--no-https", "-F", "second.sif", &image],
        "cannot reach registry",
    );
    assert_eq!(
        env.ok(["run", "second.sif"]),
        "hi from v1\n",
        "a failed pull keeps the old file"
    );
}

#[test]
fn pull_over_https_with_token_authentication() {
    let layout = match busybox_layout() {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let env = TestEnv::new("pull_over_https_with_token_authentication");
    let registry = Registry::start_secure(&env.work().join("registry")).unwrap();
    registry
        .push(
            &format!("oci:{}:v1", path_str(&layout)),
            "private/busybox:v1",
        )
        .unwrap();
    let image = format!("docker://{}/private/busybox:v1", registry.host());
    let cache = env.work().join("cache");
    let pull = |out: &str, ca: bool, login: bool| {
        let mut cmd = with_cache(&env, &cache, &["pull", out, &image]);
        if ca {
            cmd.env("SSL_CERT_FILE", registry.ca_file());
        }
        if login {
            cmd.env("APPTAINER_DOCKER_USERNAME", REGISTRY_USER.0)
                .env("RCTR_DOCKER_PASSWORD", REGISTRY_USER.1);
        }
        cmd
    };

    // A certificate from an unknown CA is refused, with a hint at the CA store.
    let (_, err) = env.fails_cmd(pull("a.sif", false, true));
    assert_one_line_error(&err, "rctr");
    assert!(
        err.contains("cannot reach registry")
            && err.contains("UnknownIssuer")
            && err.contains("SSL_CERT_FILE"),
        "{err}"
    );

    // Anonymous callers get a token that allows nothing: one line naming the variables.
    let (_, err) = env.fails_cmd(pull("a.sif", true, false));
    assert_one_line_error(&err, "rctr");
    assert!(
        err.contains("refused access") && err.contains("RCTR_DOCKER_USERNAME"),
        "{err}"
    );

    // The user gets a pull token for this repository, and the image.
    env.ok_cmd(pull("a.sif", true, true));
    assert_eq!(env.ok(["run", "a.sif"]), "hi from v1\n");
    let asked = registry.token_requests();
    let wanted = format!(
        "token user={} scope=repository:private/busybox:pull",
        REGISTRY_USER.0
    );
    assert!(asked.contains(&wanted), "{asked:?}");
}
