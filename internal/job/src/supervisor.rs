//! The foreground job: start (resume or launch), then wait for the application while taking
//! checkpoints on time and on signals, and forwarding every other signal to it.

use crate::options::{CkptChoice, JobOptions, Then};
use crate::requeue;
use crate::takeover::{self, Handover};
use crate::EXIT_CHECKPOINT_FAILED;
use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rctr_checkpoint::dump::{take, DumpOptions};
use rctr_checkpoint::engine::{engine_for, CheckpointEngine, DumpMode};
use rctr_checkpoint::restore::{self, Placement, RestartOptions, Started, Target};
use rctr_checkpoint::store::{Checkpoint, CheckpointStore};
use rctr_checkpoint::{CkptConf, EngineKind};
use rctr_instance::{pidfd_open, pidfd_signal, AttachedInstance, InstanceRecord, Instances};
use rctr_runtime::plan::ContainerPlan;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// Runs the job to its end; returns rctr's exit status.
pub fn run_job(opts: &JobOptions, plan: ContainerPlan, args: Vec<String>) -> Result<i32> {
    // Refuse what cannot work before anything starts.
    let slurm_job = match opts.then {
        Then::Requeue => Some(requeue::slurm_job_id()?),
        _ => None,
    };
    rctr_state::validate_name("checkpoint", opts.ckpt.name())?;
    let name = opts.instance_name().to_string();
    rctr_state::validate_name("instance", &name)?;
    let ckpt = open_or_create(opts)?;
    let conf = CkptConf::load_for(opts.conf_path.as_deref(), ckpt.engine())?;
    let engine = engine_for(ckpt.engine(), &conf)?;
    let mut resume = match &opts.ckpt {
        CkptChoice::Auto(_) => ckpt.latest()?.is_some(),
        CkptChoice::Launch(_) => false,
        CkptChoice::Restart(_) => true,
    };
    let mut generation = opts.generation;

    // Our signals are taken through a signalfd from here on; the container's init inherits
    // the mask and blocks what it supervises itself.
    let signals = job_signals(opts);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .context("cannot block signals")?;
    let sfd =
        SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC).context("cannot watch signals")?;

    let instances = Instances::for_current_user()?;
    let placement = Placement::Foreground {
        out: dup_of(std::io::stdout().as_fd())?,
        err: dup_of(std::io::stderr().as_fd())?,
    };
    let target = Target {
        name: name.clone(),
        args,
        plan,
        placement,
    };
    // Everything above is ready: only now is the old run stopped.
    // A requeued successor runs the same script again: its first run took the job over.
    let take_over = opts
        .take_over
        .as_ref()
        .filter(|_| !takeover::is_requeued_run());
    if let Some(job_id) = take_over {
        match takeover::take_over(&ckpt, job_id, target.plan.run_as.as_ref())? {
            Handover::Final(g) => {
                rctr_log::info!("rctr: job {job_id} stopped after generation {g}");
                (resume, generation) = (true, Some(g));
            }
            Handover::Ended(None) if matches!(opts.ckpt, CkptChoice::Restart(_)) => {
                anyhow::bail!(
                    "job {job_id} ended without a checkpoint and '{}' has no generation to restart from: start it with --ckpt or --ckpt-launch",
                    ckpt.name()
                );
            }
            Handover::Ended(g) => {
                eprintln!(
                    "rctr: warning: job {job_id} ended without a new checkpoint (does it run with --ckpt-on-term?); {}",
                    match g {
                        Some(g) => format!("resuming from generation {g}, taken earlier"),
                        None => "starting fresh: the checkpoint has no generation".into(),
                    }
                );
                (resume, generation) = (g.is_some(), g);
            }
        }
    }
    let started = if resume {
        rctr_log::info!("rctr: resuming job {name} from checkpoint {}", ckpt.name());
        let ropts = RestartOptions {
            generation,
            force: opts.force,
            tcp_established: opts.tcp_established,
            lazy_pages: opts.lazy_pages,
            fall_back: matches!(opts.ckpt, CkptChoice::Auto(_)),
        };
        restore::restart(
            &instances,
            opts.conf_path.as_deref(),
            ckpt.name(),
            target,
            &ropts,
        )?
    } else {
        restore::launch(&instances, opts.conf_path.as_deref(), ckpt.name(), target)?
    };
    let Started::Foreground(attached) = started else {
        anyhow::bail!("the job was not started in the foreground");
    };
    let job = Job {
        opts,
        ckpt: &ckpt,
        engine: engine.as_ref(),
        keep: opts.keep.unwrap_or(conf.keep),
        slurm_job,
    };
    let code = job.supervise(attached, &sfd);
    // Whatever happened, the job is over: it no longer shows as an instance.
    let _ = instances.remove(&name);
    code
}

/// Checkpoint `opts.ckpt`, created first when `--ckpt` names one that does not exist yet.
fn open_or_create(opts: &JobOptions) -> Result<Checkpoint> {
    let store = CheckpointStore::for_current_user()?;
    let name = opts.ckpt.name();
    match (&opts.ckpt, store.exists(name)?) {
        (CkptChoice::Auto(_), false) => {
            let engine = match opts.engine {
                Some(e) => e,
                None => CkptConf::load_for(opts.conf_path.as_deref(), EngineKind::App)?.engine,
            };
            let ckpt = store.create(name, engine, None)?;
            rctr_log::info!("rctr: created checkpoint {name} ({engine} engine)");
            Ok(ckpt)
        }
        _ => store.open(name),
    }
}

