//! `rctr exec|run|shell|test` and the hidden init entry point.

use super::job::JobArgs;
use super::run_opts::{plan_for, RunOptions};
use anyhow::Result;
use clap::Args;
use rctr_runtime::launch::{run_foreground, Outcome};

// Options end at IMAGE, as with Apptainer: everything after it (`-c`, `--env`, ...)
// belongs to the container. clap only stops parsing options inside a trailing
// positional, so IMAGE is the first value of one.

#[derive(Args, Debug)]
pub struct ExecArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    /// Run in SCIF app NAME of the image (its %apprun, environment, bin and lib)
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    #[command(flatten)]
    pub job: JobArgs,
    /// Image (.sif, squashfs file, directory, or instance://NAME), then the command and
    /// its arguments
    #[arg(value_names = ["IMAGE", "COMMAND"], num_args = 2.., required = true, trailing_var_arg = true)]
    pub words: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    /// Run in SCIF app NAME of the image (its %apprun, environment, bin and lib)
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    #[command(flatten)]
    pub job: JobArgs,
    /// Image, then the runscript's arguments
    #[arg(value_names = ["IMAGE", "ARGS"], num_args = 1.., required = true, trailing_var_arg = true)]
    pub words: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ShellArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    /// Image, then arguments of the shell
    #[arg(value_names = ["IMAGE", "ARGS"], num_args = 1.., required = true, trailing_var_arg = true)]
    pub words: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    /// Run in SCIF app NAME of the image (its %apprun, environment, bin and lib)
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// Image, then the test script's arguments
    #[arg(value_names = ["IMAGE", "ARGS"], num_args = 1.., required = true, trailing_var_arg = true)]
    pub words: Vec<String>,
}

/// IMAGE and what follows it; clap guarantees at least one word.
fn split_words(words: Vec<String>) -> (String, Vec<String>) {
    let mut it = words.into_iter();
    let image = it.next().unwrap_or_default();
    (image, it.collect())
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
            &opts.to_runtime()?,
            argv,
        )?;
        plan.env = fresh.env;
        plan.env_overrides = fresh.env_overrides;
        plan.argv = fresh.argv;
        plan.cwd = fresh.cwd;
        plan.cwd_explicit = fresh.cwd_explicit;
        plan.env_no_eval = fresh.env_no_eval;
        return finish(rctr_runtime::join::exec_in(rec.init_pid, &plan)?);
    }
    let mut plan = plan_for(image, opts, argv)?;
    // A terminal on stdin is a host pty: the container must be able to see it.
    plan.host_pts = nix::unistd::isatty(0).unwrap_or(false);
    // Plain foreground containers get the host's /dev, as with Apptainer; instances
    // and checkpointable jobs keep the minimal one (CRIU cannot dump host devices).
    if !opts.contained() {
        plan.dev = rctr_runtime::plan::DevMode::Host;
    }
    finish(run_foreground(&plan)?)
}

/// The apps of `image` (empty for an instance, whose image is checked when it starts).
fn check_app(image: &str, app: &str) -> Result<()> {
    if image.starts_with(INSTANCE_PREFIX) {
        return Ok(());
    }
    let source = rctr_image::ImageSource::open(std::path::Path::new(image))?;
    if !source.exists(format!("{}/{app}", rctr_image::APPS_DIR))? {
        let apps = source.list_dir(rctr_image::APPS_DIR)?;
        let have = if apps.is_empty() {
            "it has no apps".to_string()
        } else {
            format!("its apps: {}", apps.join(", "))
        };
        anyhow::bail!("no app {app:?} in {image}; {have}");
    }
    Ok(())
}

/// `argv` in app `app`'s environment, when one is asked for.
fn in_app(image: &str, app: &Option<String>, argv: Vec<String>) -> Result<Vec<String>> {
    match app {
        None => Ok(argv),
        Some(app) => {
            check_app(image, app)?;
            Ok(rctr_image::app_command(app, argv))
        }
    }
}

/// What `run --app NAME` runs: the app's runscript, or a message when it has none.
fn app_script(
    image: &str,
    app: &str,
    script: String,
    what: &str,
    args: Vec<String>,
) -> Result<Vec<String>> {
    check_app(image, app)?;
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        format!(
            "if [ -x {script} ]; then exec {script} \"$@\"; else echo 'rctr: app {app} has no {what}' >&2; exit 1; fi"
        ),
        app.to_string(),
    ];
    argv.extend(args);
    Ok(rctr_image::app_command(app, argv))
}

pub fn exec(a: ExecArgs) -> Result<i32> {
    let (image, command) = split_words(a.words);
    if let Some(code) =
        job_through_helper(true, &image, &a.opts, &a.job, a.app.is_some(), &command)?
    {
        return Ok(code);
    }
    let command = in_app(&image, &a.app, command)?;
    if let Some(job) = a.job.to_options()? {
        return run_job(&image, &a.opts, &job, command.clone(), command);
    }
    run_in(&image, &a.opts, command)
}

