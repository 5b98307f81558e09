//! Builds the container's root filesystem inside a fresh mount namespace.
//!
//! Layout: a private tmpfs "session" holds the mounted image, a skeleton of the
//! mount points the image lacks, and the final root: an overlay whose lower
//! layers are the skeleton and the image. The overlay has no upper layer unless
//! `--writable-tmpfs`, so the image stays read-only while binds to paths it does
//! not contain still work (what Apptainer's underlay/overlay gives its users).
//!
//! A plan with `writable_root` (building: %post) instead uses its directory
//! image itself, bound read-write, as the root, so that changes land in it.

use crate::plan::{ContainerPlan, DevMode, MountEntry, MountSource, RootKind};
use crate::resolve::resolve_in_root;
use crate::syscall::{FileKind, Syscall};
use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use std::path::{Component, Path, PathBuf};

/// Host directory whose private tmpfs (per mount namespace) holds the session.
pub const SESSION_DIR: &str = "/run/rctr/session";

/// Host files bound into every container at the same path.
const HOST_FILES: &[&str] = &["/etc/resolv.conf", "/etc/hosts"];

/// Character devices of the minimal /dev: (name, major, minor).
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

pub struct Session {
    pub dir: PathBuf,
}

impl Session {
    pub fn image(&self) -> PathBuf {
        self.dir.join("image")
    }
    pub fn skeleton(&self) -> PathBuf {
        self.dir.join("skeleton")
    }
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
}

/// Joins an absolute container path onto a host directory.
pub fn under(base: &Path, inside: &Path) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in inside.components() {
        if let Component::Normal(n) = c {
            p.push(n);
        }
    }
    p
}

/// Whether a mount needs a directory as its mount point: anything but a directory
/// (file, device node, FIFO, socket) is bound onto a file.
fn needs_dir<S: Syscall>(sys: &S, source: &MountSource) -> bool {
    match source {
        MountSource::Tmpfs => true,
        MountSource::Bind { src } => sys.is_dir(src),
    }
}

/// Everything that needs a mount point inside the container, in mount order, resolved
/// through the symlinks of the image mounted at `image`. The identity files are not
/// there: they are only bound over files the image has.
fn mount_points<S: Syscall>(sys: &S, image: &Path, plan: &ContainerPlan) -> Vec<(PathBuf, bool)> {
    let mut points: Vec<(PathBuf, bool)> = vec![
        ("/proc".into(), true),
        ("/sys".into(), true),
        ("/dev".into(), true),
    ];
    for f in HOST_FILES {
        points.push((PathBuf::from(f), false));
    }
    for m in &plan.mounts {
        points.push((m.dst.clone(), needs_dir(sys, &m.source)));
    }
    points
        .into_iter()
        .map(|(p, is_dir)| (resolve_in_root(sys, image, &p), is_dir))
        .collect()
}

/// Creates in the skeleton every mount point the image does not have.
pub fn build_skeleton<S: Syscall>(sys: &S, session: &Session, plan: &ContainerPlan) -> Result<()> {
    let image = session.image();
    let skeleton = session.skeleton();
    for (point, is_dir) in mount_points(sys, &image, plan) {
        if sys.kind(&under(&image, &point)) != FileKind::Missing {
            continue;
        }
        let target = under(&skeleton, &point);
        if let Some(parent) = target.parent() {
            sys.mkdir_all(parent, 0o755)?;
        }
        if is_dir {
            sys.mkdir_all(&target, 0o755)?;
        } else if sys.kind(&target) == FileKind::Missing {
            sys.create_file(&target, b"", 0o644)?;
        }
    }
    Ok(())
}

