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
//! cannot be overridden (use `--home`). Values are taken literally: unlike
//! Apptainer, rctr never evaluates `$VAR` in them.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Apptainer's default PATH inside containers.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where images keep their environment scripts.
pub const ENV_SCRIPTS_DIR: &str = "/.singularity.d/env";

/// Where Apptainer expects bound GPU libraries; always on LD_LIBRARY_PATH.
const CONTAINER_LIBS_DIR: &str = "/.singularity.d/libs";

/// Prompt when neither the image nor the user sets one.
const DEFAULT_PS1: &str = "rctr> ";

/// Override keys carrying PATH edits (Apptainer's names for them).
pub const USER_PATH_KEY: &str = "SING_USER_DEFINED_PATH";
pub const USER_PREPEND_PATH_KEY: &str = "SING_USER_DEFINED_PREPEND_PATH";
pub const USER_APPEND_PATH_KEY: &str = "SING_USER_DEFINED_APPEND_PATH";

/// Prefixes of variables that configure the tool itself: never forwarded.
const TOOL_PREFIXES: &[&str] = &["RCTR_", "APPTAINER_", "SINGULARITY_"];

/// Prefixes passing a variable into the container, lowest precedence first.
const ENV_PREFIXES: &[&str] = &["SINGULARITYENV_", "APPTAINERENV_", "RCTRENV_"];

/// Host variables forwarded even with --cleanenv.
const ALWAYS_PASS: &[&str] = &[
    "TERM",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "ftp_proxy",
    "FTP_PROXY",
];

/// Host variables never forwarded: the runtime sets them for the container.
const HOST_OMIT: &[&str] = &["HOME", "PATH", "LD_LIBRARY_PATH"];

/// Variables a user override may not set.
const NOT_OVERRIDABLE: &[&str] = &[
    "HOME",
    "APPTAINER_SHELL",
    "APPTAINER_APPNAME",
    "SINGULARITY_SHELL",
    "SINGULARITY_APPNAME",
];

