//! Test images built through `rctr build`, once per test process.

use crate::paths::try_rctr_bin;
use crate::rootfs::{busybox_rootfs, python_rootfs};
use crate::run::try_output_with_timeout;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Building the Python image compresses some 30 MB: allow for a slow debug build.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// The definition file of the counter-server image built from `rootfs`.
pub fn server_def(rootfs: &Path) -> String {
    format!(
        "Bootstrap: localimage\nFrom: {}\n\n%startscript\n    exec python3 /opt/counter_server.py \"$@\"\n",
        rootfs.display()
    )
}

/// The definition of an image whose startscript runs its arguments: `rctr instance start
/// IMAGE NAME sh -c '...'` runs any shell loop as the instance's application.
fn exec_def(rootfs: &Path) -> String {
    format!(
        "Bootstrap: localimage\nFrom: {}\n\n%startscript\n    exec \"$@\"\n",
        rootfs.display()
    )
}

/// `rctr build OUTPUT SOURCE` with a scratch `$HOME`, so builds never touch the user's ~/.rctr.
pub fn build_sif(output: &Path, source: &Path) -> Result<()> {
    let home = tempfile::Builder::new()
        .prefix("rctr-e2e-build-home-")
        .tempdir()?;
    let mut cmd = Command::new(try_rctr_bin()?);
    cmd.arg("build")
        .arg(output)
        .arg(source)
        .env("HOME", home.path());
    let out = try_output_with_timeout(cmd, BUILD_TIMEOUT).map_err(anyhow::Error::msg)?;
    if !out.status.success() {
        bail!(
            "`rctr build {} {}` failed ({}): {}",
            output.display(),
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes the counter-server image to `output`, assembling its rootfs and definition file in
/// `scratch` (which must exist).
pub fn write_server_image(output: &Path, scratch: &Path) -> Result<()> {
    let rootfs = scratch.join("server-rootfs");
    python_rootfs(&rootfs).context("assembling the Python rootfs")?;
    let def = scratch.join("server.def");
    std::fs::write(&def, server_def(&rootfs))
        .with_context(|| format!("cannot write {}", def.display()))?;
    build_sif(output, &def)
}

/// Writes the image of the application-level checkpoint tests: the Python rootfs plus
/// /opt/fib.py and /opt/ckpt_counter (compiled here, statically, with the host's gcc); its
/// startscript and runscript exec their arguments.
fn write_app_image(output: &Path, scratch: &Path) -> Result<()> {
    let rootfs = scratch.join("app-rootfs");
    python_rootfs(&rootfs).context("assembling the Python rootfs")?;
    let fib = rootfs.join("opt/fib.py");
    std::fs::write(&fib, FIB_PY).with_context(|| format!("cannot write {}", fib.display()))?;
    for (name, source) in [
        ("ckpt_counter", CKPT_COUNTER_C),
        ("sysv_holder", SYSV_HOLDER_C),
        ("memserver", MEMSERVER_C),
    ] {
        let src = scratch.join(format!("{name}.c"));
        std::fs::write(&src, source)?;
        let out = Command::new("gcc")
            .args(["-O2", "-static", "-o"])
            .arg(rootfs.join("opt").join(name))
            .arg(&src)
            .output()
            .context("cannot run gcc (install build-essential: make deps)")?;
        if !out.status.success() {
            bail!(
                "gcc -static {name}.c failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let def = scratch.join("app.def");
    std::fs::write(
        &def,
        format!(
            "{}\n%runscript\n    exec \"$@\"\n",
            exec_def(&rootfs).trim_end()
        ),
    )
    .with_context(|| format!("cannot write {}", def.display()))?;
    build_sif(output, &def)
}

/// The Fibonacci job of the application-level engine tests.
pub const FIB_PY: &str = include_str!("apps/fib.py");
/// The C counter of the application-level engine tests.
pub const CKPT_COUNTER_C: &str = include_str!("apps/ckpt_counter.c");
/// A TCP server holding patterned memory that it checks on request (lazy restore tests).
pub const MEMSERVER_C: &str = include_str!("apps/memserver.c");
/// A holder of SysV semaphores, message queues and shared memory that checks them.
pub const SYSV_HOLDER_C: &str = include_str!("apps/sysv_holder.c");

fn write_busybox_exec_image(output: &Path, scratch: &Path) -> Result<()> {
    let rootfs = scratch.join("busybox-rootfs");
    busybox_rootfs(&rootfs).context("assembling the busybox rootfs")?;
    let def = scratch.join("busybox-exec.def");
    std::fs::write(&def, exec_def(&rootfs))
        .with_context(|| format!("cannot write {}", def.display()))?;
    build_sif(output, &def)
}

/// This process's scratch directory, removed when the process exits normally (test binaries
/// exit through `exit()`, which runs the handler registered here).
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_scratch() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("rctr-e2e-images-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a scratch directory: {e}"))
            .keep();
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(remove_scratch) };
        dir
    })
}

/// Builds an image once per process: later callers get the same file. A failed build is
/// retried by the next caller, so every test depending on it fails with the build's error.
fn cached(
    cell: &'static OnceLock<PathBuf>,
    name: &str,
    write: fn(&Path, &Path) -> Result<()>,
) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(path) = cell.get() {
        return path.clone();
    }
    let _one_at_a_time = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = cell.get() {
        return path.clone();
    }
    let scratch = scratch_dir().join(name);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", scratch.display()));
    let sif = scratch.join(format!("{name}.sif"));
    if let Err(e) = write(&sif, &scratch) {
        panic!("building the {name} test image failed: {e:#}");
    }
    cell.get_or_init(|| sif).clone()
}

/// The counter-server image (Python, `%startscript` runs /opt/counter_server.py PORT).
pub fn server_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    cached(&IMAGE, "server", write_server_image)
}

/// A busybox image whose startscript execs its arguments.
pub fn busybox_exec_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    cached(&IMAGE, "busybox-exec", write_busybox_exec_image)
}

/// The Python image with the application-level checkpoint programs (/opt/fib.py,
/// /opt/ckpt_counter), /opt/sysv_holder and /opt/memserver; startscript and runscript exec their arguments.
pub fn app_image() -> PathBuf {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    cached(&IMAGE, "app", write_app_image)
}
