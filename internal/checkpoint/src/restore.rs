//! `--ckpt-launch` and `--ckpt-restart`, for every engine, as a background instance or as a
//! foreground job.

use crate::conf::CkptConf;
use crate::engine::{engine_for, EngineKind, Restore, RestoreFlags, LAUNCH_SETTLE_LIMIT};
use crate::preflight;
use crate::store::{Checked, Checkpoint, CheckpointStore, Generation};
use anyhow::{bail, Result};
use rctr_instance::{AttachedInstance, InstanceRecord, Instances, StartRequest};
use rctr_runtime::launch::AppStart;
use rctr_runtime::plan::ContainerPlan;
use std::fs::File;
use std::path::Path;

/// Where the container runs.
pub enum Placement {
    /// A background instance, logging to its log files.
    Instance,
    /// A foreground job: the caller's child, its output copied to `out` and `err`.
    Foreground { out: File, err: File },
}

/// The container to start: its instance name, arguments, plan (what the user asked for now)
/// and where it runs.
pub struct Target {
    pub name: String,
    pub args: Vec<String>,
    pub plan: ContainerPlan,
    pub placement: Placement,
}

/// What was started.
pub enum Started {
    Instance(InstanceRecord),
    Foreground(AttachedInstance),
}

impl Started {
    /// The instance record, for callers that asked for [`Placement::Instance`].
    pub fn record(&self) -> &InstanceRecord {
        match self {
            Started::Instance(r) => r,
            Started::Foreground(a) => &a.record,
        }
    }
}

fn start(instances: &Instances, req: StartRequest, placement: Placement) -> Result<Started> {
    Ok(match placement {
        Placement::Instance => Started::Instance(instances.start(req)?),
        Placement::Foreground { out, err } => {
            // A job's application that ends at once simply ends the job, with its status.
            let req = StartRequest {
                settle_limit: std::time::Duration::ZERO,
                ..req
            };
            Started::Foreground(instances.start_attached(req, out, err)?)
        }
    })
}

/// Starts a container with checkpoint `checkpoint`'s engine injected; `conf_path` is
/// `--ckpt-conf`.
pub fn launch(
    instances: &Instances,
    conf_path: Option<&Path>,
    checkpoint: &str,
    target: Target,
) -> Result<Started> {
    let ckpt = CheckpointStore::for_current_user()?.open(checkpoint)?;
    let conf = CkptConf::load_for(conf_path, ckpt.engine())?;
    let Target {
        name,
        args,
        mut plan,
        placement,
    } = target;
    // Two instances writing generations into one checkpoint would interleave them.
    let users = ckpt.users(instances)?;
    if !users.is_empty() {
        bail!(
            "checkpoint '{checkpoint}' is in use by running instance(s) {}: stop them, or create another checkpoint for this one",
            users.join(", ")
        );
    }
    engine_for(ckpt.engine(), &conf)?.inject(&mut plan, &ckpt)?;
    let req = StartRequest {
        name,
        args,
        plan,
        checkpoint: Some(ckpt.reference()),
        start: AppStart::Exec,
        settle_limit: LAUNCH_SETTLE_LIMIT,
    };
    start(instances, req, placement)
}

/// Which generation to restore, and whether to skip the checks of image and host.
#[derive(Debug, Clone, Default)]
pub struct RestartOptions {
    pub generation: Option<u32>,
    pub force: bool,
    /// Restore established TCP connections live (CRIU), not closed.
    pub tcp_established: bool,
    /// Bring the application's memory in while it already runs (CRIU lazy pages).
    pub lazy_pages: bool,
    /// When the newest generation is damaged, resume from the newest one that verifies (a
    /// batch job's resume), saying so on stderr.
    pub fall_back: bool,
}

/// Starts a container from a verified generation of `checkpoint`.
pub fn restart(
    instances: &Instances,
    conf_path: Option<&Path>,
    checkpoint: &str,
    target: Target,
    opts: &RestartOptions,
) -> Result<Started> {
    let Target {
        name,
        args,
        plan: requested,
        placement,
    } = target;
    let ckpt = CheckpointStore::for_current_user()?.open(checkpoint)?;
    let conf = CkptConf::load_for(conf_path, ckpt.engine())?;
    let engine = engine_for(ckpt.engine(), &conf)?;
    if opts.lazy_pages && ckpt.engine() != EngineKind::Criu {
        bail!(
            "checkpoint '{checkpoint}' uses the {} engine: --lazy-pages needs a CRIU checkpoint; restart it without --lazy-pages",
            ckpt.engine()
        );
    }
    // Not while a checkpoint is being written or the checkpoint deleted.
    let _lock = ckpt.lock()?;
    // A second copy of a running application (two servers on one port, two writers of the
    // same files) only on request.
    let users = ckpt.users(instances)?;
    if !users.is_empty() && !opts.force {
        bail!(
            "checkpoint '{checkpoint}' is in use by running instance(s) {}: stop them first, or use --force to restore a second copy",
            users.join(", ")
        );
    }
    let (g, checked) = choose(&ckpt, &requested, opts)?;
    // This host may not be the one the generation was taken on.
    preflight::check(&ckpt, &g, engine.as_ref(), opts.force)?;
    if !opts.force
        && (!same_file(&requested.root.path, &g.manifest.plan.root.path)
            && g.manifest.image_digest.is_none())
    {
        bail!(
            "checkpoint '{checkpoint}' was taken from image {}, not {}: restart it with the same image",
            g.manifest.plan.root.path.display(),
            requested.root.path.display()
        );
    }
    let Restore {
        plan,
        start: how,
        settle_limit,
    } = engine.restore(
        &ckpt,
        &g,
        requested,
        RestoreFlags {
            force: opts.force,
            tcp_established: opts.tcp_established,
            lazy_pages: opts.lazy_pages,
        },
        checked,
    )?;
    let req = StartRequest {
        name,
        args,
        plan,
        checkpoint: Some(ckpt.reference()),
        start: how,
        settle_limit,
    };
    let started = start(instances, req, placement)?;
    engine.after_restore(&g, started.record())?;
    Ok(started)
}

/// The generation to restore, verified: the one asked for, else the newest, else (with
/// `fall_back`) the newest that verifies. A lazy restore leaves memory images that can be
/// checked piece by piece to be checked as they are served.
fn choose(
    ckpt: &Checkpoint,
    requested: &ContainerPlan,
    opts: &RestartOptions,
) -> Result<(Generation, Checked)> {
    let verify = |g: &Generation| -> Result<Checked> {
        if opts.lazy_pages {
            ckpt.verify_but_memory(g, Some(&requested.root), opts.force)
        } else {
            ckpt.verify(g, Some(&requested.root), opts.force)?;
            Ok(Checked::Whole)
        }
    };
    let first = ckpt.select(opts.generation);
    let first_err = match first.and_then(|g| {
        let checked = verify(&g)?;
        Ok((g, checked))
    }) {
        Ok(found) => return Ok(found),
        Err(e) => e,
    };
    if !opts.fall_back || opts.generation.is_some() {
        return Err(first_err);
    }
    let mut older = ckpt.generations()?;
    older.reverse();
    for n in older {
        let Ok(g) = ckpt.generation(n) else { continue };
        if let Ok(checked) = verify(&g) {
            rctr_log::warn!("{first_err:#}; resuming from generation {n}, the newest one intact");
            return Ok((g, checked));
        }
    }
    Err(first_err)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
