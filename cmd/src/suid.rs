//! The checkpoint helper: a copy of `rctr` installed setuid root (`rctr-suid`, see
//! `etc/setup/install-suid.sh`) with which a user who is not root launches, checkpoints,
//! stops and restarts their own instances with the CRIU engine, which needs root.
//!
//! Started setuid, `rctr` never reaches its ordinary command line: [`run_if_setuid`] takes
//! over first and accepts only the verbs of [`Verb`], each turned into one fixed command
//! of root's own (`instance start --security uid:..`, `checkpoint instance`, ...):
//!
//! - **Whose state.** The caller's real uid, from the kernel; their name, home and groups
//!   from the host's databases. Root's state for that uid lives in
//!   `/var/lib/rctr/users/<uid>` (root's, private): the caller can neither read their
//!   checkpoints' images there (nobody can tamper with what root restores) nor reach
//!   another uid's.
//! - **What the container gets.** The caller's ids, no capability, `no_new_privs`
//!   (`--security`); their home (resolved from passwd, not the environment), /tmp and
//!   /var/tmp, nothing else: no binds (not even of the current directory, a path the
//!   caller could swap; it is only the working directory), no options, a clean
//!   environment.
//! - **What the caller hands over.** Only descriptors: the image open for reading (fd 3)
//!   and the two log files open for writing (fds 4 and 5), so root never opens a path
//!   the caller chose. Names are checked before use; the container's own arguments
//!   follow NAME and are never options.
//! - **No interference.** Once the caller is known the helper drops the caller's ids
//!   entirely (real uid 0: they can no longer signal or trace it), clears its
//!   environment, sets root's usual umask and closes every other descriptor.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where the setup installs the helper.
pub const INSTALLED_PATH: &str = "/usr/local/libexec/rctr/rctr-suid";
/// Root's state for each user of the helper, one directory per uid.
const STATE_ROOT: &str = "/var/lib/rctr/users";
/// Descriptors the caller passes: the image, the application's stdout and stderr logs.
const IMAGE_FD: i32 = 3;
const OUT_FD: i32 = 4;
const ERR_FD: i32 = 5;

/// What a user may ask of the helper.
#[derive(Debug, PartialEq, Eq)]
pub enum Verb {
    /// `instance start --ckpt-launch|--ckpt-restart CKPT IMAGE NAME ARGS`
    Start {
        restart: bool,
        checkpoint: String,
        name: String,
        args: Vec<String>,
    },
    /// `checkpoint instance NAME [--stop]`
    Checkpoint { name: String, stop: bool },
    /// `instance stop NAME`
    Stop { name: String },
    /// `instance list`
    Instances,
    /// `checkpoint create NAME` (CRIU)
    Create { name: String },
    /// `checkpoint delete NAME`
    Delete { name: String },
    /// `checkpoint list`
    List,
    /// A checkpointable foreground job: `run|exec --ckpt... IMAGE ARGS`
    Job(Job),
}

/// A foreground job through the helper: what `rctr run`/`exec --ckpt` take, minus
/// everything that would name a path or change the container.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Job {
    /// `exec` (ARGS start with the command) rather than `run` (the runscript's arguments).
    pub exec: bool,
    /// `--ckpt`, `--ckpt-launch` or `--ckpt-restart`.
    pub choice: JobCheckpoint,
    pub checkpoint: String,
    pub name: Option<String>,
    pub interval_secs: Option<u64>,
    pub signals: Vec<String>,
    /// continue, exit or requeue
    pub then: Option<String>,
    pub on_term: bool,
    pub keep: Option<u32>,
    pub args: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum JobCheckpoint {
    #[default]
    Auto,
    Launch,
    Restart,
}

impl JobCheckpoint {
    fn word(self) -> &'static str {
        match self {
            JobCheckpoint::Auto => "auto",
            JobCheckpoint::Launch => "launch",
            JobCheckpoint::Restart => "restart",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            JobCheckpoint::Auto => "--ckpt",
            JobCheckpoint::Launch => "--ckpt-launch",
            JobCheckpoint::Restart => "--ckpt-restart",
        }
    }
}