/// For a writable root: creates the missing mount points in the image directory
/// itself. Every existing ancestor must be a real directory, because following a
/// symlink there would create directories outside the image, on the host.
pub fn add_mount_points<S: Syscall>(sys: &S, root: &Path, plan: &ContainerPlan) -> Result<()> {
    for (point, is_dir) in mount_points(sys, root, plan) {
        let target = under(root, &point);
        if sys.kind(&target) != FileKind::Missing {
            continue;
        }
        let mut dir = root.to_path_buf();
        let parents: Vec<_> = point
            .parent()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        for c in parents {
            let Component::Normal(name) = c else { continue };
            dir.push(name);
            match sys.kind(&dir) {
                FileKind::Dir => {}
                FileKind::Missing => sys.mkdir_all(&dir, 0o755)?,
                _ => bail!(
                    "cannot create mount point {} in {}: {} is not a directory",
                    point.display(),
                    root.display(),
                    dir.display()
                ),
            }
        }
        if is_dir {
            sys.mkdir_all(&target, 0o755)?;
        } else {
            sys.create_file(&target, b"", 0o644)?;
        }
    }
    Ok(())
}

/// Mounts the image and assembles the container's root on it; returns the root's
/// host path. Read-only images get the overlay of skeleton and image; a
/// `writable_root` plan uses its directory image directly.
pub fn assemble_root<S: Syscall>(
    sys: &S,
    session: &Session,
    plan: &ContainerPlan,
    device: Option<&Path>,
) -> Result<PathBuf> {
    mount_image(sys, session, plan, device)?;
    if plan.writable_root {
        add_mount_points(sys, &session.image(), plan)?;
        return Ok(session.image());
    }
    build_skeleton(sys, session, plan)?;
    mount_overlay(sys, session, plan.writable_tmpfs)?;
    Ok(session.root())
}

