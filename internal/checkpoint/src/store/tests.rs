//! The store's guarantees, with a fake engine: no root, no CRIU.

use super::*;
use crate::dump::{take, DumpOptions};
use crate::engine::{CheckpointEngine, Dumped, Restore};
use rctr_instance::InstanceRecord;
use rctr_runtime::plan::{ContainerPlan, RootKind, RootSource};
use std::cell::Cell;

/// An engine that writes a file per "dump" holding a counter, and can be told to fail or to
/// leave a symlink behind.
pub(super) struct FakeEngine {
    counter: Cell<u32>,
    fail: Cell<bool>,
    plant_symlink: Cell<bool>,
    /// Also write a memory image of several 1 MiB pieces, as CRIU's pages-N.img.
    big_memory: Cell<bool>,
}

impl FakeEngine {
    pub(super) fn new() -> Self {
        FakeEngine {
            counter: Cell::new(0),
            fail: Cell::new(false),
            plant_symlink: Cell::new(false),
            big_memory: Cell::new(false),
        }
    }
}

impl CheckpointEngine for FakeEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::App
    }
    fn inject(&self, _plan: &mut ContainerPlan, _ckpt: &Checkpoint) -> Result<()> {
        Ok(())
    }
    fn version(&self, _cache: &Path) -> Option<String> {
        Some("fake 1.0".into())
    }
    fn dump(
        &self,
        _t: &InstanceRecord,
        _c: &Checkpoint,
        staged: &Staged,
        _mode: crate::engine::DumpMode,
    ) -> Result<Dumped> {
        self.counter.set(self.counter.get() + 1);
        std::fs::write(
            staged.dir.join("state.txt"),
            format!("count {}\n", self.counter.get()),
        )?;
        std::fs::create_dir(staged.dir.join("sub"))?;
        std::fs::write(staged.dir.join("sub/pages.img"), vec![7u8; 10_000])?;
        if self.big_memory.get() {
            let bytes: Vec<u8> = (0..(3 << 20) + 100).map(|i| (i % 251) as u8).collect();
            std::fs::write(staged.dir.join("pages-1.img"), bytes)?;
        }
        if self.plant_symlink.get() {
            std::os::unix::fs::symlink("/etc/shadow", staged.dir.join("sub/link"))?;
        }
        if self.fail.get() {
            bail!("the fake engine failed as asked");
        }
        Ok(Dumped {
            data: EngineData::App,
            frozen_us: Some(1234),
        })
    }
    fn restore(
        &self,
        _c: &Checkpoint,
        _g: &Generation,
        _p: ContainerPlan,
        _how: crate::engine::RestoreFlags,
        _checked: crate::store::Checked,
    ) -> Result<Restore> {
        bail!("the fake engine does not restore")
    }
}

fn plan(root: &Path) -> ContainerPlan {
    ContainerPlan {
        root: RootSource {
            kind: RootKind::Dir,
            path: root.to_path_buf(),
            offset: 0,
            size: 0,
        },
        image_display: root.display().to_string(),
        mounts: vec![],
        writable_tmpfs: false,
        identity: None,
        cwd: "/".into(),
        home: "/root".into(),
        env: vec![],
        env_overrides: vec![],
        argv: vec!["/bin/true".into()],
        pid_ns: true,
        net_ns: false,
        host_pts: false,
        writable_root: false,
        ipc_ns: false,
        requested: Default::default(),
        dev: Default::default(),
        cwd_explicit: false,
        env_no_eval: false,
        hostname: None,
        no_init: false,
        session_size_mib: None,
        userns: None,
        run_as: None,
    }
}

fn record(root: &Path) -> InstanceRecord {
    InstanceRecord {
        name: "inst".into(),
        image: root.display().to_string(),
        args: vec![],
        plan: plan(root),
        init_pid: 0,
        init_start_ticks: 0,
        app_pid: 2,
        app_host_pid: 0,
        started: 0,
        checkpoint: Some("c".into()),
        checkpoint_id: None,
        ip: None,
        foreground: false,
    }
}

pub(super) struct Fixture {
    pub(super) _tmp: tempfile::TempDir,
    pub(super) store: CheckpointStore,
    pub(super) root: PathBuf,
}

pub(super) fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store =
        CheckpointStore::at(&tmp.path().join("checkpoint"), &tmp.path().join("cache")).unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    Fixture {
        _tmp: tmp,
        store,
        root,
    }
}

pub(super) fn dump(f: &Fixture, ckpt: &Checkpoint, e: &FakeEngine, keep: u32) -> Result<u32> {
    let opts = DumpOptions {
        keep: Some(keep),
        ..Default::default()
    };
    Ok(take(ckpt, e, &record(&f.root), &opts, 3)?.generation)
}

