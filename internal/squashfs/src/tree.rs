//! In-memory picture of a directory tree to pack: every inode once (hard links share one node),
//! directory entries sorted by name bytes, inode numbers assigned so that every entry of a
//! directory has a lower number than the directory itself (the order they are written in).

use crate::hostfs;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub(crate) type NodeId = usize;

pub(crate) enum Kind {
    Dir { entries: Vec<(OsString, NodeId)> },
    File,
    Symlink { target: Vec<u8> },
    BlockDev { devno: u32 },
    CharDev { devno: u32 },
    Fifo,
    Socket,
}

pub(crate) struct Node {
    /// Where the data is read from on the host.
    pub(crate) source: PathBuf,
    pub(crate) kind: Kind,
    /// Full st_mode: file type and permission bits.
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mtime: u32,
    pub(crate) xattrs: Vec<(CString, Vec<u8>)>,
    /// Link count inside the image: directory entries pointing here (+ subdirs for a directory).
    pub(crate) nlink: u32,
    /// 1-based squashfs inode number, 0 until numbered.
    pub(crate) inode_number: u32,
    /// Inode number of the parent directory (directories only).
    pub(crate) parent: Option<NodeId>,
}

pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
    pub(crate) root: NodeId,
    /// Nodes in inode-number order (index 0 holds inode 1).
    pub(crate) order: Vec<NodeId>,
    /// Things left out, one line each (e.g. xattr namespaces squashfs cannot store).
    pub(crate) warnings: Vec<String>,
}

/// squashfs stores only these xattr namespaces (no system.*, so no POSIX ACLs), like mksquashfs.
fn storable_xattr(key: &CString) -> bool {
    let k = key.as_bytes();
    k.starts_with(b"user.") || k.starts_with(b"trusted.") || k.starts_with(b"security.")
}

/// The devno encoding the kernel's squashfs uses (new_encode_dev).
fn encode_devno(rdev: u64) -> u32 {
    let major = libc::major(rdev);
    let minor = libc::minor(rdev);
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

fn clamp_time(secs: i64) -> u32 {
    secs.clamp(0, u32::MAX as i64) as u32
}

struct Scanner {
    nodes: Vec<Node>,
    hard_links: HashMap<(u64, u64), NodeId>,
    warnings: Vec<String>,
}

impl Scanner {
    fn add(&mut self, path: &Path, parent: Option<NodeId>) -> Result<NodeId> {
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading metadata of {}", path.display()))?;
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(&id) = self.hard_links.get(&(meta.dev(), meta.ino())) {
                self.nodes[id].nlink += 1;
                return Ok(id);
            }
        }
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            Kind::Dir {
                entries: Vec::new(),
            }
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path)
                .with_context(|| format!("reading symlink {}", path.display()))?;
            Kind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if ft.is_block_device() {
            Kind::BlockDev {
                devno: encode_devno(meta.rdev()),
            }
        } else if ft.is_char_device() {
            Kind::CharDev {
                devno: encode_devno(meta.rdev()),
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            bail!("{}: unsupported file type", path.display());
        };
        let mut xattrs = hostfs::list_xattrs(path)
            .with_context(|| format!("reading extended attributes of {}", path.display()))?;
        xattrs.retain(|(key, _)| {
            let keep = storable_xattr(key);
            if !keep {
                self.warnings.push(format!(
                    "{}: extended attribute {} not stored (squashfs only stores user.*, trusted.*, security.*)",
                    path.display(),
                    key.to_string_lossy()
                ));
            }
            keep
        });
        let id = self.nodes.len();
        self.nodes.push(Node {
            source: path.to_path_buf(),
            kind,
            mode: (meta.mode() & 0xffff) as u16,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: clamp_time(meta.mtime()),
            xattrs,
            nlink: if ft.is_dir() { 2 } else { 1 },
            inode_number: 0,
            parent,
        });
        if !ft.is_dir() && meta.nlink() > 1 {
            self.hard_links.insert((meta.dev(), meta.ino()), id);
        }
        if ft.is_dir() {
            self.add_children(id, path)?;
        }
        Ok(id)
    }

    fn add_children(&mut self, dir: NodeId, path: &Path) -> Result<()> {
        let mut names: Vec<OsString> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading directory {}", path.display()))?;
        // squashfs requires entries sorted by their name bytes.
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let child = self.add(&path.join(&name), Some(dir))?;
            if matches!(self.nodes[child].kind, Kind::Dir { .. }) {
                self.nodes[dir].nlink += 1;
            }
            entries.push((name, child));
        }
        self.nodes[dir].kind = Kind::Dir { entries };
        Ok(())
    }
}

impl Tree {
    /// Reads the whole tree under `root` (which must be a directory) without following symlinks.
    pub(crate) fn scan(root: &Path) -> Result<Tree> {
        let meta = std::fs::metadata(root)
            .with_context(|| format!("source directory {}", root.display()))?;
        if !meta.is_dir() {
            bail!("{}: not a directory", root.display());
        }
        let mut scanner = Scanner {
            nodes: Vec::new(),
            hard_links: HashMap::new(),
            warnings: Vec::new(),
        };
        let root_id = scanner.add(root, None)?;
        let mut tree = Tree {
            nodes: scanner.nodes,
            root: root_id,
            order: Vec::new(),
            warnings: scanner.warnings,
        };
        tree.number_inodes()?;
        Ok(tree)
    }

    /// Numbers directories depth first: a directory's subdirectories first, then its own entries
    /// in name order (so they get consecutive numbers and compact directory headers), the root
    /// last. Hard-linked nodes are numbered at their first entry.
    fn number_inodes(&mut self) -> Result<()> {
        // Explicit stack instead of recursion: trees can be deep.
        enum Step {
            Enter(NodeId),
            NumberEntries(NodeId),
        }
        let mut stack = vec![Step::Enter(self.root)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Enter(dir) => {
                    stack.push(Step::NumberEntries(dir));
                    if let Kind::Dir { entries } = &self.nodes[dir].kind {
                        for (_, child) in entries.iter().rev() {
                            if matches!(self.nodes[*child].kind, Kind::Dir { .. }) {
                                stack.push(Step::Enter(*child));
                            }
                        }
                    }
                }
                Step::NumberEntries(dir) => {
                    let children: Vec<NodeId> = match &self.nodes[dir].kind {
                        Kind::Dir { entries } => entries.iter().map(|(_, c)| *c).collect(),
                        _ => Vec::new(),
                    };
                    for child in children {
                        self.assign(child)?;
                    }
                }
            }
        }
        self.assign(self.root)?;
        Ok(())
    }

    fn assign(&mut self, id: NodeId) -> Result<()> {
        if self.nodes[id].inode_number == 0 {
            let number = u32::try_from(self.order.len() + 1)
                .ok()
                .filter(|n| *n < u32::MAX)
                .context("too many files for one squashfs image")?;
            self.nodes[id].inode_number = number;
            self.order.push(id);
        }
        Ok(())
    }
}
