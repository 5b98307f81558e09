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
