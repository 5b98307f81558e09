//! Command definitions (clap derive) and dispatch, one module per verb group.

mod build;
mod checkpoint;
mod examples;
pub(crate) mod exec;
mod generate;
mod inspect;
pub(crate) mod instance;
mod job;
mod progress;
mod pull;
mod run_opts;
mod sif;
mod version;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use examples::*;
use rctr_log::Level;

#[derive(Parser, Debug)]
#[command(
    name = "rctr",
    version,
    about = "Container runtime for HPC with checkpoint/restart",
    long_about = "rctr runs SIF and squashfs images (as built by Apptainer or by `rctr build`) and \
                  checkpoints running instances to disk so they can be restarted later, here or on \
                  another host.",
    after_help = EX_RCTR
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// rctr's own flags. Like Apptainer's global options they go before the command name
/// (`rctr -d exec ...`): after it, `-d` is e.g. `inspect --deffile`.
#[derive(Args, Debug, Default)]
pub struct GlobalArgs {
    /// Print only warnings and errors, not rctr's informational lines
    #[arg(short, long, conflicts_with_all = ["verbose", "debug"])]
    pub quiet: bool,
    /// Print the main steps rctr takes (image, container, checkpoint)
    #[arg(short, long)]
    pub verbose: bool,
    /// Print every step rctr takes: image, loop device, mounts in order, namespaces, the
    /// command executed, checkpoint engine command lines
    #[arg(short, long)]
    pub debug: bool,
}

impl Cli {
    /// How much rctr says on stderr, from the global flags.
    pub fn log_level(&self) -> Level {
        let g = &self.global;
        if g.debug {
            Level::Debug
        } else if g.verbose {
            Level::Verbose
        } else if g.quiet {
            Level::Quiet
        } else {
            Level::Info
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect and dump SIF files (output compatible with siftool)
    #[command(subcommand, after_help = EX_SIF)]
    Sif(sif::SifCommand),
    /// Build a SIF image from a directory or a definition file
    #[command(after_help = EX_BUILD)]
    Build(build::BuildArgs),
    /// Fetch an image from a registry into a SIF file
    #[command(after_help = EX_PULL)]
    Pull(pull::PullArgs),
    /// Show metadata of an image
    #[command(after_help = EX_INSPECT)]
    Inspect(inspect::InspectArgs),
    /// Run a command inside a container
    #[command(after_help = EX_EXEC)]
    Exec(exec::ExecArgs),
    /// Run the image's runscript
    #[command(after_help = EX_RUN)]
    Run(exec::RunArgs),
    /// Start an interactive shell inside a container
    #[command(after_help = EX_SHELL)]
    Shell(exec::ShellArgs),
    /// Run the image's test script
    #[command(after_help = EX_TEST)]
    Test(exec::TestArgs),
    /// Manage background instances
    #[command(subcommand, after_help = EX_INSTANCE)]
    Instance(instance::InstanceCommand),
    /// Manage checkpoints of instances and jobs
    #[command(subcommand, after_help = EX_CHECKPOINT)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Show the versions of rctr and of its checkpoint engine
    #[command(after_help = EX_VERSION)]
    Version(version::VersionArgs),
    /// Write man pages and shell completions into DIR (used by `make install`)
    #[command(hide = true, name = "generate-docs", after_help = EX_GENERATE)]
    GenerateDocs(generate::GenerateArgs),
}

/// Runs the parsed command and returns the process exit status.
pub fn dispatch(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Sif(c) => sif::run(c),
        Command::Build(a) => build::run(a),
        Command::Pull(a) => pull::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Exec(a) => exec::exec(a),
        Command::Run(a) => exec::run(a),
        Command::Shell(a) => exec::shell(a),
        Command::Test(a) => exec::test(a),
        Command::Instance(c) => instance::run(c),
        Command::Checkpoint(c) => checkpoint::run(c),
        Command::Version(a) => version::run(a),
        Command::GenerateDocs(a) => generate::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command, `rctr` itself included, with its path (`rctr instance stop`).
    fn all_commands() -> Vec<(String, clap::Command)> {
        fn walk(path: String, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(format!("{path} {}", sub.get_name()), sub, out);
            }
            out.push((path, cmd.clone()));
        }
        let mut out = vec![];
        walk("rctr".into(), &Cli::command(), &mut out);
        out
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_and_flag_has_help_text() {
        let mut missing = vec![];
        for (path, cmd) in all_commands() {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    #[test]
    fn every_command_has_examples_that_use_it() {
        for (path, cmd) in all_commands() {
            let text = cmd
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                text.starts_with("Examples:\n"),
                "{path} has no Examples section"
            );
            assert!(
                text.lines()
                    .skip(1)
                    .all(|l| l.trim_start().starts_with("rctr ")),
                "{path}: every example is an rctr command line:\n{text}"
            );
            let uses_it = |l: &str| l == path || l.starts_with(&format!("{path} "));
            assert!(
                text.lines().any(|l| uses_it(l.trim_start())),
                "{path}: no example runs it:\n{text}"
            );
        }
    }

    #[test]
    fn log_level_follows_the_global_flags() {
        let level = |args: &[&str]| Cli::try_parse_from(args).unwrap().log_level();
        assert_eq!(level(&["rctr", "version"]), Level::Info);
        assert_eq!(level(&["rctr", "-q", "version"]), Level::Quiet);
        assert_eq!(level(&["rctr", "-v", "version"]), Level::Verbose);
        assert_eq!(level(&["rctr", "-d", "version"]), Level::Debug);
        assert_eq!(level(&["rctr", "-v", "-d", "version"]), Level::Debug);
        assert!(Cli::try_parse_from(["rctr", "-q", "-d", "version"]).is_err());
        // After the command, -d is the command's own flag (inspect --deffile), as in Apptainer.
        let cli = Cli::try_parse_from(["rctr", "inspect", "-d", "x.sif"]).unwrap();
        assert_eq!(cli.log_level(), Level::Info);
    }

    #[test]
    fn build_force_is_spelled_like_apptainer() {
        let cli = Cli::try_parse_from(["rctr", "build", "-F", "o.sif", "src"]).unwrap();
        assert!(matches!(cli.command, Command::Build(b) if b.force));
        // Apptainer's -f is --fakeroot: rctr must not take it as --force.
        assert!(Cli::try_parse_from(["rctr", "build", "-f", "o.sif", "src"]).is_err());
    }
}
