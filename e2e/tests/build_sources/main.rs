//! `rctr build` from the sources and definition-file features real recipes use: multi-stage
//! builds, build arguments, %setup, SCIF apps, interpreters, sandboxes, `Bootstrap:
//! debootstrap` (a real debootstrap from the Debian mirror, with python3 installed by
//! %post's apt-get), Docker/OCI archives made by Debian's umoci and skopeo, `docker://`
//! pulls from a real registry on loopback ([`registry`]), and definition files from public
//! projects ([`recipes`]). One test binary, so they all share the fixtures built here.

mod recipes;
mod registry;

use rctr_e2e::*;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Builds can take minutes (debootstrap, apt-get, big layers).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

fn ok_slow(env: &TestEnv, args: &[&str]) -> String {
    let mut cmd = env.command(args);
    cmd.env("RCTR_CACHEDIR", shared_cache());
    let out = output_with_timeout(cmd, BUILD_TIMEOUT);
    assert!(
        out.status.success(),
        "rctr {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package cache every build of a test run shares (debootstrap's .debs).
fn shared_cache() -> PathBuf {
    let dir = target_dir().join("e2e-cache/rctr-cache");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn has_program(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

const MULTI_STAGE_DEF: &str = r#"# Stage 1 makes a file; stage 2 takes it with "%files from".
Bootstrap: localimage
From: {{ BASE }}
Stage: build

%arguments
    BASE=rootfs
    MESSAGE=default message

%post
    mkdir -p /out
    echo "built with {{ MESSAGE }}" > /out/result

Bootstrap: localimage
From: {{ BASE }}
Stage: final

%setup
    echo "setup ran on the host" > "$APPTAINER_ROOTFS/setup.txt"

%files from build
    /out/result /opt/result

%runscript -c /bin/busybox sh
    echo "runscript interpreter: $(head -n1 /.singularity.d/runscript)"
    cat /opt/result

%apprun greet
    echo "greet app $SCIF_APPNAME says $GREETING to $*"

%appenv greet
    GREETING=hello
    export GREETING

%appinstall greet
    echo installed-in-$(pwd) > bin/greet-marker

%apptest greet
    test -f /scif/apps/greet/bin/greet-marker

%test
    grep -q "built with" /opt/result
"#;

#[test]
fn multi_stage_with_arguments_setup_apps_and_an_interpreter() {
    if !require_root("multi_stage_with_arguments_setup_apps_and_an_interpreter") {
        return;
    }
    let env = TestEnv::new("multi_stage_with_arguments_setup_apps_and_an_interpreter");
    busybox_rootfs(&env.work().join("rootfs")).unwrap();
    fs::write(env.work().join("app.def"), MULTI_STAGE_DEF).unwrap();
    env.ok([
        "build",
        "--build-arg",
        "MESSAGE=custom words",
        "app.sif",
        "app.def",
    ]);

    let out = env.ok(["run", "app.sif"]);
    assert_eq!(
        out,
        "runscript interpreter: #!/bin/busybox sh\nbuilt with custom words\n"
    );
    assert_eq!(
        env.ok(["exec", "app.sif", "cat", "/setup.txt"]),
        "setup ran on the host\n"
    );
    // The build stage's root is not in the final image.
    env.fails(["exec", "app.sif", "test", "-e", "/out/result"]);

    assert_eq!(
        env.ok(["run", "--app", "greet", "app.sif", "you", "all"]),
        "greet app greet says hello to you all\n"
    );
    let out = env.ok([
        "exec",
        "--app",
        "greet",
        "app.sif",
        "sh",
        "-c",
        "echo $PATH; cat /scif/apps/greet/bin/greet-marker",
    ]);
    assert!(
        out.starts_with("/scif/apps/greet/bin:")
            && out.ends_with("\ninstalled-in-/scif/apps/greet\n"),
        "{out}"
    );
    env.ok(["test", "--app", "greet", "app.sif"]);
    let (_, err) = env.fails(["run", "--app", "nope", "app.sif"]);
    assert_one_line_error(&err, "rctr");
    assert!(
        err.contains("no app \"nope\"") && err.contains("greet"),
        "{err}"
    );

    // A build argument the file has no default for must be given.
    fs::write(
        env.work().join("bad.def"),
        "Bootstrap: localimage\nFrom: rootfs\n%post\n  echo {{ UNSET }}\n",
    )
    .unwrap();
    let (_, err) = env.fails(["build", "bad.sif", "bad.def"]);
    assert_one_line_error(&err, "rctr");
    assert!(
        err.contains("bad.def:4: build argument UNSET has no value"),
        "{err}"
    );
}

#[test]
fn sandbox_directories_build_run_and_take_writes() {
    if !require_root("sandbox_directories_build_run_and_take_writes") {
        return;
    }
    let env = TestEnv::new("sandbox_directories_build_run_and_take_writes");
    busybox_rootfs(&env.work().join("rootfs")).unwrap();
    fs::write(
        env.work().join("sb.def"),
        "Bootstrap: localimage\nFrom: rootfs\n%runscript\n  echo sandbox runscript \"$@\"\n",
    )
    .unwrap();
    env.ok(["build", "--sandbox", "sb", "sb.def"]);
    assert!(env.work().join("sb/.singularity.d/runscript").is_file());
    assert_eq!(env.ok(["run", "sb", "x"]), "sandbox runscript x\n");

    env.ok([
        "exec",
        "--writable",
        "sb",
        "sh",
        "-c",
        "echo kept > /data.txt",
    ]);
    assert_eq!(
        fs::read_to_string(env.work().join("sb/data.txt")).unwrap(),
        "kept\n"
    );
    // Without --writable the image stays read-only.
    env.fails(["exec", "sb", "sh", "-c", "echo no > /other.txt"]);
    assert!(!env.work().join("sb/other.txt").exists());

    let (_, err) = env.fails(["build", "--sandbox", "sb", "sb.def"]);
    assert_one_line_error(&err, "rctr");
    assert!(err.contains("already exists; use --force"), "{err}");
    env.ok(["build", "--force", "--sandbox", "sb", "sb.def"]);
    assert!(
        !env.work().join("sb/data.txt").exists(),
        "--force replaces the sandbox"
    );

    // A sandbox is a build source, and SIF images are not writable.
    env.ok(["build", "from-sandbox.sif", "sb"]);
    assert_eq!(env.ok(["run", "from-sandbox.sif"]), "sandbox runscript\n");
    let (_, err) = env.fails(["exec", "-w", "from-sandbox.sif", "true"]);
    assert_one_line_error(&err, "rctr");
    assert!(
        err.contains("--writable needs a sandbox directory"),
        "{err}"
    );
}

/// The debootstrap-based image every test of a run shares: built once, as a sandbox (so
/// the OCI tests can pack it into layers), by `rctr build` from a definition file with
/// `Bootstrap: debootstrap` whose %post installs python3 with apt-get and whose %test
/// checks it.
fn debootstrap_sandbox() -> Result<PathBuf, String> {
    static SANDBOX: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            if !is_root() {
                return Err("needs root".into());
            }
            if !has_program("debootstrap") {
                return Err("debootstrap is not installed (make deps)".into());
            }
            let dir = target_dir().join("e2e-cache/debootstrap-run");
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let def = dir.join("python.def");
            fs::write(&def, debootstrap_def()).map_err(|e| e.to_string())?;
            let env = TestEnv::new("debootstrap_sandbox");
            ok_slow(
                &env,
                &[
                    "build",
                    "--sandbox",
                    &path_str(&dir.join("sandbox")),
                    &path_str(&def),
                ],
            );
            Ok(dir.join("sandbox"))
        })
        .clone()
}

fn debootstrap_def() -> String {
    format!(
        "Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: {}\nInclude: ca-certificates\n\n\
         %post\n    apt-get update\n    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3\n    apt-get clean\n\n\
         %environment\n    export LC_ALL=C\n\n\
         %runscript\n    exec python3 -c 'import sys; print(\"python\", sys.version_info[0], sys.argv[1:])' \"$@\"\n\n\
         %test\n    python3 -c 'import json; print(json.dumps({{\"test\": \"passed\"}}))'\n",
        debian_mirror()
    )
}

#[test]
fn debootstrap_definition_installs_python3_and_passes_its_test() {
    let sandbox = match debootstrap_sandbox() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let env = TestEnv::new("debootstrap_definition_installs_python3_and_passes_its_test");
    assert_eq!(
        env.ok(["run", &path_str(&sandbox), "a", "b"]),
        "python 3 ['a', 'b']\n"
    );
    let labels = fs::read_to_string(sandbox.join(".singularity.d/labels.json")).unwrap();
    assert!(
        labels
            .contains("\"org.label-schema.usage.singularity.deffile.bootstrap\": \"debootstrap\""),
        "{labels}"
    );
    let os = env.ok(["exec", &path_str(&sandbox), "cat", "/etc/debian_version"]);
    assert!(os.starts_with("12."), "{os}");
    // A %test that fails fails the build (debootstrap's packages come from the cache now).
    let def = env.work().join("failing.def");
    fs::write(
        &def,
        debootstrap_def().replace("json.dumps", "json.no_such_function"),
    )
    .unwrap();
    let mut cmd = env.command(["build", "--sandbox", "failing", "failing.def"]);
    cmd.env("RCTR_CACHEDIR", shared_cache());
    let out = output_with_timeout(cmd, BUILD_TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("failing.def: %test failed"),
        "{err}"
    );
    assert!(!env.work().join("failing").exists());
}

/// An OCI layout made by umoci from the debootstrap sandbox, plus a layer adding a file, a
/// whiteout layer and an opaque-directory layer, and a config; then skopeo writes it as a
/// docker-archive and an oci-archive.
fn oci_archives() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    static ARCHIVES: OnceLock<Result<(PathBuf, PathBuf, PathBuf), String>> = OnceLock::new();
    ARCHIVES
        .get_or_init(|| {
            for tool in ["umoci", "skopeo"] {
                if !has_program(tool) {
                    return Err(format!("{tool} is not installed (make deps)"));
                }
            }
            let sandbox = debootstrap_sandbox()?;
            let dir = target_dir().join("e2e-cache/oci-run");
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("docs")).map_err(|e| e.to_string())?;
            fs::write(dir.join("docs/only"), "replaced\n").map_err(|e| e.to_string())?;
            fs::write(dir.join("added"), "from layer two\n").map_err(|e| e.to_string())?;
            let l = dir.join("layout");
            let l = path_str(&l);
            let img = format!("{l}:v1");
            let script = format!(
                "set -e\ncd {d}\numoci init --layout {l}\numoci new --image {img}\n\
                 umoci unpack --image {img} bundle\ncp -a {sb}/. bundle/rootfs/\n\
                 rm -rf bundle/rootfs/.singularity.d bundle/rootfs/singularity bundle/rootfs/environment bundle/rootfs/.run bundle/rootfs/.exec bundle/rootfs/.test bundle/rootfs/.shell\n\
                 umoci repack --image {img} bundle\nrm -rf bundle\n\
                 umoci insert --image {img} added /srv/added\n\
                 umoci insert --image {img} --whiteout /etc/motd\n\
                 umoci insert --image {img} --opaque docs /usr/share/doc\n\
                 umoci config --image {img} --config.env GREETING=hello --config.entrypoint /usr/bin/python3 \
                 --config.cmd=-c --config.cmd='print(\"cmd ran\")' --config.workingdir /srv --config.label org.example.origin=umoci\n\
                 skopeo copy -q oci:{img} docker-archive:{d}/docker.tar:debian:v1\n\
                 skopeo copy -q oci:{img} oci-archive:{d}/oci.tar:v1\n",
                d = path_str(&dir),
                sb = path_str(&sandbox),
            );
            let out = output_with_timeout(
                {
                    let mut c = Command::new("sh");
                    c.args(["-c", &script]);
                    c
                },
                BUILD_TIMEOUT,
            );
            if !out.status.success() {
                panic!("making the OCI archives failed:\n{}", String::from_utf8_lossy(&out.stderr));
            }
            Ok((dir.join("docker.tar"), dir.join("oci.tar"), dir.join("layout")))
        })
        .clone()
}