impl Job {
    fn to_args(&self, v: &mut Vec<String>) {
        v.push("job".into());
        v.push(if self.exec { "exec" } else { "run" }.into());
        v.push(self.choice.word().into());
        v.push(self.checkpoint.clone());
        v.extend(self.settings());
        v.push("--".into());
        v.extend(self.args.iter().cloned());
    }

    /// The job's settings, as rctr's own flags spell them.
    fn settings(&self) -> Vec<String> {
        let mut v = vec![];
        if let Some(n) = &self.name {
            v.push(format!("--name={n}"));
        }
        if let Some(i) = self.interval_secs {
            v.push(format!("--ckpt-interval={i}s"));
        }
        for s in &self.signals {
            v.push(format!("--ckpt-signal={s}"));
        }
        if let Some(t) = &self.then {
            v.push(format!("--ckpt-then={t}"));
        }
        if self.on_term {
            v.push("--ckpt-on-term".into());
        }
        if let Some(k) = self.keep {
            v.push(format!("--ckpt-keep={k}"));
        }
        v
    }

    fn parse(args: &[String]) -> Result<Job> {
        let mut job = Job {
            exec: match args.get(1).map(String::as_str) {
                Some("exec") => true,
                Some("run") => false,
                other => bail!("the checkpoint helper's job is run or exec, not {other:?}"),
            },
            choice: match args.get(2).map(String::as_str) {
                Some("auto") => JobCheckpoint::Auto,
                Some("launch") => JobCheckpoint::Launch,
                Some("restart") => JobCheckpoint::Restart,
                other => bail!(
                    "the checkpoint helper's job takes auto, launch or restart, not {other:?}"
                ),
            },
            ..Job::default()
        };
        let ckpt = args
            .get(3)
            .context("the checkpoint helper needs a checkpoint name")?;
        checked_name(ckpt, "a checkpoint name")?;
        job.checkpoint = ckpt.clone();
        let mut rest = args[4..].iter();
        for a in rest.by_ref() {
            if a == "--" {
                break;
            }
            let (key, value) = a.split_once('=').unwrap_or((a.as_str(), ""));
            match key {
                "--name" => {
                    checked_name(value, "an instance name")?;
                    job.name = Some(value.to_string());
                }
                "--ckpt-interval" => {
                    let secs = value.strip_suffix('s').unwrap_or(value);
                    job.interval_secs =
                        Some(secs.parse().with_context(|| {
                            format!("{key}: {value:?} is not a number of seconds")
                        })?)
                }
                "--ckpt-signal" => {
                    let ok = !value.is_empty()
                        && value.len() <= 16
                        && value.chars().all(|c| c.is_ascii_alphanumeric());
                    if !ok {
                        bail!("--ckpt-signal {value:?}: name a signal (USR1) or its number");
                    }
                    job.signals.push(value.to_string());
                }
                "--ckpt-then" => match value {
                    "continue" | "exit" | "requeue" => job.then = Some(value.to_string()),
                    _ => bail!("--ckpt-then {value:?}: continue, exit or requeue"),
                },
                "--ckpt-on-term" if value.is_empty() => job.on_term = true,
                "--ckpt-keep" => {
                    job.keep = Some(
                        value
                            .parse()
                            .with_context(|| format!("{key}: {value:?} is not a number"))?,
                    )
                }
                _ => bail!("the checkpoint helper does not take {a:?}"),
            }
        }
        job.args = rest.cloned().collect();
        if job.exec && job.args.is_empty() {
            bail!("the checkpoint helper's exec needs a command");
        }
        Ok(job)
    }
}

