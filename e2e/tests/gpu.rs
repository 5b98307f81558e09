//! `--nv`: the host's NVIDIA driver in the container. Without a driver (CI, most machines)
//! it is a one-line error; with one, the driver's tools run inside. The checkpoint of CUDA
//! processes is exercised on a GPU machine by e2e/gpu/run.sh.

use rctr_e2e::*;
use std::path::Path;

fn host_has_nvidia_driver() -> bool {
    Path::new("/dev/nvidiactl").exists()
}

#[test]
fn nv_without_a_driver_is_one_line_naming_what_is_missing() {
    let test = "nv_without_a_driver_is_one_line_naming_what_is_missing";
    if !require_root(test) {
        return;
    }
    if host_has_nvidia_driver() {
        eprintln!("skipping {test}: this host has an NVIDIA driver");
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&busybox_exec_image());
    for args in [
        vec!["exec", "--nv", &img, "true"],
        vec!["instance", "start", "--nv", &img, "gpu"],
    ] {
        let (code, stderr) = env.fails(&args);
        assert_ne!(code, 0);
        let line = assert_one_line_error(&stderr, "--nv without a driver");
        assert!(
            line.contains("--nv: no NVIDIA driver on this host") && line.contains("nvidiactl"),
            "{args:?}: {line}"
        );
    }
    assert!(
        env.ok(["instance", "list"])
            .lines()
            .all(|l| !l.contains("gpu ")),
        "a failed --nv start left an instance"
    );
}

#[test]
fn nv_brings_the_drivers_tools_and_devices_in() {
    let test = "nv_brings_the_drivers_tools_and_devices_in";
    if !require_root(test) {
        return;
    }
    if !host_has_nvidia_driver() {
        eprintln!("skipping {test}: no NVIDIA driver on this host (/dev/nvidiactl)");
        return;
    }
    let env = TestEnv::new(test);
    let img = path_str(&app_image());
    let out = env.ok(["exec", "--nv", &img, "nvidia-smi", "-L"]);
    assert!(out.contains("GPU 0"), "nvidia-smi -L inside: {out}");
    env.ok(["exec", "--nv", &img, "test", "-c", "/dev/nvidiactl"]);
}

/// A stand-in for NVIDIA's cuda-checkpoint (CI has no GPU): it records each call, keeps each
/// process's CUDA state keyed by its pid inside its pid namespace (the same before and after
/// a restore), refuses transitions the real tool refuses, and fails an action on demand
/// (a file `fail-ACTION` beside it).
const FAKE_CUDA_CHECKPOINT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
action= pid= timeout=
while [ $# -gt 0 ]; do
    case $1 in
        --action) action=$2; shift 2 ;;
        --pid) pid=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --get-state) action=get-state; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
nspid=$(awk '/^NSpid:/ {print $NF}' "/proc/$pid/status") || exit 3
echo "$action $nspid${timeout:+ timeout=$timeout}" >> "$dir/calls"
if [ -e "$dir/fail-$action" ]; then echo "injected failure of $action" >&2; exit 1; fi
state=$(cat "$dir/state-$nspid" 2>/dev/null || echo running)
case "$action:$state" in
    lock:running) new=locked ;;
    checkpoint:locked) new=checkpointed ;;
    restore:checkpointed) new=locked ;;
    unlock:locked) new=running ;;
    get-state:*) echo "$state"; exit 0 ;;
    *) echo "cannot $action a process that is $state" >&2; exit 1 ;;
esac
echo "$new" > "$dir/state-$nspid"
"#;

/// A counter server that maps a file named like the CUDA driver library, so that rctr sees
/// a CUDA process.
const CUDA_LIKE_SERVER: &str = "import mmap, socket, sys
lib = open('/opt/gpu/libcuda.so.1', 'rb')
mapped = mmap.mmap(lib.fileno(), 0, prot=mmap.PROT_READ)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', int(sys.argv[1])))
srv.listen(8)
n = 0
while True:
    c, _ = srv.accept()
    n += 1
    c.sendall(b'request:%d\\n' % n)
    c.close()
";

struct FakeGpu {
    tools: std::path::PathBuf,
    conf: String,
    lib_dir: String,
}

