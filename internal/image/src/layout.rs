//! The `/.singularity.d` layout Apptainer images carry (so images built here run under
//! Apptainer and rctr alike), and writing a definition's sections into it.

use crate::deffile::{Definition, ScriptSection};
use crate::labels::{labels_json, parse_labels_json};
use crate::sandbox::resolve_in_root;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Sources every environment script, as all action scripts do first.
const SOURCE_ENV: &str = "for script in /.singularity.d/env/*.sh; do\n    if [ -f \"$script\" ]; then\n        . \"$script\"\n    fi\ndone\n";

fn action_exec() -> String {
    format!("#!/bin/sh\n\n{SOURCE_ENV}\nexec \"$@\"\n")
}

fn action_run() -> String {
    format!(
        "#!/bin/sh\n\n{SOURCE_ENV}\nif [ -x /.singularity.d/runscript ]; then\n    exec /.singularity.d/runscript \"$@\"\nfi\n\
         echo \"No runscript in this container, starting /bin/sh\"\nexec /bin/sh \"$@\"\n"
    )
}

fn action_shell() -> String {
    format!(
        "#!/bin/sh\n\n{SOURCE_ENV}\n\
         if [ -n \"${{APPTAINER_SHELL:-}}\" ] && [ -x \"$APPTAINER_SHELL\" ]; then\n    exec \"$APPTAINER_SHELL\" \"$@\"\nfi\n\
         if [ -x /bin/bash ]; then\n    SHELL=/bin/bash\n    export SHELL\n    exec /bin/bash --norc \"$@\"\nfi\n\
         SHELL=/bin/sh\nexport SHELL\nexec /bin/sh \"$@\"\n"
    )
}

fn action_start() -> String {
    format!("#!/bin/sh\n\n{SOURCE_ENV}\nif [ -x /.singularity.d/startscript ]; then\n    exec /.singularity.d/startscript \"$@\"\nfi\n")
}

fn action_test() -> String {
    format!(
        "#!/bin/sh\n\n{SOURCE_ENV}\nif [ -x /.singularity.d/test ]; then\n    exec /.singularity.d/test \"$@\"\nfi\n\
         echo \"No test in this container\"\nexit 0\n"
    )
}

const ENV_BASE: &str = "#!/bin/sh\n# Base environment of the container; sourced first.\n";
const ENV_DEFINITION: &str =
    "#!/bin/sh\n# Environment from the definition file's %environment section follows.\n";
/// Libraries bound in at run time (e.g. GPU drivers) live in /.singularity.d/libs.
const ENV_LIBS: &str = "#!/bin/sh\n# Make libraries bound into /.singularity.d/libs at run time visible.\n\
    LD_LIBRARY_PATH=\"${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/.singularity.d/libs\"\nexport LD_LIBRARY_PATH\n";
/// PATH changes requested on the command line (APPTAINERENV_PREPEND_PATH and friends arrive
/// as SING_USER_DEFINED_*) are applied after the image's own scripts.
const ENV_RUNTIME_VARS: &str = "#!/bin/sh\n# PATH changes requested at run time, applied after the image's own environment.\n\
    if [ -n \"${SING_USER_DEFINED_PREPEND_PATH:-}\" ]; then\n    PATH=\"$SING_USER_DEFINED_PREPEND_PATH:$PATH\"\nfi\n\
    if [ -n \"${SING_USER_DEFINED_APPEND_PATH:-}\" ]; then\n    PATH=\"$PATH:$SING_USER_DEFINED_APPEND_PATH\"\nfi\n\
    if [ -n \"${SING_USER_DEFINED_PATH:-}\" ]; then\n    PATH=\"$SING_USER_DEFINED_PATH\"\nfi\n\
    unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH\nexport PATH\n";
/// What `run` does in an image that defines no runscript (Apptainer's behaviour).
pub const DEFAULT_RUNSCRIPT: &str =
    "#!/bin/sh\n\necho \"There is no runscript defined for this container\"\n";
const DEFAULT_STARTSCRIPT: &str = "#!/bin/sh\n";

fn write_new(path: &Path, mode: u32, content: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(content)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The umask may have masked bits off.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode of {}", path.display()))
}

