//! SCIF apps (`%apprun NAME` and the other `%app*` sections), laid out as Apptainer does:
//! /scif/apps/NAME/{bin,lib,scif/{runscript,test,runscript.help,labels.json,env/}} and
//! /scif/data/NAME/{input,output}, their global variables in
//! /.singularity.d/env/94-appsbase.sh, and %appinstall run at the end of %post in the app's
//! directory. At run time (`--app NAME`) the app's environment is sourced after the image's
//! and its bin/lib directories come first.

use crate::deffile::{App, Definition};
use crate::files::{copy_transfers, StageRoots};
use crate::fsutil::TreeCopier;
use crate::labels::to_go_json;
use crate::layout::{inside, replace};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Where apps live in the image.
pub const APPS_DIR: &str = "/scif/apps";

fn mkdirs(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set mode of {}", path.display()))
}

/// The app name with everything but letters, digits and '_' made '_' (for variable names).
fn var_name(app: &str) -> String {
    app.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn env_base(name: &str) -> String {
    format!(
        "#!/bin/sh\n\nSCIF_APPNAME={name}\nSCIF_APPROOT=\"/scif/apps/{name}\"\nSCIF_APPMETA=\"/scif/apps/{name}/scif\"\n\
         SCIF_DATA=\"/scif/data\"\nSCIF_APPDATA=\"/scif/data/{name}\"\nSCIF_APPINPUT=\"/scif/data/{name}/input\"\n\
         SCIF_APPOUTPUT=\"/scif/data/{name}/output\"\n\
         export SCIF_APPDATA SCIF_APPNAME SCIF_APPROOT SCIF_APPMETA SCIF_APPINPUT SCIF_APPOUTPUT SCIF_DATA\n"
    )
}

fn global_env(app: &App) -> String {
    let (n, v) = (&app.name, var_name(&app.name));
    let mut s = format!(
        "## App Global Exports For: {v}\n\nSCIF_APPDATA_{v}=/scif/data/{n}\nSCIF_APPMETA_{v}=/scif/apps/{n}/scif\n\
         SCIF_APPROOT_{v}=/scif/apps/{n}\nSCIF_APPBIN_{v}=/scif/apps/{n}/bin\nSCIF_APPLIB_{v}=/scif/apps/{n}/lib\n\n\
         export SCIF_APPDATA_{v} SCIF_APPMETA_{v} SCIF_APPROOT_{v} SCIF_APPBIN_{v} SCIF_APPLIB_{v}\n"
    );
    if app.env.is_some() {
        s.push_str(&format!(
            "export SCIF_APPENV_{v}=\"/scif/apps/{n}/scif/env/90-environment.sh\"\n"
        ));
    }
    s.push_str(&format!(
        "export SCIF_APPLABELS_{v}=\"/scif/apps/{n}/scif/labels.json\"\n"
    ));
    if app.run.is_some() {
        s.push_str(&format!(
            "export SCIF_APPRUN_{v}=\"/scif/apps/{n}/scif/runscript\"\n"
        ));
    }
    s
}

/// Creates every app's directories and metadata and copies its %appfiles (before %post, so
/// %appinstall finds them).
pub(crate) fn create_apps(
    def: &Definition,
    root: &Path,
    stages: &StageRoots,
    copier: &mut TreeCopier,
) -> Result<()> {
    if def.apps.is_empty() {
        return Ok(());
    }
    let mut global = String::new();
    for app in &def.apps {
        let base = format!("{APPS_DIR}/{}", app.name);
        for dir in ["bin", "lib", "scif/env"] {
            mkdirs(&inside(root, &format!("{base}/{dir}"))?)?;
        }
        for dir in ["input", "output"] {
            mkdirs(&inside(root, &format!("/scif/data/{}/{dir}", app.name))?)?;
        }
        let meta = |f: &str| inside(root, &format!("{base}/scif/{f}"));
        replace(
            &meta("env/01-base.sh")?,
            0o755,
            env_base(&app.name).as_bytes(),
        )?;
        if let Some(env) = &app.env {
            replace(
                &meta("env/90-environment.sh")?,
                0o755,
                format!("{env}\n").as_bytes(),
            )?;
        }
        if let Some(run) = &app.run {
            replace(
                &meta("runscript")?,
                0o755,
                format!("#!/bin/sh\n\n{run}\n").as_bytes(),
            )?;
        }
        if let Some(test) = &app.test {
            replace(
                &meta("test")?,
                0o755,
                format!("#!/bin/sh\n\n{test}\n").as_bytes(),
            )?;
        }
        if let Some(help) = &app.help {
            replace(
                &meta("runscript.help")?,
                0o644,
                format!("{help}\n").as_bytes(),
            )?;
        }
        let mut labels = BTreeMap::new();
        labels.insert("SCIF_APP_NAME".to_string(), app.name.clone());
        labels.extend(app.labels.iter().cloned());
        replace(&meta("labels.json")?, 0o644, to_go_json(&labels).as_bytes())?;
        copy_transfers(def, &app.files, root, &base, stages, copier)?;
        global.push_str(&global_env(app));
    }
    replace(
        &inside(root, "/.singularity.d/env/94-appsbase.sh")?,
        0o755,
        global.as_bytes(),
    )
}

/// The %appinstall scripts, run at the end of %post each in its app's directory.
pub(crate) fn install_script(def: &Definition) -> String {
    let mut s = String::new();
    for app in &def.apps {
        if let Some(install) = &app.install {
            let base = format!("{APPS_DIR}/{}", app.name);
            s.push_str(&format!(
                "\ncd /\n. {base}/scif/env/01-base.sh\n\ncd {base}\n{install}\n\ncd /\n"
            ));
        }
    }
    s
}

/// Path of app `name`'s runscript in the image.
pub fn app_runscript(name: &str) -> String {
    format!("{APPS_DIR}/{name}/scif/runscript")
}

/// Path of app `name`'s test script in the image.
pub fn app_test(name: &str) -> String {
    format!("{APPS_DIR}/{name}/scif/test")
}

/// `argv` run in app `name`'s environment (`--app NAME`): its env scripts sourced after the
/// image's, its bin and lib directories first on PATH and LD_LIBRARY_PATH.
pub fn app_command(name: &str, argv: Vec<String>) -> Vec<String> {
    let base = format!("{APPS_DIR}/{name}");
    let script = format!(
        "for __rctr_f in {base}/scif/env/*.sh; do if [ -f \"$__rctr_f\" ]; then . \"$__rctr_f\"; fi; done\n\
         unset __rctr_f\n\
         PATH=\"{base}/bin:$PATH\"\n\
         LD_LIBRARY_PATH=\"{base}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"\n\
         APPTAINER_APPNAME={name}\nSINGULARITY_APPNAME={name}\n\
         export PATH LD_LIBRARY_PATH APPTAINER_APPNAME SINGULARITY_APPNAME\n\
         exec \"$@\"\n"
    );
    let mut out = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        script,
        name.to_string(),
    ];
    out.extend(argv);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deffile::Definition;

    #[test]
    fn lays_out_apps_as_apptainer_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join(".singularity.d/env")).unwrap();
        fs::write(dir.path().join("tool.sh"), "echo tool\n").unwrap();
        let def = Definition::parse(
            "Bootstrap: scratch\n%apprun hello-app\n  echo hi \"$@\"\n%appenv hello-app\n  GREETING=hey\n\
             %applabels hello-app\n  Version 2\n%appfiles hello-app\n  tool.sh bin/tool.sh\n\
             %appinstall hello-app\n  touch installed\n%apphelp hello-app\n  Says hi.\n",
            Path::new("/x.def"),
            dir.path(),
        )
        .unwrap();
        let mut copier = TreeCopier::new();
        create_apps(&def, &root, &[], &mut copier).unwrap();
        let app = root.join("scif/apps/hello-app");
        assert_eq!(
            fs::read_to_string(app.join("scif/runscript")).unwrap(),
            "#!/bin/sh\n\n  echo hi \"$@\"\n"
        );
        assert!(fs::read_to_string(app.join("scif/env/01-base.sh"))
            .unwrap()
            .contains("SCIF_APPNAME=hello-app\n"));
        assert_eq!(
            fs::read_to_string(app.join("scif/env/90-environment.sh")).unwrap(),
            "  GREETING=hey\n"
        );
        assert_eq!(
            fs::read_to_string(app.join("bin/tool.sh")).unwrap(),
            "echo tool\n"
        );
        let labels = fs::read_to_string(app.join("scif/labels.json")).unwrap();
        assert!(
            labels.contains("\"SCIF_APP_NAME\": \"hello-app\"")
                && labels.contains("\"Version\": \"2\""),
            "{labels}"
        );
        assert!(root.join("scif/data/hello-app/output").is_dir() && app.join("lib").is_dir());
        let global = fs::read_to_string(root.join(".singularity.d/env/94-appsbase.sh")).unwrap();
        assert!(
            global.contains("SCIF_APPBIN_hello_app=/scif/apps/hello-app/bin\n"),
            "{global}"
        );
        assert!(global.contains("SCIF_APPRUN_hello_app="), "{global}");
        let install = install_script(&def);
        assert!(
            install.contains("cd /scif/apps/hello-app\n  touch installed\n"),
            "{install}"
        );
    }

    #[test]
    fn app_command_runs_through_the_apps_environment() {
        let argv = app_command("a", vec!["/scif/apps/a/scif/runscript".into(), "x".into()]);
        assert_eq!(argv[0], "/bin/sh");
        assert!(
            argv[2].contains(". \"$__rctr_f\"")
                && argv[2].contains("PATH=\"/scif/apps/a/bin:$PATH\"")
        );
        assert_eq!(&argv[3..], ["a", "/scif/apps/a/scif/runscript", "x"]);
    }
}
