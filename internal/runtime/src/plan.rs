//! A container plan: everything needed to build a container's filesystem and
//! start its process. It is serializable because instances record it, and a
//! checkpoint restart must rebuild exactly the same mounts as the original.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The descriptor at which the init of a `--writable-tmpfs` container holds the overlay's
/// upper directory (the container's changes): from the host, `/proc/<init>/fd/<this>`
/// reaches it, for a checkpoint to save them.
pub const UPPER_DIR_FD: i32 = 201;

/// Where a checkpoint engine is mounted inside a container (see rctr-checkpoint): init
/// recognises the engine's processes by it.
pub const ENGINE_MOUNT: &str = "/.rctr-engine";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    /// A squashfs filesystem at `offset` inside `path` (a SIF or a plain squashfs file).
    Squashfs,
    /// A directory tree (sandbox).
    Dir,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSource {
    pub kind: RootKind,
    pub path: PathBuf,
    #[serde(default)]
    pub offset: u64,
    /// 0 means "to the end of the file".
    #[serde(default)]
    pub size: u64,
}

/// What gets mounted at a destination inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum MountSource {
    /// A host path bind-mounted (recursively).
    Bind { src: PathBuf },
    /// An empty private tmpfs.
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub dst: PathBuf,
    pub readonly: bool,
}

impl MountEntry {
    pub fn bind(src: impl Into<PathBuf>, dst: impl Into<PathBuf>, readonly: bool) -> Self {
        MountEntry {
            source: MountSource::Bind { src: src.into() },
            dst: dst.into(),
            readonly,
        }
    }
    pub fn tmpfs(dst: impl Into<PathBuf>) -> Self {
        MountEntry {
            source: MountSource::Tmpfs,
            dst: dst.into(),
            readonly: false,
        }
    }
}

/// What the container's /dev is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevMode {
    /// A private tmpfs with the standard nodes, its own devpts and /dev/shm: what
    /// `--contain` asks for, and what checkpointable containers need (CRIU cannot
    /// dump host device files nor a host /dev/shm).
    #[default]
    Minimal,
    /// The host's /dev, /dev/shm included (Apptainer's `mount dev = yes`): GPUs,
    /// InfiniBand, fuse, shared memory between MPI ranks in separate containers.
    Host,
}

/// A container run by a user who is not root: a user namespace maps the caller's ids
/// (to themselves, or to root with `--fakeroot`), and the image's squashfs is served by
/// squashfuse instead of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNs {
    /// The caller's uid and gid on the host.
    pub uid: u32,
    pub gid: u32,
    /// Map the caller to root (uid and gid 0) inside, as Apptainer's `--fakeroot`.
    pub fakeroot: bool,
}

impl UserNs {
    /// The uid the caller has inside the container.
    pub fn inside_uid(&self) -> u32 {
        if self.fakeroot {
            0
        } else {
            self.uid
        }
    }
    pub fn inside_gid(&self) -> u32 {
        if self.fakeroot {
            0
        } else {
            self.gid
        }
    }
}

/// Root running a container as another user (`--security uid:N,gid:N`): the application
/// and every `exec` into the instance take these credentials, with no capability and
/// `no_new_privs`; init stays root (it supervises the container, it runs no user code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
}

/// Contents of generated identity files bound over the image's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    pub root: RootSource,
    /// Image path as the user gave it (for display and instance listings).
    pub image_display: String,
    /// Mounts on top of the image, applied in order (parents before children).
    pub mounts: Vec<MountEntry>,
    /// Overlay a writable tmpfs on the image.
    pub writable_tmpfs: bool,
    /// Add the calling user to the image's /etc/passwd and /etc/group.
    pub identity: Option<Identity>,
    /// Working directory inside the container (falls back to home, then /).
    pub cwd: PathBuf,
    pub home: PathBuf,
    /// Process environment.
    pub env: Vec<(String, String)>,
    /// Variables re-exported after the image's env scripts (user requests win).
    pub env_overrides: Vec<(String, String)>,
    /// argv of the container process.
    pub argv: Vec<String>,
    pub pid_ns: bool,
    pub net_ns: bool,
    /// Bind the host's /dev/pts (interactive use on a terminal) instead of a
    /// private devpts instance (instances, which must be checkpointable).
    #[serde(default)]
    pub host_pts: bool,
    /// Use a directory image itself, read-write, as the root (no overlay): what
    /// `rctr build` needs for %post, whose changes must land in the staged tree.
    #[serde(default)]
    pub writable_root: bool,
    /// A private IPC namespace (SysV semaphores, queues, shared memory): checkpointable
    /// containers need one, so that the engine saves and restores those objects.
    #[serde(default)]
    pub ipc_ns: bool,
    /// What the user asked for explicitly: a checkpoint restart that cannot apply new
    /// requests tells them apart from the container's implicit set-up.
    #[serde(default)]
    pub requested: UserRequests,
    #[serde(default)]
    pub dev: DevMode,
    /// The working directory was asked for (`--pwd`): failing to enter it is an error,
    /// not a warning.
    #[serde(default)]
    pub cwd_explicit: bool,
    /// Take the user's environment values literally (`--no-eval`) instead of letting
    /// the container's shell evaluate them.
    #[serde(default)]
    pub env_no_eval: bool,
    /// Host name in a private UTS namespace (`--hostname`).
    #[serde(default)]
    pub hostname: Option<String>,
    /// With a pid namespace, run the command itself as pid 1 (`--no-init`).
    #[serde(default)]
    pub no_init: bool,
    /// Size limit of the session tmpfs, which holds `--writable-tmpfs` changes
    /// (Apptainer's `sessiondir max size`); None: no limit (plans recorded before it).
    #[serde(default)]
    pub session_size_mib: Option<u64>,
    /// Set when the caller is not root: the container gets a user namespace (plans
    /// recorded by root, and root's own, have none).
    #[serde(default)]
    pub userns: Option<UserNs>,
    /// Set when root runs the container as another user (see [`RunAs`]).
    #[serde(default)]
    pub run_as: Option<RunAs>,
}

