//! `rctr generate-docs DIR` (hidden): man pages and shell completions, made from the very
//! clap definitions the binary parses with, so they cannot drift from it. `make docs` and
//! `make install` run it; users never need to.

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Directory to write man/ (rctr.1, rctr-exec.1, ...) and completions/ into
    pub dir: PathBuf,
}

pub fn run(a: GenerateArgs) -> Result<i32> {
    let mut cmd = super::Cli::command();
    // Subcommands get their full names ("rctr instance stop") in usage lines and man pages.
    cmd.build();
    let man = a.dir.join("man");
    fs::create_dir_all(&man).with_context(|| format!("cannot create {}", man.display()))?;
    write_man_pages(&cmd, &man)?;
    let comp = a.dir.join("completions");
    fs::create_dir_all(&comp).with_context(|| format!("cannot create {}", comp.display()))?;
    for (shell, file) in [
        (Shell::Bash, "rctr.bash"),
        (Shell::Zsh, "_rctr"),
        (Shell::Fish, "rctr.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "rctr", &mut out);
        write(&comp.join(file), &out)?;
    }
    rctr_log::info!("man pages and completions written to {}", a.dir.display());
    Ok(0)
}

/// rctr.1 for the top level, rctr-<cmd>[-<sub>].1 for each command, like git's pages.
fn write_man_pages(cmd: &clap::Command, dir: &Path) -> Result<()> {
    let name = cmd
        .get_display_name()
        .unwrap_or(cmd.get_name())
        .replace(' ', "-");
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .render(&mut out)
        .with_context(|| format!("cannot render the man page of {name}"))?;
    write(&dir.join(format!("{name}.1")), &out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() != "help" {
            write_man_pages(sub, dir)?;
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