fn leftovers(ckpt: &Checkpoint) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(ckpt.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-") || n.starts_with(".trash-"))
        .collect();
    v.sort();
    v
}

#[test]
fn generations_are_numbered_in_order_and_latest_follows() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    assert_eq!(ckpt.latest().unwrap(), None);
    for want in 1..=3 {
        assert_eq!(dump(&f, &ckpt, &e, 0).unwrap(), want);
        assert_eq!(ckpt.latest().unwrap(), Some(want));
    }
    assert_eq!(ckpt.generations().unwrap(), [1, 2, 3]);
    let g = ckpt.select(None).unwrap();
    assert_eq!(g.number, 3);
    assert_eq!(g.manifest.frozen_us, Some(1234));
    assert_eq!(g.manifest.engine_data, EngineData::App);
    // Files in subdirectories are checksummed too, and private.
    assert!(g.manifest.files.contains_key("sub/pages.img"));
    assert_eq!(
        std::fs::read_to_string(g.dir.join("state.txt")).unwrap(),
        "count 3\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(g.dir.join("sub/pages.img"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ckpt.verify(&g, None, false).unwrap();
}

#[test]
fn a_damaged_or_stale_latest_falls_back_to_the_highest_generation() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    dump(&f, &ckpt, &e, 0).unwrap();
    dump(&f, &ckpt, &e, 0).unwrap();
    std::fs::write(ckpt.dir().join("latest"), "garbage").unwrap();
    assert_eq!(ckpt.latest().unwrap(), Some(2));
    std::fs::write(ckpt.dir().join("latest"), "17\n").unwrap();
    assert_eq!(ckpt.latest().unwrap(), Some(2));
    std::fs::remove_file(ckpt.dir().join("latest")).unwrap();
    assert_eq!(ckpt.latest().unwrap(), Some(2));
    // `latest` pointing at an older, still published generation is obeyed.
    std::fs::write(ckpt.dir().join("latest"), "1\n").unwrap();
    assert_eq!(ckpt.latest().unwrap(), Some(1));
    // ...but the next generation is numbered above every published one.
    assert_eq!(dump(&f, &ckpt, &e, 0).unwrap(), 3);
}

#[test]
fn a_crash_between_stage_and_publish_leaves_the_previous_generation() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    dump(&f, &ckpt, &e, 0).unwrap();
    {
        let lock = ckpt.lock().unwrap();
        let staged = ckpt.stage(&lock).unwrap();
        std::fs::write(staged.dir.join("half-written"), b"x").unwrap();
        // A crash: the process dies, nothing runs Drop.
        std::mem::forget(staged);
    }
    assert_eq!(leftovers(&ckpt).len(), 1);
    assert_eq!(ckpt.latest().unwrap(), Some(1));
    assert_eq!(ckpt.generations().unwrap(), [1]);
    ckpt.verify(&ckpt.select(None).unwrap(), None, false)
        .unwrap();
    // The next checkpoint sweeps the leftover and takes the next number.
    assert_eq!(dump(&f, &ckpt, &e, 0).unwrap(), 2);
    assert!(leftovers(&ckpt).is_empty(), "{:?}", leftovers(&ckpt));
}

#[test]
fn a_failed_dump_leaves_nothing_and_keeps_the_previous_generation() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    dump(&f, &ckpt, &e, 0).unwrap();
    e.fail.set(true);
    let err = dump(&f, &ckpt, &e, 0).unwrap_err();
    assert!(err.to_string().contains("failed as asked"), "{err:#}");
    assert!(leftovers(&ckpt).is_empty(), "{:?}", leftovers(&ckpt));
    assert_eq!(ckpt.generations().unwrap(), [1]);
    let g = ckpt.select(None).unwrap();
    assert_eq!(
        std::fs::read_to_string(g.dir.join("state.txt")).unwrap(),
        "count 1\n"
    );
}

#[test]
fn symlinks_in_a_generation_are_refused() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    e.plant_symlink.set(true);
    let err = format!("{:#}", dump(&f, &ckpt, &e, 0).unwrap_err());
    assert!(
        err.contains("sub/link") && err.contains("not a regular file"),
        "{err}"
    );
    assert_eq!(ckpt.latest().unwrap(), None);
    assert!(leftovers(&ckpt).is_empty());
}

