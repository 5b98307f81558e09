//! `rctr pull [OUT.sif] docker://REF`: an image from a registry, as a SIF file.

use super::build::RegistryFlags;
use anyhow::{bail, Context, Result};
use clap::Args;
use rctr_image::{BuildOptions, Reference};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The SIF file to write (default: NAME_TAG.sif in the current directory, as Apptainer
    /// names it), then the image: docker://REF
    #[arg(num_args = 1..=2, required = true, value_name = "[OUT.sif] docker://REF")]
    pub args: Vec<String>,
    /// Overwrite the output file if it exists
    #[arg(short = 'F', long)]
    pub force: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

pub fn run(args: PullArgs) -> Result<i32> {
    let (out, source) = match args.args.as_slice() {
        [source] => (None, source.clone()),
        [out, source] => (Some(PathBuf::from(out)), source.clone()),
        _ => unreachable!("clap takes one or two"),
    };
    let Some(reference) = source.strip_prefix("docker://") else {
        bail!(
            "{source}: rctr pull takes docker://REF (for local archives and layouts use rctr build OUT.sif SOURCE)"
        );
    };
    let parsed = Reference::parse(reference).with_context(|| source.clone())?;
    let out = out.unwrap_or_else(|| PathBuf::from(parsed.default_sif_name()));
    let opts = BuildOptions {
        force: args.force,
        registry: args.registry.options(),
        ..Default::default()
    };
    let report = rctr_image::build_with(&out, std::path::Path::new(&source), &opts)?;
    for warning in &report.warnings {
        rctr_log::warn!("{warning}");
    }
    rctr_log::info!(
        "Pulled docker://{parsed} to {} ({:.1} MiB) in {:.1}s",
        report.output.display(),
        report.size as f64 / (1024.0 * 1024.0),
        report.elapsed.as_secs_f64()
    );
    Ok(0)
}
