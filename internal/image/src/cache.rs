//! The per-user cache of downloaded things (Debian packages for debootstrap, image blobs),
//! under $HOME/.rctr/cache, or $RCTR_CACHEDIR (or Apptainer's $APPTAINER_CACHEDIR) when set,
//! so builds on a cluster can share one.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// `<cache>/<sub>`, created (private) if missing.
pub fn cache_dir(sub: &str) -> Result<PathBuf> {
    let from_env = ["RCTR_CACHEDIR", "APPTAINER_CACHEDIR"]
        .iter()
        .find_map(|v| {
            std::env::var_os(v)
                .filter(|s| !s.is_empty())
                .map(|s| (v, s))
        });
    match from_env {
        Some((var, dir)) => {
            let base = PathBuf::from(dir);
            if !base.is_absolute() {
                bail!("${var} ({}) must be an absolute path", base.display());
            }
            let dir = base.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| {
                    format!("cannot create cache directory {} (${var})", dir.display())
                })?;
            Ok(dir)
        }
        None => rctr_state::StateRoot::for_current_user()?.private_subdir(&format!("cache/{sub}")),
    }
}