#[test]
fn keep_prunes_the_oldest_generations() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    for _ in 0..5 {
        dump(&f, &ckpt, &e, 2).unwrap();
    }
    assert_eq!(ckpt.generations().unwrap(), [4, 5]);
    assert_eq!(ckpt.latest().unwrap(), Some(5));
    // keep 0 keeps everything.
    for _ in 0..3 {
        dump(&f, &ckpt, &e, 0).unwrap();
    }
    assert_eq!(ckpt.generations().unwrap(), [4, 5, 6, 7, 8]);
    // The pruned directories were renamed out of sight: removed in the background, or swept
    // by the next stage at the latest.
    {
        let lock = ckpt.lock().unwrap();
        drop(ckpt.stage(&lock).unwrap());
    }
    assert!(leftovers(&ckpt).is_empty(), "{:?}", leftovers(&ckpt));
}

#[test]
fn verify_names_the_damaged_file_and_the_previous_generation() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    dump(&f, &ckpt, &e, 0).unwrap();
    dump(&f, &ckpt, &e, 0).unwrap();
    let g = ckpt.select(None).unwrap();
    let victim = g.dir.join("sub/pages.img");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[42] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let err = format!("{:#}", ckpt.verify(&g, None, false).unwrap_err());
    assert!(
        err.contains("sub/pages.img") && err.contains("corrupt"),
        "{err}"
    );
    assert!(err.contains("--generation 1"), "{err}");
    ckpt.verify(&ckpt.select(Some(1)).unwrap(), None, false)
        .unwrap();
    let err = format!("{:#}", ckpt.select(Some(9)).unwrap_err());
    assert!(err.contains("no generation 9"), "{err}");
}

#[test]
fn memory_images_get_piece_checksums_and_only_they_can_be_left_to_check_later() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    e.big_memory.set(true);
    dump(&f, &ckpt, &e, 0).unwrap();
    let g = ckpt.select(None).unwrap();
    assert!(g.manifest.files.contains_key("pages-1.img.chunks"));
    assert!(!g.manifest.files.contains_key("sub/pages.img.chunks"));
    ckpt.verify(&g, None, false).unwrap();
    let pieces = |checked: Checked| match checked {
        Checked::MemoryInPieces(m) => m,
        Checked::Whole => panic!("nothing was left for later"),
    };
    let m = pieces(ckpt.verify_but_memory(&g, None, false).unwrap());
    assert_eq!(m.keys().collect::<Vec<_>>(), ["pages-1.img"]);

    // A byte of the memory image changed: the whole check fails; the deferring one leaves
    // it to the reader, whose piece check catches it.
    let path = g.dir.join("pages-1.img");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(2 << 20) + 5] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = format!("{:#}", ckpt.verify(&g, None, false).unwrap_err());
    assert!(err.contains("pages-1.img is corrupt"), "{err}");
    let m = pieces(ckpt.verify_but_memory(&g, None, false).unwrap());
    let sums = &m["pages-1.img"];
    assert!(sums.matches(1, &bytes[1 << 20..2 << 20]));
    assert!(!sums.matches(2, &bytes[2 << 20..3 << 20]));

    // Any other file, and the piece checksums themselves, are checked at once either way.
    let side = g.dir.join("pages-1.img.chunks");
    let mut raw = std::fs::read(&side).unwrap();
    raw[30] ^= 1;
    std::fs::write(&side, &raw).unwrap();
    let err = format!("{:#}", ckpt.verify_but_memory(&g, None, false).unwrap_err());
    assert!(err.contains("pages-1.img.chunks is corrupt"), "{err}");
}

