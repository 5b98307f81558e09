//! Layout of the per-user state directory:
//!
//! ```text
//! $HOME/.rctr/
//!   instances/<hostname>/<user>/   one entry per running instance
//!   checkpoint/<engine>/           checkpoint images, per engine (e.g. criu)
//!   <sub>/                         caches and other private data
//! ```
//!
//! Instances are split by host name because home directories are usually
//! shared between the nodes of a cluster, while processes are not.

use crate::{ensure_private_dir_under, hostname, username, validate_name};
use anyhow::{anyhow, bail, Result};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRoot {
    root: PathBuf,
}

impl StateRoot {
    /// `$HOME/.rctr` (the home directory comes from `$HOME`, or the passwd
    /// database when `$HOME` is unset or empty).
    pub fn for_current_user() -> Result<StateRoot> {
        let dirs = directories::BaseDirs::new()
            .ok_or_else(|| anyhow!("cannot determine your home directory; set $HOME"))?;
        let home = dirs.home_dir();
        if !home.is_absolute() {
            bail!(
                "home directory {:?} must be an absolute path; fix $HOME",
                home.display().to_string()
            );
        }
        Ok(StateRoot::at(home.join(".rctr")))
    }

    /// A state root at an explicit location (tests, or an override option).
    pub fn at(root: PathBuf) -> StateRoot {
        StateRoot { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/instances/<hostname>/<user>/`, created private and checked.
    pub fn instances_dir(&self) -> Result<PathBuf> {
        let dir = self
            .root
            .join("instances")
            .join(path_component(&hostname(), "localhost"))
            .join(path_component(&username(), "unknown"));
        ensure_private_dir_under(&self.root, &dir)?;
        Ok(dir)
    }

    /// `<root>/checkpoint/<engine>/`, created private and checked.
    pub fn checkpoint_engine_dir(&self, engine: &str) -> Result<PathBuf> {
        validate_name("checkpoint engine", engine)?;
        let dir = self.root.join("checkpoint").join(engine);
        ensure_private_dir_under(&self.root, &dir)?;
        Ok(dir)
    }

    /// `<root>/<sub>`, created private and checked. `sub` is a relative path
    /// of plain components (e.g. "cache" or "cache/images").
    pub fn private_subdir(&self, sub: &str) -> Result<PathBuf> {
        let rel = Path::new(sub);
        let plain = !sub.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            bail!("state subdirectory {sub:?} must be a relative path without '.' or '..'");
        }
        let dir = self.root.join(rel);
        ensure_private_dir_under(&self.root, &dir)?;
        Ok(dir)
    }
}

/// Host and user names come from the system, not from rctr's users, but must
/// still be usable as a single path component.
fn path_component(name: &str, fallback: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        fallback.to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn instances_dir_layout_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateRoot::at(tmp.path().join(".rctr"));
        let dir = state.instances_dir().unwrap();
        assert_eq!(
            dir,
            tmp.path()
                .join(".rctr/instances")
                .join(hostname())
                .join(username())
        );
        let mut p = dir.as_path();
        while p != tmp.path() {
            assert_eq!(mode(p), 0o700, "{}", p.display());
            p = p.parent().unwrap();
        }
    }

    #[test]
    fn checkpoint_engine_dir_validates_engine() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateRoot::at(tmp.path().join(".rctr"));
        let dir = state.checkpoint_engine_dir("criu").unwrap();
        assert_eq!(dir, tmp.path().join(".rctr/checkpoint/criu"));
        assert_eq!(mode(&dir), 0o700);
        let err = state.checkpoint_engine_dir("../x").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("checkpoint engine name"),
            "{err:#}"
        );
    }

    #[test]
    fn private_subdir_accepts_nested_and_rejects_escapes() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateRoot::at(tmp.path().join(".rctr"));
        let dir = state.private_subdir("cache/images").unwrap();
        assert_eq!(mode(&dir), 0o700);
        for bad in ["", "/abs", "../up", "a/../b", "./a"] {
            let err = state.private_subdir(bad).unwrap_err();
            assert!(
                format!("{err:#}").contains("relative path"),
                "{bad:?}: {err:#}"
            );
        }
    }

    #[test]
    fn refuses_symlinked_root_component() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let root = tmp.path().join(".rctr");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("instances")).unwrap();
        let err = StateRoot::at(root).instances_dir().unwrap_err();
        assert!(format!("{err:#}").contains("is a symbolic link"), "{err:#}");
    }

    /// $HOME is process-wide, so it is changed in a child process.
    #[test]
    fn for_current_user_honours_home() {
        const CHILD: &str = "RCTR_STATE_TEST_EXPECT_ROOT";
        if let Some(expected) = std::env::var_os(CHILD) {
            let state = StateRoot::for_current_user().unwrap();
            assert_eq!(state.root(), Path::new(&expected));
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let run = |home: &Path| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "root::tests::for_current_user_honours_home"])
                .env("HOME", home)
                .env(CHILD, home.join(".rctr"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        assert!(run(tmp.path()));
        // Sanity check that the child really compares: a wrong expectation fails.
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "root::tests::for_current_user_honours_home"])
            .env("HOME", tmp.path())
            .env(CHILD, "/somewhere/else")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success());
    }

    #[test]
    fn path_component_sanitizes() {
        assert_eq!(path_component("node1", "x"), "node1");
        assert_eq!(path_component("a/b", "x"), "a_b");
        assert_eq!(path_component("..", "x"), "x");
        assert_eq!(path_component("", "x"), "x");
    }
}
