//! Container paths resolved through the image's own symlinks, as Apptainer does for
//! bind destinations: on a merged-/usr image `/lib/x` is really `/usr/lib/x`, and a
//! mount point made at `/lib/x` in the skeleton would turn `/lib` into a directory
//! that hides the image's `/lib -> usr/lib` (and with it every library).
//!
//! Absolute link targets are taken inside the container root, never on the host, and
//! `..` stops at the root, so the result always names a path under `root`.

use crate::syscall::{FileKind, Syscall};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// More links than this on one path is a loop; the rest is then taken literally.
const MAX_LINKS: u32 = 40;

/// One step of a path still to resolve.
enum Step {
    Name(OsString),
    Up,
}

/// The steps of `p`, in reverse order (the next one to take is last).
fn steps_reversed(p: &Path) -> Vec<Step> {
    let mut steps: Vec<Step> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
            Component::ParentDir => Some(Step::Up),
            _ => None,
        })
        .collect();
    steps.reverse();
    steps
}

/// The absolute container path `inside` really names in the tree mounted at host path
/// `root`, every symlink on the way (the last component's too) followed.
pub fn resolve_in_root<S: Syscall>(sys: &S, root: &Path, inside: &Path) -> PathBuf {
    let mut resolved = PathBuf::from("/");
    let mut pending = steps_reversed(inside);
    let mut links = 0;
    while let Some(step) = pending.pop() {
        let name = match step {
            Step::Up => {
                resolved.pop();
                continue;
            }
            Step::Name(n) => n,
        };
        let candidate = resolved.join(&name);
        let host = crate::rootfs::under(root, &candidate);
        if links < MAX_LINKS && sys.kind(&host) == FileKind::Symlink {
            if let Some(target) = sys.read_link(&host) {
                links += 1;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                pending.extend(steps_reversed(&target));
                continue;
            }
        }
        resolved = candidate;
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Result;
    use nix::mount::MsFlags;
    use std::collections::HashMap;

    /// A tree that only has symlinks: `links` maps host paths to targets.
    struct Links(HashMap<PathBuf, PathBuf>);

    impl Syscall for Links {
        fn mount(
            &self,
            _: Option<&Path>,
            _: &Path,
            _: Option<&str>,
            _: MsFlags,
            _: Option<&str>,
        ) -> Result<()> {
            unreachable!()
        }
        fn umount_detach(&self, _: &Path) -> Result<()> {
            unreachable!()
        }
        fn mkdir_all(&self, _: &Path, _: u32) -> Result<()> {
            unreachable!()
        }
        fn create_file(&self, _: &Path, _: &[u8], _: u32) -> Result<()> {
            unreachable!()
        }
        fn symlink(&self, _: &Path, _: &Path) -> Result<()> {
            unreachable!()
        }
        fn mknod_char(&self, _: &Path, _: u64, _: u64, _: u32) -> Result<()> {
            unreachable!()
        }
        fn kind(&self, p: &Path) -> FileKind {
            if self.0.contains_key(p) {
                FileKind::Symlink
            } else {
                FileKind::Missing
            }
        }
        fn is_dir(&self, _: &Path) -> bool {
            false
        }
        fn read_link(&self, p: &Path) -> Option<PathBuf> {
            self.0.get(p).cloned()
        }
        fn pivot_root(&self, _: &Path) -> Result<()> {
            unreachable!()
        }
        fn mount_squashfuse(&self, _: &Path, _: u64, _: &Path) -> Result<()> {
            unreachable!()
        }
        fn kept_flags(&self, _: &Path) -> MsFlags {
            unreachable!()
        }
    }

    fn debian() -> Links {
        Links(
            [
                ("/r/lib", "usr/lib"),
                ("/r/bin", "usr/bin"),
                ("/r/var/run", "/run"),
                ("/r/usr/lib/up", "../../etc"),
                ("/r/loop", "loop"),
                ("/r/escape", "../../../../host"),
            ]
            .iter()
            .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
            .collect(),
        )
    }

    fn resolve(p: &str) -> PathBuf {
        resolve_in_root(&debian(), Path::new("/r"), Path::new(p))
    }

    #[test]
    fn follows_relative_and_absolute_links_inside_the_root() {
        assert_eq!(resolve("/lib/x"), Path::new("/usr/lib/x"));
        assert_eq!(resolve("/bin/x/y"), Path::new("/usr/bin/x/y"));
        // Absolute: the container's /run, not the host's.
        assert_eq!(resolve("/var/run/x"), Path::new("/run/x"));
        assert_eq!(resolve("/var/run"), Path::new("/run"));
        assert_eq!(resolve("/lib/up/passwd"), Path::new("/etc/passwd"));
        assert_eq!(resolve("/data/x"), Path::new("/data/x"));
    }

    #[test]
    fn never_leaves_the_root_and_stops_on_loops() {
        assert_eq!(resolve("/escape/x"), Path::new("/host/x"));
        assert_eq!(resolve("/loop/x"), Path::new("/loop/x"));
    }
}
