//! `rctr sif list|info|header|dump`: siftool-compatible output.

use super::examples::*;
use anyhow::{Context, Result};
use clap::Subcommand;
use rctr_sif::{siftool, SifImage};
use std::io::{ErrorKind, Write};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum SifCommand {
    /// List object descriptors
    #[command(after_help = EX_SIF_LIST)]
    List {
        /// The SIF file
        image: PathBuf,
    },
    /// Show details of one object descriptor
    #[command(after_help = EX_SIF_INFO)]
    Info {
        /// Object ID, as `rctr sif list` shows it
        id: u32,
        /// The SIF file
        image: PathBuf,
    },
    /// Show the global header
    #[command(after_help = EX_SIF_HEADER)]
    Header {
        /// The SIF file
        image: PathBuf,
    },
    /// Write the data of one object to stdout
    #[command(after_help = EX_SIF_DUMP)]
    Dump {
        /// Object ID, as `rctr sif list` shows it
        id: u32,
        /// The SIF file
        image: PathBuf,
    },
}

pub fn run(cmd: SifCommand) -> Result<i32> {
    let mut stdout = std::io::stdout().lock();
    let written = match cmd {
        SifCommand::List { image } => {
            let image = SifImage::open(&image)?;
            stdout.write_all(&siftool::format_list(image.descriptors()))
        }
        SifCommand::Info { id, image } => {
            let image = SifImage::open(&image)?;
            let d = image.descriptor(id)?;
            let text = siftool::format_info(d)
                .with_context(|| format!("{}: object {id}", image.path().display()))?;
            stdout.write_all(&text)
        }
        SifCommand::Header { image } => {
            let image = SifImage::open(&image)?;
            stdout.write_all(&siftool::format_header(image.header()))
        }
        SifCommand::Dump { id, image } => {
            let image = SifImage::open(&image)?;
            match image.copy_object(id, &mut stdout) {
                Err(e) if is_broken_pipe(&e) => return Ok(0),
                other => other.map(|_| ())?,
            }
            Ok(())
        }
    };
    match written.and_then(|()| stdout.flush()) {
        // The reader went away (`| head`): not an error of ours.
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(0),
        other => other.context("cannot write to stdout").map(|()| 0),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == ErrorKind::BrokenPipe)
    })
}
