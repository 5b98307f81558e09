//! The container's private tmpfs mounts and their contents, saved with a CRIU generation.
//!
//! CRIU runs inside the container's mount namespace and saves processes, not file systems:
//! files in a tmpfs that only the container has (`--contain`'s /tmp, /dev/shm, a tmpfs the
//! application mounted itself, MPI's session directories and shared-memory segments) would be
//! gone at restore, and so would the mounts the application made. So every such mount is
//! recorded, in mount order (parents first, a mount over another after it), with its options.
//! When any holds anything, the dump leaves the application stopped, each mount's own
//! contents are archived (`tmpfs-N.tar` in the generation), read apart from what is mounted
//! on top of it ([`super::tmpfs_view`]), while nothing can change them, and the application
//! is resumed. A restore mounts the missing tmpfs mounts again in the same order, each
//! filled before anything is mounted over it, before CRIU puts the processes back.

use super::tmpfs_view::MountViews;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One saved tmpfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsSnapshot {
    /// Mount point inside the container.
    pub dst: PathBuf,
    /// The archive's file name in the generation; none for a mount that was empty.
    pub archive: Option<String>,
    /// Mount options worth keeping (size, mode, nr_inodes, uid, gid).
    pub options: String,
    /// The mount's own flags (nosuid, nodev, noexec); None in generations of older rctr
    /// versions, which mounted with nosuid and nodev.
    #[serde(default)]
    pub flags: Option<Vec<MountFlag>>,
    /// Read-only (remounted so after it was filled).
    #[serde(default)]
    pub read_only: bool,
    /// The `--writable-tmpfs` overlay's changes (its upper directory, whiteouts included),
    /// applied onto the new container's root instead of a mount.
    #[serde(default)]
    pub overlay: bool,
}

/// A per-mount flag kept across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountFlag {
    Nosuid,
    Nodev,
    Noexec,
}

impl MountFlag {
    fn parse(s: &str) -> Option<MountFlag> {
        match s {
            "nosuid" => Some(MountFlag::Nosuid),
            "nodev" => Some(MountFlag::Nodev),
            "noexec" => Some(MountFlag::Noexec),
            _ => None,
        }
    }

    fn ms(self) -> nix::mount::MsFlags {
        use nix::mount::MsFlags;
        match self {
            MountFlag::Nosuid => MsFlags::MS_NOSUID,
            MountFlag::Nodev => MsFlags::MS_NODEV,
            MountFlag::Noexec => MsFlags::MS_NOEXEC,
        }
    }
}

/// A private tmpfs mount of the container, as its mount table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    pub dst: PathBuf,
    pub options: String,
    pub flags: Vec<MountFlag>,
    pub read_only: bool,
    /// The file system's device (`0:NN`): tells it from a host tmpfs bound in.
    pub device: String,
    /// Where to read it from the host instead of its own view (the overlay's upper
    /// directory, held open by init).
    pub from: Option<PathBuf>,
}

