//! The `rctr` command line: parsing and output only. All behaviour lives in the
//! `internal/` crates so it can be tested without going through the CLI.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            // One line, the whole context chain, no backtrace.
            eprintln!("rctr: error: {err:#}");
            1
        }
    };
    std::process::exit(code);
}
