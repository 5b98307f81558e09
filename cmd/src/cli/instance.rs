//! `rctr instance start|run|list|stop`.

use super::examples::*;
use super::run_opts::{plan_for, RunOptions};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rctr_checkpoint::restore::{Placement, Target};
use rctr_instance::{InstanceRecord, Instances, StartRequest, StopOptions};
use rctr_runtime::launch::AppStart;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum InstanceCommand {
    /// Start an instance running the image's startscript
    #[command(after_help = EX_INSTANCE_START)]
    Start(StartArgs),
    /// Start an instance running the image's runscript
    #[command(after_help = EX_INSTANCE_RUN)]
    Run(StartArgs),
    /// List running instances
    #[command(after_help = EX_INSTANCE_LIST)]
    List(ListArgs),
    /// Stop instances by name, by glob pattern, or all of them
    #[command(after_help = EX_INSTANCE_STOP)]
    Stop(StopArgs),
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub opts: RunOptions,
    /// Inject the checkpoint engine and the checkpoint NAME (see `rctr checkpoint create`)
    #[arg(long, value_name = "NAME", conflicts_with = "ckpt_restart")]
    pub ckpt_launch: Option<String>,
    /// Restart from the newest checkpoint in NAME instead of starting the application
    #[arg(long, value_name = "NAME")]
    pub ckpt_restart: Option<String>,
    /// With --ckpt-restart: restore this generation instead of the newest
    #[arg(long, value_name = "G", requires = "ckpt_restart")]
    pub generation: Option<u32>,
    /// With --ckpt-restart: restore even if the image differs from the checkpoint's
    #[arg(long, requires = "ckpt_restart")]
    pub force: bool,
    /// With --ckpt-restart (CRIU): restore established TCP connections live, not closed; their
    /// peers must still be there (the application's own processes, a client that kept its
    /// connection)
    #[arg(long, requires = "ckpt_restart")]
    pub tcp_established: bool,
    /// With --ckpt-restart (CRIU): start the application before its memory is back; its pages
    /// arrive in the background and on first touch (CRIU lazy-pages over userfaultfd)
    #[arg(long, requires = "ckpt_restart")]
    pub lazy_pages: bool,
    /// Checkpoint engine configuration (default: $RCTR_CKPT_CONF, /etc/rctr/ckpt-conf.yaml, built-in)
    #[arg(long, value_name = "FILE")]
    pub ckpt_conf: Option<PathBuf>,
    /// Image: .sif, squashfs file or directory
    pub image: String,
    /// Instance name, then the script's arguments: options end at NAME, what follows is
    /// the container's
    #[arg(value_names = ["NAME", "ARGS"], num_args = 1.., required = true, trailing_var_arg = true)]
    pub words: Vec<String>,
}