impl Verb {
    /// The helper's own argv, as the user side writes it.
    pub fn to_args(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![];
        match self {
            Verb::Start {
                restart,
                checkpoint,
                name,
                args,
            } => {
                let word = if *restart { "restart" } else { "launch" };
                v.extend([word.to_string(), checkpoint.clone(), name.clone()]);
                v.extend(args.iter().cloned());
            }
            Verb::Checkpoint { name, stop } => {
                v.extend(["checkpoint".to_string(), name.clone()]);
                if *stop {
                    v.push("--stop".into());
                }
            }
            Verb::Stop { name } => v.extend(["stop".to_string(), name.clone()]),
            Verb::Instances => v.push("instances".into()),
            Verb::Create { name } => v.extend(["create".to_string(), name.clone()]),
            Verb::Delete { name } => v.extend(["delete".to_string(), name.clone()]),
            Verb::List => v.push("list".into()),
            Verb::Job(job) => job.to_args(&mut v),
        }
        v
    }

    /// Reads the helper's argv (without the program name).
    pub fn parse(args: &[String]) -> Result<Verb> {
        let word = |i: usize, what: &str| -> Result<String> {
            let w = args
                .get(i)
                .with_context(|| format!("the checkpoint helper needs {what}"))?;
            checked_name(w, what)?;
            Ok(w.clone())
        };
        let only = |n: usize| -> Result<()> {
            if args.len() > n {
                bail!(
                    "the checkpoint helper takes no more arguments after {:?}",
                    args[n - 1]
                );
            }
            Ok(())
        };
        let verb = args.first().map(String::as_str).unwrap_or_default();
        Ok(match verb {
            "launch" | "restart" => {
                let checkpoint = word(1, "a checkpoint name")?;
                let name = word(2, "an instance name")?;
                Verb::Start {
                    restart: verb == "restart",
                    checkpoint,
                    name,
                    args: args[3..].to_vec(),
                }
            }
            "checkpoint" => {
                let name = word(1, "an instance name")?;
                let stop = match args.get(2).map(String::as_str) {
                    None => false,
                    Some("--stop") => true,
                    Some(other) => bail!("the checkpoint helper does not take {other:?}"),
                };
                only(3)?;
                Verb::Checkpoint { name, stop }
            }
            "stop" => {
                let name = word(1, "an instance name")?;
                only(2)?;
                Verb::Stop { name }
            }
            "create" | "delete" => {
                let name = word(1, "a checkpoint name")?;
                only(2)?;
                if verb == "create" {
                    Verb::Create { name }
                } else {
                    Verb::Delete { name }
                }
            }
            "instances" => {
                only(1)?;
                Verb::Instances
            }
            "list" => {
                only(1)?;
                Verb::List
            }
            "job" => Verb::Job(Job::parse(args)?),
            other => bail!(
                "the checkpoint helper does not do {other:?} (it launches, checkpoints, stops and restarts your instances; use rctr for the rest)"
            ),
        })
    }

    /// Root's command line for this request by `caller`.
    fn root_command(&self, caller: &Caller, workdir: &Path) -> Vec<String> {
        let mut v: Vec<String> = vec!["rctr".into()];
        let s = |x: &str| x.to_string();
        match self {
            Verb::Start {
                restart,
                checkpoint,
                name,
                args,
            } => {
                let flag = if *restart {
                    "--ckpt-restart"
                } else {
                    "--ckpt-launch"
                };
                v.extend([s("instance"), s("start")]);
                v.extend(caller.container_options(workdir));
                v.extend([
                    format!("{flag}={checkpoint}"),
                    format!("/proc/self/fd/{IMAGE_FD}"),
                    name.clone(),
                ]);
                v.extend(args.iter().cloned());
            }
            Verb::Checkpoint { name, stop } => {
                v.extend([s("checkpoint"), s("instance"), name.clone()]);
                if *stop {
                    v.push(s("--stop"));
                }
            }
            Verb::Stop { name } => v.extend([s("instance"), s("stop"), name.clone()]),
            Verb::Instances => v.extend([s("instance"), s("list")]),
            Verb::Create { name } => v.extend([s("checkpoint"), s("create"), name.clone()]),
            Verb::Delete { name } => v.extend([s("checkpoint"), s("delete"), name.clone()]),
            Verb::List => v.extend([s("checkpoint"), s("list")]),
            Verb::Job(job) => {
                v.push(s(if job.exec { "exec" } else { "run" }));
                v.extend(caller.container_options(workdir));
                v.push(format!("{}={}", job.choice.flag(), job.checkpoint));
                v.extend(job.settings());
                v.push(format!("/proc/self/fd/{IMAGE_FD}"));
                v.extend(job.args.iter().cloned());
            }
        }
        v
    }

