//! Choosing a generation to restore and checking it before anything runs.

use crate::integrity::{image_digest, verify_files};
use crate::store::{generation_dir_name, generations, latest_generation, read_manifest, Manifest};
use anyhow::{bail, Result};
use rctr_runtime::plan::RootSource;
use std::path::{Path, PathBuf};

pub struct Generation {
    pub number: u32,
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// Generation `wanted`, or the newest one.
pub fn select(dir: &Path, name: &str, wanted: Option<u32>) -> Result<Generation> {
    let number = match wanted {
        Some(g) => {
            if !generations(dir)?.contains(&g) {
                bail!("checkpoint '{name}' has no generation {g}: see `rctr checkpoint list {name}`");
            }
            g
        }
        None => match latest_generation(dir)? {
            Some(g) => g,
            None => bail!("checkpoint '{name}' has no images yet: start an instance with `--ckpt-launch {name}` and run `rctr checkpoint instance INSTANCE` first"),
        },
    };
    let gen_dir = dir.join(generation_dir_name(number));
    let manifest = match read_manifest(&gen_dir) {
        Ok(m) => m,
        Err(e) => bail!(
            "generation {number} of checkpoint '{name}' is damaged: {e:#}{}",
            older_hint(dir, name, number)
        ),
    };
    Ok(Generation {
        number,
        dir: gen_dir,
        manifest,
    })
}

/// Checks every image file and, when `image` is given, that it is the image the
/// checkpoint was taken from (unless `force`).
pub fn verify(
    dir: &Path,
    name: &str,
    g: &Generation,
    image: Option<&RootSource>,
    force: bool,
    cache: &Path,
) -> Result<()> {
    if let Err(e) = verify_files(&g.dir, &g.manifest.files) {
        bail!(
            "generation {} of checkpoint '{name}' is damaged: {e:#}{}",
            g.number,
            older_hint(dir, name, g.number)
        );
    }
    if let (Some(root), Some(want), false) = (image, &g.manifest.image_digest, force) {
        let have = image_digest(root, cache)?;
        if have.as_deref() != Some(want.as_str()) {
            bail!(
                "image {} differs from the image checkpoint '{name}' was taken from ({}): use that image, or --force to restore anyway",
                root.path.display(),
                g.manifest.image
            );
        }
    }
    Ok(())
}

fn older_hint(dir: &Path, name: &str, number: u32) -> String {
    match generations(dir).ok().and_then(|all| all.into_iter().filter(|n| *n < number).max()) {
        Some(prev) => format!("; restore the previous one with `--generation {prev}` (check it with `rctr checkpoint verify {name} --generation {prev}`)"),
        None => String::new(),
    }
}
