//! The CRIU engine: transparent checkpoints of the whole application process tree.
//!
//! [`bundle`] assembles CRIU and its library closure ([`closure`], read by [`elf`]) into a
//! cached, self-contained directory that [`inject`] bind-mounts read-only into the container;
//! [`run`] executes it inside a running container's namespaces; [`stats`] reads how long the
//! application was frozen; [`doctor`] checks the host.

pub mod bundle;
pub mod closure;
pub mod cuda;
pub mod doctor;
pub(crate) mod elf;
pub mod host;
pub mod inject;
pub mod kdat;
pub mod lazy;
pub mod netlock;
pub mod open_files;
mod page_source;
mod pagemap;
mod restore;
pub mod run;
pub mod stats;
pub mod tmpfs;
pub mod tmpfs_view;

use crate::conf::CriuConf;
use crate::engine::{CheckpointEngine, DumpMode, Dumped, EngineKind, Restore, RestoreFlags};
use crate::preflight::HostFacts;
use crate::store::{
    generation_dir_name, Checked, Checkpoint, CriuData, EngineData, Generation, Staged,
};
use anyhow::{bail, Result};
use bundle::{ensure_bundle, EngineBundle};
use inject::{add_checkpoint_mounts, bundle_dir_of, is_engine_mount, CKPT_MOUNT, ENGINE_MOUNT};
use rctr_instance::InstanceRecord;
use rctr_runtime::plan::ContainerPlan;
use run::{engine_failure, run_in_container_as};
use std::time::Duration;

