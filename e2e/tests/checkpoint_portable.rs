//! Portable checkpoints: `checkpoint export` on one $HOME, `checkpoint import` on another
//! (two users' homes, as two hosts that share no file system), and the restart there; damaged
//! archives refused; and the restore preflight refusing a generation whose recorded host
//! (kernel, CPU features, listening address) this one does not match, unless --force.
//!
//! The "other host" records are forged the way a real one would look: the archive is
//! rewritten with the changed facts and every checksum recomputed, then imported. The engine
//! is never faked.

use rctr_e2e::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An archive's entries, in order: (path, contents).
fn read_archive(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap();
    let mut tar = tar::Archive::new(zstd::stream::read::Decoder::new(file).unwrap());
    let mut out = vec![];
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = vec![];
        e.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

fn write_archive(entries: &[(String, Vec<u8>)], path: &Path) {
    let z = zstd::stream::write::Encoder::new(std::fs::File::create(path).unwrap(), 3).unwrap();
    let mut tar = tar::Builder::new(z);
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        tar.append_data(&mut h, name, &data[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Copies archive `src` to `dst` with the manifest and files changed by `edit`, and every
/// checksum (the manifest's of each file, the index's of the manifest) recomputed: what a
/// generation taken on another host would look like.
fn forge(src: &Path, dst: &Path, edit: impl FnOnce(&mut Value, &mut BTreeMap<String, Vec<u8>>)) {
    let entries = read_archive(src);
    assert_eq!(entries[0].0, "rctr-archive.json");
    assert_eq!(entries[1].0, "generation/manifest.json");
    let mut index: Value = serde_json::from_slice(&entries[0].1).unwrap();
    let mut manifest: Value = serde_json::from_slice(&entries[1].1).unwrap();
    let mut files: BTreeMap<String, Vec<u8>> = entries[2..]
        .iter()
        .map(|(n, d)| {
            (
                n.strip_prefix("generation/").unwrap().to_string(),
                d.clone(),
            )
        })
        .collect();
    edit(&mut manifest, &mut files);
    let sums: serde_json::Map<String, Value> = files
        .iter()
        .map(|(n, d)| (n.clone(), json!({"size": d.len(), "blake3": blake3_hex(d)})))
        .collect();
    manifest["files"] = Value::Object(sums);
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    index["manifest"] =
        json!({"size": manifest_bytes.len(), "blake3": blake3_hex(&manifest_bytes)});
    let mut out = vec![
        (
            "rctr-archive.json".to_string(),
            serde_json::to_vec(&index).unwrap(),
        ),
        ("generation/manifest.json".to_string(), manifest_bytes),
    ];
    out.extend(
        files
            .into_iter()
            .map(|(n, d)| (format!("generation/{n}"), d)),
    );
    write_archive(&out, dst);
}

fn read_varint(buf: &[u8], i: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let b = buf[*i];
        *i += 1;
        v |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b < 0x80 {
            return v;
        }
    }
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// CRIU's cpuinfo.img (two magics, a length, a CpuinfoEntry holding one x86 entry) with
/// every capability bit set: the record of a CPU that has every feature, which this one
/// lacks.
fn cpu_with_every_feature(img: &[u8]) -> Vec<u8> {
    let size = u32::from_le_bytes(img[8..12].try_into().unwrap()) as usize;
    let entry = &img[12..12 + size];
    assert_eq!(entry[0], 0x0a, "cpuinfo.img: an x86 entry expected");
    let mut i = 1;
    let len = read_varint(entry, &mut i) as usize;
    let x86 = &entry[i..i + len];
    let (mut j, mut out) = (0, vec![]);
    while j < x86.len() {
        let key = read_varint(x86, &mut j);
        out.extend(varint(key));
        match key & 7 {
            0 => {
                let v = read_varint(x86, &mut j);
                // Field 6: the repeated 32-bit capability words.
                out.extend(varint(if key >> 3 == 6 { 0xffff_ffff } else { v }));
            }
            2 => {
                let l = read_varint(x86, &mut j) as usize;
                out.extend(varint(l as u64));
                out.extend(&x86[j..j + l]);
                j += l;
            }
            t => panic!("cpuinfo.img: unexpected wire type {t}"),
        }
    }
    let mut body = vec![0x0a];
    body.extend(varint(out.len() as u64));
    body.extend(out);
    let mut img2 = img[..8].to_vec();
    img2.extend((body.len() as u32).to_le_bytes());
    img2.extend(body);
    img2
}

/// Every file and directory under `dir` is private (0600 / 0700).
fn assert_private(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let md = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = md.permissions().mode() & 0o777;
        if md.is_dir() {
            assert_eq!(mode, 0o700, "{}", e.path().display());
            assert_private(&e.path());
        } else {
            assert!(md.is_file(), "{} is not a regular file", e.path().display());
            assert_eq!(mode, 0o600, "{}", e.path().display());
        }
    }
}

/// Everything in the checkpoint state of `env`'s $HOME, hidden entries included.
fn checkpoint_state(env: &TestEnv) -> Vec<String> {
    let mut v = vec![];
    for engine in ["criu", "app"] {
        let dir = env.home().join(".rctr/checkpoint").join(engine);
        if let Ok(rd) = std::fs::read_dir(&dir) {
            v.extend(
                rd.flatten()
                    .map(|e| format!("{engine}/{}", e.file_name().to_string_lossy())),
            );
        }
    }
    v.sort();
    v
}

/// The manifest of generation `g` of `env`'s checkpoint `name`.
fn manifest(env: &TestEnv, engine: &str, name: &str, g: u32) -> Value {
    let p = env
        .home()
        .join(".rctr/checkpoint")
        .join(engine)
        .join(name)
        .join(format!("gen-{g:06}/manifest.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// The counting server checkpointed (and stopped) in `env` as checkpoint "ex" after two
/// requests, exported to `<work>/ex.tar.zst`.
fn exported_server(env: &TestEnv, img: &str, port: u16) -> PathBuf {
    let p = port.to_string();
    env.ok(["checkpoint", "create", "ex"]);
    env.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "ex",
        img,
        "server",
        &p,
    ]);
    env.wait_for_instance_port("server", port);
    assert_eq!(request(port), "request:1");
    assert_eq!(request(port), "request:2");
    env.ok(["checkpoint", "instance", "--stop", "server"]);
    let archive = env.work().join("ex.tar.zst");
    env.ok(["checkpoint", "export", "ex", "-o", &path_str(&archive)]);
    archive
}

#[test]
fn a_criu_checkpoint_moves_to_another_home_and_the_count_continues() {
    let test = "a_criu_checkpoint_moves_to_another_home_and_the_count_continues";
    if !require_root_and_criu(test) {
        return;
    }
    let here = TestEnv::new(test);
    let there = TestEnv::new(test);
    let img = path_str(&server_image());
    let port = free_port();
    let archive = exported_server(&here, &img, port);
    let mode = std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the archive holds process memory");

    // What the generation recorded about this host.
    let host = &manifest(&here, "criu", "ex", 1)["host"];
    assert_eq!(
        host["listening"],
        json!([format!("127.0.0.1:{port}")]),
        "{host}"
    );
    assert!(
        host["kernel"].as_str().is_some_and(|k| !k.is_empty()),
        "{host}"
    );
    assert!(
        host["engine_version"]
            .as_str()
            .is_some_and(|v| v.starts_with('4')),
        "{host}"
    );
    let listed: Vec<String> = read_archive(&archive).into_iter().map(|e| e.0).collect();
    assert!(
        listed.contains(&"generation/host-cpu/cpuinfo.img".to_string()),
        "{listed:?}"
    );

    // Another home, and the image under another path: it is recognised by its digest.
    let copy = there.work().join("server-copy.sif");
    std::fs::copy(&img, &copy).unwrap();
    there.ok(["checkpoint", "import", &path_str(&archive)]);
    assert_eq!(there.checkpoint_names(), vec!["ex".to_string()]);
    assert_private(&there.home().join(".rctr/checkpoint/criu/ex/gen-000001"));
    there.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "ex",
        &path_str(&copy),
        "moved",
        &port.to_string(),
    ]);
    there.wait_for_instance_port("moved", port);
    assert_eq!(
        request(port),
        "request:3",
        "the imported server continues the count"
    );
    there.ok(["instance", "stop", "moved"]);

    // Imported again, an existing name needs another.
    let (_, err) = there.fails(["checkpoint", "import", &path_str(&archive)]);
    let line = assert_one_line_error(&err, "importing over an existing name");
    assert!(
        line.contains("'ex' already exists") && line.contains("--name"),
        "{line}"
    );
    there.ok(["checkpoint", "import", &path_str(&archive), "--name", "ex2"]);
    assert_eq!(
        there.checkpoint_names(),
        vec!["ex".to_string(), "ex2".to_string()]
    );
}

#[test]
fn the_preflight_refuses_another_kernel_cpu_or_gpu_and_force_restores_anyway() {
    let test = "the_preflight_refuses_another_kernel_cpu_or_gpu_and_force_restores_anyway";
    if !require_root_and_criu(test) {
        return;
    }
    let here = TestEnv::new(test);
    let there = TestEnv::new(test);
    let img = path_str(&server_image());
    let port = free_port();
    let p = port.to_string();
    let archive = exported_server(&here, &img, port);

    let old_kernel = there.work().join("old-kernel.tar.zst");
    forge(&archive, &old_kernel, |m, _| {
        m["host"]["kernel"] = json!("2.6.32-ancient");
        m["host"]["hostname"] = json!("n1");
    });
    there.ok([
        "checkpoint",
        "import",
        &path_str(&old_kernel),
        "--name",
        "oldk",
    ]);
    let (_, err) = there.fails([
        "instance",
        "start",
        "--ckpt-restart",
        "oldk",
        &img,
        "s1",
        &p,
    ]);
    let line = assert_one_line_error(&err, "a restore on another kernel");
    assert!(
        line.contains("taken on host n1") && line.contains("kernel 2.6.32-ancient there"),
        "{line}"
    );
    assert!(line.contains("--force"), "{line}");
    assert!(there.instance_names().is_empty());

    let other_cpu = there.work().join("other-cpu.tar.zst");
    forge(&archive, &other_cpu, |_, files| {
        let img = files.get_mut("host-cpu/cpuinfo.img").expect("a CPU record");
        *img = cpu_with_every_feature(img);
    });
    there.ok([
        "checkpoint",
        "import",
        &path_str(&other_cpu),
        "--name",
        "cpu",
    ]);
    let (_, err) = there.fails(["instance", "start", "--ckpt-restart", "cpu", &img, "s2", &p]);
    let line = assert_one_line_error(&err, "a restore on a CPU with fewer features");
    assert!(line.contains("this CPU lacks features"), "{line}");
    assert!(
        !line.contains("kernel"),
        "only what differs is named: {line}"
    );
    // The same with run's flag spelling: the job resume path is checked too.
    let (_, err) = there.fails(["run", "--ckpt-restart", "cpu", &img, &p]);
    assert!(
        assert_error_line(&err, "run --ckpt-restart").contains("this CPU lacks features"),
        "{err}"
    );

    // Forced, the engine gets its chance: this CPU does have what the process uses.
    let out = there.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "cpu",
        "--force",
        &img,
        "s3",
        &p,
    ]);
    let _ = out;
    there.wait_for_instance_port("s3", port);
    assert_eq!(request(port), "request:3");
    there.ok(["instance", "stop", "s3"]);

    // As a generation of CUDA processes records it, for a GPU no host here has.
    let gpu = there.work().join("gpu.tar.zst");
    forge(&archive, &gpu, |m, _| {
        m["engine_data"]["gpu"] = json!({
            "models": ["NVIDIA Imaginary 9000"],
            "driver_version": "999.1",
            "memory_used_mib": 582,
            "processes": 1
        });
    });
    there.ok(["checkpoint", "import", &path_str(&gpu), "--name", "gpu"]);
    let (_, err) = there.fails(["instance", "start", "--ckpt-restart", "gpu", &img, "s4", &p]);
    let line = assert_one_line_error(&err, "a restore from another GPU");
    assert!(
        line.contains("NVIDIA Imaginary 9000") && line.contains("--force"),
        "{line}"
    );
    assert!(there.instance_names().is_empty());
    // The processes here have no GPU state, so forced, the restore works.
    there.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "gpu",
        "--force",
        &img,
        "s5",
        &p,
    ]);
    there.wait_for_instance_port("s5", port);
    assert_eq!(request(port), "request:3");
    there.ok(["instance", "stop", "s5"]);
}