/// Every signal the job handles: those it checkpoints on, and those it forwards.
fn job_signals(opts: &JobOptions) -> SigSet {
    let mut set = SigSet::empty();
    for s in rctr_runtime::process::FORWARDED {
        set.add(*s);
    }
    for s in &opts.signals {
        set.add(*s);
    }
    set
}

fn dup_of(fd: std::os::fd::BorrowedFd) -> Result<File> {
    let owned: OwnedFd = fd.try_clone_to_owned().context("cannot duplicate stdio")?;
    Ok(File::from(owned))
}

struct Job<'a> {
    opts: &'a JobOptions,
    ckpt: &'a Checkpoint,
    engine: &'a dyn CheckpointEngine,
    keep: u32,
    slurm_job: Option<String>,
}

/// Why a checkpoint is taken.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Interval,
    Signal(Signal),
}

impl Job<'_> {
    /// Waits for the application, checkpointing on time and on signals; returns rctr's exit
    /// status.
    fn supervise(&self, attached: AttachedInstance, sfd: &SignalFd) -> Result<i32> {
        let AttachedInstance { record, init } = attached;
        let init_fd = pidfd_open(record.init_pid)?;
        let mut next_tick = self.opts.interval.map(|i| Instant::now() + i);
        // Set once the job was stopped after a checkpoint: what rctr then exits with.
        let mut ended_by_checkpoint: Option<i32> = None;
        loop {
            let wait = next_tick.map(|t| t.saturating_duration_since(Instant::now()));
            let mut fds = [
                PollFd::new(init_fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            let timeout = match wait {
                Some(d) => PollTimeout::try_from(d.min(Duration::from_secs(60)))
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("waiting for the job failed"),
            }
            let ready = |fd: &PollFd| {
                fd.revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
            };
            if ready(&fds[0]) {
                let code = init.wait()?;
                return Ok(ended_by_checkpoint.unwrap_or(code));
            }
            if ready(&fds[1]) {
                if let Ok(Some(info)) = sfd.read_signal() {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    if let Some(code) = self.on_signal(sig, &record, &init_fd) {
                        ended_by_checkpoint = Some(code);
                    }
                }
            }
            if let Some(t) = next_tick {
                if Instant::now() >= t && ended_by_checkpoint.is_none() {
                    self.checkpoint(&record, Trigger::Interval, true);
                    next_tick = self.opts.interval.map(|i| Instant::now() + i);
                }
            }
        }
    }

    /// A signal for the job: a checkpoint request, or one to pass on. Returns the exit status
    /// to end with when the job was stopped after a checkpoint.
    fn on_signal(&self, sig: Signal, record: &InstanceRecord, init: &OwnedFd) -> Option<i32> {
        let then = if self.opts.signals.contains(&sig) {
            self.opts.then
        } else if sig == Signal::SIGTERM && self.opts.on_term {
            // Slurm's preemption and time limit: SIGTERM, then SIGKILL after GraceTime.
            Then::Exit
        } else {
            // Init relays it to the application, as for an instance.
            let _ = pidfd_signal(init, sig);
            return None;
        };
        let saved = self.checkpoint(record, Trigger::Signal(sig), then == Then::Continue);
        if then == Then::Continue {
            return None;
        }
        // The state is saved (or the previous generation still is): end this run. Killing
        // init, pid 1 of the job's namespace, takes every process of the job with it.
        let _ = pidfd_signal(init, Signal::SIGKILL);
        let mut code = if saved { 0 } else { EXIT_CHECKPOINT_FAILED };
        if then == Then::Requeue {
            if let Some(id) = &self.slurm_job {
                match requeue::requeue(id, record.plan.run_as.as_ref()) {
                    Ok(()) => rctr_log::info!("rctr: requeued Slurm job {id}"),
                    Err(e) => {
                        eprintln!("rctr: error: {e:#}");
                        code = 1;
                    }
                }
            }
        }
        Some(code)
    }

    /// Takes one checkpoint; reports it on stderr either way. True when it was published.
    fn checkpoint(&self, record: &InstanceRecord, why: Trigger, leave_running: bool) -> bool {
        let opts = DumpOptions {
            stop: false,
            keep: Some(self.keep),
            // A periodic checkpoint that finds another one running skips its turn.
            no_wait: matches!(why, Trigger::Interval),
            mode: DumpMode {
                leave_running,
                ..DumpMode::default()
            },
        };
        let what = match why {
            Trigger::Interval => "periodic checkpoint".to_string(),
            Trigger::Signal(s) => format!("checkpoint on {s}"),
        };
        match take(self.ckpt, self.engine, record, &opts, self.keep) {
            Ok(r) => {
                rctr_log::info!(
                    "rctr: {what}: job {} saved in checkpoint {} generation {}",
                    record.name,
                    r.checkpoint,
                    r.generation
                );
                true
            }
            Err(e) => {
                let previous = match self.ckpt.latest() {
                    Ok(Some(g)) => format!("generation {g} stays the newest and restorable"),
                    _ => "there is no earlier generation".to_string(),
                };
                eprintln!("rctr: error: {what} failed: {e:#}; {previous}");
                false
            }
        }
    }
}