/// Writes `path` with `mode`, replacing a file (never following a symlink there: the old
/// entry is removed first).
pub(crate) fn replace(path: &Path, mode: u32, content: &[u8]) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => anyhow::bail!("cannot write {}: it is a directory", path.display()),
        Ok(_) => {
            fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?
        }
        Err(_) => {}
    }
    write_new(path, mode, content)
}

/// Host path of `rel` in the root filesystem, with symlinks on the way resolved inside it: an
/// image whose /.singularity.d or /etc is a symlink to "/etc" must not make us write to the
/// host's /etc.
pub(crate) fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    resolve_in_root(root, Path::new(rel), false)
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn ensure_dir(path: &Path) -> Result<()> {
    if exists(path) {
        return Ok(());
    }
    fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set mode of {}", path.display()))
}

fn ensure_file(path: &Path, mode: u32, content: &str) -> Result<()> {
    if exists(path) {
        return Ok(());
    }
    write_new(path, mode, content.as_bytes())
}

fn ensure_symlink(path: &Path, target: &str) -> Result<()> {
    if exists(path) {
        return Ok(());
    }
    symlink(target, path).with_context(|| format!("cannot create symlink {}", path.display()))
}

/// Adds what is missing of Apptainer's base layout; existing files (say, from the image
/// being rebuilt) are kept.
pub fn add_base_layout(root: &Path) -> Result<()> {
    for dir in [
        ".singularity.d/libs",
        ".singularity.d/actions",
        ".singularity.d/env",
        "dev",
        "proc",
        "root",
        "var/tmp",
        "tmp",
        "etc",
        "sys",
        "home",
    ] {
        // A directory that is a symlink gets its target (inside the root) created.
        ensure_dir(&resolve_in_root(root, Path::new(dir), true)?)?;
    }
    for (link, target) in [
        ("singularity", ".singularity.d/runscript"),
        (".run", ".singularity.d/actions/run"),
        (".exec", ".singularity.d/actions/exec"),
        (".test", ".singularity.d/actions/test"),
        (".shell", ".singularity.d/actions/shell"),
        ("environment", ".singularity.d/env/90-environment.sh"),
    ] {
        ensure_symlink(&inside(root, link)?, target)?;
    }
    // Mount points for the host's files.
    ensure_file(&inside(root, "etc/hosts")?, 0o644, "")?;
    ensure_file(&inside(root, "etc/resolv.conf")?, 0o644, "")?;
    for (name, text) in [
        ("exec", action_exec()),
        ("run", action_run()),
        ("shell", action_shell()),
        ("start", action_start()),
        ("test", action_test()),
    ] {
        ensure_file(
            &inside(root, &format!(".singularity.d/actions/{name}"))?,
            0o755,
            &text,
        )?;
    }
    for (name, text) in [
        ("01-base.sh", ENV_BASE),
        ("90-environment.sh", ENV_DEFINITION),
        ("99-base.sh", ENV_LIBS),
        ("99-runtimevars.sh", ENV_RUNTIME_VARS),
    ] {
        ensure_file(
            &inside(root, &format!(".singularity.d/env/{name}"))?,
            0o755,
            text,
        )?;
    }
    ensure_file(
        &inside(root, ".singularity.d/runscript")?,
        0o755,
        DEFAULT_RUNSCRIPT,
    )?;
    ensure_file(
        &inside(root, ".singularity.d/startscript")?,
        0o755,
        DEFAULT_STARTSCRIPT,
    )?;
    Ok(())
}

/// A script section as a file: `#!INTERPRETER` for `-c INTERPRETER`, else its own `#!`
/// line if it starts with one, else /bin/sh.
fn section_file(section: &ScriptSection) -> String {
    match section.interpreter() {
        Some(interp) => format!("#!{interp}\n\n{}\n", section.script),
        None => script_file(&section.script),
    }
}

