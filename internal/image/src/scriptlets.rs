//! A definition's build scripts, run inside the image being built as Apptainer runs them:
//! `%post` after `%files`, in the staged root filesystem made writable; `%test` once the image
//! is complete, read-only. rctr-image cannot start containers itself (the runtime depends on
//! this crate), so the caller hands in a [`SectionRunner`].

use crate::deffile::{parse_labels, Definition, ScriptSection};
use crate::sandbox::resolve_in_root;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Where the %post script lives inside the root filesystem while it runs (Apptainer's name).
pub const POST_SCRIPT: &str = "/.post.script";
/// "NAME VALUE" lines %post appends to `$APPTAINER_LABELS`; they become image labels.
pub const BUILD_LABELS: &str = "/.build.labels";
/// Environment %post appends to `$APPTAINER_ENVIRONMENT`; sourced when the image runs.
pub const POST_ENVIRONMENT: &str = "/.singularity.d/env/91-environment.sh";
/// The %test script, as the layout writes it.
const TEST_SCRIPT: &str = "/.singularity.d/test";

/// A command to run in a container whose root is a staged root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRun<'a> {
    /// The definition section being run ("post", "test"), for messages.
    pub section: &'a str,
    /// The staged root filesystem (a directory on the host).
    pub rootfs: &'a Path,
    /// Changes must land in `rootfs` (%post); otherwise it is mounted read-only (%test).
    pub writable: bool,
    pub argv: Vec<String>,
    /// Start from a clean environment (as `--cleanenv`) rather than the host's.
    pub clean_env: bool,
    /// Variables set after the image's environment scripts (as `--env`).
    pub env: Vec<(String, String)>,
}

/// Runs build scripts in containers (implemented over rctr-runtime by the CLI).
pub trait SectionRunner {
    /// Runs `run.argv` as root in a container whose root is `run.rootfs`, with its output on
    /// ours, and returns its exit status. Fails only when the container or the command
    /// could not be started.
    fn run(&self, run: &SectionRun) -> Result<i32>;
}

/// The command running a script section, by Apptainer's rules: `/bin/sh -ex [ARGS] SCRIPT`,
/// or with `-c INTERPRETER...` among the arguments, `/bin/sh -ex [ARGS] -c "INTERPRETER...
/// SCRIPT"`.
pub fn section_command(args: &[String], script: &str) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_string(), "-ex".to_string()];
    match args.iter().position(|a| a == "-c") {
        Some(c) => {
            argv.extend_from_slice(&args[..=c]);
            argv.push(format!("{} {script}", args[c + 1..].join(" ")));
        }
        None => {
            argv.extend_from_slice(args);
            argv.push(script.to_string());
        }
    }
    argv
}

/// The runner %post needs; a definition with %post cannot be built without one.
pub(crate) fn require_runner<'r>(
    def: &Definition,
    post: &ScriptSection,
    runner: Option<&'r dyn SectionRunner>,
) -> Result<&'r dyn SectionRunner> {
    runner.with_context(|| {
        format!(
            "{}:{}: %post needs a container runtime to run; build with the rctr command",
            def.origin.display(),
            post.line
        )
    })
}

/// The %post section to run: the definition's own, with the apps' %appinstall scripts
/// appended (as Apptainer does); None when there is nothing to run.
pub(crate) fn post_with_apps(def: &Definition) -> Option<ScriptSection> {
    let install = crate::apps::install_script(def);
    match (&def.post, install.is_empty()) {
        (None, true) => None,
        (Some(post), true) => Some(post.clone()),
        (post, false) => {
            let mut post = post.clone().unwrap_or(ScriptSection {
                script: String::new(),
                args: Vec::new(),
                line: def.apps.first().map_or(1, |a| a.line),
            });
            post.script.push_str(&install);
            Some(post)
        }
    }
}

