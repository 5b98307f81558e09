//! Engine bundles: built once, cached by content, runnable through their own loader.

use rctr_checkpoint::bundle::{ensure_bundle_in, EngineBundle};
use rctr_checkpoint::conf::{self, CkptConf, ConfOrigin, CriuConf};
use rctr_checkpoint::doctor;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const CRIU: &str = "/opt/rctr/criu/bin/criu";

fn conf_for(bins: &[&str]) -> CriuConf {
    let list = bins.join(", ");
    CkptConf::from_yaml(
        &format!("engine: criu\nbins: [{list}]\n"),
        ConfOrigin::BuiltIn,
    )
    .unwrap()
    .criu
    .unwrap()
}

fn criu_conf() -> Option<CkptConf> {
    if !Path::new(CRIU).exists() {
        eprintln!("skipped: CRIU not installed at {CRIU} (bash etc/setup/install-criu.sh)");
        return None;
    }
    Some(CkptConf::from_yaml(conf::BUILTIN_CONF, ConfOrigin::BuiltIn).unwrap())
}

fn run(argv: &[String]) -> (bool, String) {
    let out = Command::new(&argv[0]).args(&argv[1..]).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn bundle_is_built_once_and_reused() {
    let cache = tempfile::tempdir().unwrap();
    let c = conf_for(&["/bin/ls"]);
    let first = ensure_bundle_in(&c, cache.path()).unwrap();
    assert!(first.created);
    assert_eq!(first.dir, cache.path().join(&first.id));
    let second = ensure_bundle_in(&c, cache.path()).unwrap();
    assert!(!second.created);
    assert_eq!(first.dir, second.dir);
    // Nothing else was left in the cache: no staging directories, only the bundle and the
    // index that makes the second lookup cheap.
    let mut entries: Vec<String> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, [".index".to_string(), first.id.clone()]);
    assert_eq!(EngineBundle::open(&first.dir).unwrap().bins, ["ls"]);
}

#[test]
fn changed_engine_file_makes_a_new_bundle() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for a root-owned engine binary");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let bin = dir.path().join("bin/criu");
    std::fs::copy("/bin/true", &bin).unwrap();
    let text = format!("engine: criu\nbins: [{}]\n", bin.display());
    let cache = dir.path().join("cache");
    let c = CkptConf::from_yaml(&text, ConfOrigin::BuiltIn)
        .unwrap()
        .criu
        .unwrap();
    let first = ensure_bundle_in(&c, &cache).unwrap();
    assert_eq!(ensure_bundle_in(&c, &cache).unwrap().dir, first.dir);

    // Same path, new contents (as when CRIU is upgraded in place): a new bundle.
    let mut f = std::fs::OpenOptions::new().append(true).open(&bin).unwrap();
    std::io::Write::write_all(&mut f, b"trailing bytes").unwrap();
    drop(f);
    let c = CkptConf::from_yaml(&text, ConfOrigin::BuiltIn)
        .unwrap()
        .criu
        .unwrap();
    let second = ensure_bundle_in(&c, &cache).unwrap();
    assert!(second.created);
    assert_ne!(second.id, first.id);
    assert_eq!(
        std::fs::read(second.dir.join("bin/criu")).unwrap(),
        std::fs::read(&bin).unwrap()
    );
}

#[test]
fn bundle_layout_and_modes() {
    let cache = tempfile::tempdir().unwrap();
    let c = conf_for(&["/bin/ls"]);
    let b = ensure_bundle_in(&c, cache.path()).unwrap();
    let loader = b.loader.clone().expect("ls is dynamic");
    assert!(b.dir.join("bin/ls").is_file());
    assert!(b.dir.join("lib/libc.so.6").is_file());
    assert!(b.dir.join("bundle.json").is_file());
    assert_eq!(b.libs.len(), c.closure.libs.len());
    let mode = |p: &str| std::fs::symlink_metadata(b.dir.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode(""), 0o755);
    assert_eq!(mode("bin"), 0o755);
    assert_eq!(mode("lib"), 0o755);
    assert_eq!(mode("bin/ls"), 0o755);
    assert_eq!(mode(&format!("lib/{loader}")), 0o755);
    assert_eq!(mode("lib/libc.so.6"), 0o644);
    // Plain files only: nothing in a bundle may point outside it.
    for e in std::fs::read_dir(b.dir.join("lib")).unwrap() {
        assert!(e.unwrap().file_type().unwrap().is_file());
    }
    // Same contents as the sources.
    assert_eq!(
        std::fs::read(b.dir.join("lib/libc.so.6")).unwrap(),
        std::fs::read(&c.closure.lib("libc.so.6").unwrap().path).unwrap()
    );
}

#[test]
fn bundled_binary_runs_through_the_bundled_loader() {
    let cache = tempfile::tempdir().unwrap();
    let b = ensure_bundle_in(&conf_for(&["/bin/ls"]), cache.path()).unwrap();
    let argv = b.host_argv("ls", &["-d".into(), "/proc".into()]).unwrap();
    assert!(argv[0].starts_with(&b.dir.display().to_string()));
    let (ok, out) = run(&argv);
    assert!(ok, "{argv:?}: {out}");
    assert_eq!(out, "/proc\n");
}