    /// Whether the caller hands over an image (descriptor 3).
    fn takes_image(&self) -> bool {
        matches!(self, Verb::Start { .. } | Verb::Job(_))
    }

    /// Whether the caller hands over log files (descriptors 4 and 5); a job writes to the
    /// caller's own stdout and stderr.
    fn takes_logs(&self) -> bool {
        matches!(self, Verb::Start { .. })
    }
}

/// A name the helper passes on: what rctr accepts for instances and checkpoints, and
/// never something an argument parser could take for an option or a pattern.
fn checked_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("{what} {name:?}: use letters, digits, '.', '_' and '-', starting with a letter or digit");
    }
    Ok(())
}

/// Who called the helper.
struct Caller {
    uid: u32,
    /// Primary group first.
    groups: Vec<u32>,
    home: PathBuf,
}

impl Caller {
    fn identify() -> Result<Caller> {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .with_context(|| format!("uid {uid} has no passwd entry on this host"))?;
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .context("cannot read your groups")?
            .into_iter()
            .map(|g| g.as_raw())
            .filter(|g| *g != gid.as_raw())
            .collect();
        groups.insert(0, gid.as_raw());
        Ok(Caller {
            uid: uid.as_raw(),
            groups,
            home: user.dir,
        })
    }

    /// `--security` for this caller: their uid, primary gid, then their other groups.
    fn security(&self) -> String {
        let gids: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        format!("uid:{},gid:{}", self.uid, gids.join(":"))
    }

    /// The container options of every request: the caller's ids and home, no bind of the
    /// current directory, which is only the working directory when the container has it
    /// (home, /tmp, /var/tmp).
    fn container_options(&self, workdir: &Path) -> Vec<String> {
        let mut v = vec![
            "--security".to_string(),
            self.security(),
            "--home".to_string(),
            self.home.to_string_lossy().into_owned(),
            "--no-mount=cwd".to_string(),
        ];
        let bound = [
            self.home.as_path(),
            Path::new("/tmp"),
            Path::new("/var/tmp"),
        ];
        if bound.iter().any(|d| workdir.starts_with(d)) {
            v.push(format!("--pwd={}", workdir.display()));
        }
        v
    }
}

/// When this process runs setuid root for a user who is not root, it is the helper:
/// returns its exit status (the caller exits with it). None otherwise.
pub fn run_if_setuid() -> Option<i32> {
    if !nix::unistd::geteuid().is_root() || nix::unistd::getuid().is_root() {
        return None;
    }
    Some(match helper_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rctr: error: {e:#}");
            1
        }
    })
}

