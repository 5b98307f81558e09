//! The engine bundle: the engine binaries, their libraries and the loader copied once into a
//! self-contained directory that is bind-mounted read-only into containers.
//!
//! Layout: `bin/<binary>`, `lib/<library name>` (loader included, no symlinks) and
//! `bundle.json` (what came from where, with checksums). Bundles are cached by content: the
//! directory name is the SHA-256 of the layout version and every file's name and contents, so
//! an updated CRIU or library yields a new bundle while unchanged files reuse the old one.
//! A bundle is assembled in a temporary directory next to the cache entries and renamed into
//! place, so readers never see a half-built one and concurrent builders cannot collide.

use crate::conf::CriuConf;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Bumped whenever the bundle layout or manifest changes, which invalidates cached bundles.
pub const LAYOUT_VERSION: u32 = 1;
/// Where root keeps bundles.
pub const ROOT_CACHE_DIR: &str = "/var/lib/rctr/engine-bundles";
const MANIFEST: &str = "bundle.json";
const STAGING_PREFIX: &str = ".tmp-";
/// `<key>` -> `../<bundle id>` symlinks; see [`stat_key`].
const INDEX_DIR: &str = ".index";
/// Staging directories older than this are leftovers of a crashed build.
const STALE_STAGING: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    layout: u32,
    loader: Option<String>,
    bins: Vec<Entry>,
    libs: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    name: String,
    source: PathBuf,
    sha256: String,
}

/// A ready bundle directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineBundle {
    /// The bundle directory on the host.
    pub dir: PathBuf,
    /// Content hash, also the directory name.
    pub id: String,
    /// File name of the loader in `lib/`; `None` for static engines.
    pub loader: Option<String>,
    /// Binaries in `bin/`.
    pub bins: Vec<String>,
    /// Libraries in `lib/` (loader included).
    pub libs: Vec<String>,
    /// Whether this call assembled it (false: it was already cached).
    pub created: bool,
}

/// The cache directory for the current user: [`ROOT_CACHE_DIR`] for root, else
/// `$HOME/.rctr/cache/engine-bundles`.
pub fn default_cache_dir() -> Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from(ROOT_CACHE_DIR));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: cannot place the checkpoint engine cache")?;
    Ok(PathBuf::from(home).join(".rctr/cache/engine-bundles"))
}

/// Returns the bundle for `conf`, assembling it in the default cache if needed.
pub fn ensure_bundle(conf: &CriuConf) -> Result<EngineBundle> {
    ensure_bundle_in(conf, &default_cache_dir()?)
}

/// Returns the bundle for `conf` under `cache_dir`, assembling it if needed.
pub fn ensure_bundle_in(conf: &CriuConf, cache_dir: &Path) -> Result<EngineBundle> {
    prepare_cache_dir(cache_dir)?;
    let sources = sources_of(conf);
    let key = stat_key(conf, &sources)?;
    if let Some(b) = lookup_index(cache_dir, &key, conf, &sources) {
        return Ok(b);
    }
    let bundle = build_or_reuse(conf, cache_dir)?;
    // Only an optimisation: a failure just means hashing again next time.
    let _ = remember(cache_dir, &key, &bundle.id);
    Ok(bundle)
}

/// The content-addressed lookup: hashes every file, builds the bundle if it is new.
fn build_or_reuse(conf: &CriuConf, cache_dir: &Path) -> Result<EngineBundle> {
    // Each file is read once: what is hashed is exactly what gets written.
    let mut bins = Vec::new();
    for (bin, name) in conf.bins.iter().zip(conf.bin_names()) {
        bins.push(read_entry(name, bin)?);
    }
    let mut libs = Vec::new();
    for lib in &conf.closure.libs {
        libs.push(read_entry(lib.name.clone(), &lib.path)?);
    }
    bins.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    libs.sort_by(|a, b| a.0.name.cmp(&b.0.name));

    let manifest = Manifest {
        layout: LAYOUT_VERSION,
        loader: conf.closure.loader.clone(),
        bins: bins.iter().map(|f| f.0.clone()).collect(),
        libs: libs.iter().map(|f| f.0.clone()).collect(),
    };
    let id = bundle_id(&manifest);
    let dir = cache_dir.join(&id);

    if dir.exists() {
        return open_checked(&dir, &id, &manifest, false);
    }

    remove_stale_staging(cache_dir);
    let staging = Staging::create(cache_dir, &id)?;
    for (entry, bytes) in &bins {
        write_file(&staging.path.join("bin").join(&entry.name), bytes, 0o755)?;
    }
    for (entry, bytes) in &libs {
        // The loader is what gets exec'ed; libraries only need to be mapped.
        let is_loader = manifest.loader.as_deref() == Some(entry.name.as_str());
        let mode = if is_loader { 0o755 } else { 0o644 };
        write_file(&staging.path.join("lib").join(&entry.name), bytes, mode)?;
    }
    let json = serde_json::to_vec_pretty(&manifest).context("cannot encode the bundle manifest")?;
    write_file(&staging.path.join(MANIFEST), &json, 0o644)?;
    for d in ["bin", "lib", ""] {
        let p = staging.path.join(d);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot chmod {}", p.display()))?;
        sync_dir(&p)?;
    }

    match fs::rename(&staging.path, &dir) {
        Ok(()) => {
            staging.keep();
            sync_dir(cache_dir)?;
            open_checked(&dir, &id, &manifest, true)
        }
        // Someone else finished the same bundle first: theirs has the same contents.
        Err(_) if dir.exists() => {
            drop(staging);
            open_checked(&dir, &id, &manifest, false)
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot move the engine bundle into place at {}",
                dir.display()
            )
        }),
    }
}

