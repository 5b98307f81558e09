//! `rctr build` %post and %test in real containers: rctr-image's build with the CLI's runner,
//! [`ContainerSectionRunner`]. Needs root and busybox-static; skipped with a printed reason
//! otherwise.
//!
//! Each test body runs in a forked, single-threaded child: the runtime's supervisor takes
//! SIGCHLD through a signalfd in the thread that blocked it (rctr is single-threaded), and in
//! the multi-threaded test harness another thread would swallow the signal.

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};
use rctr_image::{build_with, inspect, BuildOptions, ImageSource};
use rctr_runtime::build_runner::ContainerSectionRunner;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "echo", "mkdir", "cat", "touch", "test", "id", "sleep"];

/// A scratch directory removed when dropped (this crate has no tempfile dependency).
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rctr-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `body` in a forked child and fails with its panic message, if it panics. The message
/// goes through a file: a pipe's write end could be inherited by other tests' children.
fn in_child(scratch: &Path, body: impl FnOnce()) {
    let report = scratch.join("panic.txt");
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // Relative `From:` paths start in the current directory (Apptainer's rule); this
            // child is its own process, so changing it touches no other test.
            std::env::set_current_dir(scratch).expect("chdir");
            let code = match catch_unwind(AssertUnwindSafe(body)) {
                Ok(()) => 0,
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".to_string());
                    let _ = fs::write(&report, msg);
                    1
                }
            };
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).expect("waitpid");
            let msg = fs::read_to_string(&report).unwrap_or_default();
            assert_eq!(status, WaitStatus::Exited(child, 0), "{msg}");
        }
    }
}

/// Why the test cannot run here, if it cannot.
fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (containers)");
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some("needs /bin/busybox (package busybox-static)");
    }
    None
}

/// A directory with busybox and hard-linked applets, and the definition `def` next to it
/// (building `From: rootfs`).
fn setup(dir: &Path, def: &str) -> PathBuf {
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        fs::hard_link(root.join("bin/busybox"), root.join("bin").join(applet)).unwrap();
    }
    let path = dir.join("app.def");
    fs::write(
        &path,
        format!("Bootstrap: localimage\nFrom: rootfs\n\n{def}"),
    )
    .unwrap();
    path
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rctr-build-"))
        .collect()
}

fn opts(runner: &ContainerSectionRunner) -> BuildOptions<'_> {
    BuildOptions {
        runner: Some(runner),
        ..Default::default()
    }
}

#[test]
fn post_changes_land_in_the_built_image() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let scratch = Scratch::new("post-ok");
    let def = setup(
        &scratch.0,
        "%post
    mkdir -p /opt /data
    echo built > /opt/marker
    echo \"$(id -u) $HOME $(pwd)\" > /opt/who
    touch /tmp/scratch-file /root/in-home
    echo \"Maintainer from post\" >> $APPTAINER_LABELS
    echo 'export FROM_POST=1' >> $APPTAINER_ENVIRONMENT
    # Must not outlive %post (the container has its own pid namespace).
    sleep 1000 &

%test
    test -f /opt/marker
",
    );
    let out = scratch.0.join("app.sif");
    in_child(&scratch.0, || {
        build_with(&out, &def, &opts(&ContainerSectionRunner)).unwrap();
    });

    let img = ImageSource::open(&out).unwrap();
    assert_eq!(img.read_file("/opt/marker").unwrap().unwrap(), b"built\n");
    assert_eq!(img.read_file("/opt/who").unwrap().unwrap(), b"0 /root /\n");
    assert!(img.exists("/data").unwrap());
    // No home bind: the image's /root took the write. /tmp was private.
    assert!(img.exists("/root/in-home").unwrap());
    assert!(!img.exists("/tmp/scratch-file").unwrap());
    assert!(!Path::new("/tmp/scratch-file").exists());
    assert!(!img.exists("/.post.script").unwrap());
    assert!(!img.exists("/.build.labels").unwrap());
    assert_eq!(
        img.read_file("/.singularity.d/env/91-environment.sh")
            .unwrap()
            .unwrap(),
        b"export FROM_POST=1\n"
    );
    let labels = inspect(&out, &[]).unwrap().data.attributes.labels;
    assert_eq!(labels["Maintainer"], "from post");
    assert!(leftovers(&scratch.0).is_empty());
}

#[test]
fn failing_post_fails_the_build_and_leaves_nothing() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let scratch = Scratch::new("post-fail");
    let def = setup(&scratch.0, "%post\n    touch /half-done\n    exit 3\n");
    let out = scratch.0.join("app.sif");
    in_child(&scratch.0, || {
        let err = format!(
            "{:#}",
            build_with(&out, &def, &opts(&ContainerSectionRunner)).unwrap_err()
        );
        assert_eq!(
            err,
            format!(
                "{}:4: %post failed with exit status 3 (see the output above)",
                def.display()
            )
        );
    });
    assert!(!out.exists());
    assert!(leftovers(&scratch.0).is_empty());
    // The source directory was copied, never changed.
    assert!(!scratch.0.join("rootfs/half-done").exists());
}

#[test]
fn test_runs_read_only_after_the_build() {
    if let Some(why) = skip_reason() {
        println!("skipped: {why}");
        return;
    }
    let scratch = Scratch::new("test-ro");
    let def = setup(
        &scratch.0,
        "%post\n    echo ok > /post-ran\n%test\n    test -f /post-ran\n    touch /written-by-test\n",
    );
    let out = scratch.0.join("app.sif");
    in_child(&scratch.0, || {
        let err = format!(
            "{:#}",
            build_with(&out, &def, &opts(&ContainerSectionRunner)).unwrap_err()
        );
        assert!(
            err.contains("%test failed with exit status 1"),
            "the read-only root should have refused the write: {err}"
        );
    });
    assert!(!out.exists());
    assert!(leftovers(&scratch.0).is_empty());

    in_child(&scratch.0, || {
        let notest = BuildOptions {
            notest: true,
            ..opts(&ContainerSectionRunner)
        };
        build_with(&out, &def, &notest).unwrap();
    });
    let img = ImageSource::open(&out).unwrap();
    assert!(img.exists("/post-ran").unwrap());
    assert!(!img.exists("/written-by-test").unwrap());
}
