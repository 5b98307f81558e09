//! The full dynamic-library closure of a set of binaries, loader included.
//!
//! The engine bundle runs its binaries as `<lib>/<loader> --library-path <lib> <bin>` with
//! every library in one flat directory, so what matters is, for each library *name* a binary
//! or library asks for (DT_NEEDED), which host file to copy there. Names are looked up like
//! the dynamic linker would on the host: the requesting object's DT_RUNPATH (or DT_RPATH) with
//! `$ORIGIN` expanded, then the configured search directories in order; files of another
//! architecture are skipped. The first file found for a name serves every requester, as the
//! dynamic linker's soname de-duplication does at run time.

use super::elf::{self, ElfInfo, ElfKind};
use anyhow::{bail, Context, Result};
use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One library of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibFile {
    /// The name it is asked for by, and is stored under in the bundle (e.g. `libc.so.6`).
    pub name: String,
    /// The host file, with symlinks resolved.
    pub path: PathBuf,
}

/// An extra library to include, as given in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibSpec {
    /// A file name looked up in the search directories.
    Name(String),
    /// An absolute path; stored in the bundle under its file name.
    Path(PathBuf),
}

/// What goes into the bundle's lib/ directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Architecture of every file in the closure.
    pub kind: ElfKind,
    /// Name of the dynamic loader within `libs`; `None` when all binaries are static.
    pub loader: Option<String>,
    /// Every library, the loader included, in discovery order.
    pub libs: Vec<LibFile>,
}

impl Closure {
    /// The host file of the library stored as `name`.
    pub fn lib(&self, name: &str) -> Option<&LibFile> {
        self.libs.iter().find(|l| l.name == name)
    }
}

/// Inputs of [`closure`].
#[derive(Debug, Clone, Copy)]
pub struct ClosureRequest<'a> {
    pub bins: &'a [PathBuf],
    pub extra_libs: &'a [LibSpec],
    pub search_dirs: &'a [PathBuf],
    /// Explicit loader; by default the file named like PT_INTERP found in `search_dirs`.
    pub loader: Option<&'a Path>,
}

/// A name still to resolve, and who asked for it (for error messages and $ORIGIN).
struct Pending {
    name: String,
    requester: PathBuf,
    dirs: Vec<PathBuf>,
}

/// Computes the closure of `req.bins` plus `req.extra_libs`.
pub fn closure(req: &ClosureRequest<'_>) -> Result<Closure> {
    let first = req.bins.first().context("no engine binary given")?;
    let mut kind = None;
    let mut interp: Option<(String, PathBuf)> = None; // (PT_INTERP, binary declaring it)
    let mut queue = VecDeque::new();

    for bin in req.bins {
        let info = elf::read(bin)?;
        check_kind(&mut kind, info.kind, bin)?;
        if let Some(i) = &info.interp {
            match &interp {
                Some((seen, by)) if base_name(seen) != base_name(i) => bail!(
                    "{} wants loader {i} but {} wants {seen}: one bundle has one loader, \
                     use separate engines",
                    bin.display(),
                    by.display()
                ),
                Some(_) => {}
                None => interp = Some((i.clone(), bin.clone())),
            }
        }
        enqueue_needed(&mut queue, &info, bin)?;
    }
    let kind = kind.unwrap_or_else(|| unreachable!("at least one binary was read"));

    let mut found = Found::default();

    // The loader first, so that a DT_NEEDED of the same name (libc.so.6 and friends link
    // against ld-linux-*.so.*) maps to the very same file.
    let loader_name = match (&interp, req.loader) {
        (None, Some(l)) => bail!(
            "loader {} is set but {} is statically linked and needs none",
            l.display(),
            first.display()
        ),
        (None, None) => None,
        (Some((interp, by)), explicit) => {
            let name = base_name(interp).to_string();
            let path = match explicit {
                Some(l) => {
                    let info = elf::read(l).context("loader")?;
                    check_kind(&mut Some(kind), info.kind, l)?;
                    real(l)?
                }
                None => find_in(&name, req.search_dirs, kind)
                    .or_else(|| accept(Path::new(interp), kind))
                    .with_context(|| {
                        format!(
                            "dynamic loader {name} (PT_INTERP {interp} of {}) not found in {}",
                            by.display(),
                            list_dirs(req.search_dirs)
                        )
                    })?,
            };
            let info = elf::read(&path)?;
            enqueue_needed(&mut queue, &info, &path)?;
            found.add(LibFile {
                name: name.clone(),
                path,
            });
            Some(name)
        }
    };

    for spec in req.extra_libs {
        let lib = match spec {
            LibSpec::Name(name) => LibFile {
                name: name.clone(),
                path: find_in(name, req.search_dirs, kind).with_context(|| {
                    format!("library {name} not found in {}", list_dirs(req.search_dirs))
                })?,
            },
            LibSpec::Path(p) => {
                let info = elf::read(p)?;
                check_kind(&mut Some(kind), info.kind, p)?;
                LibFile {
                    name: base_name_of(p)?,
                    path: real(p)?,
                }
            }
        };
        if found.has(&lib.name) {
            continue;
        }
        let info = elf::read(&lib.path)?;
        enqueue_needed(&mut queue, &info, &lib.path)?;
        found.add(lib);
    }

    while let Some(p) = queue.pop_front() {
        if found.has(&p.name) {
            continue;
        }
        if p.name.contains('/') {
            bail!(
                "{} needs {} by path; only plain library names can be bundled",
                p.requester.display(),
                p.name
            );
        }
        let dirs: Vec<PathBuf> = p.dirs.iter().chain(req.search_dirs).cloned().collect();
        let path = find_in(&p.name, &dirs, kind).with_context(|| {
            format!(
                "library {} (needed by {}) not found in {}",
                p.name,
                p.requester.display(),
                list_dirs(&dirs)
            )
        })?;
        let info = elf::read(&path)?;
        enqueue_needed(&mut queue, &info, &path)?;
        found.add(LibFile { name: p.name, path });
    }

    let closure = Closure {
        kind,
        loader: loader_name,
        libs: found.libs,
    };
    check_same_glibc(&closure)?;
    Ok(closure)
}