#[test]
fn docker_and_oci_archives_build_and_run_with_their_config() {
    let (docker, oci, layout) = match oci_archives() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let env = TestEnv::new("docker_and_oci_archives_build_and_run_with_their_config");
    let sources = [
        format!("docker-archive:{}", path_str(&docker)),
        format!("oci-archive:{}", path_str(&oci)),
        format!("oci:{}:v1", path_str(&layout)),
    ];
    for (i, source) in sources.iter().enumerate() {
        let sif = format!("img{i}.sif");
        ok_slow(&env, &["build", &sif, source]);
        // No arguments: ENTRYPOINT + CMD, in WorkingDir.
        assert_eq!(env.ok(["run", &sif]), "cmd ran\n", "{source}");
        // Arguments replace CMD.
        assert_eq!(
            env.ok([
                "run",
                &sif,
                "-c",
                "import os; print(os.getcwd(), os.environ['GREETING'])"
            ]),
            "/srv hello\n",
            "{source}"
        );
        let out = env.ok([
            "exec",
            &sif,
            "sh",
            "-c",
            "cat /srv/added; ls /usr/share/doc; test -e /etc/motd || echo motd-gone",
        ]);
        assert_eq!(out, "from layer two\nonly\nmotd-gone\n", "{source}");
        let inspect = env.ok(["inspect", &sif]);
        assert!(inspect.contains("org.example.origin: umoci"), "{inspect}");
    }
    let (_, err) = env.fails([
        "build",
        "x.sif",
        &format!("oci:{}", path_str(&layout.join("missing"))),
    ]);
    assert_one_line_error(&err, "rctr");
}

