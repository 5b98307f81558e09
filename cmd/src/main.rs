//! The `rctr` command line: parsing and output only. All behaviour lives in the
//! `internal/` crates so it can be tested without going through the CLI.

mod cli;
mod suid;

use clap::error::ErrorKind;
use clap::Parser;

fn main() {
    // Setuid root for a user: the checkpoint helper, never the ordinary command line.
    if let Some(code) = suid::run_if_setuid() {
        std::process::exit(code);
    }
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => usage_error(err),
    };
    rctr_log::set_level(args.log_level());
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

/// Help and version go to stdout (exit 0). A usage mistake shows clap's whole message (what
/// is missing, "a similar argument exists", the usage line) and exits 1, like Apptainer.
fn usage_error(err: clap::Error) -> ! {
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        err.exit()
    }
    let text = err.render().to_string();
    let text = text.trim_end();
    // Same first words as rctr's runtime errors, so scripts can grep one prefix.
    match text.strip_prefix("error: ") {
        Some(rest) => eprintln!("rctr: error: {rest}"),
        None => eprintln!("{text}"),
    }
    std::process::exit(1)
}
