//! Apptainer's precedence rules: which host variables reach the container,
//! and the user's overrides (`*ENV_` prefixes, `--env-file`, `--env`) in order.

use super::parse::{is_valid_name, parse_env_file, split_env_flag};
use super::{
    is_path_edit, DEFAULT_PATH, ENV_SCRIPTS_DIR, USER_APPEND_PATH_KEY, USER_PATH_KEY,
    USER_PREPEND_PATH_KEY,
};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Keep the user's values literal (`--no-eval`).
    pub no_eval: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// The process environment the wrapper script starts with.
    pub base: Vec<(String, String)>,
    /// Exported by the wrapper after the image's env scripts (user requests win).
    pub overrides: Vec<(String, String)>,
    /// Export the overrides literally instead of evaluating them in the container.
    pub no_eval: bool,
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
        rctr_log::warn!("{w}");
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
        no_eval: opts.no_eval,
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

fn join_path(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}:{b}"),
    }
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
    use crate::env::test_support::{get, host, opts, Scratch};

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
