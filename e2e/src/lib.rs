//! End-to-end test helpers for rctr.
//!
//! The tests in `e2e/tests/` drive the real `rctr` binary (built by `make build`, or the one
//! named by `$RCTR_BIN`). Each test gets a [`TestEnv`]: a private `$HOME` (so its own
//! `~/.rctr` state) and work directory, and on drop every instance it started is stopped, so a
//! failing test never leaks containers. The other modules build test images, wait for servers
//! and look for leaked loop devices, mounts and processes; [`SlurmCluster`] runs a real
//! one-node Slurm cluster for the batch-system tests, [`TwoNodeCluster`] a two-node one
//! (network namespaces on a bridge) for the tests that move jobs between nodes.

mod checks;
mod cluster;
mod debian;
mod env;
mod images;
mod listing;
mod logs;
mod net;
mod paths;
mod registry;
mod rootfs;
mod run;
mod skip;
mod slurm;
mod suid;
mod users;

pub use checks::{
    assert_error_line, assert_image_released, assert_no_panic, assert_one_line_error,
    assert_usage_error, loop_devices_backed_by, mountinfo_lines_mentioning, process_alive,
    wait_until,
};
pub use cluster::{missing_netns_facilities, NodeNetwork, TwoNodeCluster, NODES};
pub use debian::{debian_image, mirror as debian_mirror, DEBIAN_PACKAGES};
pub use env::TestEnv;
pub use images::{
    app_image, build_sif, busybox_exec_image, scratch_dir, server_def, server_image,
    write_server_image, CKPT_COUNTER_C, FIB_PY, SYSV_HOLDER_C,
};
pub use listing::table_first_column;
pub use logs::{complete_lines, last_number, numbers_from, numeric_lines};
pub use net::{
    free_port, is_listening, request, request_to, try_request, try_wait_for_port, wait_for_port,
};
pub use paths::{
    apptainer_busybox_sif, path_str, rctr_bin, shared_testdata, target_dir, try_rctr_bin,
    workspace_root,
};
pub use registry::{Registry, REGISTRY_USER};
pub use rootfs::{
    busybox_rootfs, install_host_path, install_host_program, python_rootfs, BUSYBOX_APPLETS,
    COUNTER_SERVER_PY, HOST_PYTHON,
};
pub use run::{output_with_timeout, try_output_with_timeout, DEFAULT_TIMEOUT};
pub use skip::{
    has_cap_sys_resource, is_root, require_criu, require_root, require_root_and_criu,
    require_slurm, require_two_nodes, CRIU_BIN,
};
pub use slurm::{find_program, missing_slurm_programs, SlurmCluster, SLURM_PROGRAMS};
pub use suid::SuidHelper;
pub use users::{unprivileged_missing, RealUser};