/// Whether CRIU saved any TCP connection into `dir`.
fn has_tcp_streams(dir: &std::path::Path) -> Result<bool> {
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("tcp-stream-") && name.ends_with(".img") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The binary's name inside the bundle.
const CRIU: &str = "criu";

/// The longest a checkpoint waits for a lazy restore's memory to finish arriving.
const LAZY_WAIT_LIMIT: Duration = Duration::from_secs(300);

pub struct CriuEngine {
    conf: CriuConf,
}

impl CriuEngine {
    pub fn new(conf: &CriuConf) -> Self {
        CriuEngine { conf: conf.clone() }
    }
}

impl CheckpointEngine for CriuEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Criu
    }

    /// The bundle (read-only) and the whole checkpoint directory: CRIU runs as root inside the
    /// container and writes its images and logs there directly.
    fn inject(&self, plan: &mut ContainerPlan, ckpt: &Checkpoint) -> Result<()> {
        let bundle = ensure_bundle(&self.conf)?;
        let kdat = kdat::ensure(&bundle);
        add_checkpoint_mounts(plan, &bundle.dir, ckpt.dir(), kdat.as_deref());
        // The engine runs in the host's IPC namespace, so it sees the container's as another
        // one and saves its SysV objects with the processes (sharing the host's, they would
        // be missed, and attached shared memory refused).
        plan.ipc_ns = true;
        Ok(())
    }

    fn dump(
        &self,
        target: &InstanceRecord,
        ckpt: &Checkpoint,
        staged: &Staged,
        mode: DumpMode,
    ) -> Result<Dumped> {
        // Pages a lazy restore has not brought in yet would be dumped as zeros.
        lazy::wait_until_complete(target.init_pid, LAZY_WAIT_LIMIT).map_err(|e| {
            anyhow::anyhow!(
                "checkpoint of instance '{}' refused: {e:#}; the previous checkpoint is unchanged",
                target.name
            )
        })?;
        // The bundle the instance was started with: it is what is mounted in the container.
        let bundle = EngineBundle::open(&bundle_dir_of(&target.plan)?)?;
        // Measured for the restart's check.
        let open_files = open_files::before_dump(target.init_pid, &target.plan)?;
        // Private tmpfs contents are saved while the application stands still.
        let tmpfs_mounts = tmpfs::private_mounts(
            target.init_pid,
            target.app_host_pid,
            target.plan.writable_tmpfs,
        );
        let tmpfs_failed = |e: anyhow::Error| {
            anyhow::anyhow!(
                "checkpoint of instance '{}' failed: {e:#}; the previous checkpoint is unchanged",
                target.name
            )
        };
        // Each read on its own, not as the application sees it under other mounts.
        let views = if tmpfs_mounts.is_empty() {
            tmpfs_view::MountViews::none()
        } else {
            tmpfs_view::MountViews::open(target.app_host_pid, &tmpfs_mounts)
                .map_err(tmpfs_failed)?
        };
        let stop_for_copy = tmpfs::any_content(&tmpfs_mounts, &views).map_err(tmpfs_failed)?;
        let mut data = CriuData {
            stdout_pipe: pipe_identity(target.app_host_pid, 1),
            stderr_pipe: pipe_identity(target.app_host_pid, 2),
            open_files,
            tmpfs: vec![],
            held_network_locks: vec![],
            gpu: None,
            cpu: None,
        };
        // CUDA processes give their GPU state to host memory first (and get it back below).
        let cuda_pids = cuda::cuda_processes(target.app_host_pid);
        let cuda_tool = if cuda_pids.is_empty() {
            None
        } else {
            let what = format!(
                "checkpoint of instance '{}' failed: its CUDA processes (host pids {})",
                target.name,
                join_pids(&cuda_pids)
            );
            Some(cuda::CudaTool::open(&self.conf.cuda, &what)?)
        };
        let suspended = match &cuda_tool {
            None => None,
            Some(tool) => {
                data.gpu = Some(Box::new(cuda::gpu_facts(&cuda_pids)));
                Some(tool.suspend(&cuda_pids).map_err(|e| {
                    anyhow::anyhow!(
                        "checkpoint of instance '{}' failed: {e:#}; the application runs on, the previous checkpoint is unchanged",
                        target.name
                    )
                })?)
            }
        };
        let log_name = format!("dump-{}.log", generation_dir_name(staged.number));
        let mut args: Vec<String> = [
            "dump",
            "-t",
            &target.app_pid.to_string(),
            "-D",
            &format!("{CKPT_MOUNT}/{}", staged.dir_name),
            "-o",
            &format!("{CKPT_MOUNT}/logs/{log_name}"),
            // -v3: CRIU logs its run id first, which names its network lock table.
            "-v3",
            "--tcp-established",
            // A server under load always has connections its application has not accepted
            // yet; CRIU refuses to dump their listening socket without this. Left running,
            // the application accepts them after the dump; stopped, their clients get a
            // reset, as from any server that stops, and nothing they sent was counted.
            "--skip-in-flight",
            "--file-locks",
            "--network-lock",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // The lock keeps the connections' state still while CRIU reads both ends of each
        // (the application's connections to itself must come back consistent) and holds
        // the peers of an application about to die. With no connection at all and the
        // application left running, it only costs the nftables transactions (~25 ms of the
        // kernel's RCU grace periods per dump here).
        let unlocked = mode.leave_running && mode.no_tcp_connections;
        let lock_at = args.len();
        args.push(if unlocked { "skip" } else { "nftables" }.into());
        // Either way nothing the application does after the dump is seen; a failed dump
        // leaves it running.
        // An application about to be stopped is killed by CRIU itself while its sockets are
        // still in repair mode: its TCP peers see nothing (the network lock holds their
        // packets) and a --tcp-established restore can take the connections over. When a
        // tmpfs must be copied first it is left stopped instead. Init waits for CRIU to
        // finish before the container's pid namespace ends.
        if mode.leave_running && !stop_for_copy {
            args.push("--leave-running".into());
        } else if stop_for_copy {
            args.push("--leave-stopped".into());
        }
        // An application root runs as another user is dumped as that user (see
        // run_in_container_as); CRIU calls that mode "unprivileged".
        let run_as = target.plan.run_as.as_ref();
        if run_as.is_some() {
            args.push("--unprivileged".into());
        }
        // A network lock this run leaves if it fails is removed below; one it keeps on
        // purpose (the application killed with its connections held) is recorded.
        let net_of = target.plan.net_ns.then_some(target.init_pid);
        let code = loop {
            let argv = bundle.command_argv(ENGINE_MOUNT, CRIU, &args)?;
            rctr_log::debug!("checkpoint engine (dump): {}", rctr_log::show_argv(&argv));
            // Hashing and write-back of the memory images start while CRIU writes them.
            let follower = crate::store::follow::Follower::start(&staged.dir).ok();
            let code = run_in_container_as(target.init_pid, target.plan.net_ns, run_as, &argv);
            if let Some(f) = follower {
                staged.remember_sums(f.finish());
            }
            let code = code?;
            // A connection made between the look at the sockets and the freeze was dumped
            // without the lock: once more, with it (CRIU saves each as a tcp-stream image).
            if code == 0 && args[lock_at] == "skip" && has_tcp_streams(&staged.dir)? {
                rctr_log::debug!(
                    "the application connected during a dump without the network lock: dumping again with it"
                );
                staged.empty()?;
                args[lock_at] = "nftables".into();
                continue;
            }
            break code;
        };
        let log = ckpt.logs_dir().join(&log_name);
        if run_as.is_some() {
            // Root's checkpoint holds only root's files (the engine made them as the user;
            // one that failed early may have made no log).
            give_to_root(&staged.dir)?;
            if log.exists() {
                give_to_root(&log)?;
            }
        }
        // The lock tables this dump left: CRIU unlocks the network only for tasks it leaves
        // running, so a dump that fails, kills or stops them keeps its table. Its table is
        // named after its run id, which no table had before it ran: no listing beforehand,
        // and none at all after a dump that left the application running (a listing runs
        // `nft`, ~50 ms).
        let may_hold_lock = code != 0 || !mode.leave_running || stop_for_copy;
        let kept_locks = if may_hold_lock {
            netlock::own_tables(&staged.dir, &log, netlock::tables(net_of))
        } else {
            vec![]
        };
        if code != 0 {
            netlock::remove(net_of, &kept_locks);
            let gpu_back = match suspended {
                Some(s) => s
                    .resume()
                    .err()
                    .map(|e| format!("; putting its GPU state back failed too: {e:#}"))
                    .unwrap_or_default(),
                None => String::new(),
            };
            bail!(
                "checkpoint of instance '{}' failed: {} (full log: {}); the previous checkpoint is unchanged{gpu_back}",
                target.name,
                engine_failure(code, &log),
                log.display()
            );
        }
        if !mode.leave_running && !target.plan.net_ns {
            // Held for a live restore; any other restore lets them go.
            data.held_network_locks = kept_locks.clone();
        }
        if !tmpfs_mounts.is_empty() {
            let saved = tmpfs::snapshot(&tmpfs_mounts, &views, &staged.dir, stop_for_copy);
            drop(views);
            if stop_for_copy && mode.leave_running {
                resume(target.init_pid);
                // Running again: its connections must flow again too.
                netlock::remove(net_of, &kept_locks);
            }
            data.tmpfs = saved.map_err(tmpfs_failed)?;
        }
        if let Some(s) = suspended {
            if mode.leave_running {
                s.resume().map_err(|e| {
                    anyhow::anyhow!(
                        "checkpoint of instance '{}' was written, but its CUDA processes could not get their GPU state back: {e:#}",
                        target.name
                    )
                })?;
            } else {
                // CRIU ended them (or they stay stopped until the caller ends them).
                s.ended();
            }
        }
        // What a restore elsewhere checks this host's CPU against.
        data.cpu = host::dump_cpu(&bundle, &staged.dir, ckpt.cache_dir());
        Ok(Dumped {
            data: EngineData::Criu(data),
            frozen_us: stats::read_dump_stats(&staged.dir).map(|s| s.frozen_us),
        })
    }

    fn version(&self, cache: &std::path::Path) -> Option<String> {
        host::version(&ensure_bundle(&self.conf).ok()?, cache)
    }

    /// CRIU restores memory and registers as they were: the CPU must have every feature the
    /// application may use, CRIU must be able to read the images, and the kernel should be
    /// the one they were taken on.
    fn host_differences(&self, ckpt: &Checkpoint, g: &Generation, then: &HostFacts) -> Vec<String> {
        let mut out = vec![];
        if let EngineData::Criu(CriuData { gpu: Some(gpu), .. }) = &g.manifest.engine_data {
            out.extend(cuda::gpu_differences(gpu, &cuda::gpu_facts(&[])));
        }
        let here = HostFacts::here(None, vec![]);
        if !then.kernel.is_empty() && then.kernel != here.kernel {
            out.push(format!(
                "kernel {} there, {} here",
                then.kernel, here.kernel
            ));
        }
        let bundle = match ensure_bundle(&self.conf) {
            Ok(b) => b,
            Err(e) => {
                rctr_log::debug!("preflight: no engine bundle: {e:#}");
                return out;
            }
        };
        if let Some(then_v) = &then.engine_version {
            if let Some(here_v) = host::version(&bundle, ckpt.cache_dir()) {
                if host::older_engine(then_v, &here_v) {
                    out.push(format!(
                        "CRIU {then_v} wrote the images, this host has the older {here_v}"
                    ));
                }
            }
        }
        let cpu = match &g.manifest.engine_data {
            EngineData::Criu(CriuData { cpu: Some(dir), .. }) => dir,
            _ => return out,
        };
        match host::check_cpu(&bundle, &g.dir.join(cpu), ckpt.cache_dir()) {
            Ok(None) => {}
            Ok(Some(why)) => {
                let models = if then.cpu_model == here.cpu_model {
                    String::new()
                } else {
                    format!("; CPU there: {}, here: {}", then.cpu_model, here.cpu_model)
                };
                out.push(format!(
                    "this CPU lacks features the application may use (criu cpuinfo check: {why}{models})"
                ))
            }
            Err(e) => rctr_log::debug!("preflight: criu cpuinfo check: {e:#}"),
        }
        out
    }

    /// The restored processes expect exactly the mounts they were dumped with, on the image
    /// the user named (verified to be the same one): the recorded plan is rebuilt.
    fn restore(
        &self,
        ckpt: &Checkpoint,
        g: &Generation,
        requested: ContainerPlan,
        how: RestoreFlags,
        checked: Checked,
    ) -> Result<Restore> {
        let EngineData::Criu(data) = &g.manifest.engine_data else {
            bail!(
                "generation {} of checkpoint '{}' has no CRIU data in its manifest",
                g.number,
                ckpt.name()
            );
        };
        if how.lazy_pages && data.gpu.is_some() {
            bail!(
                "generation {} of checkpoint '{}' holds CUDA processes, whose GPU state must be back in place before they run: restart it without --lazy-pages",
                g.number,
                ckpt.name()
            );
        }
        unchangeable(&g.manifest.plan, &requested)?;
        recorded_binds_exist(&g.manifest.plan)?;
        open_files::verify_at_restore(&data.open_files, how.force)?;
        // Connections held for a live restore that is not asked for: let them go (their
        // peers get a reset rather than silence).
        if !how.tcp_established {
            netlock::remove(None, &data.held_network_locks);
        }
        let mut plan = g.manifest.plan.clone();
        plan.root = requested.root;
        plan.image_display = requested.image_display;
        let bundle = ensure_bundle(&self.conf)?;
        let kdat = kdat::ensure(&bundle);
        add_checkpoint_mounts(&mut plan, &bundle.dir, ckpt.dir(), kdat.as_deref());
        let gen_name = generation_dir_name(g.number);
        let host_log = ckpt.logs_dir().join(format!("restore-{gen_name}.log"));
        // A lazy restore's memory is served, and checked piece by piece, by rctr itself.
        let pages = match how.lazy_pages {
            true => Some(
                page_source::PageSource::prepare(
                    &g.dir,
                    &format!("{CKPT_MOUNT}/{gen_name}"),
                    &checked,
                )
                .map_err(|e| ckpt.damaged(g, e))?,
            ),
            false => None,
        };
        let start = restore::starter(&bundle, &gen_name, data, host_log, how, pages)?;
        Ok(Restore {
            plan,
            start,
            settle_limit: Duration::ZERO,
        })
    }

    /// CUDA processes come back with their GPU state in host memory, locked: it goes back
    /// to the GPU and they are unlocked.
    fn after_restore(&self, g: &Generation, started: &InstanceRecord) -> Result<()> {
        let EngineData::Criu(data) = &g.manifest.engine_data else {
            return Ok(());
        };
        if data.gpu.is_none() {
            return Ok(());
        }
        let pids = cuda::cuda_processes(started.app_host_pid);
        if pids.is_empty() {
            return Ok(());
        }
        let what = format!(
            "instance '{}' was restored, but its CUDA processes (host pids {})",
            started.name,
            join_pids(&pids)
        );
        let tool = cuda::CudaTool::open(&self.conf.cuda, &what)?;
        // Every CUDA process was saved suspended, so every one comes back that way.
        tool.resume_restored(&pids).map_err(|e| {
            anyhow::anyhow!(
                "instance '{}' was restored, but its CUDA processes did not get their GPU state back: {e:#}; stop it with `rctr instance stop {}`",
                started.name,
                started.name
            )
        })
    }
}

