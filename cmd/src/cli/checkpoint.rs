//! `rctr checkpoint create|list|verify|delete|instance|export|import|check`.

use super::examples::*;
use super::progress::progress;
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use rctr_checkpoint::dump::{checkpoint_instance, DumpOptions};
use rctr_checkpoint::engine::DumpMode;
use rctr_checkpoint::store::{archive, CheckpointRow, CheckpointStore, GenerationRow};
use rctr_checkpoint::{CkptConf, EngineKind};
use rctr_instance::Instances;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum CheckpointCommand {
    /// Create an empty checkpoint to launch instances with
    #[command(after_help = EX_CHECKPOINT_CREATE)]
    Create {
        /// Name of the new checkpoint
        name: String,
        /// Checkpoint engine: criu (transparent, whole process tree) or app (the application
        /// writes its own state; see docs/checkpoint.md). Default: `engine:` in ckpt-conf.yaml
        #[arg(long, value_name = "ENGINE")]
        engine: Option<EngineKind>,
        /// Keep the images in DIR/NAME (e.g. on a scratch file system) instead of under
        /// ~/.rctr; default $RCTR_CHECKPOINT_DIR when set
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Checkpoint engine configuration (default: $RCTR_CKPT_CONF, /etc/rctr/ckpt-conf.yaml, built-in)
        #[arg(long, value_name = "FILE")]
        ckpt_conf: Option<PathBuf>,
    },
    /// List checkpoints, or the generations of one
    #[command(after_help = EX_CHECKPOINT_LIST)]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Show the generations of this checkpoint
        name: Option<String>,
    },
    /// Check a generation's images and manifest without restoring
    #[command(after_help = EX_CHECKPOINT_VERIFY)]
    Verify {
        /// The checkpoint
        name: String,
        /// Generation to check (default: the newest)
        #[arg(short, long)]
        generation: Option<u32>,
    },
    /// Delete a checkpoint and all its images
    #[command(after_help = EX_CHECKPOINT_DELETE)]
    Delete {
        /// The checkpoint
        name: String,
        /// Delete even if an instance uses it
        #[arg(short, long)]
        force: bool,
    },
    /// Checkpoint a running instance (started with --ckpt-launch or --ckpt-restart)
    #[command(after_help = EX_CHECKPOINT_INSTANCE)]
    Instance(InstanceArgs),
    /// Write one generation of a checkpoint to a single compressed file, for another host
    #[command(after_help = EX_CHECKPOINT_EXPORT)]
    Export {
        /// The checkpoint
        name: String,
        /// Generation to export (default: the newest)
        #[arg(short, long)]
        generation: Option<u32>,
        /// The archive to write (a new file; `-` writes to standard output)
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Make a checkpoint from a file written by `checkpoint export`, verified first
    #[command(after_help = EX_CHECKPOINT_IMPORT)]
    Import {
        /// The archive (`-` reads standard input)
        file: PathBuf,
        /// Name of the new checkpoint (default: the name it was exported under)
        #[arg(long, value_name = "NEW")]
        name: Option<String>,
        /// Keep the images in DIR/NAME instead of under ~/.rctr; default $RCTR_CHECKPOINT_DIR when set
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check that the checkpoint engine works on this host
    #[command(after_help = EX_CHECKPOINT_CHECK)]
    Check {
        /// Checkpoint engine configuration to check (default: $RCTR_CKPT_CONF, /etc/rctr/ckpt-conf.yaml, built-in)
        #[arg(long, value_name = "FILE")]
        ckpt_conf: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct InstanceArgs {
    /// Stop the instance after a successful checkpoint
    #[arg(long)]
    pub stop: bool,
    /// Keep this many generations, pruning older ones (0: keep all; default from ckpt-conf.yaml)
    #[arg(long, value_name = "N")]
    pub keep: Option<u32>,
    /// Fail at once if another checkpoint of the same checkpoint is running
    #[arg(long)]
    pub no_wait: bool,
    /// Checkpoint engine configuration (default: $RCTR_CKPT_CONF, /etc/rctr/ckpt-conf.yaml, built-in)
    #[arg(long, value_name = "FILE")]
    pub ckpt_conf: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// The running instance to checkpoint
    pub instance: String,
}

pub fn run(c: CheckpointCommand) -> Result<i32> {
    match c {
        CheckpointCommand::Create {
            name,
            engine,
            dir,
            ckpt_conf,
        } => {
            let engine = match engine {
                Some(e) => e,
                // Only the default engine's name is needed, not the engine itself.
                None => CkptConf::load_for(ckpt_conf.as_deref(), EngineKind::App)?.engine,
            };
            // CRIU needs root: a user's CRIU checkpoints are kept by the checkpoint helper.
            if let (EngineKind::Criu, None, None, Some(helper)) =
                (engine, &dir, &ckpt_conf, crate::suid::for_user())
            {
                return crate::suid::exec(&helper, &crate::suid::Verb::Create { name }, None);
            }
            let ckpt =
                CheckpointStore::for_current_user()?.create(&name, engine, dir.as_deref())?;
            rctr_log::info!(
                "checkpoint {name} ({engine} engine) created in {}",
                ckpt.dir().display()
            );
            Ok(0)
        }
        CheckpointCommand::List { json, name: None } => list(json),
        CheckpointCommand::List {
            json,
            name: Some(n),
        } => list_generations(&n, json),
        CheckpointCommand::Verify { name, generation } => verify(&name, generation),
        CheckpointCommand::Delete { name, force } => delete(&name, force),
        CheckpointCommand::Instance(a) => instance(a),
        CheckpointCommand::Check { ckpt_conf } => check(ckpt_conf),
        CheckpointCommand::Export {
            name,
            generation,
            output,
        } => export(&name, generation, &output),
        CheckpointCommand::Import { file, name, dir } => {
            import(&file, name.as_deref(), dir.as_deref())
        }
    }
}

fn export(name: &str, generation: Option<u32>, output: &Path) -> Result<i32> {
    let store = CheckpointStore::for_current_user()?;
    let mut bar = progress(format!("exporting {name}"));
    let (r, to) = if output == Path::new("-") {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            bail!("refusing to write a checkpoint archive to a terminal: redirect standard output, or name a file with -o FILE");
        }
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let r = archive::export(&store, name, generation, &mut out, &mut *bar)?;
        out.flush()?;
        (r, "standard output".to_string())
    } else {
        let r = archive::export_to_file(&store, name, generation, output, &mut *bar)?;
        let size = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
        (r, format!("{} ({})", output.display(), size_text(size)))
    };
    rctr_log::info!(
        "exported checkpoint {} generation {} ({} files, {}) to {to}",
        r.checkpoint,
        r.generation,
        r.files,
        size_text(r.bytes)
    );
    Ok(0)
}

fn import(file: &Path, name: Option<&str>, dir: Option<&Path>) -> Result<i32> {
    let store = CheckpointStore::for_current_user()?;
    let shown = if file == Path::new("-") {
        "standard input".to_string()
    } else {
        file.display().to_string()
    };
    let mut bar = progress(format!("importing {shown}"));
    let r = if file == Path::new("-") {
        let input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
        archive::import(&store, input, &shown, name, dir, &mut *bar)?
    } else {
        archive::import_file(&store, file, name, dir, &mut *bar)?
    };
    rctr_log::info!(
        "imported checkpoint {} ({} engine, {}) from {shown}: generation {} of '{}' taken on host {}",
        r.checkpoint,
        r.engine,
        size_text(r.bytes),
        r.from_generation,
        r.from_checkpoint,
        r.from_host
    );
    Ok(0)
}

fn list(json: bool) -> Result<i32> {
    let store = CheckpointStore::for_current_user()?;
    let instances = Instances::for_current_user()?;
    let mut rows: Vec<CheckpointRow> = vec![];
    for ckpt in store.list()? {
        let users = ckpt.users(&instances)?;
        rows.push(ckpt.row(users)?);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "checkpoints": rows }))?
        );
        return Ok(0);
    }
    println!(
        "{:<20} {:<7} {:<20} {:<20} {:>10}  USED BY",
        "NAME", "ENGINE", "CREATED", "LAST CHECKPOINT", "SIZE"
    );
    for r in rows {
        println!(
            "{:<20} {:<7} {:<20} {:<20} {:>10}  {}",
            r.name,
            r.engine.as_str(),
            time_text(Some(r.created)),
            time_text(r.last_checkpoint),
            size_text(r.size_bytes),
            if r.used_by.is_empty() {
                "-".to_string()
            } else {
                r.used_by.join(",")
            }
        );
    }
    // CRIU checkpoints the checkpoint helper keeps for this user.
    if let Some(helper) = crate::suid::for_user() {
        let listing = crate::suid::output(&helper, &crate::suid::Verb::List).unwrap_or_default();
        for row in listing.lines().skip(1) {
            println!("{row}");
        }
    }
    Ok(0)
}