/// Runs %post in `rootfs` (made writable): the script is written to /.post.script, run as
/// root in `/` with a clean environment, then removed. A non-zero exit fails the build.
pub(crate) fn run_post(
    def: &Definition,
    post: &ScriptSection,
    rootfs: &Path,
    runner: Option<&dyn SectionRunner>,
) -> Result<()> {
    let runner = require_runner(def, post, runner)?;
    let at = format!("{}:{}", def.origin.display(), post.line);
    let sh = resolve_in_root(rootfs, Path::new("/bin/sh"), true)?;
    if !sh.is_file() {
        bail!(
            "{at}: %post runs /bin/sh, which the image does not have; \
             build from an image with a shell or add one with %files"
        );
    }
    let script = rootfs.join(POST_SCRIPT.trim_start_matches('/'));
    write_script(&script, &post.script)?;
    let run = SectionRun {
        section: "post",
        rootfs,
        writable: true,
        argv: section_command(&post.args, POST_SCRIPT),
        clean_env: true,
        env: post_env(),
    };
    let status = runner.run(&run);
    match fs::remove_file(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound && status.is_ok() => {
            return Err(e).with_context(|| format!("cannot remove {}", script.display()))
        }
        _ => {}
    }
    let status = status.with_context(|| format!("{at}: cannot run %post"))?;
    if status != 0 {
        bail!("{at}: %post failed with exit status {status} (see the output above)");
    }
    Ok(())
}

/// Runs %setup on the host, as root, before %files: `/bin/sh -ex [ARGS] SCRIPT` with
/// $APPTAINER_ROOTFS (and $SINGULARITY_ROOTFS) naming the staged root filesystem. The script
/// file lives in `scratch`, outside the image.
pub(crate) fn run_setup(
    def: &Definition,
    setup: &ScriptSection,
    rootfs: &Path,
    scratch: &Path,
) -> Result<()> {
    let at = format!("{}:{}", def.origin.display(), setup.line);
    let script = scratch.join("setup.script");
    write_script(&script, &setup.script)?;
    let argv = section_command(&setup.args, &script.to_string_lossy());
    rctr_log::info!("rctr: running %setup");
    let status = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("APPTAINER_ROOTFS", rootfs)
        .env("SINGULARITY_ROOTFS", rootfs)
        .current_dir(&def.base_dir)
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("{at}: cannot run %setup"));
    let _ = fs::remove_file(&script);
    let status = status?;
    if !status.success() {
        bail!("{at}: %setup failed ({status}; see the output above)");
    }
    Ok(())
}

/// What %post sees besides the clean environment: where to add labels and environment.
fn post_env() -> Vec<(String, String)> {
    let mut env = Vec::new();
    for prefix in ["APPTAINER", "SINGULARITY"] {
        env.push((
            format!("{prefix}_ENVIRONMENT"),
            POST_ENVIRONMENT.to_string(),
        ));
        env.push((format!("{prefix}_LABELS"), BUILD_LABELS.to_string()));
    }
    env
}

