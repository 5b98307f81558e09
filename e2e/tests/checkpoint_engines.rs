//! One test list, run against every checkpoint engine: what rctr guarantees about a
//! checkpoint must not depend on how the engine saves the application.
//!
//! The counter server answers "request:N"; with CRIU its count comes back transparently, with
//! the application-level engine it saves and loads the count itself (e2e/src/counter_server.py).

use rctr_e2e::*;

/// Runs `body` once per engine, as two tests named after the engine.
macro_rules! for_each_engine {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn criu() {
                super::$name("criu")
            }
            #[test]
            fn app() {
                super::$name("app")
            }
        }
    )*};
}

for_each_engine!(
    readme_flow,
    cycles_keep_counting,
    keep_prunes_and_older_generations_restore,
    damaged_generation_is_refused_and_the_previous_one_restores,
    checkpoint_with_stop_leaves_a_restartable_checkpoint,
);

/// Whether this machine can run `engine`'s tests; prints why not.
fn can_run(test: &str, engine: &str) -> bool {
    match engine {
        "criu" => require_root_and_criu(test),
        _ => require_root(test),
    }
}

/// A counter-server instance launched on a new checkpoint `ckpt` of `engine`.
struct Server<'a> {
    env: &'a TestEnv,
    img: String,
    port: u16,
}

impl<'a> Server<'a> {
    fn launch(env: &'a TestEnv, engine: &str, ckpt: &str, name: &str) -> Server<'a> {
        env.ok(["checkpoint", "create", ckpt, "--engine", engine]);
        let s = Server {
            env,
            img: path_str(&server_image()),
            port: free_port(),
        };
        s.start("--ckpt-launch", ckpt, name, &[]);
        s
    }

    fn start(&self, flag: &str, ckpt: &str, name: &str, extra: &[&str]) {
        let p = self.port.to_string();
        let mut args = vec!["instance", "start", flag, ckpt];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&self.img, name, &p]);
        self.env.ok(args);
        self.env.wait_for_instance_port(name, self.port);
    }

    fn request(&self) -> String {
        request(self.port)
    }
}

fn readme_flow(engine: &str) {
    let test = &format!("readme_flow_{engine}");
    if !can_run(test, engine) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Server::launch(&env, engine, "ex", "server");
    assert_eq!(s.request(), "request:1");
    assert_eq!(s.request(), "request:2");
    env.ok(["checkpoint", "instance", "server"]);
    assert_eq!(
        s.request(),
        "request:3",
        "the checkpointed server keeps running"
    );
    env.ok(["instance", "stop", "server"]);
    s.start("--ckpt-restart", "ex", "restarted-server", &[]);
    assert_eq!(
        s.request(),
        "request:3",
        "the restarted server continues from the checkpoint"
    );
    let entry = env.checkpoint_json("ex").expect("ex in checkpoint list");
    assert_eq!(entry["engine"], engine, "{entry}");
    assert_eq!(entry["generation"], 1, "{entry}");
    assert_eq!(entry["used_by"], serde_json::json!(["restarted-server"]));
    let table = env.ok(["checkpoint", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("ex ") && l.split_whitespace().nth(1) == Some(engine)),
        "the table shows the engine:\n{table}"
    );
    let (_, stderr) = env.fails(["checkpoint", "delete", "ex"]);
    let line = assert_one_line_error(&stderr, "deleting a checkpoint in use");
    assert!(line.contains("restarted-server"), "{line}");
    env.ok(["instance", "stop", "restarted-server"]);
    env.ok(["checkpoint", "delete", "ex"]);
    assert!(env.checkpoint_json("ex").is_none());
}

