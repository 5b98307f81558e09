//! Applying one image layer (a tar stream, maybe gzip-compressed) onto a root filesystem,
//! with the OCI whiteouts: `.wh.NAME` removes NAME of the layers below, `.wh..wh..opq`
//! empties its directory of them.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// A tar stream completed at its end: zeros up to the next 512-byte block and an
/// end-of-archive marker. Some tools (umoci's `insert`) write layers that stop right after
/// the last file's data; Go's tar readers accept them, so must we.
struct Completed<R> {
    inner: R,
    read: u64,
    tail: Option<u64>,
}

impl<R: Read> Read for Completed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.tail.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.read += n as u64;
                return Ok(n);
            }
            self.tail = Some((512 - self.read % 512) % 512 + 1024);
        }
        let left = self.tail.as_mut().expect("set above");
        let n = (*left).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        *left -= n as u64;
        Ok(n)
    }
}

/// The layer's tar stream, decompressed by its magic bytes (gzip or none).
fn decompressed<R: Read + 'static>(reader: R) -> Result<Box<dyn Read>> {
    let mut buf = BufReader::new(reader);
    let head = buf.fill_buf().context("cannot read the layer")?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(buf)));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        bail!("the layer is zstd-compressed, which rctr cannot unpack yet");
    }
    Ok(Box::new(buf))
}

/// A layer path as plain components below the root; None for the root itself.
fn relative(path: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            _ => bail!("layer entry {} leaves the root filesystem", path.display()),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Removes whatever is at `path` (never following a symlink).
fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// The host path of `rel` in `root`, its parent directories resolved inside the root so a
/// symlink a lower layer planted cannot make us write outside it.
fn host_path(root: &Path, rel: &Path) -> Result<PathBuf> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    let dir = crate::sandbox::resolve_in_root(root, parent, true)?;
    Ok(match rel.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    })
}

/// Applies one layer onto `root`.
pub(crate) fn apply_layer<R: Read + 'static>(
    reader: R,
    root: &Path,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let mut archive = tar::Archive::new(Completed {
        inner: decompressed(reader)?,
        read: 0,
        tail: None,
    });
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    // SAFETY-free: geteuid cannot fail.
    let root_user = unsafe { libc::geteuid() } == 0;
    archive.set_preserve_ownerships(root_user);
    let mut warned_devices = false;
    for entry in archive.entries().context("not a tar stream")? {
        let mut entry = entry.context("corrupt tar entry")?;
        let path = entry.path().context("bad entry name")?.into_owned();
        let Some(rel) = relative(&path)? else {
            continue;
        };
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == OPAQUE {
            let dir = host_path(root, rel.parent().unwrap_or(Path::new("")))?;
            if let Ok(list) = fs::read_dir(&dir) {
                for e in list.flatten() {
                    remove_any(&e.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            let target = host_path(root, &rel.with_file_name(hidden))?;
            remove_any(&target)?;
            continue;
        }
        let kind = entry.header().entry_type();
        let target = host_path(root, &rel)?;
        if let Ok(existing) = fs::symlink_metadata(&target) {
            // A directory stays (and merges) only when the new entry is one too.
            if !(existing.is_dir() && kind.is_dir()) {
                remove_any(&target)?;
            }
        }
        if (kind.is_block_special() || kind.is_character_special()) && !root_user {
            if !warned_devices {
                warnings.push("device nodes in the image's layers are skipped (not root)".into());
                warned_devices = true;
            }
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        if kind.is_hard_link() {
            let link = entry
                .link_name()
                .context("bad hard link")?
                .context("hard link without target")?;
            let Some(link_rel) = relative(&link)? else {
                bail!("hard link {} to the root directory", path.display());
            };
            let src = host_path(root, &link_rel)?;
            fs::hard_link(&src, &target)
                .with_context(|| format!("cannot link {} to {}", path.display(), link.display()))?;
            continue;
        }
        entry
            .unpack(&target)
            .with_context(|| format!("cannot unpack {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match content {
                Some(c) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(c.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, c.as_bytes()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_remove_lower_layers_entries() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut w = Vec::new();
        let base = layer(&[
            ("etc/", None),
            ("etc/keep", Some("keep")),
            ("etc/gone", Some("gone")),
            ("opt/", None),
            ("opt/old", Some("old")),
            ("opt/sub/", None),
            ("opt/sub/x", Some("x")),
        ]);
        apply_layer(Cursor::new(base), root, &mut w).unwrap();
        // Compressed, like registry layers.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(
            &mut gz,
            &layer(&[
                ("etc/.wh.gone", Some("")),
                ("opt/", None),
                ("opt/.wh..wh..opq", Some("")),
                ("opt/new", Some("new")),
                ("etc/keep", Some("changed")),
            ]),
        )
        .unwrap();
        apply_layer(Cursor::new(gz.finish().unwrap()), root, &mut w).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("etc/keep")).unwrap(),
            "changed"
        );
        assert!(!root.join("etc/gone").exists() && !root.join("etc/.wh.gone").exists());
        let mut opt: Vec<_> = fs::read_dir(root.join("opt"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        opt.sort();
        assert_eq!(opt, ["new"]);
    }

    #[test]
    fn layers_cut_after_the_last_files_data_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = layer(&[("srv/added", Some("layer2\n"))]);
        bytes.truncate(512 + 7);
        apply_layer(Cursor::new(bytes), dir.path(), &mut Vec::new()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("srv/added")).unwrap(),
            "layer2\n"
        );
    }

    #[test]
    fn entries_never_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("escape")).unwrap();
        let mut w = Vec::new();
        apply_layer(
            Cursor::new(layer(&[("escape/file", Some("x"))])),
            &root,
            &mut w,
        )
        .unwrap();
        // The absolute symlink is resolved inside the root: nothing lands beside it.
        assert!(!dir.path().join("file").exists());
        assert!(relative(Path::new("../x")).is_err());
    }
}
