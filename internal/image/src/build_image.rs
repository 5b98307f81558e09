//! `rctr build OUT.sif SOURCE`: stage a root filesystem next to the output (from a directory,
//! an image, or a definition file), add Apptainer's /.singularity.d layout, copy %files, run
//! %post in it, write the definition's scripts and labels, run %test, pack it as squashfs,
//! wrap it in a SIF, and move the SIF into place atomically. Nothing is left behind on
//! failure.

use crate::apps::create_apps;
use crate::bootstrap::populate;
use crate::buildargs::BuildArgs;
use crate::deffile::{Definition, DefinitionFile, OciKind};
use crate::files::copy_files;
use crate::fsutil::{remove_tree, TreeCopier};
use crate::inspect::{read_attributes, InspectData, InspectMetadata};
use crate::labels::{build_labels, build_time, labels_json};
use crate::layout::{add_base_layout, apply_definition};
use crate::registry::RegistryOptions;
use crate::scriptlets::{
    post_with_apps, require_runner, run_post, run_setup, run_test, take_build_labels, SectionRunner,
};
use crate::source::{ImageSource, INSPECT_METADATA_OBJECT};
use anyhow::{anyhow, bail, Context, Result};
use rctr_sif::SifBuilder;
use rctr_squashfs::{BuildOptions as SquashfsOptions, BuildStats};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a build did.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub output: PathBuf,
    pub size: u64,
    pub squashfs: BuildStats,
    /// Things that could not be reproduced (ownership or device nodes when not root, xattrs).
    pub warnings: Vec<String>,
    pub elapsed: Duration,
}

/// How to build.
#[derive(Clone, Copy, Default)]
pub struct BuildOptions<'a> {
    /// Replace an existing output.
    pub force: bool,
    /// Runs %post and %test in containers. Without one, a definition with %post is refused
    /// and %test is not run.
    pub runner: Option<&'a dyn SectionRunner>,
    /// Do not run %test (`apptainer build --notest`).
    pub notest: bool,
    /// Where relative `From:` and `%files` paths of a definition file start. None: the
    /// current directory, as in Apptainer (not the definition file's directory).
    pub base_dir: Option<&'a Path>,
    /// Write a sandbox directory at the output instead of a SIF file.
    pub sandbox: bool,
    /// `--build-arg` / `--build-arg-file` values for `{{ NAME }}` in the definition.
    pub build_args: Option<&'a BuildArgs>,
    /// How `docker://` sources are fetched.
    pub registry: RegistryOptions,
}

/// Prefix of the staging directories builds make next to their output.
const STAGING_PREFIX: &str = ".rctr-build-";
/// The lock a live build holds in its staging directory.
const STAGING_LOCK: &str = ".lock";
/// A staging directory without a lock file is some build's first moment, or a leftover of a
/// build killed in that moment (or made before locks existed): only the latter gets this old.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// A scratch directory next to the output (same filesystem, so the final rename is atomic),
/// removed with everything in it when dropped. It holds a lock while the build lives, so a
/// later build can tell the tree of a killed build (nothing can clean up after SIGKILL) from
/// one still running, and sweep it.
struct Staging {
    dir: PathBuf,
    _lock: rctr_state::StateLock,
}

impl Staging {
    fn new(dir: &Path) -> Result<Staging> {
        let tmp = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(dir)
            .with_context(|| format!("cannot create a build directory in {}", dir.display()))?;
        let dir = tmp.keep();
        // Locked under another name, then renamed: a `.lock` a sweeper sees is already held.
        let taking = dir.join(".lock.new");
        let lock = rctr_state::lock_exclusive(&taking)
            .and_then(|l| {
                fs::rename(&taking, dir.join(STAGING_LOCK))
                    .with_context(|| format!("cannot rename {}", taking.display()))?;
                Ok(l)
            })
            .inspect_err(|_| remove_tree(&dir))?;
        rctr_log::debug!("build: staging in {}", dir.display());
        Ok(Staging { dir, _lock: lock })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        remove_tree(&self.dir);
    }
}