/// Mounts the image (already attached to `device` for squashfs) at session/image.
pub fn mount_image<S: Syscall>(
    sys: &S,
    session: &Session,
    plan: &ContainerPlan,
    device: Option<&Path>,
) -> Result<()> {
    let target = session.image();
    match plan.root.kind {
        RootKind::Squashfs if plan.writable_root => bail!(
            "internal: a writable root needs a directory image, not {}",
            plan.root.path.display()
        ),
        // Without root: no loop device, and the kernel's squashfs is root's alone.
        RootKind::Squashfs if plan.userns.is_some() => {
            sys.mount_squashfuse(&plan.root.path, plan.root.offset, &target)
        }
        RootKind::Squashfs => {
            let dev = device.context("internal: squashfs image without loop device")?;
            sys.mount(
                Some(dev),
                &target,
                Some("squashfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                None,
            )
            .with_context(|| {
                format!(
                    "image {} is not a mountable squashfs",
                    plan.root.path.display()
                )
            })
        }
        RootKind::Dir => {
            sys.mount(
                Some(&plan.root.path),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            if plan.writable_root {
                return Ok(());
            }
            sys.mount(
                None,
                &target,
                None,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_RDONLY
                    | sys.kept_flags(&target),
                None,
            )
        }
    }
}

/// Mounts the overlay root: skeleton over image, plus a tmpfs upper if writable.
pub fn mount_overlay<S: Syscall>(sys: &S, session: &Session, writable: bool) -> Result<()> {
    let mut data = format!(
        "lowerdir={}:{}",
        session.skeleton().display(),
        session.image().display()
    );
    let mut flags = MsFlags::empty();
    if writable {
        sys.mkdir_all(&session.upper(), 0o755)?;
        sys.mkdir_all(&session.work(), 0o755)?;
        data.push_str(&format!(
            ",upperdir={},workdir={}",
            session.upper().display(),
            session.work().display()
        ));
    } else {
        flags |= MsFlags::MS_RDONLY;
    }
    sys.mount(
        Some(Path::new("overlay")),
        &session.root(),
        Some("overlay"),
        flags,
        Some(&data),
    )
    .context("cannot assemble the container root (overlay)")
}

/// Mounts /proc, /sys and /dev on the new root: the host's /dev, or a minimal one.
/// With `host_pts`, a minimal /dev gets the host's /dev/pts instead of a fresh
/// instance, so that an interactive shell's terminal (a host pty) exists inside.
///
/// In a user namespace (`userns`), device nodes cannot be made: the minimal /dev gets
/// the host's nodes bound instead, and without a pid namespace of its own (which
/// a fresh proc needs there) the container gets the host's /proc.
pub fn mount_system<S: Syscall>(
    sys: &S,
    root: &Path,
    dev_mode: DevMode,
    host_pts: bool,
    userns: bool,
) -> Result<()> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let proc_target = root.join("proc");
    let proc = sys.mount(
        Some(Path::new("proc")),
        &proc_target,
        Some("proc"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        None,
    );
    match proc {
        Err(_) if userns => {
            sys.mount(
                Some(Path::new("/proc")),
                &proc_target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
        }
        other => other?,
    }
    let sys_target = root.join("sys");
    if sys
        .mount(
            Some(Path::new("sysfs")),
            &sys_target,
            Some("sysfs"),
            nosuid_nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
            None,
        )
        .is_err()
    {
        // A fresh sysfs is refused outside our own network namespace in some setups:
        // fall back to a read-only bind of the host's.
        sys.mount(
            Some(Path::new("/sys")),
            &sys_target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        sys.mount(
            None,
            &sys_target,
            None,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | sys.kept_flags(&sys_target),
            None,
        )?;
    }
    let dev = root.join("dev");
    if dev_mode == DevMode::Host {
        return bind(sys, Path::new("/dev"), &dev, false);
    }
    sys.mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=64k"),
    )?;
    for (name, major, minor) in DEVICES {
        if userns {
            sys.create_file(&dev.join(name), b"", 0o666)?;
            bind(sys, &Path::new("/dev").join(name), &dev.join(name), false)?;
        } else {
            sys.mknod_char(&dev.join(name), *major, *minor, 0o666)?;
        }
    }
    sys.mkdir_all(&dev.join("pts"), 0o755)?;
    sys.mkdir_all(&dev.join("shm"), 0o1777)?;
    if host_pts {
        bind(sys, Path::new("/dev/pts"), &dev.join("pts"), false)?;
    } else {
        sys.mount(
            Some(Path::new("devpts")),
            &dev.join("pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
    }
    sys.mount(
        Some(Path::new("tmpfs")),
        &dev.join("shm"),
        Some("tmpfs"),
        nosuid_nodev,
        Some("mode=1777"),
    )?;
    sys.symlink(Path::new("pts/ptmx"), &dev.join("ptmx"))?;
    sys.symlink(Path::new("/proc/self/fd"), &dev.join("fd"))?;
    sys.symlink(Path::new("/proc/self/fd/0"), &dev.join("stdin"))?;
    sys.symlink(Path::new("/proc/self/fd/1"), &dev.join("stdout"))?;
    sys.symlink(Path::new("/proc/self/fd/2"), &dev.join("stderr"))?;
    Ok(())
}

/// Binds host files (resolv.conf, hosts) and generated identity files.
pub fn mount_host_files<S: Syscall>(
    sys: &S,
    session: &Session,
    root: &Path,
    identity_files: &[(PathBuf, PathBuf)],
) -> Result<()> {
    let _ = session;
    for f in HOST_FILES {
        let src = Path::new(f);
        if sys.kind(src) == FileKind::Missing {
            continue;
        }
        let dst = resolve_in_root(sys, root, src);
        bind(sys, src, &under(root, &dst), true)?;
    }
    for (generated, dst) in identity_files {
        let dst = resolve_in_root(sys, root, dst);
        bind(sys, generated, &under(root, &dst), true)?;
    }
    Ok(())
}

/// Applies the plan's binds and tmpfs mounts.
pub fn mount_entries<S: Syscall>(sys: &S, root: &Path, mounts: &[MountEntry]) -> Result<()> {
    for m in mounts {
        let target = under(root, &resolve_in_root(sys, root, &m.dst));
        // A mount point under an earlier tmpfs (a home inside a private /tmp, a device
        // in the minimal /dev) is not in the skeleton: it has to be made now. Elsewhere
        // this is a no-op, and a read-only parent makes the mount below fail with its
        // own message.
        if sys.kind(&target) == FileKind::Missing {
            let is_file = !needs_dir(sys, &m.source);
            let made = match (is_file, target.parent()) {
                (true, Some(parent)) => sys
                    .mkdir_all(parent, 0o755)
                    .and_then(|_| sys.create_file(&target, b"", 0o644)),
                _ => sys.mkdir_all(&target, 0o755),
            };
            let _ = made;
        }
        match &m.source {
            MountSource::Tmpfs => {
                sys.mount(
                    Some(Path::new("tmpfs")),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=1777"),
                )?;
            }
            MountSource::Bind { src } => {
                if sys.kind(src) == FileKind::Missing {
                    bail!(
                        "bind source {} does not exist: create it or fix the --bind option",
                        src.display()
                    );
                }
                bind(sys, src, &target, m.readonly)?;
            }
        }
    }
    Ok(())
}

fn bind<S: Syscall>(sys: &S, src: &Path, target: &Path, readonly: bool) -> Result<()> {
    sys.mount(
        Some(src),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    if readonly {
        // A bind mount only becomes read-only through a second, remounting call, which
        // keeps the flags the source had (nosuid, nodev, noexec): a read-only bind must
        // not lift them, and in a user namespace the kernel refuses a remount that would.
        sys.mount(
            None,
            target,
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | sys.kept_flags(target),
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::RootSource;
    use std::cell::RefCell;
    use std::collections::HashSet;

    /// Records calls; pretends the image holds `existing` paths (directories) and
    /// `links` (symlinks).
    #[derive(Default)]
    struct Fake {
        existing: HashSet<PathBuf>,
        links: HashSet<PathBuf>,
        /// Targets of symlinks that resolution follows.
        targets: std::collections::HashMap<PathBuf, PathBuf>,
        calls: RefCell<Vec<String>>,
    }

    impl Fake {
        fn with(existing: &[&str], links: &[&str]) -> Fake {
            Fake {
                existing: existing.iter().map(PathBuf::from).collect(),
                links: links.iter().map(PathBuf::from).collect(),
                targets: Default::default(),
                calls: RefCell::new(vec![]),
            }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Syscall for Fake {
        fn mount_squashfuse(&self, i: &Path, o: u64, t: &Path) -> Result<()> {
            self.calls.borrow_mut().push(format!(
                "squashfuse {} @{o} {}",
                i.display(),
                t.display()
            ));
            Ok(())
        }
        fn kept_flags(&self, _: &Path) -> MsFlags {
            MsFlags::empty()
        }
        fn mount(
            &self,
            s: Option<&Path>,
            t: &Path,
            fs: Option<&str>,
            f: MsFlags,
            d: Option<&str>,
        ) -> Result<()> {
            self.calls.borrow_mut().push(format!(
                "mount {:?} {} {:?} {:?} {:?}",
                s,
                t.display(),
                fs,
                f,
                d
            ));
            Ok(())
        }
        fn umount_detach(&self, t: &Path) -> Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("umount {}", t.display()));
            Ok(())
        }
        fn mkdir_all(&self, p: &Path, _: u32) -> Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("mkdir {}", p.display()));
            Ok(())
        }
        fn create_file(&self, p: &Path, _: &[u8], _: u32) -> Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("touch {}", p.display()));
            Ok(())
        }
        fn symlink(&self, t: &Path, l: &Path) -> Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("symlink {} {}", t.display(), l.display()));
            Ok(())
        }
        fn mknod_char(&self, p: &Path, _: u64, _: u64, _: u32) -> Result<()> {
            self.calls
                .borrow_mut()
                .push(format!("mknod {}", p.display()));
            Ok(())
        }
        fn kind(&self, p: &Path) -> FileKind {
            if self.existing.contains(p) {
                FileKind::Dir
            } else if self.links.contains(p) || self.targets.contains_key(p) {
                FileKind::Symlink
            } else {
                FileKind::Missing
            }
        }
        fn is_dir(&self, p: &Path) -> bool {
            self.existing.contains(p)
        }
        fn read_link(&self, p: &Path) -> Option<PathBuf> {
            self.targets.get(p).cloned()
        }
        fn pivot_root(&self, _: &Path) -> Result<()> {
            Ok(())
        }
    }

    fn plan(mounts: Vec<MountEntry>) -> ContainerPlan {
        ContainerPlan {
            root: RootSource {
                kind: RootKind::Squashfs,
                path: "/img.sif".into(),
                offset: 0,
                size: 0,
            },
            image_display: "img.sif".into(),
            mounts,
            writable_tmpfs: false,
            identity: None,
            cwd: "/".into(),
            home: "/root".into(),
            env: vec![],
            env_overrides: vec![],
            argv: vec!["true".into()],
            pid_ns: false,
            net_ns: false,
            host_pts: false,
            writable_root: false,
            ipc_ns: false,
            requested: Default::default(),
            dev: DevMode::Minimal,
            cwd_explicit: false,
            env_no_eval: false,
            hostname: None,
            no_init: false,
            session_size_mib: None,
            userns: None,
            run_as: None,
        }
    }

    #[test]
    fn skeleton_holds_only_missing_mount_points() {
        let session = Session { dir: "/s".into() };
        let existing: HashSet<PathBuf> = [
            "/s/image/proc",
            "/s/image/sys",
            "/s/image/dev",
            "/s/image/etc/hosts",
            "/s/image/etc/resolv.conf",
            "/s/image/tmp",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let fake = Fake {
            existing,
            ..Default::default()
        };
        let p = plan(vec![
            MountEntry::tmpfs("/tmp"),
            MountEntry::tmpfs("/data/deep"),
        ]);
        build_skeleton(&fake, &session, &p).unwrap();
        let calls = fake.calls.borrow();
        assert!(
            calls.contains(&"mkdir /s/skeleton/data/deep".to_string()),
            "{calls:?}"
        );
        assert!(
            !calls.iter().any(|c| c.contains("skeleton/tmp")),
            "{calls:?}"
        );
        assert!(
            !calls.iter().any(|c| c.contains("skeleton/proc")),
            "{calls:?}"
        );
    }

    #[test]
    fn mount_point_under_an_earlier_tmpfs_is_created() {
        let fake = Fake::default();
        mount_entries(
            &fake,
            Path::new("/r"),
            &[MountEntry::tmpfs("/tmp"), MountEntry::tmpfs("/tmp/u/home")],
        )
        .unwrap();
        let calls = fake.calls.borrow();
        let mkdir = calls
            .iter()
            .position(|c| c == "mkdir /r/tmp/u/home")
            .expect("mount point created");
        let mount = calls
            .iter()
            .position(|c| c.contains("/r/tmp/u/home") && c.starts_with("mount"))
            .unwrap();
        assert!(mkdir < mount, "{calls:?}");
    }

    #[test]
    fn readonly_bind_is_remounted_readonly() {
        let existing: HashSet<PathBuf> = [PathBuf::from("/host/data")].into_iter().collect();
        let fake = Fake {
            existing,
            ..Default::default()
        };
        mount_entries(
            &fake,
            Path::new("/r"),
            &[MountEntry::bind("/host/data", "/data", true)],
        )
        .unwrap();
        let calls: Vec<String> = fake
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with("mount"))
            .cloned()
            .collect();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(
            calls[1].contains("MS_RDONLY") && calls[1].contains("MS_REMOUNT"),
            "{calls:?}"
        );
    }

    #[test]
    fn missing_bind_source_is_a_clear_error() {
        let fake = Fake::default();
        let err = mount_entries(
            &fake,
            Path::new("/r"),
            &[MountEntry::bind("/nope", "/data", false)],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("bind source /nope does not exist"));
    }

    #[test]
    fn overlay_is_readonly_without_writable_tmpfs() {
        let fake = Fake::default();
        let session = Session { dir: "/s".into() };
        mount_overlay(&fake, &session, false).unwrap();
        let calls = fake.calls.borrow();
        assert!(
            calls[0].contains("MS_RDONLY") && calls[0].contains("lowerdir=/s/skeleton:/s/image"),
            "{calls:?}"
        );
        assert!(!calls[0].contains("upperdir"));
    }

    fn writable_dir_plan(mounts: Vec<MountEntry>) -> ContainerPlan {
        let mut p = plan(mounts);
        p.root = RootSource {
            kind: RootKind::Dir,
            path: "/build/rootfs".into(),
            offset: 0,
            size: 0,
        };
        p.writable_root = true;
        p
    }

    #[test]
    fn writable_root_is_the_image_bound_read_write_without_overlay() {
        let session = Session { dir: "/s".into() };
        let fake = Fake::with(
            &[
                "/s/image/proc",
                "/s/image/sys",
                "/s/image/dev",
                "/s/image/etc",
                "/s/image/etc/hosts",
                "/s/image/etc/resolv.conf",
                "/s/image/tmp",
            ],
            &[],
        );
        let p = writable_dir_plan(vec![MountEntry::tmpfs("/tmp")]);
        let root = assemble_root(&fake, &session, &p, None).unwrap();
        assert_eq!(root, Path::new("/s/image"));
        let calls = fake.calls();
        assert!(
            calls[0].starts_with("mount Some(\"/build/rootfs\") /s/image")
                && calls[0].contains("MS_BIND"),
            "{calls:?}"
        );
        assert!(!calls.iter().any(|c| c.contains("MS_RDONLY")), "{calls:?}");
        assert!(!calls.iter().any(|c| c.contains("overlay")), "{calls:?}");
        assert!(!calls.iter().any(|c| c.contains("skeleton")), "{calls:?}");
        // Everything needed already exists: nothing is created in the image.
        assert_eq!(calls.len(), 1, "{calls:?}");

        // The read-only path for the same directory: remounted read-only, overlay root.
        let fake = Fake::default();
        let mut ro = p.clone();
        ro.writable_root = false;
        let root = assemble_root(&fake, &session, &ro, None).unwrap();
        assert_eq!(root, Path::new("/s/root"));
        let calls = fake.calls();
        assert!(calls[1].contains("MS_RDONLY"), "{calls:?}");
        assert!(calls.iter().any(|c| c.contains("lowerdir=")), "{calls:?}");
    }

    #[test]
    fn writable_root_gets_missing_mount_points_created_in_the_image() {
        let fake = Fake::with(&["/r/etc", "/r/proc"], &[]);
        let p = writable_dir_plan(vec![MountEntry::tmpfs("/var/tmp")]);
        add_mount_points(&fake, Path::new("/r"), &p).unwrap();
        let calls = fake.calls();
        for expected in [
            "mkdir /r/sys",
            "mkdir /r/dev",
            "touch /r/etc/resolv.conf",
            "touch /r/etc/hosts",
            "mkdir /r/var",
            "mkdir /r/var/tmp",
        ] {
            assert!(
                calls.contains(&expected.to_string()),
                "{expected}: {calls:?}"
            );
        }
        assert!(
            !calls
                .iter()
                .any(|c| c == "mkdir /r/etc" || c == "mkdir /r/proc"),
            "{calls:?}"
        );
    }

    #[test]
    fn writable_root_never_creates_mount_points_through_symlinks() {
        // /etc is a symlink (possibly absolute, to a host path): creating
        // /etc/hosts through it could write outside the image.
        let fake = Fake::with(&["/r/proc", "/r/sys", "/r/dev"], &["/r/etc"]);
        let p = writable_dir_plan(vec![]);
        let err = add_mount_points(&fake, Path::new("/r"), &p).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(
                "cannot create mount point /etc/resolv.conf in /r: /r/etc is not a directory"
            ),
            "{msg}"
        );
        assert!(
            !fake.calls().iter().any(|c| c.contains("/r/etc/")),
            "{:?}",
            fake.calls()
        );
    }

    #[test]
    fn writable_root_refuses_squashfs_images() {
        let fake = Fake::default();
        let mut p = plan(vec![]);
        p.writable_root = true;
        let session = Session { dir: "/s".into() };
        let err = assemble_root(&fake, &session, &p, Some(Path::new("/dev/loop0"))).unwrap_err();
        assert!(
            format!("{err:#}").contains("needs a directory image"),
            "{err:#}"
        );
        assert!(fake.calls().is_empty());
    }

    #[test]
    fn skeleton_follows_image_symlinks_instead_of_shadowing_them() {
        let session = Session { dir: "/s".into() };
        let mut fake = Fake::with(&["/s/image/usr/lib", "/s/image/run"], &[]);
        fake.targets = [("/s/image/lib", "usr/lib"), ("/s/image/var/run", "/run")]
            .iter()
            .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
            .collect();
        let p = plan(vec![
            MountEntry::tmpfs("/lib/x"),
            MountEntry::tmpfs("/var/run/y"),
        ]);
        build_skeleton(&fake, &session, &p).unwrap();
        let calls = fake.calls();
        assert!(
            calls.contains(&"mkdir /s/skeleton/usr/lib/x".to_string()),
            "{calls:?}"
        );
        assert!(
            calls.contains(&"mkdir /s/skeleton/run/y".to_string()),
            "{calls:?}"
        );
        assert!(
            !calls
                .iter()
                .any(|c| c.contains("skeleton/lib") || c.contains("skeleton/var")),
            "{calls:?}"
        );
        // The mounts land on the resolved paths too.
        mount_entries(&fake, Path::new("/s/image"), &p.mounts).unwrap();
        let calls = fake.calls();
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("mount") && c.contains("/s/image/usr/lib/x")),
            "{calls:?}"
        );
    }

    #[test]
    fn non_directory_sources_get_a_file_mount_point() {
        // /dev/kvm (not a directory to the fake) under the minimal /dev.
        let fake = Fake::default();
        mount_entries(
            &fake,
            Path::new("/r"),
            &[MountEntry::bind("/dev/kvm", "/dev/kvm", false)],
        )
        .unwrap_err(); // the fake has no /dev/kvm: missing source
        let calls = fake.calls();
        assert!(calls.contains(&"touch /r/dev/kvm".to_string()), "{calls:?}");
        assert!(
            !calls.contains(&"mkdir /r/dev/kvm".to_string()),
            "{calls:?}"
        );
    }

    #[test]
    fn host_dev_is_one_recursive_bind() {
        let fake = Fake::default();
        mount_system(&fake, Path::new("/r"), DevMode::Host, false, false).unwrap();
        let dev: Vec<String> = fake
            .calls()
            .into_iter()
            .filter(|c| c.contains("/r/dev"))
            .collect();
        assert_eq!(dev.len(), 1, "{dev:?}");
        assert!(
            dev[0].starts_with("mount Some(\"/dev\") /r/dev") && dev[0].contains("MS_REC"),
            "{dev:?}"
        );
        let fake = Fake::default();
        mount_system(&fake, Path::new("/r"), DevMode::Minimal, false, false).unwrap();
        assert!(fake.calls().contains(&"mknod /r/dev/null".to_string()));
    }
}