/// Libraries resolved so far, in discovery order, one per name.
#[derive(Default)]
struct Found {
    libs: Vec<LibFile>,
    names: HashSet<String>,
}

impl Found {
    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }
    fn add(&mut self, lib: LibFile) {
        self.names.insert(lib.name.clone());
        self.libs.push(lib);
    }
}

fn enqueue_needed(queue: &mut VecDeque<Pending>, info: &ElfInfo, obj: &Path) -> Result<()> {
    let origin = real(obj)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    // DT_RUNPATH, when present, makes the dynamic linker ignore DT_RPATH.
    let raw = if info.runpath.is_empty() {
        &info.rpath
    } else {
        &info.runpath
    };
    let dirs: Vec<PathBuf> = raw
        .iter()
        .filter_map(|d| expand_origin(d, &origin))
        .collect();
    for name in &info.needed {
        queue.push_back(Pending {
            name: name.clone(),
            requester: obj.to_path_buf(),
            dirs: dirs.clone(),
        });
    }
    Ok(())
}

/// Expands `$ORIGIN`; entries with other dynamic-string tokens ($LIB, $PLATFORM) or relative
/// paths are dropped: they depend on the run-time environment, not on files we can see.
fn expand_origin(dir: &str, origin: &Path) -> Option<PathBuf> {
    let o = origin.to_str()?;
    let d = dir.replace("${ORIGIN}", o).replace("$ORIGIN", o);
    (!d.contains('$') && d.starts_with('/')).then(|| PathBuf::from(d))
}

/// The first `dir/name` that is an ELF file of architecture `kind`.
fn find_in(name: &str, dirs: &[PathBuf], kind: ElfKind) -> Option<PathBuf> {
    dirs.iter().find_map(|d| accept(&d.join(name), kind))
}

fn accept(candidate: &Path, kind: ElfKind) -> Option<PathBuf> {
    if !candidate.is_file() {
        return None;
    }
    let info = elf::read(candidate).ok()?;
    (info.kind == kind).then(|| real(candidate).ok()).flatten()
}

fn check_kind(expected: &mut Option<ElfKind>, got: ElfKind, file: &Path) -> Result<()> {
    match expected {
        None => *expected = Some(got),
        Some(k) if *k != got => bail!(
            "{} is built for another architecture (ELF machine {}, {}-bit) than the engine \
             binaries (machine {}, {}-bit)",
            file.display(),
            got.machine,
            if got.class64 { 64 } else { 32 },
            k.machine,
            if k.class64 { 64 } else { 32 },
        ),
        Some(_) => {}
    }
    Ok(())
}

/// The loader and libc.so.6 share private interfaces: they must be the same glibc release,
/// or the engine dies at start-up with symbol errors (e.g. a host loader with a newer libc).
fn check_same_glibc(c: &Closure) -> Result<()> {
    let (Some(loader), Some(libc)) = (
        c.loader.as_deref().and_then(|n| c.lib(n)),
        c.lib("libc.so.6"),
    ) else {
        return Ok(());
    };
    // Side by side they come from one glibc package; only a split pair is worth the scan.
    if loader.path.parent() == libc.path.parent() {
        return Ok(());
    }
    let release = |p: &Path| -> Result<Option<String>> {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        Ok(elf::glibc_release(&bytes))
    };
    if let (Some(a), Some(b)) = (release(&loader.path)?, release(&libc.path)?) {
        if a != b {
            bail!(
                "the loader {} is glibc {a} but libc.so.6 resolved to {} is glibc {b}: both must \
                 come from the same glibc (list the directory holding both first in lib-paths, \
                 or set loader)",
                loader.path.display(),
                libc.path.display()
            );
        }
    }
    Ok(())
}

fn real(p: &Path) -> Result<PathBuf> {
    p.canonicalize()
        .with_context(|| format!("cannot resolve {}", p.display()))
}

fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn base_name_of(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no usable file name", p.display()))
}