/// Removes the staging directories in `dir` that no live build holds (left by a killed
/// build). Best effort: a build must not fail because of another one's leftovers.
fn sweep_stale_staging(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()) {
            continue;
        }
        let path = e.path();
        // Never follow a symlink someone planted under that name.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let lock = path.join(STAGING_LOCK);
        let stale = if fs::symlink_metadata(&lock).is_ok() {
            // Taking it proves no build holds it; ours is dropped once the tree is gone.
            matches!(rctr_state::try_lock_exclusive(&lock), Ok(Some(_)))
        } else {
            meta.modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > UNLOCKED_GRACE)
        };
        if stale {
            remove_tree(&path);
            rctr_log::info!(
                "rctr: removed {}, left by an interrupted build",
                path.display()
            );
        }
    }
}

fn is_image_file(path: &Path) -> Result<bool> {
    if !path.is_file() {
        return Ok(false);
    }
    if rctr_sif::is_sif(path)? {
        return Ok(true);
    }
    let mut head = [0u8; 4];
    let n = std::io::Read::read(&mut fs::File::open(path)?, &mut head)?;
    Ok(rctr_squashfs::has_magic(&head[..n]))
}

/// Builds the SIF image `out` from `source`: a root filesystem directory, a SIF or squashfs
/// image, or a definition file (without %post). An existing `out` is only replaced with
/// `force`.
pub fn build(out: &Path, source: &Path, force: bool) -> Result<BuildReport> {
    build_with(
        out,
        source,
        &BuildOptions {
            force,
            ..Default::default()
        },
    )
}

/// What to build from: the stages of a definition file (one for a directory, an image or
/// an OCI source).
fn load_source(source: &Path, opts: &BuildOptions) -> Result<DefinitionFile> {
    let text = source.to_string_lossy();
    if fs::symlink_metadata(source).is_err() {
        if let Some((kind, rest)) = OciKind::from_source(&text) {
            if rest.is_empty() {
                bail!(
                    "{text}: name the image after the \"{}\" prefix",
                    kind.agent()
                );
            }
            return Ok(single(Definition::for_oci(kind, rest)));
        }
    }
    fs::metadata(source)
        .with_context(|| format!("cannot open build source {}", source.display()))?;
    if source.is_dir() || is_image_file(source)? {
        let abs = fs::canonicalize(source)
            .with_context(|| format!("cannot resolve {}", source.display()))?;
        return Ok(single(Definition::for_local_image(&abs)));
    }
    let none = BuildArgs::new();
    let mut file = DefinitionFile::from_file(source, opts.build_args.unwrap_or(&none))?;
    if let Some(dir) = opts.base_dir {
        for def in &mut file.stages {
            def.base_dir = dir.to_path_buf();
        }
    }
    Ok(file)
}

fn single(def: Definition) -> DefinitionFile {
    DefinitionFile {
        stages: vec![def],
        unused_args: Vec::new(),
    }
}

/// Checks `out` can be created: its directory exists, and it does not (unless `force`).
fn check_output(out: &Path, opts: &BuildOptions) -> Result<PathBuf> {
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let what = if opts.sandbox {
        "sandbox directory"
    } else {
        "SIF image"
    };
    if out.file_name().is_none() {
        bail!("{}: not a name for the {what} to create", out.display());
    }
    if !out_dir.is_dir() {
        bail!(
            "cannot create {}: directory {} does not exist",
            out.display(),
            out_dir.display()
        );
    }
    match fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() && !opts.sandbox => bail!(
            "{} is a directory; give the path of the SIF file to create (or use --sandbox)",
            out.display()
        ),
        Ok(m) if !m.is_dir() && opts.sandbox && opts.force => bail!(
            "{} exists and is not a directory; remove it to build a sandbox there",
            out.display()
        ),
        Ok(_) if !opts.force => bail!(
            "{} already exists; use --force to overwrite it",
            out.display()
        ),
        _ => {}
    }
    Ok(out_dir)
}