/// Role, name in the bundle and host source of every bundled file.
fn sources_of(conf: &CriuConf) -> Vec<(&'static str, String, PathBuf)> {
    let bins = conf.bins.iter().zip(conf.bin_names());
    let mut v: Vec<_> = bins.map(|(p, n)| ("bin", n, p.clone())).collect();
    v.extend(
        conf.closure
            .libs
            .iter()
            .map(|l| ("lib", l.name.clone(), l.path.clone())),
    );
    v.sort();
    v
}

/// Hashing ~12 MB on every checkpoint costs ~20 ms optimised and ~400 ms in a debug build, so
/// the content address is remembered under a key made of the sources' identities and change
/// times. Engine files are root-owned and root-writable only (see [`crate::trust`]), and any
/// write to them changes their ctime, which not even root can set back.
fn stat_key(conf: &CriuConf, sources: &[(&'static str, String, PathBuf)]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!(
        "rctr-engine-bundle-stat\0layout={LAYOUT_VERSION}\0"
    ));
    h.update(format!(
        "loader={}\0",
        conf.closure.loader.as_deref().unwrap_or("")
    ));
    for (role, name, path) in sources {
        let md = fs::metadata(path)
            .with_context(|| format!("cannot stat engine file {}", path.display()))?;
        h.update(format!(
            "{role}\0{name}\0{}\0{}:{}:{}:{}.{}:{}.{}\0",
            path.display(),
            md.dev(),
            md.ino(),
            md.size(),
            md.mtime(),
            md.mtime_nsec(),
            md.ctime(),
            md.ctime_nsec()
        ));
    }
    Ok(hex(&h.finalize()))
}

