//! Unpacking a whole image into a directory, keeping modes, owners (when permitted), symlinks,
//! hard links, device nodes (when permitted), xattrs and modification times.

use crate::hostfs;
use crate::read::{inode_kind, symlink_target, EntryKind, Inode, SquashfsReader};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::fs::{self, OpenOptions};
use std::io::BufWriter;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What an extraction could not reproduce, one line each (e.g. device nodes when not root).
#[derive(Debug, Clone, Default)]
pub struct ExtractReport {
    pub entries: u64,
    pub warnings: Vec<String>,
}

struct Extractor<'a> {
    reader: &'a SquashfsReader,
    root: bool,
    /// First extracted path of each hard-linked inode number.
    links: HashMap<u32, PathBuf>,
    report: ExtractReport,
    /// Warn about lost ownership only once.
    warned_owner: bool,
}

impl SquashfsReader {
    /// Extracts the whole image into `dest`, which must not exist or be an empty directory.
    /// As non-root, ownership and device nodes cannot be reproduced: they are reported in the
    /// returned warnings, like unsquashfs does.
    pub fn extract_to(&self, dest: &Path) -> Result<ExtractReport> {
        match fs::read_dir(dest) {
            Ok(mut it) => {
                if it.next().is_some() {
                    bail!(
                        "extracting {}: destination {} is not empty",
                        self.path().display(),
                        dest.display()
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(dest).with_context(|| format!("creating {}", dest.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", dest.display())),
        }
        let mut ex = Extractor {
            reader: self,
            root: hostfs::is_root(),
            links: HashMap::new(),
            report: ExtractReport::default(),
            warned_owner: false,
        };
        let root = self.root_inode()?;
        ex.extract_dir(&root, dest, Path::new("/"))?;
        Ok(ex.report)
    }
}

/// Entry names come from the image: refuse anything that could escape the destination.
fn checked_name(name: &OsString, dir: &Path) -> Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        bail!(
            "corrupt squashfs: invalid entry name {:?} in {}",
            name,
            dir.display()
        );
    }
    Ok(())
}

impl Extractor<'_> {
    fn extract_dir(&mut self, dir: &Inode, host: &Path, inner: &Path) -> Result<()> {
        let entries = self.reader.read_dir_inodes(dir)?;
        for (name, inode) in entries {
            checked_name(&name, inner)?;
            let host_path = host.join(&name);
            let inner_path = inner.join(&name);
            self.extract_one(&inode, &host_path, &inner_path)?;
        }
        // Directory metadata last: a read-only mode or an mtime would be undone by the children.
        self.apply_metadata(dir, host, inner)
    }

    fn extract_one(&mut self, inode: &Inode, host: &Path, inner: &Path) -> Result<()> {
        self.report.entries += 1;
        let meta = self.reader.metadata_of(inode)?;
        let kind = inode_kind(inode)?;
        if kind != EntryKind::Dir && meta.nlink > 1 {
            if let Some(first) = self.links.get(&meta.inode) {
                return fs::hard_link(first, host).with_context(|| {
                    format!("hard-linking {} to {}", host.display(), first.display())
                });
            }
            self.links.insert(meta.inode, host.to_path_buf());
        }
        match kind {
            EntryKind::Dir => {
                fs::create_dir(host).with_context(|| format!("creating {}", host.display()))?;
                fs::set_permissions(host, fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("setting mode of {}", host.display()))?;
                return self.extract_dir(inode, host, inner);
            }
            EntryKind::File => {
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(host)
                    .with_context(|| format!("creating {}", host.display()))?;
                let mut w = BufWriter::with_capacity(1 << 20, f);
                self.reader.copy_data(inode, &mut w, inner)?;
                let f = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("writing {}", host.display()))?;
                drop(f);
            }
            EntryKind::Symlink => {
                let target = PathBuf::from(OsString::from_vec(symlink_target(inode)?));
                std::os::unix::fs::symlink(&target, host)
                    .with_context(|| format!("creating symlink {}", host.display()))?;
            }
            EntryKind::BlockDevice
            | EntryKind::CharDevice
            | EntryKind::Fifo
            | EntryKind::Socket => {
                let (type_bits, dev) = match kind {
                    EntryKind::BlockDevice | EntryKind::CharDevice => {
                        let (major, minor) = meta.rdev.unwrap_or((0, 0));
                        let bits = if kind == EntryKind::BlockDevice {
                            libc::S_IFBLK
                        } else {
                            libc::S_IFCHR
                        };
                        (bits, libc::makedev(major, minor))
                    }
                    EntryKind::Fifo => (libc::S_IFIFO, 0),
                    _ => (libc::S_IFSOCK, 0),
                };
                if let Err(e) = hostfs::mknod(host, type_bits | 0o600, dev) {
                    if e.raw_os_error() == Some(libc::EPERM) && !self.root {
                        self.report.warnings.push(format!(
                            "{}: device node not created (needs root)",
                            inner.display()
                        ));
                        self.links.remove(&meta.inode);
                        return Ok(());
                    }
                    return Err(e).with_context(|| format!("creating {}", host.display()));
                }
            }
        }
        self.apply_metadata(inode, host, inner)
    }

    /// Owner, then mode (chown clears setuid bits), xattrs, mtime.
    fn apply_metadata(&mut self, inode: &Inode, host: &Path, inner: &Path) -> Result<()> {
        let meta = self.reader.metadata_of(inode)?;
        let kind = inode_kind(inode)?;
        if let Err(e) = hostfs::lchown(host, meta.uid, meta.gid) {
            if e.raw_os_error() == Some(libc::EPERM) && !self.root {
                if !self.warned_owner {
                    self.warned_owner = true;
                    self.report
                        .warnings
                        .push("file ownership not restored (needs root): files belong to the current user".into());
                }
            } else {
                return Err(e).with_context(|| format!("setting owner of {}", host.display()));
            }
        }
        if kind != EntryKind::Symlink {
            fs::set_permissions(host, fs::Permissions::from_mode(meta.mode))
                .with_context(|| format!("setting mode of {}", host.display()))?;
        }
        for (key, value) in self.reader.xattrs_of(inode)? {
            let ckey = CString::new(key.clone()).context("xattr key with a NUL byte")?;
            if let Err(e) = hostfs::set_xattr(host, &ckey, &value) {
                self.report.warnings.push(format!(
                    "{}: extended attribute {} not restored: {e}",
                    inner.display(),
                    String::from_utf8_lossy(&key)
                ));
            }
        }
        hostfs::set_mtime(host, meta.mtime as i64)
            .with_context(|| format!("setting modification time of {}", host.display()))?;
        Ok(())
    }
}