/// [`build`], with %post and %test run by `opts.runner`.
pub fn build_with(out: &Path, source: &Path, opts: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    let out_dir = check_output(out, opts)?;
    let file = load_source(source, opts)?;
    for def in &file.stages {
        if let Some(post) = post_with_apps(def) {
            require_runner(def, &post, opts.runner)?;
        }
    }

    sweep_stale_staging(&out_dir);
    let staging = Staging::new(&out_dir)?;
    let mut copier = TreeCopier::new();
    copier.skip(&staging.dir);
    copier.skip(out);
    let mut warnings: Vec<String> = file
        .unused_args
        .iter()
        .map(|a| format!("build argument {a} is not used by the definition file"))
        .collect();
    let mut stage_roots: Vec<(String, PathBuf)> = Vec::new();
    let when = build_time();
    let last = file.stages.len() - 1;
    for (i, def) in file.stages.iter().enumerate() {
        let rootfs = if i == last {
            staging.dir.join("rootfs")
        } else {
            staging.dir.join(format!("stage-{i}"))
        };
        if file.stages.len() > 1 {
            let name = def.stage.as_deref().unwrap_or("(unnamed)");
            rctr_log::info!("rctr: stage {}/{}: {name}", i + 1, file.stages.len());
        }
        build_stage(
            def,
            &rootfs,
            &staging.dir,
            &stage_roots,
            &mut copier,
            opts,
            when,
        )?;
        if i == last {
            if let (Some(_), Some(runner), false) = (&def.test, opts.runner, opts.notest) {
                run_test(def, &rootfs, runner)?;
            }
        } else if let Some(name) = &def.stage {
            stage_roots.push((name.clone(), rootfs));
        } else {
            // Nothing can copy from an unnamed stage.
            remove_tree(&rootfs);
        }
    }
    warnings.append(&mut copier.warnings);
    for (_, root) in &stage_roots {
        remove_tree(root);
    }
    let final_def = &file.stages[last];
    let rootfs = staging.dir.join("rootfs");
    if opts.sandbox {
        place_sandbox(&rootfs, out, &staging.dir, opts.force)?;
        return Ok(BuildReport {
            output: out.to_path_buf(),
            size: 0,
            squashfs: BuildStats::default(),
            warnings,
            elapsed: started.elapsed(),
        });
    }

    // The SIF carries Apptainer's inspect metadata, read back from the staged tree.
    let attributes = read_attributes(&ImageSource::open(&rootfs)?)?;
    let labels = labels_json(&attributes.labels);
    let metadata = InspectMetadata {
        data: InspectData { attributes },
        ..Default::default()
    };

    let squashfs = staging.dir.join("rootfs.sqfs");
    let sqfs_opts = SquashfsOptions {
        mkfs_time: Some(when.clamp(0, u32::MAX as i64) as u32),
        ..Default::default()
    };
    let bar = crate::progress::spinner("creating the squashfs image".into());
    let stats = rctr_squashfs::build_from_dir(&rootfs, &squashfs, &sqfs_opts)?;
    bar.finish_and_clear();
    remove_tree(&rootfs); // free the space before the SIF copy of the squashfs is written

    let sif = staging.dir.join("image.sif");
    SifBuilder::new()
        .deffile(final_def.raw.clone().into_bytes())
        .labels_json(labels)
        .json_object(INSPECT_METADATA_OBJECT, metadata.to_json().into_bytes())
        .system_partition(&squashfs, rctr_sif::host_arch())
        .write(&sif)?;
    place(&sif, out, opts.force)?;
    let size = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BuildReport {
        output: out.to_path_buf(),
        size,
        squashfs: stats,
        warnings,
        elapsed: started.elapsed(),
    })
}

