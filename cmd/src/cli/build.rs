//! `rctr build OUT.sif SOURCE`.

use anyhow::{bail, Result};
use clap::Args;
use rctr_image::{BuildOptions, SectionRun, SectionRunner};
use rctr_runtime::launch::run_foreground;
use rctr_runtime::plan::ContainerPlan;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The SIF file to create
    pub output: PathBuf,
    /// A root filesystem directory, a SIF or squashfs image, or a definition file
    pub source: PathBuf,
    /// Overwrite OUTPUT if it exists
    #[arg(short, long)]
    pub force: bool,
    /// Do not run the definition file's %test section
    #[arg(short = 'T', long)]
    pub notest: bool,
}

/// Runs %post and %test in rctr containers on the staged root filesystem.
struct ContainerRunner;

impl SectionRunner for ContainerRunner {
    fn run(&self, run: &SectionRun) -> Result<i32> {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "rctr runs %{} as root in a container; run rctr build as root",
                run.section
            );
        }
        let plan = ContainerPlan::for_build_script(
            run.rootfs,
            run.writable,
            run.argv.clone(),
            run.clean_env,
            &run.env,
        )?;
        eprintln!("rctr: running %{}", run.section);
        let outcome = run_foreground(&plan)?;
        if let Some(error) = outcome.error {
            bail!("{error}");
        }
        Ok(outcome.code)
    }
}

pub fn run(args: BuildArgs) -> Result<i32> {
    let opts = BuildOptions {
        force: args.force,
        runner: Some(&ContainerRunner),
        notest: args.notest,
    };
    let report = rctr_image::build_with(&args.output, &args.source, &opts)?;
    for warning in &report.warnings {
        eprintln!("rctr: warning: {warning}");
    }
    eprintln!(
        "Built {} ({:.1} MiB, {} inodes) in {:.1}s",
        report.output.display(),
        report.size as f64 / (1024.0 * 1024.0),
        report.squashfs.inodes,
        report.elapsed.as_secs_f64()
    );
    Ok(0)
}