fn cycles_keep_counting(engine: &str) {
    let test = &format!("cycles_keep_counting_{engine}");
    if !can_run(test, engine) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Server::launch(&env, engine, "cyc", "gen0");
    let mut expected = 0;
    for cycle in 1..=3 {
        let name = format!("gen{}", cycle - 1);
        for _ in 0..cycle {
            expected += 1;
            assert_eq!(s.request(), format!("request:{expected}"));
        }
        env.ok(["checkpoint", "instance", &name]);
        env.ok(["instance", "stop", &name]);
        s.start("--ckpt-restart", "cyc", &format!("gen{cycle}"), &[]);
    }
    expected += 1;
    assert_eq!(s.request(), format!("request:{expected}"));
    let gens = env.ok(["checkpoint", "list", "cyc", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&gens).unwrap();
    assert_eq!(v["engine"], engine, "{v}");
    let numbers: Vec<u64> = v["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3], "{v}");
}

fn keep_prunes_and_older_generations_restore(engine: &str) {
    let test = &format!("keep_prunes_{engine}");
    if !can_run(test, engine) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Server::launch(&env, engine, "kp", "srv");
    // Generation g holds request count g.
    for g in 1..=4 {
        assert_eq!(s.request(), format!("request:{g}"));
        env.ok(["checkpoint", "instance", "--keep", "2", "srv"]);
    }
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(["checkpoint", "list", "kp", "--json"])).unwrap();
    let numbers: Vec<u64> = v["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 4], "--keep 2 keeps the newest two: {v}");
    env.ok(["instance", "stop", "srv"]);
    s.start("--ckpt-restart", "kp", "old", &["--generation", "3"]);
    assert_eq!(s.request(), "request:4", "generation 3 held count 3");
    env.ok(["instance", "stop", "old"]);
    s.start("--ckpt-restart", "kp", "new", &[]);
    assert_eq!(
        s.request(),
        "request:5",
        "the newest generation held count 4"
    );
    let (_, stderr) = env.fails(["checkpoint", "verify", "kp", "--generation", "1"]);
    let line = assert_one_line_error(&stderr, "verifying a pruned generation");
    assert!(line.contains("no generation 1"), "{line}");
}

fn damaged_generation_is_refused_and_the_previous_one_restores(engine: &str) {
    let test = &format!("damaged_generation_{engine}");
    if !can_run(test, engine) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Server::launch(&env, engine, "dmg", "srv");
    assert_eq!(s.request(), "request:1");
    env.ok(["checkpoint", "instance", "srv"]);
    assert_eq!(s.request(), "request:2");
    env.ok(["checkpoint", "instance", "srv"]);
    env.ok(["instance", "stop", "srv"]);
    // Flip one byte of the biggest file of generation 2.
    let gen2 = env.checkpoint_dir("dmg").join("gen-000002");
    let victim = std::fs::read_dir(&gen2)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "manifest.json" && e.path().is_file())
        .max_by_key(|e| e.metadata().unwrap().len())
        .expect("generation 2 has files")
        .path();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&victim, bytes).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();

    let (_, stderr) = env.fails(["checkpoint", "verify", "dmg"]);
    let line = assert_one_line_error(&stderr, "verifying a damaged generation");
    assert!(line.contains(&name) && line.contains("corrupt"), "{line}");
    let (_, stderr) = env.fails([
        "instance",
        "start",
        "--ckpt-restart",
        "dmg",
        &s.img,
        "bad",
        &s.port.to_string(),
    ]);
    let line = assert_one_line_error(&stderr, "restarting from a damaged generation");
    assert!(line.contains("--generation 1"), "{line}");
    s.start("--ckpt-restart", "dmg", "good", &["--generation", "1"]);
    assert_eq!(s.request(), "request:2", "generation 1 held count 1");
}

fn checkpoint_with_stop_leaves_a_restartable_checkpoint(engine: &str) {
    let test = &format!("checkpoint_with_stop_{engine}");
    if !can_run(test, engine) {
        return;
    }
    let env = TestEnv::new(test);
    let s = Server::launch(&env, engine, "st", "srv");
    assert_eq!(s.request(), "request:1");
    let out = env.ok(["checkpoint", "instance", "--stop", "--json", "srv"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["stopped"], true, "{report}");
    assert_eq!(report["generation"], 1, "{report}");
    assert!(report["size_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(
        !env.instance_names().contains(&"srv".to_string()),
        "--stop leaves no instance"
    );
    s.start("--ckpt-restart", "st", "again", &[]);
    assert_eq!(s.request(), "request:2");
}