/// Variables the wrapper never hides from the image's scripts: the shell
/// manages them (bash in POSIX mode even aborts on `unset` of a read-only
/// one), or they must stay visible (HOME, PATH, the runtime's own).
const NEVER_HIDDEN: &[&str] = &[
    "HOME",
    "PATH",
    "PWD",
    "OLDPWD",
    "OPTIND",
    "OPTARG",
    "IFS",
    "PS2",
    "PS4",
    "PPID",
    "UID",
    "EUID",
    "GID",
    "GROUPS",
    "SHELLOPTS",
    "SHLVL",
    "LINENO",
    "RANDOM",
    "SECONDS",
    "HISTCMD",
    "FUNCNAME",
    "ENV",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvOptions {
    pub cleanenv: bool,
    /// `NAME=VALUE` entries from `--env`; an entry may hold several
    /// comma-separated assignments as in Apptainer (`A=1,B=2`).
    pub env: Vec<String>,
    pub env_file: Option<PathBuf>,
    /// The image, as a path (APPTAINER_CONTAINER gets it verbatim,
    /// APPTAINER_NAME its file name) or just a file name.
    pub container_name: String,
    /// Home directory inside the container.
    pub home: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// The process environment the wrapper script starts with.
    pub base: Vec<(String, String)>,
    /// Exported by the wrapper after the image's env scripts (user requests win).
    pub overrides: Vec<(String, String)>,
}

impl ContainerEnv {
    /// The final environment for images without `/bin/sh`, where no env
    /// script can run: `base` with the overrides and PATH edits applied.
    pub fn merged(&self) -> Vec<(String, String)> {
        let mut env = EnvList::default();
        for (k, v) in &self.base {
            env.set(k, v);
        }
        let get = |key: &str| {
            self.overrides
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        for (k, v) in &self.overrides {
            if !is_path_edit(k) {
                env.set(k, v);
            }
        }
        let mut path = get(USER_PATH_KEY)
            .or_else(|| env.get("PATH"))
            .unwrap_or_default();
        if let Some(pre) = get(USER_PREPEND_PATH_KEY) {
            path = join_path(&pre, &path);
        }
        if let Some(app) = get(USER_APPEND_PATH_KEY) {
            path = join_path(&path, &app);
        }
        env.set("PATH", &path);
        env.into_vec()
    }
}

/// [`container_env_with_warnings`], printing the warnings on stderr.
pub fn container_env(host: &[(String, String)], opts: &EnvOptions) -> Result<ContainerEnv> {
    let (env, warnings) = container_env_with_warnings(host, opts)?;
    for w in warnings {
        eprintln!("rctr: warning: {w}");
    }
    Ok(env)
}

/// Computes the container environment from the host's and the options.
/// Returns warnings about ignored variables (e.g. `APPTAINERENV_HOME`).
/// Errors are for what the user typed: bad `--env` entries or env file.
pub fn container_env_with_warnings(
    host: &[(String, String)],
    opts: &EnvOptions,
) -> Result<(ContainerEnv, Vec<String>)> {
    let mut warnings = Vec::new();
    let overrides = user_overrides(host, opts, &mut warnings)?;

    let mut base = EnvList::default();
    if opts.cleanenv {
        // Overridable, unlike HOME and PATH.
        base.set("LANG", "C");
    }
    for (key, value) in host {
        if forwarded_from_host(key, opts.cleanenv) && !overrides.contains_key(key) {
            base.set(key, value);
        }
    }
    base.set("HOME", &opts.home);
    base.set("PATH", DEFAULT_PATH);
    let container = opts.container_name.as_str();
    let name = Path::new(container)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| container.to_string());
    for prefix in ["APPTAINER_", "SINGULARITY_", "RCTR_"] {
        base.set(&format!("{prefix}CONTAINER"), container);
        base.set(&format!("{prefix}NAME"), &name);
    }
    for prefix in ["APPTAINER_", "SINGULARITY_"] {
        base.set(
            &format!("{prefix}ENVIRONMENT"),
            &format!("{ENV_SCRIPTS_DIR}/91-environment.sh"),
        );
    }

    let env = ContainerEnv {
        base: base.into_vec(),
        overrides: overrides.into_iter().collect(),
    };
    Ok((env, warnings))
}

fn forwarded_from_host(key: &str, cleanenv: bool) -> bool {
    if TOOL_PREFIXES
        .iter()
        .chain(ENV_PREFIXES.iter())
        .any(|p| key.starts_with(p))
    {
        return false;
    }
    if ALWAYS_PASS.contains(&key) {
        return true;
    }
    !cleanenv && !HOST_OMIT.contains(&key) && !key.is_empty()
}

/// Variables the user asked for, by increasing precedence: prefixed host
/// variables, the env file, `--env`. Sorted by name for a stable plan.
fn user_overrides(
    host: &[(String, String)],
    opts: &EnvOptions,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for prefix in ENV_PREFIXES {
        for (key, value) in host {
            let Some(name) = key.strip_prefix(prefix) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            if !is_valid_name(name) {
                warnings.push(format!(
                    "ignoring {key}: {name:?} is not a valid variable name"
                ));
                continue;
            }
            set_override(&mut out, name, value, key, warnings);
        }
    }
    if let Some(file) = &opts.env_file {
        for (name, value) in parse_env_file(file)? {
            let source = format!("--env-file {}", file.display());
            set_override(&mut out, &name, &value, &source, warnings);
        }
    }
    for entry in &opts.env {
        for (name, value) in split_env_flag(entry)? {
            set_override(&mut out, &name, &value, "--env", warnings);
        }
    }
    Ok(out)
}

fn set_override(
    out: &mut BTreeMap<String, String>,
    name: &str,
    value: &str,
    source: &str,
    warnings: &mut Vec<String>,
) {
    let key = match name {
        "PATH" => USER_PATH_KEY,
        "PREPEND_PATH" => USER_PREPEND_PATH_KEY,
        "APPEND_PATH" => USER_APPEND_PATH_KEY,
        n if NOT_OVERRIDABLE.contains(&n) => {
            let hint = if n == "HOME" { " (use --home)" } else { "" };
            warnings.push(format!(
                "setting {n} through {source} is not permitted, ignored{hint}"
            ));
            return;
        }
        n => n,
    };
    out.insert(key.to_string(), value.to_string());
}

/// Splits one `--env` value like Apptainer's flag parser: commas separate
/// assignments, but a piece that is not itself `NAME=...` continues the
/// previous value (`LIST=a,b` is one variable, `A=1,B=2` two).
pub fn split_env_flag(entry: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for piece in entry.split(',') {
        match piece.split_once('=') {
            Some((name, value)) if is_valid_name(name) => {
                check_value(value).with_context(|| format!("--env {entry:?}"))?;
                out.push((name.to_string(), value.to_string()));
            }
            _ => match out.last_mut() {
                Some((_, value)) => {
                    value.push(',');
                    value.push_str(piece);
                }
                None => match piece.split_once('=') {
                    Some((name, _)) => {
                        bail!("--env {entry:?}: {name:?} is not a valid variable name")
                    }
                    None => bail!("--env {entry:?}: expected NAME=VALUE"),
                },
            },
        }
    }
    Ok(out)
}

/// Reads an env file: `NAME=VALUE` lines (optionally `export NAME=VALUE`),
/// blank lines and `#` comments. A value may be single-quoted (literal) or
/// double-quoted (`\"`, `\\`, `\$` and `` \` `` escapes); an unquoted value
/// runs to the end of the line or to a ` #` comment. Nothing is expanded.
pub fn parse_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read env file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = parse_env_line(line)
            .with_context(|| format!("env file {} line {}", path.display(), i + 1))?;
        out.push(parsed);
    }
    Ok(out)
}

