//! `--nv`: the host's NVIDIA driver inside a container, as Apptainer's `--nv` does: the
//! device nodes, the driver's user-space libraries (found through the host's linker cache)
//! and its tools, all bound read-only, chosen by a list in the format of Apptainer's
//! `nvliblist.conf`. The driver must come from the host: its libraries have to match the
//! kernel module exactly, so an image cannot carry them.

use crate::plan::MountEntry;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The list rctr ships (`etc/nvliblist.conf`).
pub const BUILTIN_LIST: &str = include_str!("../../../etc/nvliblist.conf");
/// A site's own list replaces the shipped one.
pub const SITE_LIST: &str = "/etc/rctr/nvliblist.conf";
/// Where the libraries go; the image's env scripts put it on LD_LIBRARY_PATH.
const CONTAINER_LIBS: &str = "/.singularity.d/libs";
const CONTAINER_BIN: &str = "/usr/bin";

/// Names of the driver's programs and libraries to bring in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvList {
    pub programs: Vec<String>,
    /// Library names without version (`libcuda.so`); every version found is bound.
    pub libraries: Vec<String>,
}

impl NvList {
    pub fn parse(text: &str) -> NvList {
        let names = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty() && !l.contains('/'));
        let (libraries, programs) = names.map(str::to_string).partition(|n| n.ends_with(".so"));
        NvList {
            programs,
            libraries,
        }
    }

    /// The site's list if there is one, else the shipped one.
    pub fn load() -> Result<NvList> {
        match std::fs::read_to_string(SITE_LIST) {
            Ok(text) => Ok(NvList::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NvList::parse(BUILTIN_LIST)),
            Err(e) => Err(e).with_context(|| format!("--nv: cannot read {SITE_LIST}")),
        }
    }
}

/// What the host offers, gathered once so that the choice below is testable anywhere.
#[derive(Debug, Clone)]
pub struct HostDriver {
    /// The host's /dev.
    pub dev_dir: PathBuf,
    /// `ldconfig -p` output.
    pub linker_cache: String,
    /// The host's PATH, for the programs.
    pub path: Vec<PathBuf>,
}

impl HostDriver {
    pub fn this_host() -> HostDriver {
        HostDriver {
            dev_dir: PathBuf::from("/dev"),
            linker_cache: linker_cache(),
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        }
    }
}

/// `ldconfig -p`, from wherever the host keeps it (sbin is often off a user's PATH).
fn linker_cache() -> String {
    for ldconfig in ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"] {
        if let Ok(out) = std::process::Command::new(ldconfig).arg("-p").output() {
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
        }
    }
    String::new()
}

/// The linker cache's tag for libraries of this build's architecture.
fn own_arch_tag() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "x86-64"
    } else if cfg!(target_arch = "aarch64") {
        "AArch64"
    } else {
        "libc6"
    }
}

/// `name -> host path` of the linker cache's libraries for this architecture, e.g.
/// `\tlibcuda.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so.1`.
fn cached_libraries(cache: &str) -> BTreeMap<String, PathBuf> {
    let arch = own_arch_tag();
    cache
        .lines()
        .filter_map(|line| {
            let (left, path) = line.split_once(" => ")?;
            let (name, tags) = left.trim().split_once(' ')?;
            tags.contains(arch)
                .then(|| (name.to_string(), PathBuf::from(path.trim())))
        })
        .collect()
}