fn list_dirs(dirs: &[PathBuf]) -> String {
    let mut s = String::new();
    for (i, d) in dirs.iter().enumerate() {
        let _ = write!(s, "{}{}", if i == 0 { "" } else { ", " }, d.display());
    }
    if s.is_empty() {
        s.push_str("(no directories)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_dirs() -> Vec<PathBuf> {
        crate::conf::system_lib_dirs()
    }

    #[test]
    fn closure_of_ls_has_libc_and_the_loader() {
        let bins = [PathBuf::from("/bin/ls")];
        let dirs = system_dirs();
        let c = closure(&ClosureRequest {
            bins: &bins,
            extra_libs: &[],
            search_dirs: &dirs,
            loader: None,
        })
        .unwrap();
        let loader = c.loader.as_deref().expect("ls is dynamic");
        assert!(loader.starts_with("ld-linux"), "{loader}");
        assert!(c.lib(loader).unwrap().path.is_file());
        let libc = c.lib("libc.so.6").expect("libc in the closure");
        assert!(libc.path.is_absolute() && libc.path.is_file());
        // Transitive: ls needs libselinux, which needs libpcre2.
        if c.lib("libselinux.so.1").is_some() {
            assert!(
                c.libs.iter().any(|l| l.name.starts_with("libpcre2")),
                "{c:?}"
            );
        }
        // No duplicates.
        let mut names: Vec<_> = c.libs.iter().map(|l| &l.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), c.libs.len());
    }

    #[test]
    fn missing_library_is_a_clear_error() {
        let bins = [PathBuf::from("/bin/ls")];
        let dirs = [PathBuf::from("/nonexistent")];
        let err = closure(&ClosureRequest {
            bins: &bins,
            extra_libs: &[],
            search_dirs: &dirs,
            loader: None,
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("not found in /nonexistent"), "{msg}");
    }

    #[test]
    fn extra_library_by_name_is_included() {
        let bins = [PathBuf::from("/bin/true")];
        let dirs = system_dirs();
        let extra = [LibSpec::Name("libz.so.1".into())];
        if find_in("libz.so.1", &dirs, elf::read(&bins[0]).unwrap().kind).is_none() {
            eprintln!("skipped: libz.so.1 not installed");
            return;
        }
        let c = closure(&ClosureRequest {
            bins: &bins,
            extra_libs: &extra,
            search_dirs: &dirs,
            loader: None,
        })
        .unwrap();
        assert!(c.lib("libz.so.1").is_some(), "{c:?}");
        let missing = [LibSpec::Name("libdoesnotexist.so.7".into())];
        let err = closure(&ClosureRequest {
            bins: &bins,
            extra_libs: &missing,
            search_dirs: &dirs,
            loader: None,
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("libdoesnotexist.so.7 not found"));
    }

    #[test]
    fn expands_origin_and_drops_unknown_tokens() {
        let o = Path::new("/opt/x/bin");
        assert_eq!(
            expand_origin("$ORIGIN/../lib", o),
            Some(PathBuf::from("/opt/x/bin/../lib"))
        );
        assert_eq!(
            expand_origin("${ORIGIN}", o),
            Some(PathBuf::from("/opt/x/bin"))
        );
        assert_eq!(expand_origin("/usr/$LIB", o), None);
        assert_eq!(expand_origin("relative", o), None);
    }

    #[test]
    fn closure_of_criu_uses_the_prefix_glibc() {
        let criu = PathBuf::from("/opt/rctr/criu/bin/criu");
        if !criu.exists() {
            eprintln!("skipped: CRIU not installed (bash etc/setup/install-criu.sh)");
            return;
        }
        let mut dirs = vec![PathBuf::from("/opt/rctr/criu/lib")];
        dirs.extend(system_dirs());
        let bins = [criu];
        let c = closure(&ClosureRequest {
            bins: &bins,
            extra_libs: &[],
            search_dirs: &dirs,
            loader: None,
        })
        .unwrap();
        let loader = c.lib(c.loader.as_deref().unwrap()).unwrap();
        assert!(loader.path.starts_with("/opt/rctr/criu/lib"), "{loader:?}");
        assert!(c
            .lib("libc.so.6")
            .unwrap()
            .path
            .starts_with("/opt/rctr/criu/lib"));
        for name in [
            "libnet.so.9",
            "libnl-3.so.200",
            "libprotobuf-c.so.1",
            "libgnutls.so.30",
        ] {
            assert!(c.lib(name).is_some(), "{name} missing from {c:?}");
        }

        // Pairing the host's loader with the prefix's (newer) libc must be refused.
        let host_loader = system_dirs()
            .iter()
            .map(|d| d.join(&loader.name))
            .find(|p| p.exists());
        if let Some(host_loader) = host_loader {
            let err = closure(&ClosureRequest {
                bins: &bins,
                extra_libs: &[],
                search_dirs: &dirs,
                loader: Some(&host_loader),
            });
            let host_release = elf::glibc_release(&std::fs::read(&host_loader).unwrap());
            let prefix_release = elf::glibc_release(&std::fs::read(&loader.path).unwrap());
            if host_release != prefix_release {
                let msg = format!("{:#}", err.unwrap_err());
                assert!(msg.contains("same glibc"), "{msg}");
            }
        }
    }
}
