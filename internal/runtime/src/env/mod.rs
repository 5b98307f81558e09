//! The container process's environment, following Apptainer's rules.
//!
//! Precedence, lowest first:
//!
//! 1. the host environment (all of it, or with `--cleanenv` only `TERM` and
//!    the proxy variables, plus `LANG=C`); never `HOME`, `PATH`,
//!    `LD_LIBRARY_PATH` nor the tool's own `RCTR_*` / `APPTAINER_*` /
//!    `SINGULARITY_*` settings;
//! 2. the image's `/.singularity.d/env/*.sh` scripts (`%environment`, Docker
//!    `ENV`, ...), which see neither host variable while they run;
//! 3. `SINGULARITYENV_X`, then `APPTAINERENV_X`, then `RCTRENV_X` host
//!    variables, which set `X`;
//! 4. `--env-file`, then `--env`.
//!
//! Levels 3 and 4 are "overrides": they are exported by [`wrapper_script`]
//! after the image's scripts have been sourced. `PATH`, `PREPEND_PATH` and
//! `APPEND_PATH` set there replace, prefix or extend the final `PATH` (kept
//! in the overrides under Apptainer's `SING_USER_DEFINED_*` names). `HOME`
//! cannot be overridden (use `--home`). As with Apptainer, the values are
//! evaluated by the container's shell (`PATH=$PATH:/foo`, `$HOME/x`) while the
//! host's variables are hidden; `--no-eval` exports them literally.
//!
//! The code follows those jobs: `precedence` computes the levels from the
//! host and the options, `parse` reads what users type (`--env`, env
//! files), and `wrapper` writes the script that applies them in the
//! container.

mod parse;
mod precedence;
mod wrapper;

#[cfg(test)]
mod test_support;

pub use parse::{is_valid_name, parse_env_file, split_env_flag};
pub use precedence::{container_env, container_env_with_warnings, ContainerEnv, EnvOptions};
pub use wrapper::{shell_quote, wrapper_script};

/// Apptainer's default PATH inside containers.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where images keep their environment scripts.
pub const ENV_SCRIPTS_DIR: &str = "/.singularity.d/env";

/// Override keys carrying PATH edits (Apptainer's names for them).
pub const USER_PATH_KEY: &str = "SING_USER_DEFINED_PATH";
pub const USER_PREPEND_PATH_KEY: &str = "SING_USER_DEFINED_PREPEND_PATH";
pub const USER_APPEND_PATH_KEY: &str = "SING_USER_DEFINED_APPEND_PATH";

/// Whether an override key is one of the PATH edits.
fn is_path_edit(key: &str) -> bool {
    matches!(
        key,
        USER_PATH_KEY | USER_PREPEND_PATH_KEY | USER_APPEND_PATH_KEY
    )
}