fn parse_env_line(line: &str) -> Result<(String, String)> {
    let assignment = line
        .strip_prefix("export ")
        .map(str::trim_start)
        .unwrap_or(line);
    let Some((name, rest)) = assignment.split_once('=') else {
        bail!("expected NAME=VALUE, found {line:?}");
    };
    if !is_valid_name(name) {
        bail!("{name:?} is not a valid variable name (letters, digits and '_', not starting with a digit)");
    }
    let value = parse_env_value(rest)?;
    check_value(&value)?;
    Ok((name.to_string(), value))
}

fn parse_env_value(rest: &str) -> Result<String> {
    let mut chars = rest.chars();
    let (value, after) = match chars.next() {
        Some('\'') => {
            let body = chars.as_str();
            let Some(end) = body.find('\'') else {
                bail!("unterminated single quote")
            };
            (body[..end].to_string(), &body[end + 1..])
        }
        Some('"') => {
            let mut value = String::new();
            let mut closed = None;
            let body = chars.as_str();
            let mut it = body.char_indices();
            while let Some((i, c)) = it.next() {
                match c {
                    '"' => {
                        closed = Some(i + 1);
                        break;
                    }
                    '\\' => match it.next() {
                        Some((_, e @ ('"' | '\\' | '$' | '`'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => value.push('\\'),
                    },
                    c => value.push(c),
                }
            }
            let Some(end) = closed else {
                bail!("unterminated double quote")
            };
            (value, &body[end..])
        }
        _ => {
            let unquoted = match rest.find(" #").or_else(|| rest.find("\t#")) {
                Some(comment) => &rest[..comment],
                None => rest,
            };
            return Ok(unquoted.trim_end().to_string());
        }
    };
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        bail!("unexpected text {after:?} after the quoted value");
    }
    Ok(value)
}

fn check_value(value: &str) -> Result<()> {
    if value.contains('\0') {
        bail!("values cannot contain a NUL byte");
    }
    Ok(())
}

/// A name the shell can assign: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_path_edit(key: &str) -> bool {
    matches!(
        key,
        USER_PATH_KEY | USER_PREPEND_PATH_KEY | USER_APPEND_PATH_KEY
    )
}

fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}:{b}"),
    }
}

/// Quotes `s` for POSIX sh: the result always reads back as exactly `s`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `/bin/sh -c` script run as `sh -c SCRIPT rctr COMMAND ARGS...` with
/// `env.base` as its environment: sources the image's env scripts, exports
/// the overrides, then `exec "$@"`.
pub fn wrapper_script(env: &ContainerEnv) -> String {
    wrapper_script_in(env, ENV_SCRIPTS_DIR)
}

