//! ckpt-conf.yaml loading: every error names the file and, where possible, the line.

use rctr_checkpoint::closure::LibSpec;
use rctr_checkpoint::conf::{self, CkptConf, ConfOrigin, Engine};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn write_conf(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("ckpt-conf.yaml");
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// Loads `text` from a real file and returns the error message (the test fails if it loads).
fn load_err(text: &str) -> (PathBuf, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let p = write_conf(dir.path(), text);
    let err = CkptConf::from_file(&p, ConfOrigin::Flag(p.clone()))
        .expect_err("the configuration should have been refused");
    (p, format!("{err:#}"), dir)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn valid_config_resolves_binaries_libraries_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_conf(dir.path(), "engine: criu\nbins:\n  - /bin/ls\n");
    let c = CkptConf::from_file(&p, ConfOrigin::Flag(p.clone())).unwrap();
    assert_eq!(c.engine, Engine::Criu);
    assert_eq!(c.keep, 3);
    let c = c.criu().unwrap();
    assert_eq!(c.bins, [PathBuf::from("/bin/ls")]);
    assert!(c.libs.is_empty());
    assert_eq!(c.bin_names(), ["ls"]);
    assert!(c.closure.lib("libc.so.6").is_some());
    // Default search path: system directories (no /bin/../lib prefix dir is added twice).
    for d in conf::system_lib_dirs() {
        assert!(
            c.lib_paths.contains(&d),
            "{d:?} missing from {:?}",
            c.lib_paths
        );
    }
}

#[test]
fn all_keys_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let libc_dir = conf::system_lib_dirs().into_iter().next().unwrap();
    let text = format!(
        "engine: criu\nbins: [/bin/ls]\nlibs: [libc.so.6]\nlib-paths: [{}]\nkeep: 7\n",
        libc_dir.display()
    );
    let p = write_conf(dir.path(), &text);
    let c = CkptConf::from_file(&p, ConfOrigin::Flag(p.clone())).unwrap();
    assert_eq!(c.keep, 7);
    let c = c.criu().unwrap();
    assert_eq!(c.lib_paths, [libc_dir]);
    assert_eq!(c.libs, [LibSpec::Name("libc.so.6".into())]);
}

#[test]
fn bad_yaml_names_file_and_line() {
    let (p, msg, _d) = load_err("engine: criu\nbins:\n  - /bin/ls\nkeep: [1, 2\n");
    assert!(msg.starts_with(&format!("{}:", p.display())), "{msg}");
    assert!(
        msg.contains(":5:") || msg.contains(":4:"),
        "no line number: {msg}"
    );
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let (p, msg, _d) = load_err("engine: criu\nbins:\n  - /bin/ls\nlibz: []\n");
    assert!(msg.starts_with(&format!("{}:4:", p.display())), "{msg}");
    assert!(msg.contains("unknown field `libz`"), "{msg}");
}

#[test]
fn unknown_engine_is_refused() {
    let (_, msg, _d) = load_err("engine: dmtcp\nbins: [/bin/ls]\n");
    assert!(msg.contains(":1:") && msg.contains("dmtcp"), "{msg}");
}

#[test]
fn empty_file_and_missing_bins_are_refused() {
    let (_, msg, _d) = load_err("# nothing\n");
    assert!(msg.contains("empty"), "{msg}");
    let (_, msg, _d) = load_err("engine: criu\n");
    assert!(msg.contains("bins is empty or missing"), "{msg}");
    let (_, msg, _d) = load_err("engine: criu\nbins: []\n");
    assert!(
        msg.contains(":2:") && msg.contains("bins is empty"),
        "{msg}"
    );
}

#[test]
fn missing_criu_says_how_to_install_it() {
    let (p, msg, _d) = load_err("engine: criu\nbins:\n  - /opt/nonexistent/bin/criu\n");
    assert!(msg.starts_with(&format!("{}:3:", p.display())), "{msg}");
    assert!(
        msg.contains("CRIU not found at /opt/nonexistent/bin/criu"),
        "{msg}"
    );
    assert!(msg.contains("install-criu.sh"), "{msg}");
}

#[test]
fn relative_and_non_elf_binaries_are_refused() {
    let (_, msg, _d) = load_err("engine: criu\nbins: [criu]\n");
    assert!(msg.contains("absolute path"), "{msg}");
    let (_, msg, _d) = load_err("engine: criu\nbins: [/etc/passwd]\n");
    assert!(msg.contains("not an ELF executable"), "{msg}");
}

