//! Root filesystem trees for test images, assembled from the host's own files.
//!
//! - [`busybox_rootfs`]: the static /bin/busybox (Debian's busybox-static) and its applets.
//! - [`python_rootfs`]: that plus the host's /usr/bin/python3 with its shared libraries, its
//!   loader and its standard library, and [`COUNTER_SERVER_PY`] as /opt/counter_server.py.
//!
//! Host paths are reproduced exactly, symlinks included (`/lib -> usr/lib` on merged-/usr
//! systems, `libz.so.1 -> libz.so.1.2.13`), so the dynamic loader finds everything where the
//! binaries expect it.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The host's static busybox (package busybox-static).
const HOST_BUSYBOX: &str = "/bin/busybox";

/// The host's Python (Debian's python3 package), not whatever `python3` is first on PATH:
/// pyenv or virtualenv interpreters live under $HOME and are not self-contained.
pub const HOST_PYTHON: &str = "/usr/bin/python3";

/// Applets linked to /bin/busybox in the test images.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ash", "echo", "cat", "sleep", "ls", "seq", "true", "false", "test", "[", "touch",
    "mkdir", "rm", "rmdir", "cp", "mv", "ln", "chmod", "wc", "head", "tail", "env", "id", "ps",
    "kill", "grep", "sed", "tr", "date", "printf", "hostname", "mount", "stat", "readlink", "dd",
    "expr", "uname", "pwd", "find", "sort", "uniq", "tee", "basename", "dirname", "timeout", "yes",
    "cmp", "du", "df", "whoami", "usleep", "nproc",
];

/// The counting TCP server of the checkpoint tests and demo.
pub const COUNTER_SERVER_PY: &str = include_str!("counter_server.py");

/// Top-level directories every test rootfs has, with their modes.
const SKELETON: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("etc", 0o755),
    ("tmp", 0o1777),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("opt", 0o755),
];

/// Standard-library directories left out of the Python image: tests, GUI, installers, the
/// static library, third-party packages. `__pycache__` stays: it makes startup faster.
fn skip_stdlib_entry(name: &str, top_level: bool) -> bool {
    matches!(name, "test" | "tests" | "idle_test")
        || (top_level
            && (matches!(
                name,
                "idlelib"
                    | "tkinter"
                    | "turtledemo"
                    | "ensurepip"
                    | "lib2to3"
                    | "site-packages"
                    | "dist-packages"
            ) || name.starts_with("config-")))
}