/// [`wrapper_script`] with the env scripts taken from `env_dir` (for tests).
fn wrapper_script_in(env: &ContainerEnv, env_dir: &str) -> String {
    // Host variables must not override the image's scripts (Apptainer's
    // clear_env/restore_env): hide them while the scripts run, then put back
    // the ones no script set. Values stay in the environment/shell memory,
    // only names go into the script.
    let hidden: Vec<&str> = env
        .base
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| is_valid_name(k) && hideable(k))
        .collect();

    let mut s = String::new();
    s.push_str("# rctr: container environment (Apptainer-compatible)\n");
    for k in &hidden {
        s.push_str(&format!("__rctr_h_{k}=\"${{{k}-}}\"; unset {k}\n"));
    }
    s.push_str("__rctr_fixpath() {\n");
    s.push_str("    for __rctr_d in ");
    s.push_str(
        &DEFAULT_PATH
            .split(':')
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" "),
    );
    s.push_str("; do\n");
    s.push_str("        case \":${PATH-}:\" in *\":$__rctr_d:\"*) ;; *) PATH=\"${PATH:+$PATH:}$__rctr_d\" ;; esac\n");
    s.push_str("    done\n    export PATH\n}\n");
    // dash gives PS1 a default even when not interactive; start without one
    // so that only the host, the image or the user can set it.
    if !hidden.contains(&"PS1") {
        s.push_str("unset PS1\n");
    }
    s.push_str(&format!(
        "for __rctr_script in {}/*.sh; do\n",
        shell_quote(env_dir)
    ));
    s.push_str("    if [ -f \"$__rctr_script\" ]; then\n");
    s.push_str("        . \"$__rctr_script\"\n");
    // Docker ENV PATH may drop the standard directories; Apptainer re-adds them.
    s.push_str("        case \"$__rctr_script\" in */10-docker.sh|*/10-docker2singularity.sh) __rctr_fixpath ;; esac\n");
    s.push_str("    fi\ndone\n");
    let libs = shell_quote(CONTAINER_LIBS_DIR);
    s.push_str(&format!(
        "case \":${{LD_LIBRARY_PATH-}}:\" in *:{libs}:*) ;; *) LD_LIBRARY_PATH=\"${{LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}}\"{libs}; export LD_LIBRARY_PATH ;; esac\n"
    ));
    for k in &hidden {
        s.push_str(&format!(
            "if [ -z \"${{{k}+x}}\" ]; then {k}=\"$__rctr_h_{k}\"; export {k}; fi; unset __rctr_h_{k}\n"
        ));
    }
    let get = |key: &str| env.overrides.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    if let Some(path) = get(USER_PATH_KEY) {
        s.push_str(&format!("PATH={}\n", shell_quote(path)));
    }
    if let Some(pre) = get(USER_PREPEND_PATH_KEY) {
        s.push_str(&format!("PATH={}\"${{PATH:+:$PATH}}\"\n", shell_quote(pre)));
    }
    if let Some(app) = get(USER_APPEND_PATH_KEY) {
        s.push_str(&format!("PATH=\"${{PATH:+$PATH:}}\"{}\n", shell_quote(app)));
    }
    s.push_str("export PATH\n");
    for (k, v) in &env.overrides {
        // Names are validated when overrides are built; skip anything else
        // rather than emit a broken script from a hand-made ContainerEnv.
        if !is_path_edit(k) && is_valid_name(k) {
            s.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
    }
    s.push_str(&format!(
        "if [ -z \"${{PS1-}}\" ]; then PS1={}; fi; export PS1\n",
        shell_quote(DEFAULT_PS1)
    ));
    s.push_str("unset __rctr_script __rctr_d\n");
    s.push_str("unset -f __rctr_fixpath\n");
    // A missing command gets rctr's own one-line message and status 127, after
    // the image's env scripts had their chance to extend PATH.
    s.push_str(
        "command -v -- \"$1\" >/dev/null 2>&1 || { echo \"rctr: error: command '$1' not found in the container\" >&2; exit 127; }\n",
    );
    s.push_str("exec \"$@\"\n");
    s
}

fn hideable(key: &str) -> bool {
    !NEVER_HIDDEN.contains(&key)
        && !key.starts_with("BASH")
        && !key.starts_with("__rctr_")
        && !["APPTAINER_", "SINGULARITY_", "RCTR_"]
            .iter()
            .any(|p| key.starts_with(p))
}

/// An ordered environment where setting an existing name replaces its value
/// in place.
#[derive(Default)]
struct EnvList {
    vars: Vec<(String, String)>,
}