fn time_text(secs: Option<u64>) -> String {
    match secs {
        Some(s) => rctr_sif::format_utc(s as i64).chars().take(19).collect(),
        None => "-".to_string(),
    }
}

pub(super) fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn delete(name: &str, force: bool) -> Result<i32> {
    let store = CheckpointStore::for_current_user()?;
    if let (Err(_), false, Some(helper)) = (store.open(name), force, crate::suid::for_user()) {
        let verb = crate::suid::Verb::Delete { name: name.into() };
        return crate::suid::exec(&helper, &verb, None);
    }
    let ckpt = store.open(name)?;
    let users = ckpt.users(&Instances::for_current_user()?)?;
    ckpt.delete(force, &users)?;
    rctr_log::info!("checkpoint {name} deleted");
    Ok(0)
}

fn instance(a: InstanceArgs) -> Result<i32> {
    let instances = Instances::for_current_user()?;
    // An instance the checkpoint helper runs for this user is checkpointed by it.
    if let Some(helper) = crate::suid::for_user() {
        let plain = a.keep.is_none() && !a.no_wait && a.ckpt_conf.is_none() && !a.json;
        if plain && !instances.list(None)?.iter().any(|r| r.name == a.instance) {
            let verb = crate::suid::Verb::Checkpoint {
                name: a.instance.clone(),
                stop: a.stop,
            };
            return crate::suid::exec(&helper, &verb, None);
        }
    }
    let opts = DumpOptions {
        stop: a.stop,
        keep: a.keep,
        no_wait: a.no_wait,
        // An instance about to be stopped must do nothing after its checkpoint (its files
        // would no longer match the images).
        mode: DumpMode {
            leave_running: !a.stop,
            ..DumpMode::default()
        },
    };
    let r = checkpoint_instance(&instances, &a.instance, &opts, a.ckpt_conf.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let frozen = r
            .frozen_ms
            .map(|ms| format!("{ms:.1} ms"))
            .unwrap_or_else(|| "unknown".into());
        println!(
            "checkpointed instance {} into {} generation {}: {} in {} ms, application frozen {}{}",
            r.instance,
            r.checkpoint,
            r.generation,
            size_text(r.size_bytes),
            r.wall_ms,
            frozen,
            if r.stopped { ", instance stopped" } else { "" }
        );
    }
    Ok(0)
}