fn helper_main() -> Result<i32> {
    let caller = Caller::identify()?;
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(OsString::into_string)
        .collect::<std::result::Result<_, _>>()
        .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))?;
    let verb = Verb::parse(&args)?;
    become_root_entirely()?;
    // Root's usual mask, not the caller's: the container's skeleton must be readable by
    // the application's user; private files (checkpoint images, state) set their own modes.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    rctr_runtime::spawn::close_fds_except(&[0, 1, 2, IMAGE_FD, OUT_FD, ERR_FD]);
    let home = state_home(caller.uid)?;
    // The one variable a job needs from its batch system (`--ckpt-then requeue`), if it
    // is a job id; the requeue then runs as the caller.
    let slurm_job = std::env::var("SLURM_JOB_ID")
        .ok()
        .filter(|id| !id.is_empty() && id.len() <= 20 && id.chars().all(|c| c.is_ascii_digit()));
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    if let Some(id) = slurm_job {
        std::env::set_var("SLURM_JOB_ID", id);
    }
    std::env::set_var(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    std::env::set_var("HOME", &home);
    // The caller's directory is only the container's working directory (a path string);
    // root binds nothing by a path the caller could change in between, and works in /.
    let workdir = current_dir_or_home(&caller);
    std::env::set_current_dir("/")?;
    if verb.takes_image() {
        let image_name = check_image_fd()?;
        let logs = if verb.takes_logs() {
            Some((
                writable_file(OUT_FD, "stdout log")?,
                writable_file(ERR_FD, "stderr log")?,
            ))
        } else {
            None
        };
        if let Ok(mut h) = HANDED_OVER.lock() {
            *h = Some(HandedOverFiles { image_name, logs });
        }
    }
    let cli =
        <crate::cli::Cli as clap::Parser>::try_parse_from(verb.root_command(&caller, &workdir))
            .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim()))?;
    rctr_log::set_level(cli.log_level());
    crate::cli::dispatch(cli)
}

/// What the caller handed over, checked, for root's command to take (it runs in this
/// process: [`crate::cli`]).
struct HandedOverFiles {
    /// The path the image on [`IMAGE_FD`] was opened by, for listings.
    image_name: String,
    /// An instance's stdout and stderr logs.
    logs: Option<(std::fs::File, std::fs::File)>,
}

static HANDED_OVER: std::sync::Mutex<Option<HandedOverFiles>> = std::sync::Mutex::new(None);

/// In the helper: the log files the caller handed over for the instance it starts.
pub fn handed_over_logs() -> Option<(std::fs::File, std::fs::File)> {
    HANDED_OVER.lock().ok()?.as_mut()?.logs.take()
}

/// In the helper: `plan` (built from `/proc/self/fd/3`) reads its image through the
/// caller's descriptor, whatever the path points to by now, and lists it by its path.
/// Nothing to do outside the helper.
pub fn adopt_handed_over_image(plan: &mut rctr_runtime::plan::ContainerPlan) {
    let Some(name) = HANDED_OVER
        .lock()
        .ok()
        .and_then(|h| h.as_ref().map(|f| f.image_name.clone()))
    else {
        return;
    };
    plan.image_display = name;
    rctr_runtime::loopdev::read_image_through(&plan.root.path, IMAGE_FD);
}

/// Real, effective and saved ids all root's, root's groups only.
fn become_root_entirely() -> Result<()> {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setgroups(&[root_gid]).context("cannot drop your groups")?;
    nix::unistd::setresgid(root_gid, root_gid, root_gid).context("cannot take gid 0")?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).context("cannot take uid 0")?;
    Ok(())
}

/// The caller's directory to run in: the current one when it is theirs to be in, else
/// their home (the container binds it, as for a user's own containers).
fn current_dir_or_home(caller: &Caller) -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| caller.home.clone())
}

/// `/var/lib/rctr/users/<uid>`, made root's and private if needed; refused if anyone
/// else could change it or a directory above it.
fn state_home(uid: u32) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = Path::new(STATE_ROOT);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(base)
        .with_context(|| format!("cannot create {STATE_ROOT}"))?;
    let home = base.join(uid.to_string());
    match std::fs::DirBuilder::new().mode(0o700).create(&home) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", home.display())),
    }
    let md = std::fs::symlink_metadata(&home)?;
    if !md.is_dir() || md.uid() != 0 || md.mode() & 0o077 != 0 {
        bail!(
            "{} must be a directory of root's with mode 0700: refusing to keep your checkpoints there; ask the administrator",
            home.display()
        );
    }
    rctr_checkpoint::trust::ensure_root_controlled(&home)?;
    Ok(home)
}

