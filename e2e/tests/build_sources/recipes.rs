//! Definition files written by others, from public repositories, built and run as they
//! are, changed only where a source cannot be reached from here: Docker Hub and ghcr.io
//! are not, so their `From:` names the same image in the registry on loopback (and
//! `Bootstrap: oras` becomes `docker`, the same OCI image by another protocol); a Debian
//! mirror abroad becomes the host's own mirror.

use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Where each recipe came from, and the changes made to it.
struct Recipe {
    /// `owner/repo: path` of the original.
    origin: &'static str,
    /// The original's text, with `{REGISTRY}` / `{MIRROR}` where a source was replaced.
    text: &'static str,
}

/// apptainer/apptainer: examples/legacy/2.2/docker.def (header comments left out; an
/// inline comment after `From:`, as in the original). Changed: `busybox:latest` is pulled
/// from the loopback registry.
const DOCKER_DEF: Recipe = Recipe {
    origin: "apptainer/apptainer: examples/legacy/2.2/docker.def",
    text: "BootStrap: docker\nFrom: {REGISTRY}/library/busybox:latest   # This is a comment\n\n\
           %runscript\n    echo \"This is what happens when you run the container...\"\n\n\n\
           %post\n    echo \"Hello from inside the container\"\n    echo \"Install additional software here\"\n",
};

/// apptainer/apptainer: examples/instances/Apptainer. Changed: `BootStrap: oras` from
/// ghcr.io becomes `docker` from the loopback registry.
const INSTANCES: Recipe = Recipe {
    origin: "apptainer/apptainer: examples/instances/Apptainer",
    text: "BootStrap: docker\nFrom: {REGISTRY}/apptainer/busybox:1.31.1\n\n\
           %startscript\n    exec nc -ll -p $1 -e /bin/cat 2>/dev/null\n",
};

/// apptainer/apptainer: examples/legacy/2.2/debian.def (header comments left out).
/// Changed: the mirror is the host's, and `stable` is named as the host's suite.
const DEBIAN_DEF: Recipe = Recipe {
    origin: "apptainer/apptainer: examples/legacy/2.2/debian.def",
    text: "BootStrap: debootstrap\nOSVersion: bookworm\nMirrorURL: {MIRROR}\n\n\n\
           %runscript\n    echo \"This is what happens when you run the container...\"\n\n\n\
           %post\n    echo \"Hello from inside the container\"\n    apt-get update\n    apt-get -y --force-yes install vim\n\n",
};

/// jhshz520/BurnerRecipe: recipe/container10861.txt, an HPC site's recipe: folders for
/// its cluster's mounts and cowsay as a SCIF app. Changed: `ubuntu:16.04` from Docker
/// Hub becomes the Debian image in the loopback registry (cowsay and its paths are the
/// same there).
const COWSAY_APP: Recipe = Recipe {
    origin: "jhshz520/BurnerRecipe: recipe/container10861.txt",
    text: "Bootstrap: docker\nFrom: {REGISTRY}/library/debian:bookworm\n\nIncludeCmd: yes\n\n\
           %runscript\n    exec /bin/bash \"$@\"\n\n\
           %environment\n    export LC_ALL=C\n    export PATH=/usr/games:$PATH\n\n\
           %post\n    /usr/bin/apt-get update\n\n    # Make folders for CBD HPC cluster\n\
           \x20   if [ ! -d /images ]; then mkdir /images; fi\n    if [ ! -d /projects ]; then mkdir /projects; fi\n\
           \x20   if [ ! -d /containers ]; then mkdir /containers; fi\n    if [ ! -d /share ]; then mkdir /share; fi\n\
           \x20   if [ ! -d /scratch ]; then mkdir /scratch; fi\n\n\
           %appinstall cowsay\n    /usr/bin/apt-get -y install cowsay\n\n\
           %appenv cowsay\n    APP=cowsay\n    export APP\n\n\
           %apphelp cowsay\n    For more information visit https://en.wikipedia.org/wiki/Cowsay\n\n\
           %apprun cowsay\n    cowsay \"$@\"\n",
};

fn write_recipe(env: &TestEnv, recipe: &Recipe, name: &str, registry: &str) -> String {
    let text = recipe
        .text
        .replace("{REGISTRY}", registry)
        .replace("{MIRROR}", &debian_mirror());
    let file = format!("{name}.def");
    fs::write(
        env.work().join(&file),
        format!("# From {}\n{text}", recipe.origin),
    )
    .unwrap();
    file
}

