//! `rctr exec|run|shell|test` and the hidden init entry point.

use super::job::JobArgs;
use super::run_opts::{plan_for, RunOptions};
use anyhow::Result;
use clap::Args;
use rctr_runtime::launch::{run_foreground, Outcome};

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    #[command(flatten)]
    pub job: JobArgs,
    /// Image: .sif, squashfs file, directory, or instance://NAME
    pub image: String,
    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    #[command(flatten)]
    pub job: JobArgs,
    /// Image: .sif, squashfs file, directory, or instance://NAME
    pub image: String,
    /// Arguments passed to the runscript
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    /// Image: .sif, squashfs file, directory, or instance://NAME
    pub image: String,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    /// Image: .sif, squashfs file, directory, or instance://NAME
    pub image: String,
}

const INSTANCE_PREFIX: &str = "instance://";

/// Prints rctr's own failure (if any) and returns the exit status.
fn finish(outcome: Outcome) -> Result<i32> {
    if let Some(msg) = outcome.error {
        eprintln!("rctr: error: {msg}");
    }
    Ok(outcome.code)
}

/// Runs `argv` in IMAGE, or inside a running instance for `instance://NAME`.
fn run_in(image: &str, opts: &RunOptions, argv: Vec<String>) -> Result<i32> {
    if let Some(name) = image.strip_prefix(INSTANCE_PREFIX) {
        let instances = rctr_instance::Instances::for_current_user()?;
        let rec = instances.get(name)?;
        let mut plan = rec.plan.clone();
        // The current invocation's environment and command, the instance's namespaces.
        let fresh = rctr_runtime::options::build_plan(
            plan.root.clone(),
            &plan.image_display,
            &opts.to_runtime(),
            argv,
        )?;
        plan.env = fresh.env;
        plan.env_overrides = fresh.env_overrides;
        plan.argv = fresh.argv;
        plan.cwd = fresh.cwd;
        return finish(rctr_runtime::join::exec_in(rec.init_pid, &plan)?);
    }
    let mut plan = plan_for(image, opts, argv)?;
    // A terminal on stdin is a host pty: the container must be able to see it.
    plan.host_pts = nix::unistd::isatty(0).unwrap_or(false);
    finish(run_foreground(&plan)?)
}

pub fn exec(a: ExecArgs) -> Result<i32> {
    if let Some(job) = a.job.to_options()? {
        return run_job(&a.image, &a.opts, &job, a.command.clone(), a.command);
    }
    run_in(&a.image, &a.opts, a.command)
}

pub fn run(a: RunArgs) -> Result<i32> {
    let mut argv = vec!["/.singularity.d/runscript".to_string()];
    argv.extend(a.args.iter().cloned());
    if let Some(job) = a.job.to_options()? {
        return run_job(&a.image, &a.opts, &job, a.args, runscript_or_shell(argv));
    }
    run_in(&a.image, &a.opts, runscript_or_shell(argv))
}

/// A checkpointable foreground job (`--ckpt`): see rctr_job.
fn run_job(
    image: &str,
    opts: &RunOptions,
    job: &rctr_job::JobOptions,
    args: Vec<String>,
    argv: Vec<String>,
) -> Result<i32> {
    if image.starts_with(INSTANCE_PREFIX) {
        anyhow::bail!("--ckpt runs a new container from an image, not in instance {image}");
    }
    // Like an instance's: its own pid namespace (init at pid 1), private devpts, stdin
    // /dev/null: nothing of the caller's terminal that a checkpoint would have to hold.
    let plan = plan_for(image, opts, argv)?;
    rctr_job::run_job(job, plan, args)
}

/// Images without a runscript run /bin/sh, as Apptainer does.
fn runscript_or_shell(argv: Vec<String>) -> Vec<String> {
    // Existence is checked inside the container by the wrapper: fall back there.
    let mut out = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "if [ -x /.singularity.d/runscript ]; then exec /.singularity.d/runscript \"$@\"; else exec /bin/sh \"$@\"; fi".to_string(),
        "runscript".to_string(),
    ];
    out.extend(argv.into_iter().skip(1));
    out
}

pub fn shell(a: ShellArgs) -> Result<i32> {
    let argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "if [ -x /bin/bash ]; then exec /bin/bash --norc; else exec /bin/sh; fi".to_string(),
    ];
    run_in(&a.image, &a.opts, argv)
}

pub fn test(a: TestArgs) -> Result<i32> {
    let argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "if [ -x /.singularity.d/test ]; then exec /.singularity.d/test; else echo 'rctr: no test script in this image' >&2; exit 0; fi".to_string(),
    ];
    run_in(&a.image, &a.opts, argv)
}
