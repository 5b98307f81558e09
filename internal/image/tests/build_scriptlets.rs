//! How `build_with` runs %post and %test: order, what they see, what lands in the image, and
//! failures. The runner here is a stand-in that acts on the staged tree from the host (the
//! real, containerized one is tested in rctr-runtime, which depends on this crate).

use anyhow::Result;
use rctr_image::{build_with, inspect, BuildOptions, ImageSource, SectionRun, SectionRunner};
use std::cell::RefCell;
use std::fs;

mod common;
use common::leftovers;

/// Acts like the scripts of [`DEF`] would, checks what each section sees, and exits with the
/// configured statuses.
struct StandIn {
    post_status: i32,
    test_status: i32,
    sections: RefCell<Vec<String>>,
}

impl StandIn {
    fn new(post_status: i32, test_status: i32) -> StandIn {
        StandIn {
            post_status,
            test_status,
            sections: RefCell::new(Vec::new()),
        }
    }
}

impl SectionRunner for StandIn {
    fn run(&self, run: &SectionRun) -> Result<i32> {
        let root = run.rootfs;
        self.sections.borrow_mut().push(run.section.to_string());
        match run.section {
            "post" => {
                assert!(run.writable && run.clean_env);
                assert_eq!(run.argv, ["/bin/sh", "-ex", "/.post.script"]);
                let script = fs::read_to_string(root.join(".post.script"))?;
                assert_eq!(script, "echo built > /opt/marker\nexit $STATUS\n");
                // %files ran before, the definition's scripts are written after.
                assert!(root.join("bin/sh").is_file());
                assert!(!root.join(".singularity.d/test").exists());
                let env_file = run
                    .env
                    .iter()
                    .find(|(k, _)| k == "APPTAINER_ENVIRONMENT")
                    .map(|(_, v)| v.trim_start_matches('/'))
                    .expect("APPTAINER_ENVIRONMENT");
                let labels_file = run
                    .env
                    .iter()
                    .find(|(k, _)| k == "APPTAINER_LABELS")
                    .map(|(_, v)| v.trim_start_matches('/'))
                    .expect("APPTAINER_LABELS");
                fs::create_dir_all(root.join("opt"))?;
                fs::write(root.join("opt/marker"), "built\n")?;
                fs::write(root.join(env_file), "export FROM_POST=1\n")?;
                fs::write(
                    root.join(labels_file),
                    "Maintainer from post\nVersion from post\n",
                )?;
                Ok(self.post_status)
            }
            "test" => {
                assert!(!run.writable);
                assert_eq!(run.argv, ["/.singularity.d/test"]);
                assert!(root.join(".singularity.d/test").is_file());
                assert!(root.join("opt/marker").is_file());
                Ok(self.test_status)
            }
            other => panic!("unexpected section {other}"),
        }
    }
}

const DEF: &str = "Bootstrap: scratch
%files
    sh /bin/sh
%post
echo built > /opt/marker
exit $STATUS
%labels
    Version 1.0
%test
    test -f /opt/marker
";

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("sh"), "not really a shell\n").unwrap();
    let def = dir.path().join("app.def");
    fs::write(&def, DEF).unwrap();
    (dir, def)
}

#[test]
fn post_then_test_run_and_their_results_land_in_the_image() {
    let (dir, def) = setup();
    let out = dir.path().join("app.sif");
    let runner = StandIn::new(0, 0);
    let opts = BuildOptions {
        runner: Some(&runner),
        base_dir: Some(dir.path()),
        ..Default::default()
    };
    build_with(&out, &def, &opts).unwrap();
    assert_eq!(*runner.sections.borrow(), ["post", "test"]);

    let img = ImageSource::open(&out).unwrap();
    assert_eq!(img.read_file("/opt/marker").unwrap().unwrap(), b"built\n");
    assert!(!img.exists("/.post.script").unwrap());
    assert!(!img.exists("/.build.labels").unwrap());
    let env = img
        .read_file("/.singularity.d/env/91-environment.sh")
        .unwrap()
        .unwrap();
    assert_eq!(env, b"export FROM_POST=1\n");
    let labels = inspect(&out, &[]).unwrap().data.attributes.labels;
    assert_eq!(labels["Maintainer"], "from post");
    // %labels win over what %post added.
    assert_eq!(labels["Version"], "1.0");
    assert!(leftovers(dir.path()).is_empty());
}

#[test]
fn notest_skips_test() {
    let (dir, def) = setup();
    let out = dir.path().join("app.sif");
    let runner = StandIn::new(0, 1);
    let opts = BuildOptions {
        runner: Some(&runner),
        base_dir: Some(dir.path()),
        notest: true,
        ..Default::default()
    };
    build_with(&out, &def, &opts).unwrap();
    assert_eq!(*runner.sections.borrow(), ["post"]);
    assert!(out.is_file());
}

#[test]
fn failing_post_or_test_fails_the_build_and_leaves_nothing() {
    let (dir, def) = setup();
    let out = dir.path().join("app.sif");
    let shown = def.display().to_string();

    let runner = StandIn::new(3, 0);
    let opts = BuildOptions {
        runner: Some(&runner),
        base_dir: Some(dir.path()),
        ..Default::default()
    };
    let err = format!("{:#}", build_with(&out, &def, &opts).unwrap_err());
    assert_eq!(
        err,
        format!("{shown}:4: %post failed with exit status 3 (see the output above)")
    );
    assert_eq!(*runner.sections.borrow(), ["post"]);
    assert!(!out.exists());
    assert!(leftovers(dir.path()).is_empty());

    let runner = StandIn::new(0, 1);
    let opts = BuildOptions {
        runner: Some(&runner),
        base_dir: Some(dir.path()),
        ..Default::default()
    };
    let err = format!("{:#}", build_with(&out, &def, &opts).unwrap_err());
    assert!(
        err.starts_with(&format!("{shown}: %test failed with exit status 1"))
            && err.contains("--notest"),
        "{err}"
    );
    assert!(!out.exists());
    assert!(leftovers(dir.path()).is_empty());
}