/// A script as a file: its own `#!` line if it starts with one, else /bin/sh.
pub(crate) fn script_file(script: &str) -> String {
    let trimmed = script.trim_start();
    if trimmed.starts_with("#!") {
        let (shebang, rest) = trimmed.split_once('\n').unwrap_or((trimmed, ""));
        format!("{}\n\n{rest}\n", shebang.trim())
    } else {
        format!("#!/bin/sh\n\n{script}\n")
    }
}

/// Writes the definition's scripts, environment, help, labels and the definition itself into
/// the root filesystem's /.singularity.d. Labels, later ones winning: the image's existing
/// ones, `post_labels` (what %post added through $APPTAINER_LABELS), `build_labels`, %labels.
pub fn apply_definition(
    root: &Path,
    def: &Definition,
    post_labels: &[(String, String)],
    build_labels: &BTreeMap<String, String>,
) -> Result<()> {
    let sd = |name: &str| inside(root, &format!(".singularity.d/{name}"));
    if let Some(s) = &def.runscript {
        replace(&sd("runscript")?, 0o755, section_file(s).as_bytes())?;
    }
    if let Some(s) = &def.startscript {
        replace(&sd("startscript")?, 0o755, section_file(s).as_bytes())?;
    }
    if let Some(s) = &def.test {
        let text = match s.interpreter() {
            Some(interp) => format!("#!{interp}\n\n{}\n", s.script),
            None => format!("#!/bin/sh\n\n{}\n", s.script),
        };
        replace(&sd("test")?, 0o755, text.as_bytes())?;
    }
    if let Some(s) = &def.help {
        replace(&sd("runscript.help")?, 0o644, format!("{s}\n").as_bytes())?;
    }
    if let Some(env) = &def.environment {
        let path = sd("env/90-environment.sh")?;
        let mut text = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            _ => ENV_DEFINITION.to_string(),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(env);
        text.push('\n');
        replace(&path, 0o755, text.as_bytes())?;
    }
    let labels_path = sd("labels.json")?;
    let mut labels = match fs::symlink_metadata(&labels_path) {
        Ok(m) if m.is_file() => parse_labels_json(
            &fs::read(&labels_path)
                .with_context(|| format!("cannot read {}", labels_path.display()))?,
        )
        .unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    labels.extend(post_labels.iter().cloned());
    labels.extend(build_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels.extend(def.labels.iter().cloned());
    replace(&labels_path, 0o644, &labels_json(&labels))?;
    replace(&sd("Singularity")?, 0o644, def.raw.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_keep_their_own_interpreter() {
        assert_eq!(script_file("echo hi"), "#!/bin/sh\n\necho hi\n");
        assert_eq!(
            script_file("#!/bin/bash -e\necho hi"),
            "#!/bin/bash -e\n\necho hi\n"
        );
    }

    #[test]
    fn base_layout_keeps_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(".singularity.d")).unwrap();
        fs::write(
            root.join(".singularity.d/runscript"),
            "#!/bin/sh\necho mine\n",
        )
        .unwrap();
        add_base_layout(root).unwrap();
        assert_eq!(
            fs::read_to_string(root.join(".singularity.d/runscript")).unwrap(),
            "#!/bin/sh\necho mine\n"
        );
        assert_eq!(
            fs::read_link(root.join("singularity")).unwrap(),
            Path::new(".singularity.d/runscript")
        );
        let mode = fs::metadata(root.join(".singularity.d/actions/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(fs::read_to_string(root.join(".singularity.d/actions/exec"))
            .unwrap()
            .ends_with("exec \"$@\"\n"));
        // Idempotent.
        add_base_layout(root).unwrap();
    }

    #[test]
    fn never_writes_through_symlinks_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join(".singularity.d")).unwrap();
        symlink("../../outside", root.join("etc")).unwrap();
        add_base_layout(&root).unwrap();
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "wrote outside the root"
        );
        // What was meant for the links' targets landed inside the root.
        assert!(resolve_in_root(&root, Path::new("/etc/hosts"), true)
            .unwrap()
            .starts_with(&root));
        assert!(resolve_in_root(&root, Path::new("/etc/hosts"), true)
            .unwrap()
            .is_file());
        assert!(
            resolve_in_root(&root, Path::new("/.singularity.d/actions/run"), true)
                .unwrap()
                .is_file()
        );
    }
}