fn lookup_index(
    cache_dir: &Path,
    key: &str,
    conf: &CriuConf,
    sources: &[(&'static str, String, PathBuf)],
) -> Option<EngineBundle> {
    let index = cache_dir.join(INDEX_DIR);
    check_owned_dir(&index).ok()?;
    let target = fs::read_link(index.join(key)).ok()?;
    let id = target.to_str()?.strip_prefix("../")?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let dir = cache_dir.join(id);
    // A bundle directory someone else made (or can write) is never taken for ours.
    check_owned_dir(&dir).ok()?;
    let m = read_manifest(&dir).ok()?;
    let mut described: Vec<_> = m
        .bins
        .iter()
        .map(|e| ("bin", e.name.clone(), e.source.clone()))
        .chain(
            m.libs
                .iter()
                .map(|e| ("lib", e.name.clone(), e.source.clone())),
        )
        .collect();
    described.sort();
    (described == sources && m.loader == conf.closure.loader)
        .then(|| EngineBundle::from_manifest(&dir, id.to_string(), &m, false))
}

fn remember(cache_dir: &Path, key: &str, id: &str) -> Result<()> {
    let index = cache_dir.join(INDEX_DIR);
    DirBuilder::new().mode(0o755).create(&index).or_else(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    check_owned_dir(&index)?;
    let tmp = index.join(format!("{STAGING_PREFIX}{key}-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("../{id}"), &tmp)?;
    fs::rename(&tmp, index.join(key)).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    Ok(())
}

impl EngineBundle {
    /// Opens an existing bundle directory from its manifest.
    pub fn open(dir: &Path) -> Result<Self> {
        let m = read_manifest(dir)?;
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        Ok(Self::from_manifest(dir, id, &m, false))
    }

    fn from_manifest(dir: &Path, id: String, m: &Manifest, created: bool) -> Self {
        EngineBundle {
            dir: dir.to_path_buf(),
            id,
            loader: m.loader.clone(),
            bins: m.bins.iter().map(|e| e.name.clone()).collect(),
            libs: m.libs.iter().map(|e| e.name.clone()).collect(),
            created,
        }
    }

    /// The argv that runs engine binary `bin` with `args`, for a bundle mounted at
    /// `mount_point` (e.g. "/.rctr-engine" inside the container). Dynamic engines go through
    /// the bundled loader with only the bundle's lib/ searched and the container's
    /// ld.so.cache ignored, so the container's libc (or lack of one) never matters.
    pub fn command_argv(
        &self,
        mount_point: &str,
        bin: &str,
        args: &[String],
    ) -> Result<Vec<String>> {
        ensure!(
            mount_point.starts_with('/'),
            "engine mount point {mount_point:?} must be an absolute path"
        );
        ensure!(
            self.bins.iter().any(|b| b == bin),
            "the checkpoint engine bundle {} has no binary {bin:?} (it has: {})",
            self.dir.display(),
            self.bins.join(", ")
        );
        let mp = mount_point.trim_end_matches('/');
        let mut argv = match &self.loader {
            Some(loader) => vec![
                format!("{mp}/lib/{loader}"),
                "--library-path".to_string(),
                format!("{mp}/lib"),
                "--inhibit-cache".to_string(),
                format!("{mp}/bin/{bin}"),
            ],
            None => vec![format!("{mp}/bin/{bin}")],
        };
        argv.extend(args.iter().cloned());
        Ok(argv)
    }

    /// [`Self::command_argv`] for running the engine on the host, straight from the cache.
    pub fn host_argv(&self, bin: &str, args: &[String]) -> Result<Vec<String>> {
        let dir = self
            .dir
            .to_str()
            .with_context(|| format!("bundle path {} is not UTF-8", self.dir.display()))?;
        self.command_argv(dir, bin, args)
    }

    /// Re-reads every file and compares it with the manifest's checksums.
    pub fn verify(&self) -> Result<()> {
        let m = read_manifest(&self.dir)?;
        for (sub, entries) in [("bin", &m.bins), ("lib", &m.libs)] {
            for e in entries {
                let p = self.dir.join(sub).join(&e.name);
                let bytes = fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
                if sha256_hex(&bytes) != e.sha256 {
                    bail!(
                        "{} differs from when the bundle was built: remove {} to rebuild it",
                        p.display(),
                        self.dir.display()
                    );
                }
            }
        }
        Ok(())
    }
}

fn read_entry(name: String, source: &Path) -> Result<(Entry, Vec<u8>)> {
    let bytes = fs::read(source)
        .with_context(|| format!("cannot read engine file {}", source.display()))?;
    let entry = Entry {
        name,
        source: source.to_path_buf(),
        sha256: sha256_hex(&bytes),
    };
    Ok((entry, bytes))
}

/// The content address: layout version, loader, and each file's role, name and checksum
/// (sources are left out: the same bytes from another path are the same bundle).
fn bundle_id(m: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(format!("rctr-engine-bundle\0layout={}\0", m.layout));
    h.update(format!("loader={}\0", m.loader.as_deref().unwrap_or("")));
    for (role, entries) in [("bin", &m.bins), ("lib", &m.libs)] {
        for e in entries {
            h.update(format!("{role}\0{}\0{}\0", e.name, e.sha256));
        }
    }
    hex(&h.finalize())
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let p = dir.join(MANIFEST);
    let text =
        fs::read(&p).with_context(|| format!("{} is not an engine bundle", dir.display()))?;
    let m: Manifest = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is corrupt: remove {} to rebuild it",
            p.display(),
            dir.display()
        )
    })?;
    ensure!(
        m.layout == LAYOUT_VERSION,
        "{} has bundle layout {} but this rctr uses {LAYOUT_VERSION}",
        dir.display(),
        m.layout
    );
    Ok(m)
}

/// Opens the cached bundle `dir` and checks it describes the expected files.
fn open_checked(dir: &Path, id: &str, expected: &Manifest, created: bool) -> Result<EngineBundle> {
    check_owned_dir(dir)?;
    let m = read_manifest(dir)?;
    let same = |a: &[Entry], b: &[Entry]| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.name == y.name && x.sha256 == y.sha256)
    };
    if m.loader != expected.loader
        || !same(&m.bins, &expected.bins)
        || !same(&m.libs, &expected.libs)
    {
        bail!(
            "the cached engine bundle {} does not match its name: remove it to rebuild it",
            dir.display()
        );
    }
    Ok(EngineBundle::from_manifest(
        dir,
        id.to_string(),
        &m,
        created,
    ))
}

