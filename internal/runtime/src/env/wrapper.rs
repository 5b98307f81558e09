//! The `/bin/sh -c` wrapper that applies the environment in the container:
//! the image's env scripts first, then the user's overrides.

use super::parse::is_valid_name;
use super::{
    is_path_edit, ContainerEnv, DEFAULT_PATH, ENV_SCRIPTS_DIR, USER_APPEND_PATH_KEY, USER_PATH_KEY,
    USER_PREPEND_PATH_KEY,
};

/// Where Apptainer expects bound GPU libraries; always on LD_LIBRARY_PATH.
const CONTAINER_LIBS_DIR: &str = "/.singularity.d/libs";

/// Prompt when neither the image nor the user sets one.
const DEFAULT_PS1: &str = "rctr> ";

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

/// Quotes `s` for POSIX sh: the result always reads back as exactly `s`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `s` inside double quotes, evaluated by the shell as Apptainer evaluates the user's
/// values (`$VAR`, `${VAR}`, `$(cmd)`): an unescaped `"` is escaped and a final lone
/// backslash doubled, so the string always stays one word.
pub fn shell_eval_quote(s: &str) -> String {
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in s.chars() {
        if c == '"' && backslashes % 2 == 0 {
            out.push('\\');
        }
        backslashes = if c == '\\' { backslashes + 1 } else { 0 };
        out.push(c);
    }
    if backslashes % 2 == 1 {
        out.push('\\');
    }
    out.push('"');
    out
}