fn check(conf: Option<PathBuf>) -> Result<i32> {
    let report = rctr_checkpoint::doctor::diagnose(conf.as_deref());
    println!("{report}");
    Ok(if report.ok() { 0 } else { 1 })
}

fn list_generations(name: &str, json: bool) -> Result<i32> {
    let ckpt = CheckpointStore::for_current_user()?.open(name)?;
    let rows: Vec<GenerationRow> = ckpt.generation_rows()?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "name": name, "engine": ckpt.engine(), "generations": rows })
            )?
        );
        return Ok(0);
    }
    println!(
        "{:<4} {:<20} {:>10} {:>10}  INSTANCE",
        "GEN", "CREATED", "SIZE", "FROZEN"
    );
    for r in rows {
        let mark = if r.latest { "*" } else { "" };
        println!(
            "{:<4} {:<20} {:>10} {:>10}  {}",
            format!("{}{mark}", r.generation),
            time_text(r.created),
            size_text(r.size_bytes),
            r.frozen_ms
                .map(|f| format!("{f:.1} ms"))
                .unwrap_or_else(|| "-".into()),
            r.instance.as_deref().unwrap_or("-")
        );
    }
    Ok(0)
}

fn verify(name: &str, generation: Option<u32>) -> Result<i32> {
    let ckpt = CheckpointStore::for_current_user()?.open(name)?;
    let _lock = ckpt.lock()?;
    let g = ckpt.select(generation)?;
    ckpt.verify(&g, None, false)?;
    println!(
        "checkpoint {name} generation {}: {} image files intact",
        g.number,
        g.manifest.files.len()
    );
    Ok(0)
}