/// The NVIDIA device nodes: /dev/nvidia*, and /dev/nvidia-caps/* (MIG).
fn device_nodes(dev_dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    let Ok(entries) = std::fs::read_dir(dev_dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("nvidia") {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            if let Ok(inner) = std::fs::read_dir(&path) {
                found.extend(inner.flatten().map(|e| e.path()));
            }
        } else {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// The read-only binds `--nv` adds, or a one-line error on a host without the driver.
pub fn driver_mounts(list: &NvList, host: &HostDriver) -> Result<Vec<MountEntry>> {
    let devices = device_nodes(&host.dev_dir);
    let libraries = cached_libraries(&host.linker_cache);
    let has_control = devices.iter().any(|d| d.ends_with("nvidiactl"));
    let has_libcuda = libraries.keys().any(|n| n.starts_with("libcuda.so"));
    if !has_control || !has_libcuda {
        let mut missing = vec![];
        if !has_control {
            missing.push(format!("no {}", host.dev_dir.join("nvidiactl").display()));
        }
        if !has_libcuda {
            missing.push("no libcuda.so in the linker cache".to_string());
        }
        bail!(
            "--nv: no NVIDIA driver on this host ({}); run without --nv, or on a node with the NVIDIA driver installed",
            missing.join(", ")
        );
    }
    let mut mounts = vec![];
    for dev in &devices {
        let rel = dev.strip_prefix(&host.dev_dir).unwrap_or(dev);
        mounts.push(MountEntry::bind(dev, Path::new("/dev").join(rel), false));
    }
    for (name, path) in &libraries {
        if list.libraries.iter().any(|l| name.starts_with(l.as_str())) {
            mounts.push(MountEntry::bind(
                path,
                Path::new(CONTAINER_LIBS).join(name),
                true,
            ));
        }
    }
    for program in &list.programs {
        if let Some(found) = host
            .path
            .iter()
            .map(|d| d.join(program))
            .find(|p| p.is_file())
        {
            mounts.push(MountEntry::bind(
                found,
                Path::new(CONTAINER_BIN).join(program),
                true,
            ));
        }
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::MountSource;

    fn dsts(mounts: &[MountEntry]) -> Vec<String> {
        mounts
            .iter()
            .map(|m| m.dst.to_string_lossy().into_owned())
            .collect()
    }

    fn host_with(devices: &[&str], cache: &str) -> (tempfile::TempDir, HostDriver) {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(dev.join("nvidia-caps")).unwrap();
        for d in devices {
            std::fs::write(dev.join(d), "").unwrap();
        }
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("nvidia-smi"), "").unwrap();
        let host = HostDriver {
            dev_dir: dev,
            linker_cache: cache.to_string(),
            path: vec![dir.path().join("empty"), bin],
        };
        (dir, host)
    }

    const CACHE: &str = "1234 libs found in cache `/etc/ld.so.cache'
\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
\tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1
\tlibcuda.so (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so
\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
";

    #[test]
    fn the_shipped_list_names_libcuda_and_nvidia_smi() {
        let list = NvList::parse(BUILTIN_LIST);
        assert!(list.libraries.contains(&"libcuda.so".to_string()));
        assert!(list.libraries.contains(&"libnvidia-ml.so".to_string()));
        assert!(list.programs.contains(&"nvidia-smi".to_string()));
        assert!(list.programs.iter().all(|p| !p.ends_with(".so")));
    }

    #[test]
    fn devices_libraries_of_this_arch_and_programs_are_bound() {
        let (_dir, host) = host_with(&["nvidiactl", "nvidia0", "nvidia-uvm", "null"], CACHE);
        std::fs::write(host.dev_dir.join("nvidia-caps/nvidia-cap1"), "").unwrap();
        let mounts = driver_mounts(&NvList::parse(BUILTIN_LIST), &host).unwrap();
        let got = dsts(&mounts);
        for want in [
            "/dev/nvidiactl",
            "/dev/nvidia0",
            "/dev/nvidia-uvm",
            "/dev/nvidia-caps/nvidia-cap1",
            "/.singularity.d/libs/libcuda.so.1",
            "/.singularity.d/libs/libcuda.so",
            "/.singularity.d/libs/libnvidia-ml.so.1",
            "/usr/bin/nvidia-smi",
        ] {
            assert!(
                got.contains(&want.to_string()),
                "{want} missing from {got:?}"
            );
        }
        // Not the driver's: the CUDA runtime belongs to the image, libc to the host.
        assert!(!got
            .iter()
            .any(|d| d.contains("libcudart") || d.contains("libc.so")));
        assert!(!got.contains(&"/dev/null".to_string()));
        // The 64-bit libcuda, not the 32-bit one.
        let libcuda = mounts
            .iter()
            .find(|m| m.dst.ends_with("libcuda.so.1"))
            .unwrap();
        assert!(
            matches!(&libcuda.source, MountSource::Bind { src } if src.starts_with("/usr/lib/x86_64-linux-gnu"))
        );
        assert!(libcuda.readonly);
    }

    #[test]
    fn a_host_without_the_driver_is_one_clear_error() {
        let (_dir, host) = host_with(&[], "");
        let err = driver_mounts(&NvList::parse(BUILTIN_LIST), &host)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--nv: no NVIDIA driver on this host"),
            "{err}"
        );
        assert!(
            err.contains("nvidiactl") && err.contains("libcuda.so"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        // Devices without the library (a driver half-installed) are refused too.
        let (_dir, host) = host_with(&["nvidiactl"], "");
        let err = driver_mounts(&NvList::parse(BUILTIN_LIST), &host)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no libcuda.so") && !err.contains("no /"),
            "{err}"
        );
    }

    #[test]
    fn comments_blank_lines_and_paths_are_not_names() {
        let list = NvList::parse("# c\n\n libfoo.so # tail\nbar\n/abs/path\n");
        assert_eq!(list.libraries, vec!["libfoo.so"]);
        assert_eq!(list.programs, vec!["bar"]);
    }
}