impl StartArgs {
    /// NAME and the script's arguments.
    fn name_and_args(&self) -> (String, Vec<String>) {
        let name = self.words.first().cloned().unwrap_or_default();
        (name, self.words.iter().skip(1).cloned().collect())
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print JSON, in Apptainer's `instance list --json` layout
    #[arg(long)]
    pub json: bool,
    /// Only instances whose name matches this glob
    pub pattern: Option<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Stop all instances
    #[arg(short, long)]
    pub all: bool,
    /// Send SIGKILL at once
    #[arg(short = 'F', long)]
    pub force: bool,
    /// Signal to send first (name or number)
    #[arg(short, long, default_value = "TERM")]
    pub signal: String,
    /// Seconds to wait before SIGKILL
    #[arg(short, long, default_value_t = 10)]
    pub timeout: u64,
    /// Instance name, or a glob pattern (`*`, `?`) like `instance list` takes: `'web*'`
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

pub fn run(c: InstanceCommand) -> Result<i32> {
    match c {
        InstanceCommand::Start(a) => start(a, "/.singularity.d/startscript"),
        InstanceCommand::Run(a) => start(a, "/.singularity.d/runscript"),
        InstanceCommand::List(a) => list(a),
        InstanceCommand::Stop(a) => stop(a),
    }
}

/// A user's `--ckpt-launch`/`--ckpt-restart` of a checkpoint they do not have themselves
/// (one made with the checkpoint helper): the helper starts the instance as root, running
/// the application as the user. None: not a request for the helper.
fn through_helper(a: &StartArgs, name: &str, args: &[String], script: &str) -> Result<Option<i32>> {
    let Some(ckpt) = a.ckpt_launch.as_ref().or(a.ckpt_restart.as_ref()) else {
        return Ok(None);
    };
    let Some(helper) = crate::suid::for_user() else {
        return Ok(None);
    };
    if rctr_checkpoint::store::CheckpointStore::for_current_user()?
        .open(ckpt)
        .is_ok()
    {
        return Ok(None);
    }
    let plain = format!("{:?}", a.opts) == format!("{:?}", RunOptions::default())
        && a.ckpt_conf.is_none()
        && a.generation.is_none()
        && !a.force
        && !a.tcp_established
        && !a.lazy_pages;
    if !plain || !script.ends_with("startscript") {
        bail!(
            "checkpoint {ckpt} is kept by the checkpoint helper, which starts instances with `instance start` and no options (the image, a name and the application's arguments)"
        );
    }
    let verb = crate::suid::Verb::Start {
        restart: a.ckpt_restart.is_some(),
        checkpoint: ckpt.clone(),
        name: name.to_string(),
        args: args.to_vec(),
    };
    let (out, err) = Instances::for_current_user()?.log_paths(name);
    let files = crate::suid::HandedOver {
        image: Path::new(&a.image),
        logs: Some((&out, &err)),
    };
    crate::suid::exec(&helper, &verb, Some(files)).map(Some)
}

fn start(a: StartArgs, script: &str) -> Result<i32> {
    let (name, args) = a.name_and_args();
    rctr_state::validate_name("instance", &name)?;
    if let Some(code) = through_helper(&a, &name, &args, script)? {
        return Ok(code);
    }
    let instances = match crate::suid::handed_over_logs() {
        Some((out, err)) => Instances::for_current_user()?.log_to(out, err),
        None => Instances::for_current_user()?,
    };
    // A missing script is not an error for Apptainer's instances: they just idle.
    let launcher =
        format!("if [ -x {script} ]; then exec {script} \"$@\"; else exec sleep 2147483647; fi");
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        launcher,
        "instance".to_string(),
    ];
    argv.extend(args.iter().cloned());
    let mut plan = plan_for(&a.image, &a.opts, argv)?;
    crate::suid::adopt_handed_over_image(&mut plan);
    let rec = if let Some(ckpt) = &a.ckpt_launch {
        let target = Target {
            name: name.clone(),
            args: args.clone(),
            plan,
            placement: Placement::Instance,
        };
        rctr_checkpoint::restore::launch(&instances, a.ckpt_conf.as_deref(), ckpt, target)?
            .record()
            .clone()
    } else if let Some(ckpt) = &a.ckpt_restart {
        let opts = rctr_checkpoint::restore::RestartOptions {
            generation: a.generation,
            force: a.force,
            tcp_established: a.tcp_established,
            lazy_pages: a.lazy_pages,
            fall_back: false,
        };
        let target = Target {
            name: name.clone(),
            args: args.clone(),
            plan,
            placement: Placement::Instance,
        };
        rctr_checkpoint::restore::restart(&instances, a.ckpt_conf.as_deref(), ckpt, target, &opts)?
            .record()
            .clone()
    } else {
        instances.start(StartRequest {
            name: name.clone(),
            args: args.clone(),
            plan,
            checkpoint: None,
            start: AppStart::Exec,
            settle_limit: rctr_runtime::launch::SETTLE_LIMIT,
        })?
    };
    rctr_log::info!(
        "instance started successfully: {} (pid {})",
        rec.name,
        rec.init_pid
    );
    Ok(0)
}

/// The image of an instance: the path it was opened by when it came as a descriptor.
/// The instances the checkpoint helper runs for this user: its listing without the header.
fn helper_rows(verb: &crate::suid::Verb) -> Vec<String> {
    match crate::suid::for_user() {
        Some(helper) => crate::suid::output(&helper, verb)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect(),
        None => vec![],
    }
}

fn list(a: ListArgs) -> Result<i32> {
    let instances = Instances::for_current_user()?;
    let (all, dead) = instances.list_with_dead(a.pattern.as_deref())?;
    if a.json {
        let items: Vec<serde_json::Value> = all.iter().map(json_item).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "instances": items }))?
        );
        return Ok(0);
    }
    println!("{:<16} {:<8} {:<15} IMAGE", "INSTANCE NAME", "PID", "IP");
    for r in &all {
        println!(
            "{:<16} {:<8} {:<15} {}{}",
            r.name,
            r.init_pid,
            r.ip.clone().unwrap_or_default(),
            r.plan.root.path.display(),
            if r.foreground {
                " (foreground job)"
            } else {
                ""
            }
        );
    }
    for r in &dead {
        println!(
            "{:<16} {:<8} {:<15} {} (exited; record removed)",
            r.name,
            "-",
            "",
            r.plan.root.path.display()
        );
    }
    if a.pattern.is_none() {
        for row in helper_rows(&crate::suid::Verb::Instances) {
            println!("{row}");
        }
    }
    Ok(0)
}

fn json_item(r: &InstanceRecord) -> serde_json::Value {
    serde_json::json!({
        "instance": r.name,
        "pid": r.init_pid,
        "app_pid": r.app_host_pid,
        "ip": r.ip.clone().unwrap_or_default(),
        "img": r.plan.root.path,
        "checkpoint": r.checkpoint,
        "started": r.started,
        "foreground": r.foreground,
    })
}

/// Whether `instance stop` was given a glob rather than a name (names cannot hold these).
fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?'])
}

pub(crate) fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .with_context(|| format!("unknown signal number {n}"));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .with_context(|| format!("unknown signal '{s}': use a name like TERM or a number"))
}

fn stop(a: StopArgs) -> Result<i32> {
    let instances = Instances::for_current_user()?;
    // An instance the checkpoint helper runs for this user is stopped by it.
    if let (Some(n), false, Some(helper)) = (&a.name, a.all, crate::suid::for_user()) {
        if !is_pattern(n) && !instances.list(None)?.iter().any(|r| &r.name == n) {
            return crate::suid::exec(&helper, &crate::suid::Verb::Stop { name: n.clone() }, None);
        }
    }
    let opts = StopOptions {
        signal: parse_signal(&a.signal)?,
        timeout: Duration::from_secs(a.timeout),
        force: a.force,
    };
    let names: Vec<String> = match (&a.name, a.all) {
        (_, true) => instances.list(None)?.into_iter().map(|r| r.name).collect(),
        (Some(p), false) if is_pattern(p) => {
            let found: Vec<String> = instances
                .list(Some(p))?
                .into_iter()
                .map(|r| r.name)
                .collect();
            if found.is_empty() {
                bail!("no instance matches {p:?} (see `rctr instance list`)");
            }
            found
        }
        (Some(n), false) => vec![n.clone()],
        (None, false) => bail!("name the instance to stop, or use --all"),
    };
    let mut failed = 0;
    for n in &names {
        match instances.stop(n, &opts) {
            Ok(()) => rctr_log::info!("stopping {n} instance: done"),
            Err(e) if names.len() == 1 => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("rctr: error: {e:#}");
            }
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