/// A small OCI layout made with umoci from a busybox root (every applet linked, as in
/// the busybox images of registries): tag `v1` (CMD echoes "hi from
/// v1"), tag `other` (another config, the same layer) and tag `multi`, an image index
/// whose first entry is `other` marked linux/arm64 and whose second is `v1` marked
/// linux/amd64 (this host's platform must be picked, not the first entry).
fn busybox_layout() -> Result<PathBuf, String> {
    static LAYOUT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            if let Some(why) = Registry::missing() {
                return Err(why);
            }
            if !is_root() {
                return Err("needs root".into());
            }
            let dir = target_dir().join("e2e-cache/busybox-oci");
            let _ = fs::remove_dir_all(&dir);
            busybox_rootfs(&dir.join("rootfs")).map_err(|e| e.to_string())?;
            let l = path_str(&dir.join("layout"));
            let script = format!(
                "set -e\ncd {d}\numoci init --layout {l}\numoci new --image {l}:v1\n\
                 umoci unpack --image {l}:v1 bundle >/dev/null\ncp -a rootfs/. bundle/rootfs/\n\
                 busybox --install -s bundle/rootfs/bin\n\
                 umoci repack --image {l}:v1 bundle\nrm -rf bundle\n\
                 umoci config --image {l}:v1 --tag other --config.cmd /bin/echo --config.cmd 'wrong platform'\n\
                 umoci config --image {l}:v1 --config.env GREETING=hello --config.cmd /bin/echo --config.cmd 'hi from v1'\n",
                d = path_str(&dir),
            );
            let out = Command::new("sh").args(["-c", &script]).output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                panic!("making the busybox OCI layout failed:\n{}", String::from_utf8_lossy(&out.stderr));
            }
            add_multi_platform_index(&dir.join("layout"));
            Ok(dir.join("layout"))
        })
        .clone()
}

/// Adds the `multi` index described at [`busybox_layout`] to the layout's index.json.
fn add_multi_platform_index(layout: &std::path::Path) {
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let by_tag = |tag: &str| -> serde_json::Value {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no tag {tag} in {index}"))
            .clone()
    };
    let entry = |tag: &str, arch: &str| {
        let mut d = by_tag(tag);
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        d
    };
    let multi = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("other", "arm64"), entry("v1", "amd64")],
    });
    let bytes = serde_json::to_vec(&multi).unwrap();
    let tmp = layout.join("multi.json");
    fs::write(&tmp, &bytes).unwrap();
    let out = Command::new("sha256sum").arg(&tmp).output().unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    fs::rename(&tmp, layout.join("blobs/sha256").join(&hex)).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }));
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}
