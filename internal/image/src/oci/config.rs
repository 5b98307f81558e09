//! The image config (Env, Entrypoint, Cmd, WorkingDir, Labels) as Apptainer turns it into
//! its layout: /.singularity.d/env/10-docker2singularity.sh exports the variables (PATH as
//! given, the others only where the run-time environment does not set them), the runscript
//! runs ENTRYPOINT with the arguments (or CMD when there are none), and the labels go to
//! labels.json where the definition's labels can still override them.

use crate::labels::labels_json;
use crate::layout::replace;
use crate::sandbox::resolve_in_root;
use anyhow::{Context, Result};
use oci_spec::image::ImageConfiguration;
use std::collections::BTreeMap;
use std::path::Path;

/// Where the image's environment goes (Apptainer's name).
const ENV_FILE: &str = "/.singularity.d/env/10-docker2singularity.sh";

/// `s` inside double quotes for sh: `"`, `\`, `$` and backquote escaped.
fn dquote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `s` as one single-quoted sh word.
fn squote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(crate) fn env_script(env: &[String]) -> String {
    let mut s = String::from("#!/bin/sh\n");
    for var in env {
        let Some((k, v)) = var.split_once('=') else {
            continue;
        };
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if k == "PATH" {
            s.push_str(&format!("export PATH={}\n", dquote(v)));
        } else {
            // The run-time environment (--env, the host's) wins, as with Apptainer.
            let q = dquote(v);
            let inner = &q[1..q.len() - 1];
            s.push_str(&format!("export {k}=\"${{{k}:-{inner}}}\"\n"));
        }
    }
    s
}

pub(crate) fn runscript(entrypoint: &[String], cmd: &[String], workdir: Option<&str>) -> String {
    let words = |v: &[String]| v.iter().map(|w| squote(w)).collect::<Vec<_>>().join(" ");
    let mut s = String::from(
        "#!/bin/sh\n# From the image config: ENTRYPOINT, then the arguments or else CMD.\n",
    );
    if let Some(dir) = workdir.filter(|d| !d.is_empty()) {
        s.push_str(&format!("cd {} || exit 1\n", squote(dir)));
    }
    let (e, c) = (words(entrypoint), words(cmd));
    match (entrypoint.is_empty(), cmd.is_empty()) {
        (true, true) => s.push_str("if [ $# -gt 0 ]; then exec \"$@\"; fi\nexec /bin/sh\n"),
        (true, false) => s.push_str(&format!(
            "if [ $# -gt 0 ]; then exec \"$@\"; fi\nexec {c}\n"
        )),
        (false, true) => s.push_str(&format!("exec {e} \"$@\"\n")),
        (false, false) => s.push_str(&format!(
            "if [ $# -gt 0 ]; then exec {e} \"$@\"; fi\nexec {e} {c}\n"
        )),
    }
    s
}

/// Writes the environment, runscript and labels of `config` into `root`'s /.singularity.d.
pub(crate) fn write_image_config(root: &Path, config: &ImageConfiguration) -> Result<()> {
    let sd = resolve_in_root(root, Path::new("/.singularity.d/env"), true)?;
    std::fs::create_dir_all(&sd).with_context(|| format!("cannot create {}", sd.display()))?;
    let c = config.config().clone().unwrap_or_default();
    let env = c.env().clone().unwrap_or_default();
    replace(
        &resolve_in_root(root, Path::new(ENV_FILE), false)?,
        0o755,
        env_script(&env).as_bytes(),
    )?;
    let entrypoint = c.entrypoint().clone().unwrap_or_default();
    let cmd = c.cmd().clone().unwrap_or_default();
    replace(
        &resolve_in_root(root, Path::new("/.singularity.d/runscript"), false)?,
        0o755,
        runscript(&entrypoint, &cmd, c.working_dir().as_deref()).as_bytes(),
    )?;
    let labels: BTreeMap<String, String> =
        c.labels().clone().unwrap_or_default().into_iter().collect();
    if !labels.is_empty() {
        replace(
            &resolve_in_root(root, Path::new("/.singularity.d/labels.json"), false)?,
            0o644,
            &labels_json(&labels),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn env_keeps_path_and_defaults_the_rest() {
        let s = env_script(&v(&[
            "PATH=/opt/bin:/usr/bin",
            "LANG=C.UTF-8",
            "Q=a\"$b",
            "bad name=x",
        ]));
        assert_eq!(
            s,
            "#!/bin/sh\nexport PATH=\"/opt/bin:/usr/bin\"\nexport LANG=\"${LANG:-C.UTF-8}\"\nexport Q=\"${Q:-a\\\"\\$b}\"\n"
        );
    }

    #[test]
    fn runscript_runs_entrypoint_then_args_or_cmd() {
        let r = runscript(&v(&["/entry.sh"]), &v(&["serve", "it's"]), Some("/srv"));
        assert!(r.contains("cd '/srv' || exit 1\n"), "{r}");
        assert!(r.contains("if [ $# -gt 0 ]; then exec '/entry.sh' \"$@\"; fi\nexec '/entry.sh' 'serve' 'it'\\''s'\n"), "{r}");
        let r = runscript(&[], &v(&["bash"]), None);
        assert!(r.ends_with("exec 'bash'\n") && !r.contains("cd "), "{r}");
        let r = runscript(&[], &[], None);
        assert!(r.ends_with("exec /bin/sh\n"), "{r}");
    }
}
