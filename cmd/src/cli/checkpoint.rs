//! `rctr checkpoint create|list|delete|instance|check`.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use rctr_checkpoint::dump::{checkpoint_instance, DumpOptions};
use rctr_checkpoint::store::{dir_size, latest_generation, CheckpointStore};
use rctr_instance::Instances;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum CheckpointCommand {
    /// Create an empty checkpoint to launch instances with
    Create { name: String },
    /// List checkpoints, or the generations of one
    List {
        #[arg(long)]
        json: bool,
        /// Show the generations of this checkpoint
        name: Option<String>,
    },
    /// Check a generation's images and manifest without restoring
    Verify {
        name: String,
        /// Generation to check (default: the newest)
        #[arg(short, long)]
        generation: Option<u32>,
    },
    /// Delete a checkpoint and all its images
    Delete {
        name: String,
        /// Delete even if an instance uses it
        #[arg(short, long)]
        force: bool,
    },
    /// Checkpoint a running instance (started with --ckpt-launch or --ckpt-restart)
    Instance(InstanceArgs),
    /// Check that the checkpoint engine works on this host
    Check {
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
    #[arg(long, value_name = "FILE")]
    pub ckpt_conf: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    pub instance: String,
}

pub fn run(c: CheckpointCommand) -> Result<i32> {
    match c {
        CheckpointCommand::Create { name } => {
            let dir = CheckpointStore::for_current_user()?.create(&name)?;
            eprintln!("checkpoint {name} created in {}", dir.display());
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
    }
}

/// Names of running instances using checkpoint `name`.
fn users_of(instances: &Instances, name: &str) -> Result<Vec<String>> {
    Ok(instances
        .list(None)?
        .into_iter()
        .filter(|r| r.checkpoint.as_deref() == Some(name))
        .map(|r| r.name)
        .collect())
}

fn list(json: bool) -> Result<i32> {
    let store = CheckpointStore::for_current_user()?;
    let instances = Instances::for_current_user()?;
    let mut rows = vec![];
    for name in store.names()? {
        let meta = store.meta(&name)?;
        let dir = store.open(&name)?;
        let latest = latest_generation(&dir)?;
        let last = latest
            .and_then(|g| {
                rctr_checkpoint::store::read_manifest(
                    &dir.join(rctr_checkpoint::store::generation_dir_name(g)),
                )
                .ok()
            })
            .map(|m| m.created);
        rows.push(serde_json::json!({
            "name": name,
            "engine": meta.engine,
            "created": meta.created,
            "last_checkpoint": last,
            "generation": latest,
            "size_bytes": dir_size(&dir),
            "used_by": users_of(&instances, &name)?,
        }));
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
        let used: Vec<String> = serde_json::from_value(r["used_by"].clone()).unwrap_or_default();
        println!(
            "{:<20} {:<7} {:<20} {:<20} {:>10}  {}",
            r["name"].as_str().unwrap_or(""),
            r["engine"].as_str().unwrap_or(""),
            time_text(r["created"].as_u64()),
            time_text(r["last_checkpoint"].as_u64()),
            size_text(r["size_bytes"].as_u64().unwrap_or(0)),
            if used.is_empty() {
                "-".to_string()
            } else {
                used.join(",")
            }
        );
    }
    Ok(0)
}

fn time_text(secs: Option<u64>) -> String {
    match secs {
        Some(s) => rctr_sif::format_utc(s as i64).chars().take(19).collect(),
        None => "-".to_string(),
    }
}

fn size_text(bytes: u64) -> String {
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
    let dir = store.open(name)?;
    let users = users_of(&Instances::for_current_user()?, name)?;
    if !users.is_empty() && !force {
        bail!(
            "checkpoint '{name}' is used by running instance(s) {}: stop them first or use --force",
            users.join(", ")
        );
    }
    // Wait for a checkpoint or restore in progress to finish.
    let _lock = rctr_state::lock_exclusive(&dir.join(".lock"))?;
    store.delete(name)?;
    eprintln!("checkpoint {name} deleted");
    Ok(0)
}

fn instance(a: InstanceArgs) -> Result<i32> {
    let instances = Instances::for_current_user()?;
    let conf = rctr_checkpoint::CkptConf::load(a.ckpt_conf.as_deref())?;
    let opts = DumpOptions {
        stop: a.stop,
        keep: a.keep,
        no_wait: a.no_wait,
    };
    let r = checkpoint_instance(&instances, &a.instance, &opts, conf.keep)?;
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
    let store = CheckpointStore::for_current_user()?;
    let dir = store.open(name)?;
    let latest = latest_generation(&dir)?;
    let mut rows = vec![];
    for g in rctr_checkpoint::store::generations(&dir)? {
        let gen_dir = dir.join(rctr_checkpoint::store::generation_dir_name(g));
        let m = rctr_checkpoint::store::read_manifest(&gen_dir).ok();
        rows.push(serde_json::json!({
            "generation": g,
            "latest": latest == Some(g),
            "created": m.as_ref().map(|m| m.created),
            "size_bytes": dir_size(&gen_dir),
            "frozen_ms": m.as_ref().and_then(|m| m.frozen_us).map(|us| us as f64 / 1000.0),
            "instance": m.as_ref().map(|m| m.instance.clone()),
        }));
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "name": name, "generations": rows })
            )?
        );
        return Ok(0);
    }
    println!(
        "{:<4} {:<20} {:>10} {:>10}  INSTANCE",
        "GEN", "CREATED", "SIZE", "FROZEN"
    );
    for r in rows {
        let mark = if r["latest"].as_bool() == Some(true) {
            "*"
        } else {
            ""
        };
        println!(
            "{:<4} {:<20} {:>10} {:>10}  {}",
            format!("{}{mark}", r["generation"]),
            time_text(r["created"].as_u64()),
            size_text(r["size_bytes"].as_u64().unwrap_or(0)),
            r["frozen_ms"]
                .as_f64()
                .map(|f| format!("{f:.1} ms"))
                .unwrap_or_else(|| "-".into()),
            r["instance"].as_str().unwrap_or("-")
        );
    }
    Ok(0)
}

fn verify(name: &str, generation: Option<u32>) -> Result<i32> {
    let store = CheckpointStore::for_current_user()?;
    let dir = store.open(name)?;
    let _lock = rctr_state::lock_exclusive(&dir.join(".lock"))?;
    let g = rctr_checkpoint::verify::select(&dir, name, generation)?;
    let cache = rctr_state::StateRoot::for_current_user()?.private_subdir("cache")?;
    rctr_checkpoint::verify::verify(&dir, name, &g, None, false, &cache)?;
    println!(
        "checkpoint {name} generation {}: {} image files intact",
        g.number,
        g.manifest.files.len()
    );
    Ok(0)
}