/// Makes `source` and `[[ ... ]]` (in env scripts from conda, spack, oneAPI) work
/// under shells without them (dash), as Apptainer's embedded bash-like interpreter
/// does: `source` becomes `.`, and `[[ A op B ]]` a `[` with `==` read as `=` (no
/// `&&`/`||` or patterns inside). Shells that have them keep their own.
const SHIMS: &str = r#"if ! command -v source >/dev/null 2>&1; then eval 'source() { . "$@"; }'; fi
__rctr_dbltest() {
    __rctr_n=$#
    eval "__rctr_last=\${$#}"
    if [ "$__rctr_last" != "]]" ]; then echo "rctr: [[ without ]]" >&2; return 2; fi
    __rctr_i=0
    for __rctr_a do
        __rctr_i=$((__rctr_i + 1))
        if [ "$__rctr_i" -eq 1 ]; then set --; fi
        if [ "$__rctr_i" -lt "$__rctr_n" ]; then
            if [ "$__rctr_a" = "==" ]; then __rctr_a="="; fi
            set -- "$@" "$__rctr_a"
        fi
    done
    [ "$@" ]
}
if ! (eval '[[ a ]]') >/dev/null 2>&1; then alias '[['=__rctr_dbltest; fi
"#;

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
    s.push_str(SHIMS);
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
    // The user's values, evaluated (unless --no-eval) while the host's variables
    // are still hidden, as Apptainer's injected exports are.
    let value = |v: &str| {
        if env.no_eval {
            shell_quote(v)
        } else {
            shell_eval_quote(v)
        }
    };
    let get = |key: &str| env.overrides.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    if let Some(path) = get(USER_PATH_KEY) {
        s.push_str(&format!("PATH={}\n", value(path)));
    }
    if let Some(pre) = get(USER_PREPEND_PATH_KEY) {
        s.push_str(&format!("PATH={}\"${{PATH:+:$PATH}}\"\n", value(pre)));
    }
    if let Some(app) = get(USER_APPEND_PATH_KEY) {
        s.push_str(&format!("PATH=\"${{PATH:+$PATH:}}\"{}\n", value(app)));
    }
    s.push_str("export PATH\n");
    for (k, v) in &env.overrides {
        // Names are validated when overrides are built; skip anything else
        // rather than emit a broken script from a hand-made ContainerEnv.
        if !is_path_edit(k) && is_valid_name(k) {
            s.push_str(&format!("export {k}={}\n", value(v)));
        }
    }
    for k in &hidden {
        s.push_str(&format!(
            "if [ -z \"${{{k}+x}}\" ]; then {k}=\"$__rctr_h_{k}\"; export {k}; fi; unset __rctr_h_{k}\n"
        ));
    }
    s.push_str(&format!(
        "if [ -z \"${{PS1-}}\" ]; then PS1={}; fi; export PS1\n",
        shell_quote(DEFAULT_PS1)
    ));
    s.push_str("unset __rctr_script __rctr_d\n");
    s.push_str("unset -f __rctr_fixpath __rctr_dbltest\n");
    s.push_str("unset __rctr_n __rctr_last __rctr_i __rctr_a\n");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::precedence::container_env_with_warnings;
    use crate::env::test_support::{get, host, opts, Scratch};
    use std::path::Path;
    use std::process::Command;

    /// Shells images commonly have as /bin/sh: dash, bash in POSIX mode, busybox.
    const SHELLS: &[&[&str]] = &[
        &["/bin/sh"],
        &["/bin/bash", "--posix"],
        &["/bin/bash"],
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
        let mut o = opts();
        o.no_eval = true;
        let (env, _) = container_env_with_warnings(&h, &o).unwrap();
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
    fn user_values_are_evaluated_in_the_container_unless_no_eval() {
        let dir = Scratch::new("eval");
        dir.write("90-environment.sh", "export IMG=/opt/img\n");
        let h = host(&[
            ("APPTAINERENV_X", "$HOME/x"),
            ("RCTRENV_QUOTED", r#"say "hi" to ${IMG}\"#),
            ("RCTRENV_SUB", "$(echo sub)"),
            ("RCTRENV_HOSTVAR", "[${SECRET-}]"),
            ("SECRET", "host"),
        ]);
        let mut o = opts();
        o.env = vec!["PATH=$PATH:/foo".into(), "FROM_IMG=$IMG/bin".into()];
        let (env, _) = container_env_with_warnings(&h, &o).unwrap();
        let out = run_wrapper(&env, &dir.0);
        assert_eq!(get(&out, "X"), Some("/home/alice/x"));
        assert_eq!(get(&out, "PATH").unwrap(), format!("{DEFAULT_PATH}:/foo"));
        assert_eq!(get(&out, "FROM_IMG"), Some("/opt/img/bin"));
        assert_eq!(get(&out, "QUOTED"), Some(r#"say "hi" to /opt/img\"#));
        assert_eq!(get(&out, "SUB"), Some("sub"));
        // Host variables are hidden while the values are evaluated (Apptainer's order).
        assert_eq!(get(&out, "HOSTVAR"), Some("[]"));
        assert_eq!(get(&out, "SECRET"), Some("host"));

        o.no_eval = true;
        let (env, _) = container_env_with_warnings(&h, &o).unwrap();
        let out = run_wrapper(&env, &dir.0);
        assert_eq!(get(&out, "X"), Some("$HOME/x"));
        assert_eq!(get(&out, "PATH"), Some("$PATH:/foo"));
        assert_eq!(get(&out, "SUB"), Some("$(echo sub)"));
    }

    #[test]
    fn env_scripts_may_use_source_and_double_brackets_under_any_shell() {
        let dir = Scratch::new("bashisms");
        let extra = dir.write("conda.sh", "export CONDA=yes\n");
        dir.write(
            "90-environment.sh",
            &format!(
                "X=\"a b\"\n\
                 if [[ -f {p} ]]; then source {p}; fi\n\
                 [[ \"$X\" == \"a b\" ]] && export EQ=yes\n\
                 [[ -d /nonexistent ]] || export NOTDIR=yes\n",
                p = extra.display()
            ),
        );
        let (env, _) = container_env_with_warnings(&[], &opts()).unwrap();
        let out = run_wrapper(&env, &dir.0);
        assert_eq!(get(&out, "CONDA"), Some("yes"));
        assert_eq!(get(&out, "EQ"), Some("yes"));
        assert_eq!(get(&out, "NOTDIR"), Some("yes"));
    }

    #[test]
    fn eval_quote_keeps_one_word() {
        for (value, expected) in [
            ("plain", "plain"),
            (r#"a"b"#, r#"a"b"#),
            (r#"a\"b"#, r#"a"b"#),
            ("end\\", "end\\"),
            ("$", "$"),
        ] {
            let out = Command::new("/bin/sh")
                .args(["-c", &format!("printf %s {}", shell_eval_quote(value))])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                expected,
                "{value:?}"
            );
        }
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
}
