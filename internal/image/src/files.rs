//! The `%files` section: copying host files into the root filesystem like `cp -a`, sources
//! relative to the directory the build started in, shell wildcards allowed in the source.

use crate::deffile::{Definition, FileTransfer};
use crate::fsutil::TreeCopier;
use crate::sandbox::resolve_in_root;
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

fn has_wildcard(s: &[u8]) -> bool {
    s.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// Shell-style match of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!abc]`.
fn wildmatch(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = match_class(&pat[p..], name[n]) {
                        if matched {
                            p += next;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == b'[' {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

/// Matches `c` against the bracket expression at the start of `pat`; returns (matched, length
/// of the expression), or None if the bracket is not closed.
fn match_class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            if pat[i] <= c && c <= pat[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if pat[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// Paths matching `pattern` (wildcards in any component), sorted; the pattern itself if it has
/// no wildcards and exists. Hidden names only match patterns that start with a dot.
fn expand(pattern: &Path) -> Result<Vec<PathBuf>> {
    if !has_wildcard(pattern.as_os_str().as_bytes()) {
        return Ok(if fs::symlink_metadata(pattern).is_ok() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        });
    }
    let mut found = vec![PathBuf::new()];
    for comp in pattern.components() {
        let part = comp.as_os_str().as_bytes();
        let mut next = Vec::new();
        for base in &found {
            if matches!(comp, Component::Normal(_)) && has_wildcard(part) {
                let dir = if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base.as_path()
                };
                let Ok(entries) = fs::read_dir(dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name();
                    let nb = name.as_bytes();
                    if (nb.starts_with(b".") && !part.starts_with(b".")) || !wildmatch(part, nb) {
                        continue;
                    }
                    next.push(base.join(&name));
                }
            } else {
                let p = base.join(comp);
                if fs::symlink_metadata(&p).is_ok() || !matches!(comp, Component::Normal(_)) {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found.sort();
    Ok(found)
}

/// Copies `src` onto `dst` like `cp -a`: directories merge into existing directories, other
/// existing entries are replaced.
fn copy_merge(copier: &mut TreeCopier, src: &Path, dst: &Path) -> Result<()> {
    let src_meta =
        fs::symlink_metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    match fs::symlink_metadata(dst) {
        Err(_) => copier.copy(src, dst),
        Ok(dm) if dm.is_dir() && src_meta.is_dir() => {
            // Sorted, not in directory order: which path of a hard-link group is copied first
            // (and which error is met first) must not depend on the host's file system.
            let mut names: Vec<_> = fs::read_dir(src)
                .with_context(|| format!("cannot read {}", src.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("cannot read {}", src.display()))?;
            names.sort();
            for name in names {
                copy_merge(copier, &src.join(&name), &dst.join(&name))?;
            }
            Ok(())
        }
        Ok(dm) if dm.is_dir() => bail!(
            "cannot overwrite directory {} with non-directory {}",
            dst.display(),
            src.display()
        ),
        Ok(_) => {
            fs::remove_file(dst).with_context(|| format!("cannot replace {}", dst.display()))?;
            copier.copy(src, dst)
        }
    }
}

/// Roots of the earlier stages of a multi-stage build, by `Stage:` name.
pub(crate) type StageRoots = [(String, PathBuf)];

/// Runs the definition's `%files` into `root`.
pub(crate) fn copy_files(
    def: &Definition,
    root: &Path,
    stages: &StageRoots,
    copier: &mut TreeCopier,
) -> Result<()> {
    copy_transfers(def, &def.files, root, "", stages, copier)
}

/// Where a `%files` source is: on the host relative to the build directory, or inside an
/// earlier stage's root (symlinks resolved inside that root).
fn source_pattern(def: &Definition, t: &FileTransfer, stages: &StageRoots) -> Result<PathBuf> {
    let Some(stage) = &t.from_stage else {
        return Ok(def.base_dir.join(&t.src));
    };
    let (_, stage_root) = stages
        .iter()
        .find(|(name, _)| name == stage)
        .with_context(|| {
            format!(
                "{}:{}: %files from {stage:?}: no earlier stage has that name",
                def.origin.display(),
                t.line
            )
        })?;
    if has_wildcard(t.src.as_bytes()) {
        return Ok(stage_root.join(t.src.trim_start_matches('/')));
    }
    resolve_in_root(stage_root, Path::new(&t.src), true)
}

/// Copies `transfers` into `root`, destinations under `dst_prefix` (an app's directory for
/// `%appfiles`, else "").
pub(crate) fn copy_transfers(
    def: &Definition,
    transfers: &[FileTransfer],
    root: &Path,
    dst_prefix: &str,
    stages: &StageRoots,
    copier: &mut TreeCopier,
) -> Result<()> {
    for t in transfers {
        let at = format!("{}:{}", def.origin.display(), t.line);
        let pattern = source_pattern(def, t, stages)?;
        let sources = expand(&pattern)?;
        if sources.is_empty() {
            match &t.from_stage {
                Some(stage) => bail!(
                    "{at}: %files source {} does not exist in stage {stage:?}",
                    t.src
                ),
                None => bail!("{at}: %files source {} does not exist", pattern.display()),
            }
        }
        let dst = t.dst.as_deref().unwrap_or(&t.src);
        let dst_in_image = if dst_prefix.is_empty() {
            dst.to_string()
        } else {
            format!("{dst_prefix}/{}", dst.trim_start_matches('/'))
        };
        let dst_host = resolve_in_root(root, Path::new(&dst_in_image), true)?;
        let into_dir = sources.len() > 1 || dst.ends_with('/') || dst_host.is_dir();
        let result = (|| -> Result<()> {
            if into_dir {
                fs::create_dir_all(&dst_host)
                    .with_context(|| format!("cannot create {}", dst_host.display()))?;
                for src in &sources {
                    let name = src
                        .file_name()
                        .with_context(|| format!("{} has no file name", src.display()))?;
                    copy_merge(copier, src, &dst_host.join(name))?;
                }
            } else {
                if let Some(parent) = dst_host.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                copy_merge(copier, &sources[0], &dst_host)?;
            }
            Ok(())
        })();
        result.with_context(|| format!("{at}: copying {} to {dst_in_image}", t.src))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildmatch(b"*.txt", b"a.txt"));
        assert!(wildmatch(b"*", b"anything"));
        assert!(wildmatch(b"a?c", b"abc"));
        assert!(!wildmatch(b"a?c", b"ac"));
        assert!(wildmatch(b"lib*.so*", b"libfoo.so.1"));
        assert!(wildmatch(b"[a-c]x", b"bx"));
        assert!(!wildmatch(b"[!a-c]x", b"bx"));
        assert!(wildmatch(b"[!a-c]x", b"dx"));
        assert!(!wildmatch(b"*.txt", b"a.txt.bak"));
        assert!(wildmatch(b"a*b*c", b"aXXbYYc"));
        assert!(wildmatch(b"[x", b"[x"));
    }

    #[test]
    fn expands_patterns_relative_and_absolute() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.txt", "b.txt", ".hidden.txt", "c.log"] {
            fs::write(dir.path().join(f), f).unwrap();
        }
        let got = expand(&dir.path().join("*.txt")).unwrap();
        assert_eq!(
            got,
            vec![dir.path().join("a.txt"), dir.path().join("b.txt")]
        );
        assert_eq!(
            expand(&dir.path().join("c.log")).unwrap(),
            vec![dir.path().join("c.log")]
        );
        assert!(expand(&dir.path().join("*.none")).unwrap().is_empty());
        assert!(expand(&dir.path().join("missing")).unwrap().is_empty());
    }
}
