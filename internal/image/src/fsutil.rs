//! Copying trees like `cp -a` (modes, owners when permitted, symlinks, hard links, device
//! nodes, xattrs, timestamps), and the few Linux calls std lacks.

use anyhow::{bail, Context, Result};
use rctr_squashfs::hostfs::{cstring, is_root, lchown, mknod, set_times};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Sets atime/mtime of `path` (not following a symlink) to those in `meta`.
fn copy_times(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    set_times(
        path,
        (meta.atime(), meta.atime_nsec()),
        (meta.mtime(), meta.mtime_nsec()),
    )
}

/// Copies the extended attributes of `src` to `dst` (neither followed if a symlink). Returns
/// the keys that could not be copied.
fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<Vec<String>> {
    let (s, d) = (cstring(src)?, cstring(dst)?);
    let mut names = vec![0u8; 4096];
    let len = loop {
        // SAFETY: buffer of names.len() bytes.
        let n = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut failed = Vec::new();
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let key = CString::new(name).expect("split on NUL");
        let mut value = vec![0u8; 4096];
        let got = loop {
            // SAFETY: buffer of value.len() bytes.
            let n = unsafe {
                libc::lgetxattr(
                    s.as_ptr(),
                    key.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                break Some(n as usize);
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 4, 0),
                _ => break None,
            }
        };
        // SAFETY: valid C strings and a value buffer of `n` bytes.
        let ok = got.is_some_and(|n| unsafe {
            libc::lsetxattr(d.as_ptr(), key.as_ptr(), value.as_ptr().cast(), n, 0) == 0
        });
        if !ok {
            failed.push(key.to_string_lossy().into_owned());
        }
    }
    Ok(failed)
}

/// Copies a tree, tracking hard links so they stay links in the copy.
pub(crate) struct TreeCopier {
    root: bool,
    links: HashMap<(u64, u64), PathBuf>,
    /// (device, inode) of entries never copied: the build's own staging directory and output,
    /// when they lie inside the tree being copied.
    skip: HashSet<(u64, u64)>,
    pub(crate) warnings: Vec<String>,
    warned_owner: bool,
}

impl TreeCopier {
    pub(crate) fn new() -> TreeCopier {
        TreeCopier {
            root: is_root(),
            links: HashMap::new(),
            skip: HashSet::new(),
            warnings: Vec::new(),
            warned_owner: false,
        }
    }

    /// Never copy `path` (if it exists) wherever it shows up in a copied tree.
    pub(crate) fn skip(&mut self, path: &Path) {
        if let Ok(m) = fs::symlink_metadata(path) {
            self.skip.insert((m.dev(), m.ino()));
        }
    }

    /// Copies `src` (file, symlink, special file or directory tree; a symlink is copied as a
    /// symlink) to `dst`, which must not exist.
    pub(crate) fn copy(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let meta =
            fs::symlink_metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
        let ft = meta.file_type();
        if self.skip.contains(&(meta.dev(), meta.ino())) {
            return Ok(());
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                return fs::hard_link(first, dst).with_context(|| {
                    format!("cannot link {} to {}", dst.display(), first.display())
                });
            }
            self.links
                .insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
        if ft.is_dir() {
            fs::create_dir(dst)
                .with_context(|| format!("cannot create directory {}", dst.display()))?;
            // Writable while filling it; the real mode is applied afterwards.
            fs::set_permissions(dst, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set mode of {}", dst.display()))?;
            let mut names: Vec<_> = fs::read_dir(src)
                .with_context(|| format!("cannot read directory {}", src.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .with_context(|| format!("cannot read directory {}", src.display()))?;
            names.sort();
            for name in names {
                self.copy(&src.join(&name), &dst.join(&name))?;
            }
        } else if ft.is_file() {
            fs::copy(src, dst)
                .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src)
                .with_context(|| format!("cannot read symlink {}", src.display()))?;
            std::os::unix::fs::symlink(&target, dst)
                .with_context(|| format!("cannot create symlink {}", dst.display()))?;
        } else {
            let kind = if ft.is_block_device() {
                libc::S_IFBLK
            } else if ft.is_char_device() {
                libc::S_IFCHR
            } else if ft.is_fifo() {
                libc::S_IFIFO
            } else if ft.is_socket() {
                libc::S_IFSOCK
            } else {
                bail!("{}: unsupported file type", src.display());
            };
            if let Err(e) = mknod(dst, kind | 0o600, meta.rdev()) {
                if e.raw_os_error() == Some(libc::EPERM) && !self.root {
                    self.warnings.push(format!(
                        "{}: device node not copied (needs root)",
                        src.display()
                    ));
                    return Ok(());
                }
                return Err(e).with_context(|| format!("cannot create {}", dst.display()));
            }
        }
        self.apply(src, dst, &meta)
    }

    /// Owner (when permitted), mode, xattrs, times: in that order, as chown clears setuid.
    fn apply(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
        if let Err(e) = lchown(dst, meta.uid(), meta.gid()) {
            if e.raw_os_error() == Some(libc::EPERM) && !self.root {
                if !self.warned_owner {
                    self.warned_owner = true;
                    self.warnings.push(
                        "file ownership not kept (needs root): files belong to the current user"
                            .into(),
                    );
                }
            } else {
                return Err(e).with_context(|| format!("cannot set owner of {}", dst.display()));
            }
        }
        if !meta.file_type().is_symlink() {
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .with_context(|| format!("cannot set mode of {}", dst.display()))?;
        }
        for key in copy_xattrs(src, dst)
            .with_context(|| format!("cannot read xattrs of {}", src.display()))?
        {
            self.warnings.push(format!(
                "{}: extended attribute {key} not copied",
                src.display()
            ));
        }
        copy_times(dst, meta).with_context(|| format!("cannot set times of {}", dst.display()))?;
        Ok(())
    }
}

/// Best-effort removal of a tree that may contain read-only directories (as a normal user
/// those block deletion of their entries).
pub(crate) fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || fs::symlink_metadata(path).is_err() {
        return;
    }
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(meta) = fs::symlink_metadata(&dir) {
            if meta.is_dir() {
                let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
                if let Ok(it) = fs::read_dir(&dir) {
                    stack.extend(it.flatten().map(|e| e.path()));
                }
            }
        }
    }
    let _ = fs::remove_dir_all(path);
}
