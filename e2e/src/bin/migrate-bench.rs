//! `migrate-bench IMAGE RUNS OUTDIR SCRATCH`: the migration case of `make bench` (e2e/bench/run.sh).
//!
//! Starts the two-node test cluster (e2e/src/cluster.rs) and runs the request-counter server
//! of IMAGE (/opt/counter_server.py) with the job script of docs/multi-node.md. Then, RUNS
//! times each, alternating, it measures how long clients get no answer (the last answer
//! before to the first answer after, polled every few ms):
//!
//! - `migrate-cross`: the job moved to the other node (drain its node, `scancel --signal=USR1
//!   --batch`: checkpoint, requeue, Slurm's start on the other node, restore);
//! - `migrate-cross-now`: the same, with Slurm's hold on the requeued job lifted as soon as it
//!   is set (`scontrol update jobid=ID StartTime=now`, docs/multi-node.md);
//! - `migrate-same`: the job requeued onto the node it ran on (the other node drained), the
//!   same steps without a change of node;
//! - `migrate-takeover`: the job moved to the other node by a successor started first (its
//!   node drained, `sbatch counter.sbatch --ckpt-take-over ID`): the successor, once Slurm
//!   runs it, has the old run take its final checkpoint and stop, then restores. Downtime:
//!   the last answer of the old run (polled every 10 ms from the submission until the
//!   successor says it takes over) to the successor's first;
//! - `migrate-local`: the same server as a plain foreground job on this machine, without
//!   Slurm: `rctr exec --ckpt ... --ckpt-then exit`, USR1, then the same command again.
//!
//! Each figure goes to OUTDIR/<key>, one millisecond value per line (run.sh's format). The
//! jobs' `$HOME` (their checkpoints) is in SCRATCH, the disk measured; the cluster's own
//! directory is in the temporary directory, whose path munged needs open to all. The rctr on
//! $PATH first is the one measured: run.sh puts its binary's directory there.

use anyhow::{anyhow, bail, Context, Result};
use rctr_e2e::{free_port, try_request, TwoNodeCluster};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The job script's port (docs/multi-node.md).
const PORT: u16 = 8888;
/// How long a move may take before the case fails.
const MOVE_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    if let Err(e) = run() {
        eprintln!("migrate-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, runs, outdir, scratch] = args.as_slice() else {
        bail!("usage: migrate-bench IMAGE RUNS OUTDIR SCRATCH");
    };
    let runs: usize = runs.parse().context("RUNS must be a number")?;
    let outdir = PathBuf::from(outdir);
    let work = tempfile::Builder::new()
        .prefix("rctr-migrate-bench-")
        .tempdir_in(scratch)?;
    let work = work.path();
    std::os::unix::fs::symlink(image, work.join("server.sif"))?;
    std::fs::create_dir(work.join("home"))?;

    let started = Instant::now();
    let cluster = TwoNodeCluster::start().context("starting the two-node cluster")?;
    eprintln!(
        "migrate-bench: two-node cluster up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut job = ServiceJob::submit(&cluster, work)?;
    let mut local = LocalJob::new(work)?;
    // Warm-up: one of each, not recorded.
    job.move_to_other(&cluster, false)?;
    job.move_to_other(&cluster, true)?;
    job.requeue_in_place(&cluster)?;
    job.take_over(&cluster)?;
    local.restart()?;
    for i in 0..runs {
        let mut round: Vec<(&str, f64)> = Vec::new();
        let cases: [&str; 5] = if i % 2 == 0 {
            ["cross", "cross-now", "same", "takeover", "local"]
        } else {
            ["local", "takeover", "same", "cross-now", "cross"]
        };
        for case in cases {
            let ms = match case {
                "cross" => job.move_to_other(&cluster, false)?,
                "cross-now" => job.move_to_other(&cluster, true)?,
                "same" => job.requeue_in_place(&cluster)?,
                "takeover" => job.take_over(&cluster)?,
                _ => local.restart()?,
            };
            round.push((case, ms));
        }
        for (case, ms) in round {
            record(&outdir, &format!("migrate-{case}"), ms)?;
        }
    }
    cluster
        .scancel(job.id)
        .map_err(|e| anyhow!("cancelling job {}: {e:#}", job.id))?;
    // For a timeline of the moves: Slurm's logs (debug level) and the job's output, next to
    // the epoch times migrate.log gives for each move.
    if let Some(dir) = std::env::var_os("RCTR_MIGRATE_BENCH_LOGS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        let mut files = vec![
            cluster.dir().join("slurmctld.log"),
            work.join("counter.out"),
        ];
        files.extend(
            cluster
                .node_names()
                .iter()
                .map(|n| cluster.dir().join(format!("slurmd-{n}.log"))),
        );
        for file in files {
            if let Some(name) = file.file_name() {
                let _ = std::fs::copy(&file, dir.join(name));
            }
        }
    }
    local.stop();
    cluster.stop();
    Ok(())
}