impl EnvList {
    fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.vars.push((key.to_string(), value.to_string())),
        }
    }

    fn get(&self, key: &str) -> Option<String> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn into_vec(self) -> Vec<(String, String)> {
        self.vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn host(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn opts() -> EnvOptions {
        EnvOptions {
            cleanenv: false,
            env: vec![],
            env_file: None,
            container_name: "/images/app.sif".into(),
            home: "/home/alice".into(),
        }
    }

    fn get<'a>(vars: &'a [(String, String)], key: &str) -> Option<&'a str> {
        vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A scratch directory removed on drop (the crate has no tempfile dependency).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "rctr-env-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Shells images commonly have as /bin/sh: dash, bash in POSIX mode, busybox.
    const SHELLS: &[&[&str]] = &[
        &["/bin/sh"],
        &["/bin/bash", "--posix"],
        &["/bin/busybox", "sh"],
    ];

    /// Runs the wrapper under every available shell, checks they agree, and
    /// returns the environment `env -0` sees at the end.
    fn run_wrapper(env: &ContainerEnv, env_dir: &Path) -> Vec<(String, String)> {
        let script = wrapper_script_in(env, env_dir.to_str().unwrap());
        let mut results = Vec::new();
        for shell in SHELLS {
            if !Path::new(shell[0]).exists() {
                eprintln!("skipping shell {}: not installed", shell[0]);
                continue;
            }
            let out = Command::new(shell[0])
                .args(&shell[1..])
                .args(["-c", &script, "rctr", "/usr/bin/env", "-0"])
                .env_clear()
                .envs(env.base.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "wrapper failed under {shell:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut vars: Vec<(String, String)> = String::from_utf8(out.stdout)
                .unwrap()
                .split('\0')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let (k, v) = e.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                // Maintained by the shells themselves, differently.
                .filter(|(k, _)| !matches!(k.as_str(), "PWD" | "OLDPWD" | "SHLVL" | "_"))
                .collect();
            vars.sort();
            results.push((shell, vars));
        }
        let (first_shell, first) = results.remove(0);
        for (shell, vars) in &results {
            assert_eq!(vars, &first, "{shell:?} and {first_shell:?} disagree");
        }
        first
    }

    #[test]
    fn host_environment_passes_except_omitted_and_tool_variables() {
        let h = host(&[
            ("FOO", "bar"),
            ("HOME", "/host/home"),
            ("PATH", "/host/bin"),
            ("LD_LIBRARY_PATH", "/host/lib"),
            ("APPTAINER_BIND", "/x"),
            ("SINGULARITY_CACHEDIR", "/c"),
            ("RCTR_DEBUG", "1"),
        ]);
        let (env, warnings) = container_env_with_warnings(&h, &opts()).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(get(&env.base, "FOO"), Some("bar"));
        assert_eq!(get(&env.base, "HOME"), Some("/home/alice"));
        assert_eq!(get(&env.base, "PATH"), Some(DEFAULT_PATH));
        for k in [
            "LD_LIBRARY_PATH",
            "APPTAINER_BIND",
            "SINGULARITY_CACHEDIR",
            "RCTR_DEBUG",
        ] {
            assert_eq!(get(&env.base, k), None, "{k} forwarded");
        }
        assert!(env.overrides.is_empty());
    }

    #[test]
    fn runtime_variables_name_the_container() {
        let (env, _) = container_env_with_warnings(&[], &opts()).unwrap();
        for p in ["APPTAINER_", "SINGULARITY_", "RCTR_"] {
            assert_eq!(
                get(&env.base, &format!("{p}CONTAINER")),
                Some("/images/app.sif")
            );
            assert_eq!(get(&env.base, &format!("{p}NAME")), Some("app.sif"));
        }
        let mut o = opts();
        o.container_name = "app.sif".into();
        let (env, _) = container_env_with_warnings(&[], &o).unwrap();
        assert_eq!(get(&env.base, "APPTAINER_NAME"), Some("app.sif"));
    }

    #[test]
    fn cleanenv_keeps_only_term_proxies_and_sets_lang() {
        let h = host(&[
            ("TERM", "xterm"),
            ("https_proxy", "http://p:3128"),
            ("FOO", "bar"),
            ("LANG", "fr_FR.UTF-8"),
        ]);
        let mut o = opts();
        o.cleanenv = true;
        let (env, _) = container_env_with_warnings(&h, &o).unwrap();
        let mut keys: Vec<&str> = env.base.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "APPTAINER_CONTAINER",
                "APPTAINER_ENVIRONMENT",
                "APPTAINER_NAME",
                "HOME",
                "LANG",
                "PATH",
                "RCTR_CONTAINER",
                "RCTR_NAME",
                "SINGULARITY_CONTAINER",
                "SINGULARITY_ENVIRONMENT",
                "SINGULARITY_NAME",
                "TERM",
                "https_proxy"
            ]
        );
        assert_eq!(get(&env.base, "LANG"), Some("C"));
        // Prefixed variables still reach the container under --cleanenv.
        let h = host(&[("APPTAINERENV_LANG", "de_DE.UTF-8")]);
        let (env, _) = container_env_with_warnings(&h, &o).unwrap();
        assert_eq!(get(&env.overrides, "LANG"), Some("de_DE.UTF-8"));
    }

    #[test]
    fn prefix_precedence_rctrenv_over_apptainerenv_over_singularityenv() {
        let h = host(&[
            ("RCTRENV_A", "rctr"),
            ("APPTAINERENV_A", "apptainer"),
            ("SINGULARITYENV_A", "singularity"),
            ("APPTAINERENV_B", "apptainer"),
            ("SINGULARITYENV_B", "singularity"),
            ("SINGULARITYENV_C", "singularity"),
            ("C", "host"),
        ]);
        let (env, _) = container_env_with_warnings(&h, &opts()).unwrap();
        assert_eq!(get(&env.overrides, "A"), Some("rctr"));
        assert_eq!(get(&env.overrides, "B"), Some("apptainer"));
        assert_eq!(get(&env.overrides, "C"), Some("singularity"));
        // An overridden host variable is not also passed in the base.
        assert_eq!(get(&env.base, "C"), None);
        assert_eq!(get(&env.base, "RCTRENV_A"), None);
    }

    #[test]
    fn env_flag_beats_env_file_beats_prefixes() {
        let dir = Scratch::new("prec");
        let file = dir.write("vars", "X=file\nY=file\n");
        let h = host(&[
            ("RCTRENV_X", "prefix"),
            ("RCTRENV_Y", "prefix"),
            ("RCTRENV_Z", "prefix"),
        ]);
        let mut o = opts();
        o.env_file = Some(file);
        o.env = vec!["X=flag".into()];
        let (env, _) = container_env_with_warnings(&h, &o).unwrap();
        assert_eq!(get(&env.overrides, "X"), Some("flag"));
        assert_eq!(get(&env.overrides, "Y"), Some("file"));
        assert_eq!(get(&env.overrides, "Z"), Some("prefix"));
    }

    #[test]
    fn home_cannot_be_overridden_and_path_keys_are_special() {
        let h = host(&[
            ("APPTAINERENV_HOME", "/evil"),
            ("RCTRENV_PREPEND_PATH", "/pre"),
        ]);
        let mut o = opts();
        o.env = vec![
            "PATH=/only".into(),
            "APPEND_PATH=/app".into(),
            "HOME=/x".into(),
        ];
        let (env, warnings) = container_env_with_warnings(&h, &o).unwrap();
        assert_eq!(get(&env.base, "HOME"), Some("/home/alice"));
        assert_eq!(get(&env.overrides, "HOME"), None);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("APPTAINERENV_HOME") && warnings[1].contains("--env"),
            "{warnings:?}"
        );
        assert_eq!(get(&env.overrides, USER_PATH_KEY), Some("/only"));
        assert_eq!(get(&env.overrides, USER_PREPEND_PATH_KEY), Some("/pre"));
        assert_eq!(get(&env.overrides, USER_APPEND_PATH_KEY), Some("/app"));
        assert_eq!(get(&env.merged(), "PATH"), Some("/pre:/only:/app"));
        assert_eq!(get(&env.merged(), USER_PATH_KEY), None);
    }

    #[test]
    fn ld_library_path_only_through_overrides() {
        let h = host(&[
            ("LD_LIBRARY_PATH", "/host"),
            ("APPTAINERENV_LD_LIBRARY_PATH", "/mine"),
        ]);
        let (env, _) = container_env_with_warnings(&h, &opts()).unwrap();
        assert_eq!(get(&env.base, "LD_LIBRARY_PATH"), None);
        assert_eq!(get(&env.overrides, "LD_LIBRARY_PATH"), Some("/mine"));
    }

    #[test]
    fn invalid_prefixed_names_are_warned_about() {
        let h = host(&[("RCTRENV_1BAD", "x"), ("RCTRENV_", "empty")]);
        let (env, warnings) = container_env_with_warnings(&h, &opts()).unwrap();
        assert!(env.overrides.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("RCTRENV_1BAD"), "{warnings:?}");
    }

    #[test]
    fn env_flag_splitting() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            split_env_flag("A=1,B=2").unwrap(),
            pairs(&[("A", "1"), ("B", "2")])
        );
        assert_eq!(
            split_env_flag("LIST=a,b,c").unwrap(),
            pairs(&[("LIST", "a,b,c")])
        );
        assert_eq!(
            split_env_flag("OPTS=-Da=1,-Db=2").unwrap(),
            pairs(&[("OPTS", "-Da=1,-Db=2")])
        );
        assert_eq!(split_env_flag("E=").unwrap(), pairs(&[("E", "")]));
        assert_eq!(split_env_flag("V=a=b").unwrap(), pairs(&[("V", "a=b")]));
        for (bad, msg) in [
            ("NOVALUE", "expected NAME=VALUE"),
            ("1X=2", "not a valid variable name"),
            ("=x", "not a valid"),
        ] {
            let e = format!("{:#}", split_env_flag(bad).unwrap_err());
            assert!(e.contains(msg) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn env_file_format() {
        let dir = Scratch::new("file");
        let file = dir.write(
            "vars",
            "# comment\n\n  A=plain value  \nexport B=exported\nC='single $HOME \"q\"'\nD=\"dq \\\"x\\\" \\$HOME \\\\ \\n\" # trailing\nE=x #comment\nF=\nG=a=b\r\n",
        );
        let vars = parse_env_file(&file).unwrap();
        let expect = [
            ("A", "plain value"),
            ("B", "exported"),
            ("C", "single $HOME \"q\""),
            ("D", "dq \"x\" $HOME \\ \\n"),
            ("E", "x"),
            ("F", ""),
            ("G", "a=b"),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(vars, expect);
    }

    #[test]
    fn env_file_errors_name_file_and_line() {
        let dir = Scratch::new("bad");
        for (text, msg) in [
            ("OK=1\nnot an assignment\n", "expected NAME=VALUE"),
            ("OK=1\n9X=1\n", "not a valid variable name"),
            ("OK=1\nA='open\n", "unterminated single quote"),
            ("OK=1\nA=\"open\n", "unterminated double quote"),
            ("OK=1\nA='x' y\n", "unexpected text"),
        ] {
            let file = dir.write("bad", text);
            let e = format!("{:#}", parse_env_file(&file).unwrap_err());
            assert!(
                e.starts_with(&format!("env file {} line 2: ", file.display())),
                "{e}"
            );
            assert!(e.contains(msg), "{e}");
        }
        let e = format!(
            "{:#}",
            parse_env_file(Path::new("/nonexistent-rctr-env")).unwrap_err()
        );
        assert!(
            e.contains("cannot read env file /nonexistent-rctr-env"),
            "{e}"
        );
    }

    #[test]
    fn shell_quote_round_trips_hostile_values() {
        for value in [
            "",
            "plain",
            "it's",
            "'",
            "a\"b",
            "$HOME",
            "`id`",
            "$(id)",
            "a\nb",
            "\\",
            "*",
            "x; rm -rf /",
            " spaced ",
        ] {
            let out = Command::new("/bin/sh")
                .args(["-c", &format!("printf %s {}", shell_quote(value))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value, "{value:?}");
        }
    }

    #[test]
    fn wrapper_applies_apptainer_precedence() {
        let dir = Scratch::new("wrap");
        dir.write(
            "90-environment.sh",
            "export FROM_IMAGE=image\nexport SHARED=image\nexport OVERRIDDEN=image\nexport SAW_HOST=\"${HOSTONLY-unset}\"\n",
        );
        // Sourced in glob order: the later script sees the earlier one's value.
        dir.write("95-apps.sh", "export CHAIN=\"$FROM_IMAGE-chained\"\n");
        dir.write("not-a-script.txt", "export NOPE=1\n");
        let hostile = "it's \"$HOME\" `id` $(id)\nline2 \\";
        let h = host(&[
            ("HOSTONLY", "host"),
            ("SHARED", "host"),
            ("TERM", "xterm"),
            ("RCTRENV_OVERRIDDEN", "user"),
            ("RCTRENV_HOSTILE", hostile),
            ("RCTRENV_PREPEND_PATH", "/pre"),
        ]);
        let (env, _) = container_env_with_warnings(&h, &opts()).unwrap();
        let out = run_wrapper(&env, &dir.0);

        assert_eq!(get(&out, "FROM_IMAGE"), Some("image"));
        assert_eq!(get(&out, "CHAIN"), Some("image-chained"));
        assert_eq!(
            get(&out, "SHARED"),
            Some("image"),
            "image scripts beat the host"
        );
        assert_eq!(
            get(&out, "HOSTONLY"),
            Some("host"),
            "host variable restored"
        );
        assert_eq!(
            get(&out, "SAW_HOST"),
            Some("unset"),
            "scripts must not see host variables"
        );
        assert_eq!(
            get(&out, "OVERRIDDEN"),
            Some("user"),
            "user overrides beat image scripts"
        );
        assert_eq!(get(&out, "HOSTILE"), Some(hostile));
        assert_eq!(get(&out, "NOPE"), None);
        assert_eq!(get(&out, "TERM"), Some("xterm"));
        assert_eq!(get(&out, "HOME"), Some("/home/alice"));
        assert_eq!(get(&out, "PATH").unwrap(), format!("/pre:{DEFAULT_PATH}"));
        assert_eq!(get(&out, "LD_LIBRARY_PATH"), Some("/.singularity.d/libs"));
        assert_eq!(get(&out, "PS1"), Some("rctr> "));
        assert_eq!(get(&out, "APPTAINER_NAME"), Some("app.sif"));
        assert!(
            out.iter()
                .all(|(k, _)| !k.starts_with("__rctr") && !k.starts_with("SING_USER")),
            "{out:?}"
        );
    }

    #[test]
    fn wrapper_path_edits_and_docker_fixpath() {
        let dir = Scratch::new("path");
        dir.write(
            "10-docker2singularity.sh",
            "export PATH=/opt/conda/bin:/usr/bin\n",
        );
        dir.write(
            "90-environment.sh",
            "export LD_LIBRARY_PATH=/opt/lib\nexport PS1='img> '\n",
        );
        let (env, _) = container_env_with_warnings(&[], &opts()).unwrap();
        let out = run_wrapper(&env, &dir.0);
        assert_eq!(
            get(&out, "PATH"),
            Some("/opt/conda/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin")
        );
        assert_eq!(
            get(&out, "LD_LIBRARY_PATH"),
            Some("/opt/lib:/.singularity.d/libs")
        );
        assert_eq!(get(&out, "PS1"), Some("img> "));

        let mut o = opts();
        o.env = vec![
            "PATH=/only:/two".into(),
            "APPEND_PATH=/end".into(),
            "LD_LIBRARY_PATH=/mine".into(),
        ];
        let (env, _) = container_env_with_warnings(&[], &o).unwrap();
        let out = run_wrapper(&env, &dir.0);
        assert_eq!(get(&out, "PATH"), Some("/only:/two:/end"));
        assert_eq!(get(&out, "LD_LIBRARY_PATH"), Some("/mine"));
    }

    #[test]
    fn wrapper_without_env_dir_and_with_cleanenv() {
        let dir = Scratch::new("none");
        let h = host(&[("FOO", "bar"), ("TERM", "vt100")]);
        let mut o = opts();
        o.cleanenv = true;
        let (env, _) = container_env_with_warnings(&h, &o).unwrap();
        let out = run_wrapper(&env, &dir.0.join("missing"));
        assert_eq!(get(&out, "FOO"), None);
        assert_eq!(get(&out, "TERM"), Some("vt100"));
        assert_eq!(get(&out, "LANG"), Some("C"));
        assert_eq!(get(&out, "PATH"), Some(DEFAULT_PATH));
    }

    #[test]
    fn wrapper_passes_arguments_verbatim_and_ends_with_exec() {
        let (env, _) = container_env_with_warnings(&[], &opts()).unwrap();
        let script = wrapper_script(&env);
        assert!(script.ends_with("exec \"$@\"\n"));
        let out = Command::new("/bin/sh")
            .args(["-c", &script, "rctr", "printf", "[%s]", "a b", "$HOME", "*"])
            .env_clear()
            .envs(env.base.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "[a b][$HOME][*]");
    }

    #[test]
    fn merged_applies_overrides_over_base() {
        let h = host(&[("FOO", "host"), ("APPTAINERENV_BAR", "user")]);
        let mut o = opts();
        o.env = vec!["APPEND_PATH=/end".into()];
        let (env, _) = container_env_with_warnings(&h, &o).unwrap();
        let merged = env.merged();
        assert_eq!(get(&merged, "FOO"), Some("host"));
        assert_eq!(get(&merged, "BAR"), Some("user"));
        assert_eq!(
            get(&merged, "PATH").unwrap(),
            format!("{DEFAULT_PATH}:/end")
        );
    }
}