/// Explicit requests on the command line, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRequests {
    /// `--bind` specs.
    pub binds: Vec<String>,
    /// `--env` assignments (and `--env-file`, as `@FILE`).
    pub env: Vec<String>,
}

impl ContainerPlan {
    /// A container for a definition file's build scripts (%post, %test) in the staged
    /// root filesystem `rootfs`, set up as Apptainer's build runs them: as root (no
    /// identity files, so a script may edit /etc/passwd), in `/`, with the host's
    /// resolv.conf and hosts, and no home bind (HOME is the image's /root). Unlike
    /// Apptainer, /tmp and /var/tmp are private tmpfs rather than the host's (a
    /// root script cleaning /tmp must not clean the host's), and the script gets its
    /// own pid namespace so that nothing it starts outlives it.
    ///
    /// `writable` makes changes land in `rootfs` (%post); otherwise it is read-only
    /// (%test). `clean_env` starts from Apptainer's --cleanenv environment instead of
    /// the host's; `extra_env` is exported after the image's env scripts.
    pub fn for_build_script(
        rootfs: &Path,
        writable: bool,
        argv: Vec<String>,
        clean_env: bool,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<ContainerPlan> {
        let home = "/root";
        // vars() would panic on a non-UTF-8 variable; such variables are not passed.
        let host_env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let mut env = crate::env::container_env(
            &host_env,
            &crate::env::EnvOptions {
                cleanenv: clean_env,
                container_name: rootfs.to_string_lossy().into_owned(),
                home: home.to_string(),
                ..Default::default()
            },
        )?;
        for (key, value) in extra_env {
            env.overrides.retain(|(k, _)| k != key);
            env.overrides.push((key.clone(), value.clone()));
        }
        Ok(ContainerPlan {
            root: RootSource {
                kind: RootKind::Dir,
                path: rootfs.to_path_buf(),
                offset: 0,
                size: 0,
            },
            image_display: rootfs.display().to_string(),
            mounts: vec![MountEntry::tmpfs("/tmp"), MountEntry::tmpfs("/var/tmp")],
            writable_tmpfs: false,
            identity: None,
            cwd: PathBuf::from("/"),
            home: PathBuf::from(home),
            env: env.base,
            env_overrides: env.overrides,
            argv,
            pid_ns: true,
            net_ns: false,
            host_pts: false,
            writable_root: writable,
            ipc_ns: false,
            requested: UserRequests::default(),
            dev: DevMode::Minimal,
            cwd_explicit: false,
            env_no_eval: false,
            hostname: None,
            no_init: false,
            session_size_mib: None,
            userns: None,
            run_as: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_script_plans_run_as_root_in_the_staged_tree() {
        let extra = [("APPTAINER_LABELS".to_string(), "/.build.labels".to_string())];
        let argv = vec![
            "/bin/sh".to_string(),
            "-ex".to_string(),
            "/.post.script".to_string(),
        ];
        let p = ContainerPlan::for_build_script(
            Path::new("/b/rootfs"),
            true,
            argv.clone(),
            true,
            &extra,
        )
        .unwrap();
        assert!(p.writable_root && p.pid_ns && !p.net_ns && !p.writable_tmpfs);
        assert_eq!(
            (p.root.kind, p.root.path.as_path()),
            (RootKind::Dir, Path::new("/b/rootfs"))
        );
        assert_eq!(p.argv, argv);
        assert!(
            p.identity.is_none(),
            "identity files would make /etc/passwd read-only"
        );
        assert_eq!(
            (p.cwd.as_path(), p.home.as_path()),
            (Path::new("/"), Path::new("/root"))
        );
        // Private /tmp and /var/tmp, and no home bind.
        assert_eq!(
            p.mounts,
            vec![MountEntry::tmpfs("/tmp"), MountEntry::tmpfs("/var/tmp")]
        );
        assert!(p.env.contains(&("HOME".to_string(), "/root".to_string())));
        assert!(p.env_overrides.contains(&extra[0]));

        let p = ContainerPlan::for_build_script(Path::new("/b/rootfs"), false, argv, false, &[])
            .unwrap();
        assert!(!p.writable_root);
    }
}