impl FakeGpu {
    fn new(env: &TestEnv) -> FakeGpu {
        use std::os::unix::fs::PermissionsExt;
        let tools = env.work().join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        let tool = tools.join("cuda-checkpoint");
        std::fs::write(&tool, FAKE_CUDA_CHECKPOINT).unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let lib_dir = env.work().join("gpu");
        std::fs::create_dir_all(&lib_dir).unwrap();
        std::fs::write(lib_dir.join("libcuda.so.1"), vec![7u8; 8192]).unwrap();
        let conf = env.work().join("ckpt-conf.yaml");
        std::fs::write(
            &conf,
            format!(
                "engine: criu\nbins: [/opt/rctr/criu/bin/criu]\ncuda-checkpoint:\n  path: {}\n  lock-timeout: 5\n",
                tool.display()
            ),
        )
        .unwrap();
        FakeGpu {
            tools,
            conf: path_str(&conf),
            lib_dir: path_str(&lib_dir),
        }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.tools.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn clear_calls(&self) {
        let _ = std::fs::remove_file(self.tools.join("calls"));
    }

    fn fail(&self, action: &str) {
        std::fs::write(self.tools.join(format!("fail-{action}")), "").unwrap();
    }

    fn launch(&self, env: &TestEnv, ckpt: &str, name: &str, port: u16) {
        env.ok([
            "instance",
            "start",
            "--ckpt-conf",
            &self.conf,
            "--ckpt-launch",
            ckpt,
            "--bind",
            &format!("{}:/opt/gpu:ro", self.lib_dir),
            &path_str(&app_image()),
            name,
            "python3",
            "-c",
            CUDA_LIKE_SERVER,
            &port.to_string(),
        ]);
        env.wait_for_instance_port(name, port);
    }
}

/// A test environment with a CUDA-like server started as instance "srv" on checkpoint "g",
/// with the stand-in tool configured; None (the test skipped) without root or CRIU.
fn gpu_instance(test: &str) -> Option<(TestEnv, FakeGpu, u16)> {
    if !require_root_and_criu(test) {
        return None;
    }
    let env = TestEnv::new(test);
    let gpu = FakeGpu::new(&env);
    let port = free_port();
    env.ok(["checkpoint", "create", "g"]);
    gpu.launch(&env, "g", "srv", port);
    Some((env, gpu, port))
}

#[test]
fn cuda_processes_are_suspended_around_the_dump_and_resumed_after_restore() {
    let Some((env, gpu, port)) =
        gpu_instance("cuda_processes_are_suspended_around_the_dump_and_resumed_after_restore")
    else {
        return;
    };
    assert_eq!(request(port), "request:1");
    env.ok(["checkpoint", "instance", "--ckpt-conf", &gpu.conf, "srv"]);
    // The application's pid in its namespace is 2 (rctr's init is 1).
    assert_eq!(
        gpu.calls(),
        vec![
            "lock 2 timeout=5000",
            "checkpoint 2",
            "restore 2",
            "unlock 2"
        ],
        "a checkpoint that leaves the application running"
    );
    assert_eq!(
        request(port),
        "request:2",
        "the application runs on after it"
    );
    gpu.clear_calls();
    env.ok([
        "checkpoint",
        "instance",
        "--ckpt-conf",
        &gpu.conf,
        "--stop",
        "srv",
    ]);
    assert_eq!(
        gpu.calls(),
        vec!["lock 2 timeout=5000", "checkpoint 2"],
        "a stopping checkpoint does not put back what CRIU ended"
    );
    gpu.clear_calls();
    env.ok([
        "instance",
        "start",
        "--ckpt-conf",
        &gpu.conf,
        "--ckpt-restart",
        "g",
        &path_str(&app_image()),
        "srv2",
    ]);
    assert_eq!(
        gpu.calls(),
        vec!["restore 2", "unlock 2"],
        "the restored process gets its GPU state back"
    );
    assert_eq!(request(port), "request:3");
    env.ok(["instance", "stop", "srv2"]);
}

#[test]
fn a_failed_gpu_suspend_leaves_the_application_running_and_the_checkpoint_unchanged() {
    let Some((env, gpu, port)) = gpu_instance(
        "a_failed_gpu_suspend_leaves_the_application_running_and_the_checkpoint_unchanged",
    ) else {
        return;
    };
    env.ok(["checkpoint", "instance", "--ckpt-conf", &gpu.conf, "srv"]);
    gpu.clear_calls();
    gpu.fail("checkpoint");
    let (_, stderr) = env.fails(["checkpoint", "instance", "--ckpt-conf", &gpu.conf, "srv"]);
    let line = assert_one_line_error(&stderr, "a failing GPU suspend");
    assert!(
        line.contains("injected failure of checkpoint") && line.contains("runs on"),
        "{line}"
    );
    // Locked, then the failing step, then unlocked again: nothing left suspended.
    assert_eq!(
        gpu.calls(),
        vec!["lock 2 timeout=5000", "checkpoint 2", "unlock 2"]
    );
    assert_eq!(request(port), "request:1", "the application still answers");
    let list = env.ok(["checkpoint", "list", "g"]);
    env.ok(["checkpoint", "verify", "g"]);
    assert!(list.contains('1'), "generation 1 is still there: {list}");
    env.ok(["instance", "stop", "srv"]);
}

#[test]
fn a_cuda_process_without_cuda_checkpoint_is_refused_in_one_line() {
    let Some((env, gpu, port)) =
        gpu_instance("a_cuda_process_without_cuda_checkpoint_is_refused_in_one_line")
    else {
        return;
    };
    std::fs::remove_file(gpu.tools.join("cuda-checkpoint")).unwrap();
    let (_, stderr) = env.fails(["checkpoint", "instance", "--ckpt-conf", &gpu.conf, "srv"]);
    let line = assert_one_line_error(&stderr, "no cuda-checkpoint");
    assert!(
        line.contains("CUDA processes") && line.contains("need NVIDIA's cuda-checkpoint"),
        "{line}"
    );
    assert_eq!(request(port), "request:1", "the application still answers");
    env.ok(["instance", "stop", "srv"]);
}