/// A CRIU restart brings the processes back exactly as they were: their binds, environment
/// and arguments are part of them. New explicit requests cannot be applied, so they are
/// refused rather than silently ignored (none given at all means "as before").
fn unchangeable(recorded: &ContainerPlan, requested: &ContainerPlan) -> Result<()> {
    let hint = "restart with the same ones (or none), or start afresh with --ckpt-launch";
    let asked = &requested.requested;
    if !asked.binds.is_empty() && asked.binds != recorded.requested.binds {
        bail!(
            "a CRIU restart cannot change binds: the checkpoint has --bind {} and this restart asks for --bind {}; {hint}",
            shown(&recorded.requested.binds),
            shown(&requested.requested.binds)
        );
    }
    if !asked.env.is_empty() && asked.env != recorded.requested.env {
        bail!(
            "a CRIU restart cannot change the environment: the checkpoint has --env {} and this restart asks for --env {}; {hint}",
            shown(&recorded.requested.env),
            shown(&requested.requested.env)
        );
    }
    let args_given = requested.argv.len() > command_len(requested);
    if args_given && requested.argv != recorded.argv {
        bail!(
            "a CRIU restart cannot change the application's arguments: the checkpoint was taken of `{}`, this restart asks for `{}`; {hint}",
            recorded.argv[command_len(recorded)..].join(" "),
            requested.argv[command_len(requested)..].join(" ")
        );
    }
    Ok(())
}