/// The application-level engine: export, a truncated and a corrupted archive refused with
/// nothing left, the import and the job continuing in another home, and a listening address
/// this host lacks explained by the preflight.
#[test]
fn an_app_checkpoint_moves_and_damaged_archives_are_refused() {
    let test = "an_app_checkpoint_moves_and_damaged_archives_are_refused";
    if !require_root(test) {
        return;
    }
    let here = TestEnv::new(test);
    let there = TestEnv::new(test);
    let img = path_str(&app_image());
    here.ok(["checkpoint", "create", "fib", "--engine", "app"]);
    here.ok([
        "instance",
        "start",
        "--ckpt-launch",
        "fib",
        &img,
        "job",
        "python3",
        "/opt/fib.py",
        "0.02",
    ]);
    let log = here.instance_log("job");
    let saved = |log: &Path| -> Option<u32> {
        complete_lines(log, 0).iter().find_map(|l| {
            l.strip_prefix("checkpoint written at fib(")?
                .strip_suffix(')')?
                .parse()
                .ok()
        })
    };
    assert!(wait_until(Duration::from_secs(20), || complete_lines(
        &log, 0
    )
    .iter()
    .any(|l| l.starts_with("fib(5)"))));
    here.ok(["checkpoint", "instance", "job"]);
    assert!(
        wait_until(Duration::from_secs(20), || saved(&log).is_some()),
        "no checkpoint message"
    );
    let at = saved(&log).unwrap();
    here.ok(["instance", "stop", "job"]);
    let archive = here.work().join("fib.tar.zst");
    here.ok(["checkpoint", "export", "fib", "-o", &path_str(&archive)]);
    let bytes = std::fs::read(&archive).unwrap();

    let truncated = there.work().join("truncated.tar.zst");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let corrupted = there.work().join("corrupted.tar.zst");
    let mut bad = bytes.clone();
    bad[bytes.len() / 2] ^= 0x55;
    std::fs::write(&corrupted, &bad).unwrap();
    for (what, file) in [
        ("a truncated archive", &truncated),
        ("a corrupted byte", &corrupted),
    ] {
        let (_, err) = there.fails(["checkpoint", "import", &path_str(file)]);
        let line = assert_one_line_error(&err, what);
        assert!(
            line.contains("is damaged") && line.contains("nothing imported"),
            "{what}: {line}"
        );
        assert!(
            line.contains(&path_str(file)),
            "{what}: the error names the file: {line}"
        );
        assert!(
            there.checkpoint_names().is_empty(),
            "{what}: a checkpoint appeared"
        );
        assert!(
            checkpoint_state(&there).is_empty(),
            "{what}: left {:?}",
            checkpoint_state(&there)
        );
    }

    there.ok(["checkpoint", "import", &path_str(&archive)]);
    assert_private(&there.home().join(".rctr/checkpoint/app/fib/gen-000001"));
    there.ok([
        "instance",
        "start",
        "--ckpt-restart",
        "fib",
        &img,
        "job2",
        "python3",
        "/opt/fib.py",
        "0.02",
    ]);
    let log2 = there.instance_log("job2");
    assert!(wait_until(Duration::from_secs(20), || complete_lines(
        &log2, 0
    )
    .iter()
    .any(|l| l.starts_with("fib("))));
    let first = complete_lines(&log2, 0)
        .into_iter()
        .find(|l| l.starts_with("fib("))
        .unwrap();
    assert!(
        first.starts_with(&format!("fib({}) = ", at + 1)),
        "continues after fib({at}): {first}"
    );
    there.ok(["instance", "stop", "job2"]);

    // A generation whose application listened on an address this host lacks.
    let away = there.work().join("away.tar.zst");
    forge(&archive, &away, |m, _| {
        m["host"]["listening"] = json!(["192.0.2.7:8888", "0.0.0.0:9999"]);
    });
    there.ok(["checkpoint", "import", &path_str(&away), "--name", "away"]);
    let args = [
        "instance",
        "start",
        "--ckpt-restart",
        "away",
        &img,
        "job3",
        "python3",
        "/opt/fib.py",
        "0.02",
    ];
    let (_, err) = there.fails(args);
    let line = assert_one_line_error(&err, "a listening address this host lacks");
    assert!(
        line.contains("listened on 192.0.2.7:8888, an address this host does not have"),
        "{line}"
    );
    assert!(!line.contains("9999"), "any address works anywhere: {line}");
    assert!(
        !line.contains("kernel"),
        "kernels do not matter to the app engine: {line}"
    );
    let mut forced = args.to_vec();
    forced.insert(4, "--force");
    there.ok(forced);
    let log3 = there.instance_log("job3");
    assert!(wait_until(Duration::from_secs(20), || complete_lines(
        &log3, 0
    )
    .iter()
    .any(|l| l.starts_with("fib("))));
}
