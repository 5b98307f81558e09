//! `rctr build [--sandbox] OUT SOURCE`.

use anyhow::Result;
use clap::Args;
use rctr_image::{BuildArgs as DefArgs, BuildOptions, RegistryOptions};
use rctr_runtime::build_runner::ContainerSectionRunner;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The SIF file to create (a directory with --sandbox)
    pub output: PathBuf,
    /// A root filesystem directory, a SIF or squashfs image, a definition file (relative
    /// paths in its `From:` and `%files` are taken from the current directory, as Apptainer
    /// does), or an OCI/Docker image: docker://REF, docker-archive:FILE, oci:DIR,
    /// oci-archive:FILE
    pub source: PathBuf,
    /// Overwrite OUTPUT if it exists (Apptainer's -F/--force)
    #[arg(short = 'F', long)]
    pub force: bool,
    /// Do not run the definition file's %test section
    #[arg(short = 'T', long)]
    pub notest: bool,
    /// Build a writable sandbox directory at OUTPUT instead of a SIF file
    #[arg(short = 's', long)]
    pub sandbox: bool,
    /// NAME=VALUE for {{ NAME }} in the definition file (repeatable)
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_arg: Vec<String>,
    /// A file of NAME=VALUE lines for {{ NAME }} in the definition file (--build-arg wins)
    #[arg(long = "build-arg-file", value_name = "FILE")]
    pub build_arg_file: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// How docker:// sources are fetched (build and pull).
#[derive(Args, Debug, Clone, Copy)]
pub struct RegistryFlags {
    /// Talk plain HTTP to the registry of a docker:// source, e.g. a test registry on
    /// loopback (also $RCTR_NOHTTPS or $APPTAINER_NOHTTPS set to 1/true)
    #[arg(long = "no-https", visible_alias = "nohttps")]
    pub no_https: bool,
}

impl RegistryFlags {
    pub fn options(self) -> RegistryOptions {
        let from_env = ["RCTR_NOHTTPS", "APPTAINER_NOHTTPS", "APPTAINER_NO_HTTPS"]
            .iter()
            .filter_map(|v| std::env::var(v).ok())
            .any(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
        RegistryOptions {
            no_https: self.no_https || from_env,
        }
    }
}

pub fn run(args: BuildArgs) -> Result<i32> {
    let mut def_args = DefArgs::new();
    if let Some(file) = &args.build_arg_file {
        def_args.add_file(file)?;
    }
    for a in &args.build_arg {
        def_args.add(a)?;
    }
    let opts = BuildOptions {
        force: args.force,
        runner: Some(&ContainerSectionRunner),
        notest: args.notest,
        // Relative paths in the definition start here, as in Apptainer.
        base_dir: None,
        sandbox: args.sandbox,
        build_args: Some(&def_args),
        registry: args.registry.options(),
    };
    let report = rctr_image::build_with(&args.output, &args.source, &opts)?;
    for warning in &report.warnings {
        rctr_log::warn!("{warning}");
    }
    if args.sandbox {
        rctr_log::info!(
            "Built sandbox {} in {:.1}s",
            report.output.display(),
            report.elapsed.as_secs_f64()
        );
    } else {
        rctr_log::info!(
            "Built {} ({:.1} MiB, {} inodes) in {:.1}s",
            report.output.display(),
            report.size as f64 / (1024.0 * 1024.0),
            report.squashfs.inodes,
            report.elapsed.as_secs_f64()
        );
    }
    Ok(0)
}