fn fd(n: i32) -> BorrowedFd<'static> {
    // SAFETY: the descriptors checked here stay open for the life of the helper (nothing
    // closes them before it exits); fstat and fcntl on a closed number only fail.
    unsafe { BorrowedFd::borrow_raw(n) }
}

/// fd 3 must be a regular file the caller opened for reading: an image. Returns the
/// path it was opened by, for listings.
fn check_image_fd() -> Result<String> {
    let file = std::fs::File::from(fd(IMAGE_FD).try_clone_to_owned().with_context(|| {
        format!("no image on descriptor {IMAGE_FD}: run this through `rctr instance start`")
    })?);
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    let mode = flags & libc::O_ACCMODE;
    let md = file.metadata()?;
    // An O_PATH descriptor needs no read permission to open, and root reopens this one
    // (through /proc/self/fd): it must be a real read descriptor.
    let o_path = flags & libc::O_PATH != 0;
    if !md.is_file() || o_path || !(mode == libc::O_RDONLY || mode == libc::O_RDWR) {
        bail!("descriptor {IMAGE_FD} is not an image file open for reading");
    }
    Ok(std::fs::read_link(format!("/proc/self/fd/{IMAGE_FD}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default())
}

/// A log descriptor: a regular file the caller opened for writing.
fn writable_file(n: i32, what: &str) -> Result<std::fs::File> {
    let owned: OwnedFd = fd(n)
        .try_clone_to_owned()
        .with_context(|| format!("no {what} on descriptor {n}"))?;
    let file = std::fs::File::from(owned);
    let flags = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
    let mode = flags & libc::O_ACCMODE;
    if !file.metadata()?.is_file() || !(mode == libc::O_WRONLY || mode == libc::O_RDWR) {
        bail!("descriptor {n} is not a {what} file open for writing");
    }
    Ok(file)
}

/// For a caller who is not root: the installed helper, if the administrator installed
/// it: root's, setuid, writable by nobody else. `RCTR_SUID_HELPER` names another copy
/// (tests install one; a copy that is not setuid root is not used).
pub fn for_user() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let path = std::env::var_os("RCTR_SUID_HELPER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(INSTALLED_PATH));
    let md = std::fs::metadata(&path).ok()?;
    (md.is_file() && md.uid() == 0 && md.mode() & 0o4000 != 0 && md.mode() & 0o022 == 0)
        .then_some(path)
}

/// What a user's rctr hands the helper as descriptors: the image (3), and for an
/// instance its two log files (4, 5).
pub struct HandedOver<'a> {
    pub image: &'a Path,
    pub logs: Option<(&'a Path, &'a Path)>,
}

/// Becomes the helper for `verb` (exec: same process, so a batch system's signals to the
/// job's process and the terminal's reach it), with `files` handed over as descriptors.
/// Returns only on failure.
pub fn exec(helper: &Path, verb: &Verb, files: Option<HandedOver<'_>>) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(helper);
    cmd.args(verb.to_args());
    if let Some(files) = files {
        let image = std::fs::File::open(files.image)
            .with_context(|| format!("cannot open image {}", files.image.display()))?;
        let open_log = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))
        };
        let mut fds: Vec<OwnedFd> = vec![image.into()];
        if let Some((out, err)) = files.logs {
            fds.push(open_log(out)?.into());
            fds.push(open_log(err)?.into());
        }
        // Out of the way first (a descriptor may already sit at 3, 4 or 5), then into
        // place; the copies are not close-on-exec, so the helper gets them.
        let high: Vec<OwnedFd> = fds
            .iter()
            .map(|f| {
                nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))
                    .map(|n| {
                        // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor, ours alone.
                        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) }
                    })
                    .context("cannot hand the files over")
            })
            .collect::<Result<_>>()?;
        drop(fds);
        for (i, h) in high.iter().enumerate() {
            nix::unistd::dup2(h.as_raw_fd(), IMAGE_FD + i as i32)
                .context("cannot hand the files over")?;
        }
    }
    let err = cmd.exec();
    Err(err).context("cannot run the checkpoint helper")
}

