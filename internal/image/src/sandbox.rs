//! Resolving paths inside a root filesystem directory the way the container will see them:
//! symlinks are followed within the root (absolute targets restart at the root, `..` stops at
//! it), so a hostile image can never make us read or write outside it.

use anyhow::{bail, Result};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

const MAX_SYMLINKS: u32 = 40;

fn components(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

/// Host path of `inner` inside `root`, with every existing symlink on the way resolved inside
/// the root (the last one only if `follow_last`). Components that do not exist are appended
/// as they are, so the result can name something to be created.
pub fn resolve_in_root(root: &Path, inner: &Path, follow_last: bool) -> Result<PathBuf> {
    let mut pending: VecDeque<Vec<u8>> = components(inner.as_os_str().as_bytes())
        .map(<[u8]>::to_vec)
        .collect();
    // Path below root, as resolved components.
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == b".." {
            resolved.pop();
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(resolved.iter().map(|c| OsString::from_vec(c.clone())));
        host.push(OsString::from_vec(comp.clone()));
        let is_last = pending.is_empty();
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() && (follow_last || !is_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    bail!(
                        "{}: too many levels of symbolic links inside {}",
                        inner.display(),
                        root.display()
                    );
                }
                let target = std::fs::read_link(&host)?;
                let target = target.as_os_str().as_bytes();
                if target.starts_with(b"/") {
                    resolved.clear();
                }
                for part in components(target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(part.to_vec());
                }
            }
            _ => resolved.push(comp),
        }
    }
    let mut host = root.to_path_buf();
    host.extend(resolved.into_iter().map(OsString::from_vec));
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join(".singularity.d")).unwrap();
        symlink(".singularity.d/runscript", root.join("singularity")).unwrap();
        symlink("../../../../etc", root.join("up")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("loop", root.join("loop")).unwrap();

        assert_eq!(
            resolve_in_root(root, Path::new("/singularity"), true).unwrap(),
            root.join(".singularity.d/runscript")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/singularity"), false).unwrap(),
            root.join("singularity")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("up/passwd"), true).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/x/y"), true).unwrap(),
            root.join("etc/x/y")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../a/./b/.."), true).unwrap(),
            root.join("a")
        );
        let err = resolve_in_root(root, Path::new("/loop/x"), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("too many levels"), "{err}");
    }
}