#[test]
fn different_contents_make_different_bundles() {
    let cache = tempfile::tempdir().unwrap();
    let a = ensure_bundle_in(&conf_for(&["/bin/ls"]), cache.path()).unwrap();
    let b = ensure_bundle_in(&conf_for(&["/bin/cat"]), cache.path()).unwrap();
    let both = ensure_bundle_in(&conf_for(&["/bin/ls", "/bin/cat"]), cache.path()).unwrap();
    assert_ne!(a.id, b.id);
    assert_ne!(a.id, both.id);
    assert_eq!(both.bins, ["cat", "ls"]);
}

#[test]
fn verify_detects_tampering() {
    let cache = tempfile::tempdir().unwrap();
    let b = ensure_bundle_in(&conf_for(&["/bin/ls"]), cache.path()).unwrap();
    b.verify().unwrap();
    let f = b.dir.join("lib/libc.so.6");
    let mut bytes = std::fs::read(&f).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let msg = format!("{:#}", b.verify().unwrap_err());
    assert!(msg.contains("libc.so.6 differs"), "{msg}");
}

#[test]
fn writable_cache_dir_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = ensure_bundle_in(&conf_for(&["/bin/ls"]), cache.path()).unwrap_err();
    assert!(
        format!("{err:#}").contains("writable by group or others"),
        "{err:#}"
    );
}

#[test]
fn criu_bundle_runs_criu() {
    let Some(c) = criu_conf() else { return };
    let cache = tempfile::tempdir().unwrap();
    let b = ensure_bundle_in(c.criu().unwrap(), cache.path()).unwrap();
    let loader = b.loader.clone().unwrap();
    assert_eq!(loader, "ld-linux-x86-64.so.2");
    for lib in [
        "libc.so.6",
        "libnet.so.9",
        "libnl-3.so.200",
        "libprotobuf-c.so.1",
        &loader,
    ] {
        assert!(b.dir.join("lib").join(lib).is_file(), "{lib} missing");
    }
    // The exact form documented for containers: <mp>/lib/ld-linux... --library-path <mp>/lib.
    let d = b.dir.display();
    let argv: Vec<String> = vec![
        format!("{d}/lib/{loader}"),
        "--library-path".into(),
        format!("{d}/lib"),
        format!("{d}/bin/criu"),
        "--version".into(),
    ];
    let (ok, out) = run(&argv);
    assert!(ok && out.contains("Version: 4.2"), "{out}");
    let (ok, out) = run(&b.host_argv("criu", &["--version".into()]).unwrap());
    assert!(ok && out.contains("Version: 4.2"), "{out}");
}

#[test]
fn doctor_passes_with_installed_criu() {
    let Some(c) = criu_conf() else { return };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: `criu check` needs root");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let report = doctor::check_with_cache(&c, cache.path());
    assert!(report.ok(), "{report}");
    assert!(
        report.engine_version.as_deref().unwrap().starts_with("4.2"),
        "{report}"
    );
    let text = report.to_string();
    assert!(text.contains("[ ok ] criu check: Looks good."), "{text}");
    assert!(report.bundle.unwrap().created);
}

#[test]
fn doctor_reports_a_broken_engine() {
    // /bin/false "is" criu: it runs but prints no version.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for a root-owned fake engine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let fake = dir.path().join("bin/criu");
    std::fs::copy("/bin/false", &fake).unwrap();
    let c = CkptConf::from_yaml(
        &format!("engine: criu\nbins: [{}]\n", fake.display()),
        ConfOrigin::BuiltIn,
    )
    .unwrap();
    let report = doctor::check_with_cache(&c, &dir.path().join("cache"));
    assert!(!report.ok(), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("[FAIL] criu version: criu --version failed"),
        "{text}"
    );
    assert!(text.contains("fix:"), "{text}");
}

#[test]
fn doctor_reports_an_unloadable_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ckpt-conf.yaml");
    std::fs::write(&p, "engine: criu\nbins: [/opt/nonexistent/bin/criu]\n").unwrap();
    let report = doctor::diagnose(Some(&p));
    assert!(!report.ok());
    let text = report.to_string();
    assert!(
        text.contains("[FAIL] config:") && text.contains("install-criu.sh"),
        "{text}"
    );
}

#[test]
fn a_bundle_directory_made_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: giving a bundle to another user needs root");
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let c = conf_for(&["/bin/ls"]);
    let b = ensure_bundle_in(&c, cache.path()).unwrap();
    // As if another user had made (or could rewrite) the bundle of that content address:
    // neither the quick index lookup nor the content lookup takes it.
    std::os::unix::fs::chown(&b.dir, Some(54321), None).unwrap();
    let err = format!("{:#}", ensure_bundle_in(&c, cache.path()).unwrap_err());
    assert!(
        err.contains("owned by uid 54321") && err.contains(&b.id),
        "{err}"
    );
    std::os::unix::fs::chown(&b.dir, Some(0), None).unwrap();
    // Writable by others: the same.
    std::fs::set_permissions(&b.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = format!("{:#}", ensure_bundle_in(&c, cache.path()).unwrap_err());
    assert!(err.contains("writable by group or others"), "{err}");
    std::fs::set_permissions(&b.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(ensure_bundle_in(&c, cache.path()).unwrap().dir, b.dir);
}

#[test]
fn roots_bundle_cache_under_a_directory_others_can_write_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: root's bundle cache rules apply to root");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let shared = top.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cache = shared.join("engine-bundles");
    let err = format!(
        "{:#}",
        ensure_bundle_in(&conf_for(&["/bin/ls"]), &cache).unwrap_err()
    );
    assert!(
        err.contains("writable by group or others") && err.contains("shared"),
        "{err}"
    );
}