/// Runs the helper for `verb` and returns what it printed on stdout (errors pass through).
pub fn output(helper: &Path, verb: &Verb) -> Result<String> {
    let out = std::process::Command::new(helper)
        .args(verb.to_args())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run the checkpoint helper")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Verb> {
        Verb::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn verbs_round_trip_through_the_helpers_argv() {
        for verb in [
            Verb::Start {
                restart: false,
                checkpoint: "ex".into(),
                name: "server".into(),
                args: vec!["8888".into(), "--bind=/etc".into()],
            },
            Verb::Start {
                restart: true,
                checkpoint: "ex".into(),
                name: "s2".into(),
                args: vec![],
            },
            Verb::Checkpoint {
                name: "server".into(),
                stop: true,
            },
            Verb::Stop {
                name: "a.b_c-1".into(),
            },
            Verb::Instances,
            Verb::Create { name: "ex".into() },
            Verb::Delete { name: "ex".into() },
            Verb::List,
            Verb::Job(Job {
                exec: true,
                choice: JobCheckpoint::Auto,
                checkpoint: "cnt".into(),
                name: Some("j1".into()),
                interval_secs: Some(90),
                signals: vec!["USR1".into(), "10".into()],
                then: Some("requeue".into()),
                on_term: true,
                keep: Some(3),
                args: vec!["sh".into(), "-c".into(), "--bind=/x".into()],
            }),
            Verb::Job(Job {
                choice: JobCheckpoint::Restart,
                checkpoint: "cnt".into(),
                ..Job::default()
            }),
        ] {
            assert_eq!(Verb::parse(&verb.to_args()).unwrap(), verb);
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for (args, want) in [
            (vec!["exec", "x"], "does not do"),
            (vec![], "does not do"),
            (vec!["launch", "--bind=/etc", "n"], "a checkpoint name"),
            (vec!["launch", "ex", "-B"], "an instance name"),
            (vec!["stop", "web*"], "an instance name"),
            (vec!["stop", "../x"], "an instance name"),
            (vec!["delete", ".hidden"], "a checkpoint name"),
            (vec!["checkpoint", "s", "--ckpt-conf=/x"], "does not take"),
            (vec!["list", "extra"], "no more arguments"),
            (vec!["create", "a/b"], "a checkpoint name"),
            (vec!["job", "shell", "auto", "c"], "run or exec"),
            (
                vec!["job", "run", "auto", "c", "--bind=/etc"],
                "does not take",
            ),
            (
                vec!["job", "run", "auto", "c", "--ckpt-conf=/x"],
                "does not take",
            ),
            (
                vec!["job", "run", "auto", "c", "--ckpt-signal=US R1"],
                "name a signal",
            ),
            (
                vec!["job", "run", "auto", "c", "--ckpt-then=reboot"],
                "continue, exit",
            ),
            (
                vec!["job", "run", "auto", "c", "--name=../x"],
                "an instance name",
            ),
            (vec!["job", "exec", "auto", "c", "--"], "needs a command"),
        ] {
            let e = format!("{:#}", p(&args).unwrap_err());
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn root_runs_the_container_as_the_caller_with_the_image_from_a_descriptor() {
        let caller = Caller {
            uid: 1234,
            groups: vec![50, 60],
            home: PathBuf::from("/home/u"),
        };
        let cmd = Verb::Start {
            restart: false,
            checkpoint: "ex".into(),
            name: "web".into(),
            args: vec!["--bind=/etc:/x".into()],
        }
        .root_command(&caller, Path::new("/home/u/work"));
        assert_eq!(
            cmd,
            [
                "rctr",
                "instance",
                "start",
                "--security",
                "uid:1234,gid:50:60",
                "--home",
                "/home/u",
                "--no-mount=cwd",
                "--pwd=/home/u/work",
                "--ckpt-launch=ex",
                "/proc/self/fd/3",
                "web",
                "--bind=/etc:/x"
            ]
        );
    }
}