/// Makes one stage's root filesystem at `rootfs`: bootstrap, %setup, layout, %files, apps,
/// %post (with %appinstall), labels and scripts.
fn build_stage(
    def: &Definition,
    rootfs: &Path,
    scratch: &Path,
    stage_roots: &[(String, PathBuf)],
    copier: &mut TreeCopier,
    opts: &BuildOptions,
    when: i64,
) -> Result<()> {
    let mut warnings = Vec::new();
    populate(def, rootfs, copier, &opts.registry, &mut warnings)?;
    copier.warnings.append(&mut warnings);
    if let Some(setup) = &def.setup {
        run_setup(def, setup, rootfs, scratch)?;
    }
    add_base_layout(rootfs)?;
    copy_files(def, rootfs, stage_roots, copier)?;
    create_apps(def, rootfs, stage_roots, copier)?;
    if let Some(post) = post_with_apps(def) {
        run_post(def, &post, rootfs, opts.runner)?;
    }
    let post_labels = take_build_labels(rootfs)?;
    let arch = rctr_sif::host_arch();
    apply_definition(rootfs, def, &post_labels, &build_labels(def, arch, when))
}

/// Moves the finished root filesystem onto `out` as a sandbox directory; with `force` an
/// existing one is moved aside first and removed with the staging directory.
fn place_sandbox(rootfs: &Path, out: &Path, staging: &Path, force: bool) -> Result<()> {
    let old = staging.join("replaced");
    let replacing = force && fs::symlink_metadata(out).is_ok_and(|m| m.is_dir());
    if replacing {
        fs::rename(out, &old)
            .with_context(|| format!("cannot move the old {} aside", out.display()))?;
    }
    if let Err(e) = fs::rename(rootfs, out) {
        if replacing {
            let _ = fs::rename(&old, out);
        }
        return Err(e).with_context(|| format!("cannot move the new sandbox to {}", out.display()));
    }
    Ok(())
}

/// Moves the finished SIF onto `out`: atomically replacing it with `force`, else failing if
/// something appeared there meanwhile. Then makes the rename durable.
fn place(sif: &Path, out: &Path, force: bool) -> Result<()> {
    if force {
        fs::rename(sif, out)
            .with_context(|| format!("cannot move the new image to {}", out.display()))?;
    } else {
        let (from, to) = (cstr(sif)?, cstr(out)?);
        // SAFETY: two valid C strings.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EEXIST) => {
                    bail!(
                        "{} appeared while building; use --force to overwrite it",
                        out.display()
                    )
                }
                // Filesystems without RENAME_NOREPLACE: a hard link fails the same way.
                Some(libc::EINVAL) | Some(libc::ENOSYS) => {
                    fs::hard_link(sif, out)
                        .with_context(|| format!("cannot create {}", out.display()))?;
                }
                _ => {
                    return Err(err)
                        .with_context(|| format!("cannot move the new image to {}", out.display()))
                }
            }
        }
    }
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

fn cstr(path: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| anyhow!("{}: path contains a NUL byte", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staging_dirs(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(STAGING_PREFIX))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn sweeping_removes_only_trees_no_live_build_holds() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let live = Staging::new(d).unwrap();
        fs::write(live.dir.join("file"), b"in use").unwrap();
        // A killed build: its lock file is there but nobody holds it.
        let killed = d.join(".rctr-build-killed");
        fs::create_dir_all(killed.join("rootfs/etc")).unwrap();
        fs::write(killed.join(STAGING_LOCK), b"").unwrap();
        // A build that has just created its directory and not yet its lock.
        let fresh = d.join(".rctr-build-fresh");
        fs::create_dir(&fresh).unwrap();
        // Not a staging directory, and a symlink to one: left alone.
        fs::create_dir(d.join("rctr-build-other")).unwrap();
        std::os::unix::fs::symlink(&killed, d.join(".rctr-build-link")).unwrap();

        sweep_stale_staging(d);
        let live_name = live.dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut want = vec![
            ".rctr-build-fresh".to_string(),
            ".rctr-build-link".to_string(),
            live_name,
        ];
        want.sort();
        assert_eq!(staging_dirs(d), want);
        assert_eq!(fs::read(live.dir.join("file")).unwrap(), b"in use");
        assert!(d.join("rctr-build-other").is_dir());
        drop(live);
        assert_eq!(
            staging_dirs(d),
            [".rctr-build-fresh", ".rctr-build-link"].map(String::from)
        );
    }
}
