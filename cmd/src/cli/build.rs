//! `rctr build OUT.sif SOURCE`.

use anyhow::Result;
use clap::Args;
use rctr_image::BuildOptions;
use rctr_runtime::build_runner::ContainerSectionRunner;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The SIF file to create
    pub output: PathBuf,
    /// A root filesystem directory, a SIF or squashfs image, or a definition file (relative
    /// paths in its `From:` and `%files` are taken from the current directory, as Apptainer does)
    pub source: PathBuf,
    /// Overwrite OUTPUT if it exists (Apptainer's -F/--force)
    #[arg(short = 'F', long)]
    pub force: bool,
    /// Do not run the definition file's %test section
    #[arg(short = 'T', long)]
    pub notest: bool,
}

pub fn run(args: BuildArgs) -> Result<i32> {
    let opts = BuildOptions {
        force: args.force,
        runner: Some(&ContainerSectionRunner),
        notest: args.notest,
        // Relative paths in the definition start here, as in Apptainer.
        base_dir: None,
    };
    let report = rctr_image::build_with(&args.output, &args.source, &opts)?;
    for warning in &report.warnings {
        rctr_log::warn!("{warning}");
    }
    rctr_log::info!(
        "Built {} ({:.1} MiB, {} inodes) in {:.1}s",
        report.output.display(),
        report.size as f64 / (1024.0 * 1024.0),
        report.squashfs.inodes,
        report.elapsed.as_secs_f64()
    );
    Ok(0)
}
