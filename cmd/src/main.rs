//! The `rctr` command line: parsing and output only. All behaviour lives in the
//! `internal/` crates so it can be tested without going through the CLI.

mod cli;

use clap::error::ErrorKind;
use clap::Parser;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            err.exit()
        }
        Err(err) => {
            // clap's usage errors span several lines; rctr's errors are one line.
            let text = err.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string();
            // "...not provided:" lists the missing arguments on the next line.
            if first.ends_with(':') {
                if let Some(next) = lines.next() {
                    first = format!("{first} {next}");
                }
            }
            eprintln!("rctr: error: {first} (see `rctr --help`)");
            std::process::exit(2);
        }
    };
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