/// How many leading argv entries are rctr's own launcher, not the user's arguments.
fn command_len(plan: &ContainerPlan) -> usize {
    // `/bin/sh -c SCRIPT NAME ARGS...`: the launcher of instances and runscripts.
    if plan.argv.len() >= 4 && plan.argv[0] == "/bin/sh" && plan.argv[1] == "-c" {
        4
    } else {
        plan.argv.len().min(1)
    }
}

fn shown(list: &[String]) -> String {
    if list.is_empty() {
        "(none)".into()
    } else {
        list.join(" ")
    }
}

/// The bind sources the checkpoint was taken with must still be there.
fn recorded_binds_exist(recorded: &ContainerPlan) -> Result<()> {
    for m in &recorded.mounts {
        if let rctr_runtime::plan::MountSource::Bind { src } = &m.source {
            if is_engine_mount(&m.dst) {
                continue;
            }
            if std::fs::symlink_metadata(src).is_err() {
                bail!(
                    "the checkpoint's recorded bind {}:{} cannot be restored: {} no longer exists; recreate it, or start afresh with --ckpt-launch",
                    src.display(),
                    m.dst.display(),
                    src.display()
                );
            }
        }
    }
    Ok(())
}

/// Continues every process of the container that the dump left stopped.
fn resume(init_pid: i32) {
    for pid in open_files::container_pids(init_pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

/// `pipe:[inode]` of the application's stdout or stderr, as CRIU names it.
fn pipe_identity(host_pid: i32, fd: i32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{host_pid}/fd/{fd}")).ok()?;
    let s = target.to_string_lossy().into_owned();
    s.starts_with("pipe:").then_some(s)
}

fn join_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes root the owner of `path` and, for a directory, of everything in it, without
/// following symbolic links.
fn give_to_root(path: &std::path::Path) -> Result<()> {
    let chown = |p: &std::path::Path| {
        nix::unistd::fchownat(
            None,
            p,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(0)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| anyhow::anyhow!("cannot make root the owner of {}: {e}", p.display()))
    };
    chown(path)?;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                give_to_root(&entry.path())?;
            } else {
                chown(&entry.path())?;
            }
        }
    }
    Ok(())
}
