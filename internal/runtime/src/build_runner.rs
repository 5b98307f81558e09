//! `rctr build`'s %post and %test: rctr-image's [`SectionRunner`] over this crate's
//! writable-root containers.

use crate::launch::run_foreground;
use crate::plan::ContainerPlan;
use anyhow::{bail, Result};
use rctr_image::{SectionRun, SectionRunner};

/// Runs a definition file's %post and %test as root in a container on the staged root
/// filesystem, announcing each section on stderr.
pub struct ContainerSectionRunner;

impl SectionRunner for ContainerSectionRunner {
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
        rctr_log::info!("rctr: running %{}", run.section);
        let outcome = run_foreground(&plan)?;
        if let Some(error) = outcome.error {
            bail!("{error}");
        }
        Ok(outcome.code)
    }
}