/// Creates the cache directory if needed and refuses one others could tamper with.
fn prepare_cache_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("cannot create the engine bundle cache {}", dir.display()))?;
    check_owned_dir(dir)?;
    // Root's bundles run as root in every container: nobody else may rename the cache
    // (or a directory above it) either.
    if nix::unistd::geteuid().is_root() {
        crate::trust::ensure_root_controlled(dir)?;
    }
    Ok(())
}

/// A directory of ours: owned by the effective user and writable by nobody else.
fn check_owned_dir(dir: &Path) -> Result<()> {
    let md = fs::metadata(dir).with_context(|| format!("cannot stat {}", dir.display()))?;
    let euid = nix::unistd::geteuid().as_raw();
    if md.uid() != euid {
        bail!(
            "{} is owned by uid {}, not by you (uid {euid}): refusing to use it for engine bundles",
            dir.display(),
            md.uid()
        );
    }
    if md.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by group or others (mode {:04o}): refusing to use it for engine \
             bundles (chmod go-w {})",
            dir.display(),
            md.mode() & 0o7777,
            dir.display()
        );
    }
    Ok(())
}

/// A staging directory removed on drop unless kept.
struct Staging {
    path: PathBuf,
    kept: bool,
}

impl Staging {
    fn create(cache_dir: &Path, id: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = cache_dir.join(format!(
            "{STAGING_PREFIX}{}-{}-{nanos}",
            &id[..12],
            std::process::id()
        ));
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let staging = Staging { path, kept: false };
        for sub in ["bin", "lib"] {
            let p = staging.path.join(sub);
            DirBuilder::new()
                .mode(0o700)
                .create(&p)
                .with_context(|| format!("cannot create {}", p.display()))?;
        }
        Ok(staging)
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Best effort: staging directories left behind by a crashed build.
fn remove_stale_staging(cache_dir: &Path) {
    let Ok(entries) = fs::read_dir(cache_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(STAGING_PREFIX) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_STAGING);
        if old {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(loader: Option<&str>) -> EngineBundle {
        EngineBundle {
            dir: PathBuf::from("/var/lib/rctr/engine-bundles/abc"),
            id: "abc".into(),
            loader: loader.map(str::to_string),
            bins: vec!["criu".into()],
            libs: vec!["libc.so.6".into()],
            created: false,
        }
    }

    #[test]
    fn argv_goes_through_the_bundled_loader() {
        let argv = bundle(Some("ld-linux-x86-64.so.2"))
            .command_argv("/.rctr-engine/", "criu", &["check".to_string()])
            .unwrap();
        assert_eq!(
            argv,
            [
                "/.rctr-engine/lib/ld-linux-x86-64.so.2",
                "--library-path",
                "/.rctr-engine/lib",
                "--inhibit-cache",
                "/.rctr-engine/bin/criu",
                "check"
            ]
        );
    }

    #[test]
    fn static_engine_runs_directly() {
        let argv = bundle(None).command_argv("/e", "criu", &[]).unwrap();
        assert_eq!(argv, ["/e/bin/criu"]);
    }

    #[test]
    fn unknown_binary_and_relative_mount_point_are_refused() {
        let b = bundle(Some("ld.so"));
        assert!(b.command_argv("/e", "dmtcp", &[]).is_err());
        assert!(b.command_argv("e", "criu", &[]).is_err());
    }

    #[test]
    fn id_depends_on_contents_and_names() {
        let entry = |name: &str, sha: &str| Entry {
            name: name.into(),
            source: PathBuf::from("/x"),
            sha256: sha.into(),
        };
        let m = |bins: Vec<Entry>| Manifest {
            layout: LAYOUT_VERSION,
            loader: Some("ld.so".into()),
            bins,
            libs: vec![entry("libc.so.6", "11")],
        };
        let a = bundle_id(&m(vec![entry("criu", "aa")]));
        assert_eq!(a.len(), 64);
        assert_eq!(a, bundle_id(&m(vec![entry("criu", "aa")])));
        assert_ne!(a, bundle_id(&m(vec![entry("criu", "ab")])));
        assert_ne!(a, bundle_id(&m(vec![entry("criu2", "aa")])));
        let mut moved = m(vec![entry("criu", "aa")]);
        moved.bins[0].source = PathBuf::from("/elsewhere");
        assert_eq!(a, bundle_id(&moved));
    }
}