#[test]
fn apptainer_example_recipes_from_a_registry_build_and_run() {
    let layout = match busybox_layout() {
        Ok(l) => l,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let env = TestEnv::new("apptainer_example_recipes_from_a_registry_build_and_run");
    let registry = Registry::start(&env.work().join("registry")).unwrap();
    let busybox = format!("oci:{}:v1", path_str(&layout));
    registry.push(&busybox, "library/busybox:latest").unwrap();
    registry.push(&busybox, "apptainer/busybox:1.31.1").unwrap();
    let host = registry.host();
    let build = |def: &str, sif: &str| {
        let mut cmd = env.command(["build", "--no-https", sif, def]);
        cmd.env("RCTR_CACHEDIR", env.work().join("cache"));
        env.ok_cmd(cmd)
    };

    let def = write_recipe(&env, &DOCKER_DEF, "docker", &host);
    build(&def, "docker.sif");
    assert_eq!(
        env.ok(["run", "docker.sif"]),
        "This is what happens when you run the container...\n",
        "{}",
        DOCKER_DEF.origin
    );

    // The instance recipe: an echo server started by %startscript with the port given to
    // `instance start`.
    let def = write_recipe(&env, &INSTANCES, "instances", &host);
    build(&def, "instances.sif");
    let port = free_port();
    env.ok([
        "instance",
        "start",
        "instances.sif",
        "echo",
        &port.to_string(),
    ]);
    wait_for_port(port, Duration::from_secs(30));
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"echoed by nc\n").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "echoed by nc\n", "{}", INSTANCES.origin);
    env.ok(["instance", "stop", "echo"]);
}

#[test]
fn apptainer_debootstrap_recipe_builds_and_runs() {
    if !require_root("apptainer_debootstrap_recipe_builds_and_runs") {
        return;
    }
    if !has_program("debootstrap") {
        eprintln!("skipping: debootstrap is not installed (make deps)");
        return;
    }
    let env = TestEnv::new("apptainer_debootstrap_recipe_builds_and_runs");
    let def = write_recipe(&env, &DEBIAN_DEF, "debian", "");
    ok_slow(&env, &["build", "debian.sif", &def]);
    assert_eq!(
        env.ok(["run", "debian.sif"]),
        "This is what happens when you run the container...\n"
    );
    let vim = env.ok(["exec", "debian.sif", "vim", "--version"]);
    assert!(
        vim.starts_with("VIM - Vi IMproved"),
        "{}: {vim}",
        DEBIAN_DEF.origin
    );
}

#[test]
fn hpc_site_recipe_with_an_app_builds_from_a_debian_image_in_a_registry() {
    let (_, _, debian_layout) = match oci_archives() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    if let Some(why) = Registry::missing() {
        eprintln!("skipping: {why}");
        return;
    }
    let env = TestEnv::new("hpc_site_recipe_with_an_app_builds_from_a_debian_image_in_a_registry");
    let registry = Registry::start(&env.work().join("registry")).unwrap();
    registry
        .push(
            &format!("oci:{}:v1", path_str(&debian_layout)),
            "library/debian:bookworm",
        )
        .unwrap();
    let def = write_recipe(&env, &COWSAY_APP, "cowsay", &registry.host());
    let mut build = env.command(["build", "--no-https", "cowsay.sif", &def]);
    build.env("RCTR_CACHEDIR", env.work().join("cache"));
    let out = output_with_timeout(build, BUILD_TIMEOUT);
    assert!(
        out.status.success(),
        "{}: {}",
        COWSAY_APP.origin,
        String::from_utf8_lossy(&out.stderr)
    );

    let said = env.ok([
        "run",
        "--app",
        "cowsay",
        "cowsay.sif",
        "checkpointed",
        "moo",
    ]);
    assert!(said.contains("< checkpointed moo >"), "{said}");
    assert_eq!(
        env.ok([
            "exec",
            "--app",
            "cowsay",
            "cowsay.sif",
            "sh",
            "-c",
            "echo $APP"
        ]),
        "cowsay\n"
    );
    // The runscript is bash; the cluster's mount points exist.
    let out = env.ok([
        "run",
        "cowsay.sif",
        "-c",
        "echo $LC_ALL $BASH_VERSION; ls -d /images /projects /containers /share /scratch",
    ]);
    let (first, dirs) = out.split_once('\n').unwrap_or((&out, ""));
    assert!(first.starts_with("C 5."), "{out}");
    assert_eq!(dirs, "/containers\n/images\n/projects\n/scratch\n/share\n");
}