/// Creates `dir` (if needed) holding the skeleton, /bin/busybox and the applet symlinks.
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    ensure!(
        Path::new(HOST_BUSYBOX).is_file(),
        "{HOST_BUSYBOX} missing: install the busybox-static package (make deps)"
    );
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, mode) in SKELETON {
        let path = dir.join(name);
        if !path.exists() {
            fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        }
        // Explicitly: create_dir applies the umask, and /tmp needs its sticky bit.
        fs::set_permissions(&path, fs::Permissions::from_mode(*mode))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    let busybox = dir.join("bin/busybox");
    fs::copy(HOST_BUSYBOX, &busybox)
        .with_context(|| format!("cannot copy {HOST_BUSYBOX} to {}", busybox.display()))?;
    for applet in BUSYBOX_APPLETS {
        let link = dir.join("bin").join(applet);
        if fs::symlink_metadata(&link).is_err() {
            symlink("busybox", &link)
                .with_context(|| format!("cannot create {}", link.display()))?;
        }
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(dir.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

/// Creates `dir` holding [`busybox_rootfs`], the host's Python with its libraries and
/// standard library, and /opt/counter_server.py.
pub fn python_rootfs(dir: &Path) -> Result<()> {
    busybox_rootfs(dir)?;
    let python = fs::canonicalize(HOST_PYTHON).with_context(|| {
        format!("{HOST_PYTHON} missing: install the python3 package (make deps)")
    })?;
    let (stdlib, dynload) = python_dirs()?;

    install_host_path(dir, Path::new(HOST_PYTHON))?;
    copy_tree(dir, &stdlib, true)?;
    if !dynload.starts_with(&stdlib) {
        copy_tree(dir, &dynload, false)?;
    }

    // The interpreter's libraries must all be found; an extension module whose library is
    // missing on the host just cannot be imported, as on the host.
    for lib in shared_libraries(std::slice::from_ref(&python), true)? {
        install_host_path(dir, &lib)?;
    }
    let modules: Vec<PathBuf> = fs::read_dir(&dynload)
        .with_context(|| format!("cannot list {}", dynload.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "so"))
        .collect();
    for lib in shared_libraries(&modules, false)? {
        install_host_path(dir, &lib)?;
    }

    let server = dir.join("opt/counter_server.py");
    fs::write(&server, COUNTER_SERVER_PY)
        .with_context(|| format!("cannot write {}", server.display()))?;
    fs::set_permissions(&server, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// The host Python's standard library and extension-module directories, asked of the
/// interpreter itself (isolated mode: no PYTHON* variables, no user site).
fn python_dirs() -> Result<(PathBuf, PathBuf)> {
    let script = "import sys, sysconfig\n\
                  print(sysconfig.get_path('stdlib'))\n\
                  print([p for p in sys.path if p.endswith('lib-dynload')][0])";
    let out = Command::new(HOST_PYTHON)
        .args(["-I", "-c", script])
        .output()
        .with_context(|| format!("cannot run {HOST_PYTHON}"))?;
    ensure!(
        out.status.success(),
        "{HOST_PYTHON} could not report its library directories: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(|l| PathBuf::from(l.trim()));
    match (lines.next(), lines.next()) {
        (Some(stdlib), Some(dynload)) if stdlib.is_absolute() && dynload.is_absolute() => {
            Ok((stdlib, dynload))
        }
        _ => bail!("unexpected answer from {HOST_PYTHON} about its library directories: {text:?}"),
    }
}

/// The shared libraries (and dynamic loader) `elfs` load, by absolute host path, from `ldd`.
/// With `strict`, a library ldd cannot find is an error.
fn shared_libraries(elfs: &[PathBuf], strict: bool) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    if elfs.is_empty() {
        return Ok(libs);
    }
    // ldd exits non-zero when one of several files is not dynamic; the listing still holds.
    let out = Command::new("ldd")
        .args(elfs)
        .output()
        .context("cannot run ldd (package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().filter(|l| l.starts_with('\t')) {
        let line = line.trim();
        if line.contains("not found") {
            ensure!(
                !strict,
                "ldd: {} needs a library the host lacks: {line}",
                elfs[0].display()
            );
            continue;
        }
        // "name => /path (0x...)", "/path (0x...)", or "linux-vdso.so.1 (0x...)" (no file).
        let target = line.split_once("=> ").map_or(line, |(_, t)| t);
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.insert(PathBuf::from(path));
        }
    }
    ensure!(
        !strict || !libs.is_empty(),
        "ldd listed no libraries for {}: {}",
        elfs[0].display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(libs)
}

/// Installs the host program `path` under `root` with the shared libraries and loader it
/// needs (as ldd lists them), at their host paths.
pub fn install_host_program(root: &Path, path: &Path) -> Result<()> {
    install_host_path(root, path)?;
    let real = fs::canonicalize(path).with_context(|| format!("{} missing", path.display()))?;
    for lib in shared_libraries(&[real], true)? {
        install_host_path(root, &lib)?;
    }
    Ok(())
}

/// Reproduces host path `path` (absolute) under `root`: every directory on the way, every
/// symlink on the way as the same symlink (then follows it, so its target is installed too),
/// and the final file's contents and mode. Existing entries are kept.
pub fn install_host_path(root: &Path, path: &Path) -> Result<()> {
    install_path(root, path, 0)
}

fn install_path(root: &Path, path: &Path, depth: u32) -> Result<()> {
    ensure!(
        depth < 40,
        "too many levels of symbolic links resolving {}",
        path.display()
    );
    ensure!(
        path.is_absolute(),
        "host path {} must be absolute",
        path.display()
    );
    let parts: Vec<Component> = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let mut host = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        host.push(part);
        let inside = root.join(host.strip_prefix("/").expect("host path is absolute"));
        let meta = fs::symlink_metadata(&host)
            .with_context(|| format!("host path {} is missing", host.display()))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&host)?;
            if fs::symlink_metadata(&inside).is_err() {
                symlink(&target, &inside)
                    .with_context(|| format!("cannot create symlink {}", inside.display()))?;
            }
            let mut resolved = host.parent().unwrap_or(Path::new("/")).join(&target);
            for rest in &parts[i + 1..] {
                resolved.push(rest);
            }
            return install_path(root, &normalize(&resolved), depth + 1);
        }
        if meta.is_dir() {
            create_dir_like(&inside, &meta)?;
        } else if i + 1 == parts.len() {
            if !inside.exists() {
                fs::copy(&host, &inside).with_context(|| {
                    format!("cannot copy {} to {}", host.display(), inside.display())
                })?;
            }
        } else {
            bail!("{} is not a directory", host.display());
        }
    }
    Ok(())
}

/// Creates directory `inside` with the mode of the host directory `meta` describes, unless
/// it exists already.
fn create_dir_like(inside: &Path, meta: &fs::Metadata) -> Result<()> {
    if !inside.exists() {
        fs::DirBuilder::new()
            .mode(meta.permissions().mode() & 0o7777)
            .create(inside)
            .with_context(|| format!("cannot create {}", inside.display()))?;
    }
    Ok(())
}

/// Lexically removes `.` and `..` (symlinks were already resolved component by component).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Copies host directory `src` to the same path under `root`. Symlinks inside are replaced
/// by copies of what they point to (Debian links stdlib files to /etc), dangling ones skipped.
fn copy_tree(root: &Path, src: &Path, stdlib: bool) -> Result<()> {
    install_host_path(root, src)?;
    copy_dir_contents(root, src, stdlib, true)
}

fn copy_dir_contents(root: &Path, src: &Path, stdlib: bool, top_level: bool) -> Result<()> {
    let entries = fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if stdlib && skip_stdlib_entry(&name.to_string_lossy(), top_level) {
            continue;
        }
        let host = entry.path();
        let inside = root.join(host.strip_prefix("/").expect("host path is absolute"));
        // Follows symlinks; a dangling one has nothing to copy.
        let Ok(meta) = fs::metadata(&host) else {
            continue;
        };
        if meta.is_dir() {
            create_dir_like(&inside, &meta)?;
            copy_dir_contents(root, &host, stdlib, false)?;
        } else if meta.is_file() && !inside.exists() {
            fs::copy(&host, &inside).with_context(|| {
                format!("cannot copy {} to {}", host.display(), inside.display())
            })?;
        }
    }
    Ok(())
}