#[test]
fn names_are_one_namespace_across_engines_and_delete_respects_users() {
    let f = fixture();
    f.store.create("c", EngineKind::App, None).unwrap();
    let err = f
        .store
        .create("c", EngineKind::Criu, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    f.store.create("d", EngineKind::Criu, None).unwrap();
    let names: Vec<String> = f
        .store
        .list()
        .unwrap()
        .iter()
        .map(|c| format!("{}:{}", c.name(), c.engine()))
        .collect();
    assert_eq!(names, ["c:app", "d:criu"]);
    let ckpt = f.store.open("c").unwrap();
    let err = ckpt
        .clone()
        .delete(false, &["web".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("web") && err.contains("--force"), "{err}");
    ckpt.delete(true, &["web".to_string()]).unwrap();
    assert!(f.store.open("c").is_err());
    for bad in ["", "..", "a/b", ".hidden", "-x"] {
        assert!(
            f.store.create(bad, EngineKind::App, None).is_err(),
            "{bad:?}"
        );
        assert!(f.store.open(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_manifest_of_another_engine_is_refused() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    dump(&f, &ckpt, &e, 0).unwrap();
    let path = ckpt.select(None).unwrap().dir.join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"engine\": \"app\"", "\"engine\": \"criu\"");
    std::fs::write(&path, text).unwrap();
    let err = format!("{:#}", ckpt.select(None).unwrap_err());
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn images_can_live_outside_the_state_directory() {
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let ckpt = f
        .store
        .create("far", EngineKind::App, Some(scratch.path()))
        .unwrap();
    assert_eq!(ckpt.dir(), scratch.path().join("far"));
    let e = FakeEngine::new();
    dump(&f, &ckpt, &e, 0).unwrap();
    assert!(scratch.path().join("far/gen-000001/state.txt").is_file());
    // Found again through the state directory, with the same rules.
    let again = f.store.open("far").unwrap();
    assert_eq!(again.dir(), ckpt.dir());
    again
        .verify(&again.select(None).unwrap(), None, false)
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ckpt.dir()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // A directory put in its place is not taken for it.
    std::fs::rename(ckpt.dir(), scratch.path().join("moved")).unwrap();
    std::fs::create_dir(ckpt.dir()).unwrap();
    std::fs::set_permissions(ckpt.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = format!("{:#}", f.store.open("far").unwrap_err());
    assert!(err.contains("does not hold them"), "{err}");
    std::fs::remove_dir(ckpt.dir()).unwrap();
    std::fs::rename(scratch.path().join("moved"), ckpt.dir()).unwrap();
    // Nor a symlink to the real one.
    std::fs::rename(ckpt.dir(), scratch.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(scratch.path().join("moved"), ckpt.dir()).unwrap();
    assert!(
        f.store.open("far").is_err(),
        "a symlinked image directory was followed"
    );
    std::fs::remove_file(ckpt.dir()).unwrap();
    std::fs::rename(scratch.path().join("moved"), ckpt.dir()).unwrap();
    // Bad --dir values.
    for bad in [Path::new("relative"), Path::new("/nonexistent/scratch")] {
        let err = format!(
            "{:#}",
            f.store.create("x", EngineKind::App, Some(bad)).unwrap_err()
        );
        assert!(err.contains("checkpoint directory"), "{err}");
    }
    // Delete removes both the images and the state entry.
    f.store.open("far").unwrap().delete(false, &[]).unwrap();
    assert!(!scratch.path().join("far").exists());
    assert!(!f.store.exists("far").unwrap());
}

#[test]
fn the_preflight_refuses_a_recorded_address_this_host_lacks_unless_forced() {
    let f = fixture();
    let ckpt = f.store.create("c", EngineKind::App, None).unwrap();
    let e = FakeEngine::new();
    dump(&f, &ckpt, &e, 0).unwrap();
    let mut g = ckpt.select(None).unwrap();
    let host = g.manifest.host.clone().expect("the host is recorded");
    assert_eq!(host.hostname, rctr_state::hostname());
    assert_eq!(host.engine_version.as_deref(), Some("fake 1.0"));
    crate::preflight::check(&ckpt, &g, &e, false).unwrap();

    g.manifest.host.as_mut().unwrap().listening = vec!["192.0.2.7:8888".parse().unwrap()];
    g.manifest.host.as_mut().unwrap().hostname = "n1".into();
    let err = crate::preflight::check(&ckpt, &g, &e, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("taken on host n1") && err.contains("192.0.2.7:8888"),
        "{err}"
    );
    assert!(
        err.ends_with("restore it on a host like n1, or use --force to try anyway"),
        "{err}"
    );
    crate::preflight::check(&ckpt, &g, &e, true).unwrap();

    // Generations from before the facts were recorded pass.
    g.manifest.host = None;
    crate::preflight::check(&ckpt, &g, &e, false).unwrap();
}

#[test]
fn images_are_not_kept_where_others_could_swap_them() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    let scratch = tempfile::tempdir().unwrap();
    let set = |mode: u32| {
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // Group-writable (a shared project directory): refused, and nothing is created.
    set(0o770);
    let err = format!(
        "{:#}",
        f.store
            .create("shared", EngineKind::App, Some(scratch.path()))
            .unwrap_err()
    );
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(!f.store.exists("shared").unwrap());
    assert!(!scratch.path().join("shared").exists());
    // Sticky (like /tmp): others cannot rename what is ours there.
    set(0o1777);
    f.store
        .create("sticky", EngineKind::App, Some(scratch.path()))
        .unwrap();
    // A private base that later becomes writable by others is refused on open.
    set(0o777);
    let err = format!("{:#}", f.store.open("sticky").unwrap_err());
    assert!(err.contains("writable by group or others"), "{err}");
    set(0o700);
    f.store.open("sticky").unwrap();
    // Owned by someone else (only root can set that up here).
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(scratch.path(), Some(54321), None).unwrap();
        let err = format!(
            "{:#}",
            f.store
                .create("theirs", EngineKind::App, Some(scratch.path()))
                .unwrap_err()
        );
        assert!(err.contains("belongs to uid 54321"), "{err}");
        std::os::unix::fs::chown(scratch.path(), Some(0), None).unwrap();
    }
}