pub fn run(a: RunArgs) -> Result<i32> {
    let (image, args) = split_words(a.words);
    if let Some(code) = job_through_helper(false, &image, &a.opts, &a.job, a.app.is_some(), &args)?
    {
        return Ok(code);
    }
    let argv = match &a.app {
        Some(app) => app_script(
            &image,
            app,
            rctr_image::app_runscript(app),
            "%apprun",
            args.clone(),
        )?,
        None => {
            let mut argv = vec!["/.singularity.d/runscript".to_string()];
            argv.extend(args.iter().cloned());
            runscript_or_shell(argv)
        }
    };
    if let Some(job) = a.job.to_options()? {
        return run_job(&image, &a.opts, &job, args, argv);
    }
    run_in(&image, &a.opts, argv)
}

/// A user's checkpointable job (`run`/`exec --ckpt...`) with a CRIU checkpoint they do not
/// have themselves: the checkpoint helper runs it as root, the application as the user.
/// None: not a request for the helper.
fn job_through_helper(
    exec: bool,
    image: &str,
    opts: &RunOptions,
    job: &JobArgs,
    app: bool,
    args: &[String],
) -> Result<Option<i32>> {
    let (choice, ckpt) = match (&job.ckpt, &job.ckpt_launch, &job.ckpt_restart) {
        (Some(n), _, _) => (crate::suid::JobCheckpoint::Auto, n),
        (_, Some(n), _) => (crate::suid::JobCheckpoint::Launch, n),
        (_, _, Some(n)) => (crate::suid::JobCheckpoint::Restart, n),
        _ => return Ok(None),
    };
    let Some(helper) = crate::suid::for_user() else {
        return Ok(None);
    };
    if job.ckpt_engine == Some(rctr_checkpoint::EngineKind::App)
        || rctr_checkpoint::store::CheckpointStore::for_current_user()?
            .open(ckpt)
            .is_ok()
    {
        return Ok(None);
    }
    let plain = format!("{opts:?}") == format!("{:?}", RunOptions::default())
        && !app
        && job.ckpt_conf.is_none()
        && job.generation.is_none()
        && !job.ckpt_force
        && !job.tcp_established
        && !job.lazy_pages
        // A take-over signals another job, which the helper (root) must not do for a user.
        && job.ckpt_take_over.is_none();
    if !plain {
        anyhow::bail!(
            "checkpoint {ckpt} is kept by the checkpoint helper, which runs jobs with no run options (the image, the command and the checkpoint settings: --name, --ckpt-interval, --ckpt-signal, --ckpt-then, --ckpt-on-term, --ckpt-keep)"
        );
    }
    let mut signals = vec![];
    for s in &job.ckpt_signal {
        signals.push(s.trim_start_matches("SIG").to_string());
    }
    let verb = crate::suid::Verb::Job(crate::suid::Job {
        exec,
        choice,
        checkpoint: ckpt.clone(),
        name: job.name.clone(),
        interval_secs: job.ckpt_interval.map(|d| d.as_secs().max(1)),
        signals,
        then: Some(
            match job.ckpt_then {
                rctr_job::Then::Continue => "continue",
                rctr_job::Then::Exit => "exit",
                rctr_job::Then::Requeue => "requeue",
            }
            .to_string(),
        ),
        on_term: job.ckpt_on_term,
        keep: job.ckpt_keep,
        args: args.to_vec(),
    });
    let files = crate::suid::HandedOver {
        image: std::path::Path::new(image),
        logs: None,
    };
    crate::suid::exec(&helper, &verb, Some(files)).map(Some)
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
    let mut plan = plan_for(image, opts, argv)?;
    crate::suid::adopt_handed_over_image(&mut plan);
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
    let (image, args) = split_words(a.words);
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "if [ -x /bin/bash ]; then exec /bin/bash --norc \"$@\"; else exec /bin/sh \"$@\"; fi"
            .to_string(),
        "shell".to_string(),
    ];
    argv.extend(args);
    run_in(&image, &a.opts, argv)
}

pub fn test(a: TestArgs) -> Result<i32> {
    let (image, args) = split_words(a.words);
    if let Some(app) = &a.app {
        let argv = app_script(&image, app, rctr_image::app_test(app), "%apptest", args)?;
        return run_in(&image, &a.opts, argv);
    }
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "if [ -x /.singularity.d/test ]; then exec /.singularity.d/test \"$@\"; else echo 'rctr: no test script in this image' >&2; exit 0; fi".to_string(),
        "test".to_string(),
    ];
    argv.extend(args);
    run_in(&image, &a.opts, argv)
}