fn record(outdir: &Path, key: &str, ms: f64) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(outdir.join(key))?;
    writeln!(f, "{ms:.3}")?;
    Ok(())
}

/// Now, in seconds since the epoch: to line moves up with Slurm's logs.
fn epoch_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `request:N` -> N.
fn count(answer: &str) -> Result<u64> {
    answer
        .strip_prefix("request:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow!("the server answered {answer:?}, not request:N"))
}

/// Requests `from` (the last answer before the stop), runs `stop`, then requests `to` until
/// it answers; the time between the two answers in ms. Fails unless the count continues. `to` is only polled
/// once `may_poll` says so: a request queued on a listening socket while the engine dumps
/// it would not be answered by either run.
fn downtime(
    from: SocketAddr,
    to: SocketAddr,
    stop: impl FnOnce() -> Result<()>,
    mut may_poll: impl FnMut() -> Result<bool>,
) -> Result<f64> {
    let before = count(&try_request(from, Duration::from_secs(2)).map_err(|e| anyhow!(e))?)?;
    let last = Instant::now();
    stop()?;
    let deadline = Instant::now() + MOVE_TIMEOUT;
    let mut polling = false;
    loop {
        // Called every time: it may have more to do than answer (lift a hold).
        let may = may_poll()?;
        polling = polling || may;
        if polling {
            if let Ok(answer) = try_request(to, Duration::from_millis(100)) {
                let ms = last.elapsed().as_secs_f64() * 1000.0;
                if count(&answer)? != before + 1 {
                    bail!("the server answered request:{before}, then {answer} on {to}: its count did not continue");
                }
                eprintln!(
                    "migrate-bench: last answer at {:.3}, first after at {:.3} (epoch s)",
                    epoch_s() - ms / 1000.0,
                    epoch_s()
                );
                return Ok(ms);
            }
        }
        if Instant::now() > deadline {
            bail!("no answer on {to} within {MOVE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(if polling { 2 } else { 50 }));
    }
}

/// Polls `from` every 10 ms (recording its last answer) until `stopping` says the stop is
/// under way and, at the same time, `to` every 2 ms until it answers; the time from the last
/// answer of `from` to the first of `to` in ms. Fails unless the count continues. For a move
/// where the old server is stopped by someone else (a successor's take-over).
///
/// Polling `from` ends when the stop is requested, not when the server stops answering: a
/// request the server has accepted but not answered when the engine freezes it is lost
/// with its connection (the count moved on, the answer never came), and the single-node
/// and requeue cases send none either. The server still answers for the stop request's way
/// through Slurm, so the figure overstates the downtime by that much.
fn handover_downtime(
    from: SocketAddr,
    to: SocketAddr,
    stopping: impl Fn() -> bool + Sync,
) -> Result<f64> {
    let last: Mutex<Option<(u64, Instant)>> = Mutex::new(None);
    let done = AtomicBool::new(false);
    let deadline = Instant::now() + MOVE_TIMEOUT;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) && !stopping() {
                if let Ok(answer) = try_request(from, Duration::from_millis(200)) {
                    if let Ok(n) = count(&answer) {
                        *last.lock().unwrap() = Some((n, Instant::now()));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let result = (|| loop {
            if let Ok(answer) = try_request(to, Duration::from_millis(100)) {
                let now = Instant::now();
                let Some((before, at)) = *last.lock().unwrap() else {
                    bail!("{to} answered {answer} before {from} ever did");
                };
                if count(&answer)? != before + 1 {
                    bail!("the server answered request:{before} on {from}, then {answer} on {to}: its count did not continue");
                }
                let ms = (now - at).as_secs_f64() * 1000.0;
                eprintln!(
                    "migrate-bench: last answer at {:.3}, first after at {:.3} (epoch s)",
                    epoch_s() - ms / 1000.0,
                    epoch_s()
                );
                return Ok(ms);
            }
            if Instant::now() > deadline {
                bail!("no answer on {to} within {MOVE_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        })();
        done.store(true, Ordering::SeqCst);
        result
    })
}

/// The request-counter server as a batch job of the two-node cluster.
struct ServiceJob {
    id: u32,
    node: &'static str,
    script: PathBuf,
    home: PathBuf,
}

impl ServiceJob {
    fn submit(cluster: &TwoNodeCluster, work: &Path) -> Result<ServiceJob> {
        let docs = rctr_e2e::workspace_root().join("docs/multi-node.md");
        let text = std::fs::read_to_string(&docs)?;
        let marker = "<!-- The job script below is the one e2e/tests/multi_node.rs submits. -->";
        let block = text
            .split_once(marker)
            .and_then(|(_, after)| after.trim_start().strip_prefix("```sh\n"))
            .and_then(|b| b.split_once("```"))
            .ok_or_else(|| anyhow!("no job script after the marker in {}", docs.display()))?
            .0;
        let script = work.join("counter.sbatch");
        std::fs::write(&script, block)?;
        cluster.drain("n2", "bench:start-on-n1")?;
        let home = work.join("home");
        let id = cluster.sbatch_with(&script, &[], |cmd| {
            cmd.env("HOME", &home);
        })?;
        let addr = SocketAddr::from((cluster.addr("n1"), PORT));
        wait_answer(addr)?;
        Ok(ServiceJob {
            id,
            node: "n1",
            script,
            home,
        })
    }

    /// Drains the job's node and submits a successor with `--ckpt-take-over`: it starts on
    /// the other node while the job serves, and takes it over; the downtime in ms.
    fn take_over(&mut self, cluster: &TwoNodeCluster) -> Result<f64> {
        let (from, to) = (self.node, self.other());
        cluster.resume(to)?;
        cluster.drain(from, "bench:take-over")?;
        let old = self.id;
        let new = cluster.sbatch_script_args(
            &self.script,
            &[],
            &["--ckpt-take-over", &old.to_string()],
            |cmd| {
                cmd.env("HOME", &self.home);
            },
        )?;
        // The successor says so in the job's output just before it signals the old run.
        let out = self.script.with_file_name("counter.out");
        let said_before = std::fs::metadata(&out)?.len();
        let taking_over = format!("rctr: taking over job {old} ");
        let stopping = || {
            use std::io::{Read, Seek};
            let mut text = String::new();
            std::fs::File::open(&out)
                .and_then(|mut f| {
                    f.seek(std::io::SeekFrom::Start(said_before))?;
                    f.read_to_string(&mut text)
                })
                .is_ok_and(|_| text.contains(&taking_over))
        };
        let ms = handover_downtime(
            SocketAddr::from((cluster.addr(from), PORT)),
            SocketAddr::from((cluster.addr(to), PORT)),
            stopping,
        )
        .map_err(|e| {
            // What rctr said, without the server's own lines.
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let said: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("answered"))
                .collect();
            anyhow!(
                "{e:#}\n--- counter.out, without the answers:\n{}",
                said[said.len().saturating_sub(30)..].join("\n")
            )
        })?;
        let node = cluster.job_node(new)?;
        if node != to {
            bail!("the successor job {new} runs on {node}, not {to}");
        }
        cluster
            .wait_for_state(old, &["COMPLETED"], MOVE_TIMEOUT)
            .with_context(|| format!("job {old} after its take-over by job {new}"))?;
        (self.id, self.node) = (new, to);
        eprintln!(
            "migrate-bench: {from} -> {to}, taken over by a successor: {ms:.0} ms without answers"
        );
        Ok(ms)
    }

    fn other(&self) -> &'static str {
        if self.node == "n1" {
            "n2"
        } else {
            "n1"
        }
    }

    /// Drains the job's node, resumes the other and signals the job; the downtime in ms.
    /// With `lift_hold`, the requeued job's begin-time hold is lifted as soon as Slurm has
    /// set it (`scontrol update jobid=ID StartTime=now`).
    fn move_to_other(&mut self, cluster: &TwoNodeCluster, lift_hold: bool) -> Result<f64> {
        let (from, to) = (self.node, self.other());
        cluster.resume(to)?;
        cluster.drain(from, "bench:move")?;
        let ms = self.signal(cluster, from, to, lift_hold)?;
        self.node = to;
        Ok(ms)
    }

    /// Drains the other node and signals the job: it comes back on its own node.
    fn requeue_in_place(&mut self, cluster: &TwoNodeCluster) -> Result<f64> {
        let node = self.node;
        cluster.resume(node)?;
        cluster.drain(self.other(), "bench:stay")?;
        self.signal(cluster, node, node, false)
    }

    fn signal(
        &mut self,
        cluster: &TwoNodeCluster,
        from: &str,
        to: &str,
        lift_hold: bool,
    ) -> Result<f64> {
        let id = self.id;
        let (from_addr, to_addr) = (
            SocketAddr::from((cluster.addr(from), PORT)),
            SocketAddr::from((cluster.addr(to), PORT)),
        );
        // Another node's address answers only once the job runs there; the same node's
        // only after the job has left it (requeued, pending).
        let mut left = from != to;
        let mut next_look = Instant::now();
        let ms = downtime(
            from_addr,
            to_addr,
            || cluster.scancel_signal(id, "USR1", true),
            || {
                if (!left || lift_hold) && Instant::now() >= next_look {
                    next_look = Instant::now() + Duration::from_millis(50);
                    left = left || cluster.job_state(id)? != "RUNNING";
                    if lift_hold {
                        cluster.lift_begin_time_hold(id)?;
                    }
                }
                Ok(left)
            },
        )?;
        let node = cluster.job_node(id)?;
        if node != to {
            bail!("job {id} runs on {node}, not {to}");
        }
        let how = if lift_hold { ", hold lifted" } else { "" };
        eprintln!("migrate-bench: {from} -> {to}{how}: {ms:.0} ms without answers");
        Ok(ms)
    }
}

/// Polls until the server at `addr` answers.
fn wait_answer(addr: SocketAddr) -> Result<String> {
    let deadline = Instant::now() + MOVE_TIMEOUT;
    loop {
        if let Ok(answer) = try_request(addr, Duration::from_millis(200)) {
            return Ok(answer);
        }
        if Instant::now() > deadline {
            bail!("the server never answered on {addr}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The same server as a foreground job on this machine, checkpointed on USR1 and restarted
/// by running the same command again.
struct LocalJob {
    command: Vec<String>,
    home: PathBuf,
    work: PathBuf,
    port: u16,
    child: Child,
}

impl LocalJob {
    fn new(work: &Path) -> Result<LocalJob> {
        let port = free_port();
        let command = [
            "exec",
            "--ckpt",
            "local",
            "--ckpt-signal",
            "USR1",
            "--ckpt-then",
            "exit",
            "server.sif",
            "python3",
            "/opt/counter_server.py",
            &port.to_string(),
            "0.0.0.0",
        ]
        .map(String::from)
        .to_vec();
        let home = work.join("home");
        let child = spawn(&command, &home, work)?;
        wait_answer(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
        Ok(LocalJob {
            command,
            home,
            work: work.to_path_buf(),
            port,
            child,
        })
    }

    fn restart(&mut self) -> Result<f64> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let pid = self.child.id() as libc::pid_t;
        let mut next: Option<Child> = None;
        let ms = downtime(
            addr,
            addr,
            || {
                // SAFETY: kill has no memory-safety preconditions; pid is our own child,
                // not yet waited for.
                unsafe { libc::kill(pid, libc::SIGUSR1) };
                let status = self.child.wait()?;
                if !status.success() {
                    bail!("the local job exited {status} after its checkpoint");
                }
                next = Some(spawn(&self.command, &self.home, &self.work)?);
                Ok(())
            },
            || Ok(true),
        )?;

        self.child = next.expect("set by the stop closure");
        eprintln!("migrate-bench: local restart: {ms:.0} ms without answers");
        Ok(ms)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(command: &[String], home: &Path, work: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.join("local.out"))?;
    Command::new("rctr")
        .args(command)
        .env("HOME", home)
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot run rctr (is it on $PATH?)")
}