fn write_script(path: &Path, script: &str) -> Result<()> {
    // create_new: never write through something %files or the base image put there.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)
        .with_context(|| format!("cannot create the %post script {}", path.display()))?;
    f.write_all(format!("{script}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Takes the labels %post wrote to /.build.labels out of the root filesystem.
pub(crate) fn take_build_labels(rootfs: &Path) -> Result<Vec<(String, String)>> {
    let path = rootfs.join(BUILD_LABELS.trim_start_matches('/'));
    let meta = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.with_context(|| format!("cannot read {}", path.display()))?,
    };
    // A symlink could make us read a host file into the labels.
    if !meta.is_file() {
        bail!(
            "%post made {BUILD_LABELS} something that is not a regular file; \
             only append \"NAME VALUE\" lines to $APPTAINER_LABELS"
        );
    }
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    Ok(parse_labels(&lines))
}

/// Runs %test in the finished (read-only) root filesystem, as `apptainer build` does unless
/// `--notest`. A non-zero exit fails the build.
pub(crate) fn run_test(def: &Definition, rootfs: &Path, runner: &dyn SectionRunner) -> Result<()> {
    let shown = def.origin.display();
    let run = SectionRun {
        section: "test",
        rootfs,
        writable: false,
        argv: vec![TEST_SCRIPT.to_string()],
        clean_env: false,
        env: Vec::new(),
    };
    let status = runner
        .run(&run)
        .with_context(|| format!("{shown}: cannot run %test"))?;
    if status != 0 {
        bail!(
            "{shown}: %test failed with exit status {status} (see the output above); \
             build with --notest to skip it"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::path::PathBuf;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn section_command_follows_apptainer() {
        assert_eq!(
            section_command(&[], "/.post.script"),
            words("/bin/sh -ex /.post.script")
        );
        assert_eq!(
            section_command(&words("-u"), "/.post.script"),
            words("/bin/sh -ex -u /.post.script")
        );
        assert_eq!(
            section_command(&words("-c /bin/bash -l"), "/.post.script"),
            vec!["/bin/sh", "-ex", "-c", "/bin/bash -l /.post.script"]
        );
    }

    /// What a run got: argv, writable, clean_env, the script's text.
    type Seen = (Vec<String>, bool, bool, String);

    /// Records the request, checks the script is in place, and exits with `status`.
    struct Recorder {
        status: i32,
        seen: RefCell<Vec<Seen>>,
    }

    impl SectionRunner for Recorder {
        fn run(&self, run: &SectionRun) -> Result<i32> {
            let script = fs::read_to_string(run.rootfs.join(".post.script")).unwrap_or_default();
            self.seen
                .borrow_mut()
                .push((run.argv.clone(), run.writable, run.clean_env, script));
            assert!(run
                .env
                .contains(&("APPTAINER_LABELS".to_string(), BUILD_LABELS.to_string())));
            Ok(self.status)
        }
    }

    fn def_with_post(script: &str) -> (Definition, ScriptSection) {
        let def = Definition::parse(
            &format!("Bootstrap: scratch\n%post\n{script}\n"),
            Path::new("/defs/x.def"),
            Path::new("/defs"),
        )
        .unwrap();
        let post = def.post.clone().unwrap();
        (def, post)
    }

    fn rootfs_with_shell() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/busybox"), "").unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        (dir, root)
    }

    #[test]
    fn post_runs_its_script_writable_then_removes_it() {
        let (_dir, root) = rootfs_with_shell();
        let (def, post) = def_with_post("echo built > /opt/marker");
        let runner = Recorder {
            status: 0,
            seen: RefCell::new(vec![]),
        };
        run_post(&def, &post, &root, Some(&runner)).unwrap();
        let seen = runner.seen.borrow();
        assert_eq!(seen.len(), 1);
        let (argv, writable, clean, script) = &seen[0];
        assert_eq!(argv, &words("/bin/sh -ex /.post.script"));
        assert!(*writable && *clean);
        assert_eq!(script, "echo built > /opt/marker\n");
        assert!(!root.join(".post.script").exists());
    }

    #[test]
    fn failing_post_names_the_file_line_and_status() {
        let (_dir, root) = rootfs_with_shell();
        let (def, post) = def_with_post("exit 3");
        let runner = Recorder {
            status: 3,
            seen: RefCell::new(vec![]),
        };
        let err = format!(
            "{:#}",
            run_post(&def, &post, &root, Some(&runner)).unwrap_err()
        );
        assert_eq!(
            err,
            "/defs/x.def:2: %post failed with exit status 3 (see the output above)"
        );
        assert!(!root.join(".post.script").exists());
    }

    #[test]
    fn post_needs_a_runner_and_a_shell() {
        let (_dir, root) = rootfs_with_shell();
        let (def, post) = def_with_post("true");
        let err = format!("{:#}", run_post(&def, &post, &root, None).unwrap_err());
        assert!(
            err.contains("/defs/x.def:2: %post needs a container runtime"),
            "{err}"
        );

        fs::remove_file(root.join("bin/sh")).unwrap();
        let runner = Recorder {
            status: 0,
            seen: RefCell::new(vec![]),
        };
        let err = format!(
            "{:#}",
            run_post(&def, &post, &root, Some(&runner)).unwrap_err()
        );
        assert!(err.contains("%post runs /bin/sh"), "{err}");
        assert!(runner.seen.borrow().is_empty());
    }

    #[test]
    fn build_labels_are_taken_out_of_the_image() {
        let dir = tempfile::tempdir().unwrap();
        assert!(take_build_labels(dir.path()).unwrap().is_empty());
        fs::write(
            dir.path().join(".build.labels"),
            "Maintainer Jane Doe\n\n# comment\nVersion 2\n",
        )
        .unwrap();
        assert_eq!(
            take_build_labels(dir.path()).unwrap(),
            vec![
                ("Maintainer".to_string(), "Jane Doe".to_string()),
                ("Version".to_string(), "2".to_string())
            ]
        );
        assert!(!dir.path().join(".build.labels").exists());

        std::os::unix::fs::symlink("/etc/hostname", dir.path().join(".build.labels")).unwrap();
        let err = format!("{:#}", take_build_labels(dir.path()).unwrap_err());
        assert!(err.contains("not a regular file"), "{err}");
    }
}