/// Options of a tmpfs worth giving its re-mount.
fn kept_options(super_opts: &str) -> String {
    super_opts
        .split(',')
        .filter(|o| {
            ["size=", "mode=", "nr_inodes=", "uid=", "gid="]
                .iter()
                .any(|k| o.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The tmpfs mounts in `mountinfo` (one process's mount table) that hold the container's own
/// files: whole tmpfs mounts (not single files bound from one), except /dev, which rctr
/// builds itself with device nodes. In mount order: each after the mount it sits on.
pub fn private_tmpfs(mountinfo: &str) -> Vec<TmpfsMount> {
    // (mount id, parent id) of every mount, for the depth of each in the mount tree.
    let mut parents = std::collections::HashMap::new();
    let mut found = vec![];
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(id), Some(parent)) = (f.first(), f.get(1)) else {
            continue;
        };
        parents.insert(id.to_string(), parent.to_string());
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        let (Some(device), Some(root), Some(point), Some(mount_opts), Some(fstype), Some(opts)) = (
            f.get(2),
            f.get(3),
            f.get(4),
            f.get(5),
            f.get(sep + 1),
            f.get(sep + 3),
        ) else {
            continue;
        };
        if *fstype != "tmpfs" || *root != "/" || *point == "/dev" {
            continue;
        }
        let read_only = [mount_opts, opts]
            .iter()
            .any(|o| o.split(',').any(|x| x == "ro"));
        found.push((
            id.to_string(),
            TmpfsMount {
                dst: PathBuf::from(super::open_files::unescape(point)),
                options: kept_options(opts),
                flags: mount_opts.split(',').filter_map(MountFlag::parse).collect(),
                read_only,
                device: device.to_string(),
                from: None,
            },
        ));
    }
    // The table's order, except that a mount listed before the one it sits on (moved
    // there) comes after it.
    let mut done = std::collections::HashSet::new();
    let mut ordered = vec![];
    let mut mounts: std::collections::HashMap<String, TmpfsMount> = found
        .iter()
        .map(|(id, m)| (id.clone(), m.clone()))
        .collect();
    for (id, _) in &found {
        let mut chain = vec![id.clone()];
        while let Some(p) = parents.get(chain.last().map_or("", |s| s.as_str())) {
            // Bounded: a table read while it changed could hold a loop.
            if done.contains(p) || chain.contains(p) || !parents.contains_key(p) {
                break;
            }
            chain.push(p.clone());
        }
        for id in chain.into_iter().rev() {
            if done.insert(id.clone()) {
                if let Some(m) = mounts.remove(&id) {
                    ordered.push(m);
                }
            }
        }
    }
    ordered
}

/// The container of `init_pid` (application `pid`)'s own tmpfs: the `--writable-tmpfs`
/// overlay's changes when there are any, then its private tmpfs mounts, empty ones included,
/// in mount order. A tmpfs of the host bound into the container (a host /tmp that is a
/// tmpfs, a home on one) is the host's: like every bind, it stays outside the checkpoint.
pub fn private_mounts(init_pid: i32, pid: i32, writable_tmpfs: bool) -> Vec<TmpfsMount> {
    let mut out = vec![];
    let upper = PathBuf::from(format!(
        "/proc/{init_pid}/fd/{}",
        rctr_runtime::plan::UPPER_DIR_FD
    ));
    if writable_tmpfs && has_entries(&upper) {
        out.push(TmpfsMount {
            dst: PathBuf::from("/"),
            options: String::new(),
            flags: vec![],
            read_only: false,
            device: String::new(),
            from: Some(upper),
        });
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let host_devices: Vec<&str> = host.lines().filter_map(|l| l.split(' ').nth(2)).collect();
    out.extend(
        private_tmpfs(&table)
            .into_iter()
            .filter(|m| !host_devices.contains(&m.device.as_str())),
    );
    out
}

fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// Where mount `i` of `mounts` is read alone.
fn source(mounts: &[TmpfsMount], views: &MountViews, i: usize) -> Result<PathBuf> {
    let m = &mounts[i];
    match (&m.from, views.path(i)) {
        (Some(from), _) => Ok(from.clone()),
        (None, Some(view)) => Ok(view),
        (None, None) => bail!(
            "cannot reach the tmpfs mounted on {} apart from the mounts above it",
            m.dst.display()
        ),
    }
}

/// Whether any of `mounts` holds anything (so that the application must stand still while
/// they are copied).
pub fn any_content(mounts: &[TmpfsMount], views: &MountViews) -> Result<bool> {
    for i in 0..mounts.len() {
        if has_entries(&source(mounts, views, i)?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Records each mount, and when `copy` (the application stands still) archives the contents
/// of each one that has any into `dir` (the staged generation). Other mounts below a mount
/// are left out of its archive (they have their own, or are not the container's).
pub fn snapshot(
    mounts: &[TmpfsMount],
    views: &MountViews,
    dir: &Path,
    copy: bool,
) -> Result<Vec<TmpfsSnapshot>> {
    let mut out = vec![];
    for (i, m) in mounts.iter().enumerate() {
        let src = source(mounts, views, i)?;
        let archive = if copy && has_entries(&src) {
            let name = format!("tmpfs-{i}.tar");
            archive_tree(&src, &dir.join(&name))
                .with_context(|| format!("cannot save the contents of {}", m.dst.display()))?;
            Some(name)
        } else {
            None
        };
        out.push(TmpfsSnapshot {
            dst: m.dst.clone(),
            archive,
            options: m.options.clone(),
            flags: Some(m.flags.clone()),
            read_only: m.read_only,
            overlay: m.from.is_some(),
        });
    }
    Ok(out)
}

/// Archives the file system tree at `src` (not what is mounted below it) into `file`.
fn archive_tree(src: &Path, file: &Path) -> Result<()> {
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    let out = std::fs::File::create(file).with_context(|| format!("cannot create {name}"))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
    tar.follow_symlinks(false);
    // Followed: the source is reached through a /proc/PID/fd magic link.
    let dev = std::fs::metadata(src)?.dev();
    add_tree(&mut tar, src, Path::new(""), dev)?;
    tar.into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {name}"))
}

/// Adds the entries under `root/rel` to `tar`, staying on device `dev`.
fn add_tree<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    dev: u64,
) -> Result<()> {
    let here = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&here)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() {
            // A socket's file is recreated by whoever binds it (CRIU, for restored ones).
            continue;
        }
        if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            // Written by hand: the tar crate's own path for these fails on a relative name.
            let mut header = tar::Header::new_gnu();
            header.set_metadata(&meta);
            header.set_entry_type(if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            header.set_size(0);
            if !ft.is_fifo() {
                let rdev = meta.rdev();
                header.set_device_major(libc::major(rdev))?;
                header.set_device_minor(libc::minor(rdev))?;
            }
            tar.append_data(&mut header, &rel, std::io::empty())?;
            continue;
        }
        tar.append_path_with_name(&path, &rel)?;
        // A mount point of another file system: its directory only.
        if ft.is_dir() && meta.dev() == dev {
            add_tree(tar, root, &rel, dev)?;
        }
    }
    Ok(())
}

/// Inside the new container, before the engine restores the processes: mounts what is not
/// mounted yet, in the recorded order, each filled from its archive in `gen_dir` (the
/// generation as the container sees it) before anything is mounted over it.
pub fn restore(snapshots: &[TmpfsSnapshot], gen_dir: &Path) -> Result<()> {
    // The overlay's changes first: they hold the directories the mounts are made on.
    let (overlay, mounts): (Vec<&TmpfsSnapshot>, Vec<&TmpfsSnapshot>) =
        snapshots.iter().partition(|s| s.overlay);
    for s in overlay {
        if let Some(name) = &s.archive {
            apply_overlay(&mut open_archive(gen_dir, name)?, &s.dst)
                .context("cannot restore the --writable-tmpfs changes")?;
        }
    }
    // The container's own tmpfs mounts (--contain's /tmp, /dev/shm) are there already,
    // made before the application's: each stands for the first record at its path.
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounted: Vec<PathBuf> = private_tmpfs(&table).into_iter().map(|m| m.dst).collect();
    for s in mounts {
        if let Some(at) = mounted.iter().position(|d| *d == s.dst) {
            mounted.remove(at);
        } else {
            mount_again(s)?;
        }
        if let Some(name) = &s.archive {
            unpack(&mut open_archive(gen_dir, name)?, &s.dst)
                .with_context(|| format!("cannot restore the contents of {}", s.dst.display()))?;
        }
        if s.read_only {
            use nix::mount::MsFlags;
            nix::mount::mount(
                None::<&str>,
                &s.dst,
                Some("tmpfs"),
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | flags_of(s),
                (!s.options.is_empty()).then_some(s.options.as_str()),
            )
            .with_context(|| format!("cannot make the tmpfs on {} read-only", s.dst.display()))?;
        }
    }
    Ok(())
}

/// The per-mount flags a snapshot's mount gets.
fn flags_of(s: &TmpfsSnapshot) -> nix::mount::MsFlags {
    use nix::mount::MsFlags;
    match &s.flags {
        Some(flags) => flags.iter().fold(MsFlags::empty(), |all, f| all | f.ms()),
        None => MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    }
}

/// A tmpfs the application mounted itself, mounted again where it was.
fn mount_again(s: &TmpfsSnapshot) -> Result<()> {
    std::fs::create_dir_all(&s.dst)
        .with_context(|| format!("cannot create mount point {}", s.dst.display()))?;
    nix::mount::mount(
        Some("tmpfs"),
        &s.dst,
        Some("tmpfs"),
        flags_of(s),
        (!s.options.is_empty()).then_some(s.options.as_str()),
    )
    .with_context(|| format!("cannot mount a tmpfs on {}", s.dst.display()))
}

/// Archive `name` of the generation in `gen_dir`, set to restore owners, modes and times.
fn open_archive(
    gen_dir: &Path,
    name: &str,
) -> Result<tar::Archive<std::io::BufReader<std::fs::File>>> {
    if name.contains('/') || !name.ends_with(".tar") {
        bail!("bad tmpfs archive name {name:?} in the manifest");
    }
    let file =
        std::fs::File::open(gen_dir.join(name)).with_context(|| format!("cannot open {name}"))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    Ok(archive)
}

/// Where `entry` goes under `root`; refuses a path that could leave it.
fn entry_path_in<R: std::io::Read>(entry: &tar::Entry<R>, root: &Path) -> Result<PathBuf> {
    let rel = entry.path()?.into_owned();
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        bail!("unsafe path {} in a checkpoint archive", rel.display());
    }
    Ok(root.join(rel))
}

/// Applies an overlay upper directory's archive onto `root` (the new container's root, an
/// overlay too): whiteouts (0:0 character devices) delete, everything else is written.
fn apply_overlay<R: std::io::Read>(archive: &mut tar::Archive<R>, root: &Path) -> Result<()> {
    for entry in archive.entries()? {
        let mut entry = entry?;
        let h = entry.header();
        let whiteout = h.entry_type() == tar::EntryType::Char
            && h.device_major()?.unwrap_or(1) == 0
            && h.device_minor()?.unwrap_or(1) == 0;
        if whiteout {
            let path = entry_path_in(&entry, root)?;
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path)?,
                Ok(_) => std::fs::remove_file(&path)?,
                Err(_) => {}
            }
            continue;
        }
        entry.unpack_in(root)?;
    }
    Ok(())
}

/// Unpacks `archive` into `dst`; FIFOs and device nodes, which the tar crate does not make,
/// with mknod.
fn unpack<R: std::io::Read>(archive: &mut tar::Archive<R>, dst: &Path) -> Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let special = match kind {
            tar::EntryType::Fifo => Some(SFlag::S_IFIFO),
            tar::EntryType::Char => Some(SFlag::S_IFCHR),
            tar::EntryType::Block => Some(SFlag::S_IFBLK),
            _ => None,
        };
        let Some(sflag) = special else {
            entry.unpack_in(dst)?;
            continue;
        };
        let path = entry_path_in(&entry, dst)?;
        let h = entry.header();
        let mode = Mode::from_bits_truncate(h.mode()?);
        let dev = makedev(
            u64::from(h.device_major()?.unwrap_or(0)),
            u64::from(h.device_minor()?.unwrap_or(0)),
        );
        let _ = std::fs::remove_file(&path);
        mknod(&path, sflag, mode, dev)
            .with_context(|| format!("cannot make {}", path.display()))?;
        let _ = nix::unistd::chown(
            &path,
            Some(nix::unistd::Uid::from_raw(h.uid()? as u32)),
            Some(nix::unistd::Gid::from_raw(h.gid()? as u32)),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
68 42 0:41 / / ro,relatime - overlay overlay ro,lowerdir=/a:/b
71 68 0:46 / /dev rw,nosuid,relatime - tmpfs tmpfs rw,size=64k,mode=755
73 71 0:48 / /dev/shm rw,nosuid,nodev,relatime - tmpfs tmpfs rw
76 68 0:40 /passwd /etc/passwd ro,relatime - tmpfs tmpfs rw,mode=700
78 68 0:49 / /tmp rw,nosuid,nodev,relatime - tmpfs tmpfs rw,size=1024k,nr_inodes=100,mode=1777
82 68 254:0 /x /.checkpoint rw,relatime - ext4 /dev/vda rw
83 78 0:52 / /tmp/my\\040dir rw,relatime - tmpfs tmpfs rw,size=512k";

    #[test]
    fn fifos_are_archived() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("0")).unwrap();
        nix::unistd::mkfifo(
            &src.path().join("0/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        let dev = std::fs::metadata(src.path()).unwrap().dev();
        add_tree(&mut tar, src.path(), Path::new(""), dev).unwrap();
        let bytes = tar.into_inner().unwrap();
        let out = tempfile::tempdir().unwrap();
        unpack(&mut tar::Archive::new(&bytes[..]), out.path()).unwrap();
        use std::os::unix::fs::FileTypeExt;
        let ft = std::fs::symlink_metadata(out.path().join("0/fifo"))
            .unwrap()
            .file_type();
        assert!(ft.is_fifo());
    }

    #[test]
    fn whole_tmpfs_mounts_but_dev_are_the_containers_own() {
        let got = private_tmpfs(TABLE);
        let dsts: Vec<&str> = got.iter().map(|m| m.dst.to_str().unwrap()).collect();
        assert_eq!(dsts, ["/dev/shm", "/tmp", "/tmp/my dir"]);
        assert_eq!(got[1].options, "size=1024k,nr_inodes=100,mode=1777");
        assert_eq!(got[0].options, "");
    }

    #[test]
    fn mounts_come_after_the_mount_they_sit_on_with_their_flags() {
        // 90 was mounted on /data/sub of 95 after being moved there: the table lists it
        // first, its parent's mount must come first all the same.
        let table = "\
68 42 0:41 / / ro,relatime - overlay overlay ro,lowerdir=/a:/b
90 95 0:60 / /data/sub rw,nosuid,noexec,relatime - tmpfs none rw,size=64k
95 68 0:61 / /data ro,relatime - tmpfs none ro,mode=700
96 95 0:62 / /data rw,nodev,relatime - tmpfs none rw";
        let got = private_tmpfs(table);
        let devices: Vec<&str> = got.iter().map(|m| m.device.as_str()).collect();
        assert_eq!(devices, ["0:61", "0:60", "0:62"]);
        assert!(got[0].read_only && !got[1].read_only && !got[2].read_only);
        assert_eq!(got[1].flags, [MountFlag::Nosuid, MountFlag::Noexec]);
        assert_eq!(got[2].flags, [MountFlag::Nodev]);
        assert_eq!(got[0].options, "mode=700");
    }

    #[test]
    fn snapshots_of_older_versions_still_read() {
        let old: TmpfsSnapshot =
            serde_yaml::from_str("dst: /tmp/own\narchive: tmpfs-0.tar\noptions: size=1024k\n")
                .unwrap();
        assert_eq!(old.archive.as_deref(), Some("tmpfs-0.tar"));
        assert_eq!(
            flags_of(&old),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV
        );
        assert!(!old.read_only && !old.overlay);
    }

    #[test]
    fn an_archive_round_trips_files_links_and_modes_but_not_other_mounts() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("d/e")).unwrap();
        std::fs::write(src.path().join("d/e/f"), b"data").unwrap();
        std::fs::set_permissions(
            src.path().join("d/e/f"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("d/e/f", src.path().join("link")).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        let dev = std::fs::metadata(src.path()).unwrap().dev();
        add_tree(&mut tar, src.path(), Path::new(""), dev).unwrap();
        let bytes = tar.into_inner().unwrap();
        let out = tempfile::tempdir().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        archive.set_preserve_permissions(true);
        archive.unpack(out.path()).unwrap();
        assert_eq!(std::fs::read(out.path().join("d/e/f")).unwrap(), b"data");
        let mode = std::fs::metadata(out.path().join("d/e/f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_link(out.path().join("link")).unwrap(),
            Path::new("d/e/f")
        );
    }
}
