//! `e2e-image server OUTPUT.sif`: builds the counter-server test image with the same rules as
//! the end-to-end tests (used by e2e/demo.sh). Needs the rctr binary ($RCTR_BIN or the debug
//! build).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

fn main() {
    if let Err(e) = run() {
        eprintln!("e2e-image: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let output = match args.as_slice() {
        [kind, output] if kind == "server" => PathBuf::from(output),
        _ => bail!("usage: e2e-image server OUTPUT.sif"),
    };
    let scratch = tempfile::Builder::new()
        .prefix("rctr-e2e-image-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    rctr_e2e::write_server_image(&output, scratch.path())?;
    println!("{}", output.display());
    Ok(())
}