#[test]
fn unresolvable_library_is_named() {
    let (p, msg, _d) = load_err("engine: criu\nbins: [/bin/ls]\nlibs: [libdoesnotexist.so.9]\n");
    assert!(msg.starts_with(&format!("{}:", p.display())), "{msg}");
    assert!(msg.contains("libdoesnotexist.so.9 not found in"), "{msg}");
    assert!(msg.contains("lib-paths"), "{msg}");

    // Search directories without libc: the loader or libc cannot be found.
    let empty = tempfile::tempdir().unwrap();
    let text = format!(
        "engine: criu\nbins: [/bin/ls]\nlib-paths: [{}]\n",
        empty.path().display()
    );
    let (_, msg, _d) = load_err(&text);
    assert!(
        msg.contains(&format!("not found in {}", empty.path().display())),
        "{msg}"
    );
}

#[test]
fn missing_lib_path_directory_is_refused() {
    let (_, msg, _d) =
        load_err("engine: criu\nbins: [/bin/ls]\nlib-paths:\n  - /nonexistent/lib\n");
    assert!(
        msg.contains(":4:") && msg.contains("/nonexistent/lib does not exist"),
        "{msg}"
    );
}

#[test]
fn keep_must_be_positive() {
    let (_, msg, _d) = load_err("engine: criu\nbins: [/bin/ls]\nkeep: 0\n");
    assert!(
        msg.contains(":3:") && msg.contains("keep must be at least 1"),
        "{msg}"
    );
    let (_, msg, _d) = load_err("engine: criu\nbins: [/bin/ls]\nkeep: many\n");
    assert!(msg.contains(":3:"), "{msg}");
}

#[test]
fn group_writable_binary_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to create a root-owned binary");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("criu");
    std::fs::copy("/bin/true", &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o775)).unwrap();
    let text = format!("engine: criu\nbins:\n  - {}\n", bin.display());
    let (p, msg, _d) = load_err(&text);
    assert!(msg.starts_with(&format!("{}:3:", p.display())), "{msg}");
    assert!(
        msg.contains("writable by group or others (mode 0775)"),
        "{msg}"
    );

    // The same binary, fixed, is accepted.
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = write_conf(dir.path(), &text);
    CkptConf::from_file(&conf, ConfOrigin::Flag(conf.clone())).unwrap();
}

#[test]
fn binary_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("criu");
    std::fs::copy("/bin/true", &bin).unwrap();
    std::os::unix::fs::chown(&bin, Some(65534), Some(65534)).unwrap();
    let (_, msg, _d) = load_err(&format!("engine: criu\nbins: [{}]\n", bin.display()));
    assert!(msg.contains("owned by uid 65534, not root"), "{msg}");
}

#[test]
fn group_writable_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_conf(dir.path(), "engine: criu\nbins: [/bin/ls]\n");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
    let err = CkptConf::from_file(&p, ConfOrigin::Flag(p.clone())).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("writable by group or others"), "{msg}");
}

#[test]
fn missing_config_file_is_named() {
    let p = PathBuf::from("/nonexistent/ckpt-conf.yaml");
    let err = CkptConf::from_file(&p, ConfOrigin::Env(p.clone())).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("/nonexistent/ckpt-conf.yaml") && msg.contains("RCTR_CKPT_CONF"),
        "{msg}"
    );
}

#[test]
fn config_location_precedence() {
    // The only test touching the environment variable.
    let explicit = Path::new("/x/explicit.yaml");
    std::env::set_var(conf::ENV_CONF, "/x/env.yaml");
    assert_eq!(
        conf::locate(Some(explicit)),
        ConfOrigin::Flag(explicit.into())
    );
    assert_eq!(conf::locate(None), ConfOrigin::Env("/x/env.yaml".into()));
    std::env::remove_var(conf::ENV_CONF);
    let fallback = conf::locate(None);
    if Path::new(conf::SYSTEM_CONF).exists() {
        assert_eq!(fallback, ConfOrigin::System(conf::SYSTEM_CONF.into()));
    } else {
        assert_eq!(fallback, ConfOrigin::BuiltIn);
    }
}

#[test]
fn built_in_config_loads_or_says_how_to_install_criu() {
    match CkptConf::from_yaml(conf::BUILTIN_CONF, ConfOrigin::BuiltIn) {
        Ok(c) => {
            let c = c.criu().unwrap();
            assert_eq!(c.bins, [PathBuf::from("/opt/rctr/criu/bin/criu")]);
            // The prefix's own lib/ comes first: that is where its glibc is.
            assert_eq!(c.lib_paths[0], PathBuf::from("/opt/rctr/criu/lib"));
            let loader = c.closure.loader.as_deref().unwrap();
            assert!(c
                .closure
                .lib(loader)
                .unwrap()
                .path
                .starts_with("/opt/rctr/criu/lib"));
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(!Path::new("/opt/rctr/criu/bin/criu").exists(), "{msg}");
            assert!(msg.starts_with("built-in ckpt-conf.yaml:"), "{msg}");
            assert!(msg.contains("install-criu.sh"), "{msg}");
        }
    }
}
