//! Apptainer definition files, the part rctr builds: one or more stages, each a header
//! (`Bootstrap:` localimage, scratch, debootstrap, docker, docker-archive, oci, oci-archive;
//! `From:`, `Stage:`, `OSVersion:`, `MirrorURL:`, `Include:`) and the sections %arguments,
//! %setup, %files [from STAGE], %post, %environment, %runscript, %startscript, %test, %labels,
//! %help and the SCIF app sections (%appinstall, %apprun, %appenv, %appfiles, %applabels,
//! %apphelp, %apptest). Anything else is refused with the file and line.

use crate::buildargs::{substitute, BuildArgs};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where the root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// An existing SIF, squashfs or sandbox directory (`From:` as written in the file).
    LocalImage { from: String },
    /// An empty root filesystem.
    Scratch,
    /// The host's debootstrap: `OSVersion:` (suite), `MirrorURL:`, `Include:` packages.
    Debootstrap {
        os_version: String,
        mirror_url: String,
        include: Vec<String>,
    },
    /// An OCI or Docker image: from a registry, a `docker save` archive, an OCI layout
    /// directory or an OCI archive (`From:` as written).
    Oci { kind: OciKind, from: String },
}

/// The OCI/Docker sources, by Apptainer's agent names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciKind {
    /// `docker`: a registry reference.
    Registry,
    /// `docker-archive`: a `docker save` / `podman save` tar file.
    DockerArchive,
    /// `oci`: an OCI image layout directory (optionally `DIR:TAG`).
    Layout,
    /// `oci-archive`: an OCI image layout in a tar file (optionally `FILE:TAG`).
    LayoutArchive,
}

impl OciKind {
    pub fn agent(self) -> &'static str {
        match self {
            OciKind::Registry => "docker",
            OciKind::DockerArchive => "docker-archive",
            OciKind::Layout => "oci",
            OciKind::LayoutArchive => "oci-archive",
        }
    }

    /// The source prefix of a build or pull argument (`docker-archive:x.tar`).
    pub fn from_source(source: &str) -> Option<(OciKind, &str)> {
        for (prefix, kind) in [
            ("docker://", OciKind::Registry),
            ("docker-archive:", OciKind::DockerArchive),
            ("oci-archive:", OciKind::LayoutArchive),
            ("oci:", OciKind::Layout),
        ] {
            if let Some(rest) = source.strip_prefix(prefix) {
                return Some((kind, rest));
            }
        }
        None
    }
}

impl Bootstrap {
    /// The agent name as Apptainer spells it in labels.
    pub fn agent(&self) -> &'static str {
        match self {
            Bootstrap::LocalImage { .. } => "localimage",
            Bootstrap::Scratch => "scratch",
            Bootstrap::Debootstrap { .. } => "debootstrap",
            Bootstrap::Oci { kind, .. } => kind.agent(),
        }
    }

    /// What `From:` said, for the build labels.
    pub fn from(&self) -> Option<&str> {
        match self {
            Bootstrap::LocalImage { from } | Bootstrap::Oci { from, .. } => Some(from),
            Bootstrap::Debootstrap { os_version, .. } => Some(os_version),
            Bootstrap::Scratch => None,
        }
    }
}

/// One `%files` / `%appfiles` line: copy `src` (on the host, or in an earlier stage's root
/// with `%files from STAGE`) to `dst` (in the image; defaults to `src`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransfer {
    pub src: String,
    pub dst: Option<String>,
    /// `%files from STAGE`: the stage whose root `src` is in.
    pub from_stage: Option<String>,
    /// Line number in the definition file, for messages.
    pub line: usize,
}

/// A script section (%setup, %post, %runscript, %startscript, %test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptSection {
    pub script: String,
    /// Words after the section name (e.g. `-c /bin/bash`), without a trailing comment.
    pub args: Vec<String>,
    /// Line of the section header, for messages.
    pub line: usize,
}

/// The name the %post section's type had before other script sections took arguments.
pub type PostSection = ScriptSection;

impl ScriptSection {
    /// The interpreter named by `-c INTERPRETER...`, if any.
    pub fn interpreter(&self) -> Option<String> {
        let c = self.args.iter().position(|a| a == "-c")?;
        Some(self.args[c + 1..].join(" "))
    }
}

/// A SCIF app (`%apprun NAME` and friends): installed under /scif/apps/NAME.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct App {
    pub name: String,
    /// Line of the app's first section, for messages.
    pub line: usize,
    pub install: Option<String>,
    pub run: Option<String>,
    pub env: Option<String>,
    pub test: Option<String>,
    pub help: Option<String>,
    pub labels: Vec<(String, String)>,
    /// `%appfiles` lines; destinations are inside /scif/apps/NAME.
    pub files: Vec<FileTransfer>,
}

/// One stage of a definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The definition file, or the source named in a synthesized definition; for messages.
    pub origin: PathBuf,
    /// Directory relative paths in `From:` and `%files` are taken from: the current directory
    /// when the build started, as in Apptainer.
    pub base_dir: PathBuf,
    /// The text stored in the image as its definition file (build arguments substituted).
    pub raw: String,
    /// `Stage:` name, for `%files from STAGE`.
    pub stage: Option<String>,
    pub bootstrap: Bootstrap,
    pub setup: Option<ScriptSection>,
    pub files: Vec<FileTransfer>,
    pub post: Option<ScriptSection>,
    pub environment: Option<String>,
    pub runscript: Option<ScriptSection>,
    pub startscript: Option<ScriptSection>,
    pub test: Option<ScriptSection>,
    pub help: Option<String>,
    /// `%labels` in file order.
    pub labels: Vec<(String, String)>,
    /// SCIF apps in file order.
    pub apps: Vec<App>,
}

/// A definition file: its stages in order (the last one is the image), and the build
/// arguments given that it never used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionFile {
    pub stages: Vec<Definition>,
    pub unused_args: Vec<String>,
}

/// Sections Apptainer knows that rctr cannot build.
const UNSUPPORTED_SECTIONS: &[&str] = &["pre", "appstart"];

const SCRIPT_SECTIONS: &[&str] = &["setup", "post", "runscript", "startscript", "test"];
const APP_SECTIONS: &[&str] = &[
    "appinstall",
    "apprun",
    "appenv",
    "appfiles",
    "applabels",
    "apphelp",
    "apptest",
];
const PLAIN_SECTIONS: &[&str] = &["files", "environment", "labels", "help", "arguments"];

impl Definition {
    /// Reads and parses the single-stage definition file at `path`.
    pub fn from_file(path: &Path) -> Result<Definition> {
        let file = DefinitionFile::from_file(path, &BuildArgs::new())?;
        file.into_single(path)
    }

    fn empty(origin: &Path, base_dir: &Path, raw: &str, bootstrap: Bootstrap) -> Definition {
        Definition {
            origin: origin.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            raw: raw.to_string(),
            stage: None,
            bootstrap,
            setup: None,
            files: Vec::new(),
            post: None,
            environment: None,
            runscript: None,
            startscript: None,
            test: None,
            help: None,
            labels: Vec::new(),
            apps: Vec::new(),
        }
    }

    /// The definition Apptainer records when building straight from an image or directory.
    pub fn for_local_image(source: &Path) -> Definition {
        let from = source.display().to_string();
        Definition::empty(
            source,
            Path::new("."),
            &format!("bootstrap: localimage\nfrom: {from}\n"),
            Bootstrap::LocalImage { from },
        )
    }

    /// The definition Apptainer records when building from an OCI/Docker source
    /// (`docker://REF`, `docker-archive:FILE`, ...).
    pub fn for_oci(kind: OciKind, from: &str) -> Definition {
        let agent = kind.agent();
        Definition::empty(
            Path::new(from),
            &std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            &format!("bootstrap: {agent}\nfrom: {from}\n"),
            Bootstrap::Oci {
                kind,
                from: from.to_string(),
            },
        )
    }

    /// Parses single-stage definition `text`; `origin` names it in messages, `base_dir`
    /// anchors relative paths.
    pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Definition> {
        DefinitionFile::parse(text, origin, base_dir, &BuildArgs::new())?.into_single(origin)
    }
}

impl DefinitionFile {
    /// Reads and parses the definition file at `path` with build arguments `args`.
    pub fn from_file(path: &Path, args: &BuildArgs) -> Result<DefinitionFile> {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read definition file {}", path.display()))?;
        let text = String::from_utf8(text).map_err(|_| {
            anyhow::anyhow!(
                "{}: definition file is not valid UTF-8 text",
                path.display()
            )
        })?;
        // Apptainer resolves them from where `build` runs, not from the file's directory.
        let base_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self::parse(&text, path, &base_dir, args)
    }

    /// Parses definition `text`, a stage starting at each `Bootstrap:` line.
    pub fn parse(
        text: &str,
        origin: &Path,
        base_dir: &Path,
        args: &BuildArgs,
    ) -> Result<DefinitionFile> {
        let shown = origin.display().to_string();
        let (text, unused_args) = substitute(text, &shown, args)?;
        let lines: Vec<&str> = text.lines().collect();
        let mut starts: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| is_bootstrap_line(l))
            .map(|(i, _)| i)
            .collect();
        if starts.is_empty() {
            bail!("{shown}: no \"Bootstrap:\" header; rctr builds from localimage, scratch, debootstrap, docker, docker-archive, oci or oci-archive");
        }
        // Comments before the first Bootstrap line belong to the first stage.
        starts[0] = 0;
        let mut stages: Vec<Definition> = Vec::new();
        for (k, &start) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(lines.len());
            let def = parse_stage(&lines, start, end, origin, base_dir, &text)?;
            if let Some(name) = &def.stage {
                if let Some(prev) = stages.iter().position(|d| d.stage.as_ref() == Some(name)) {
                    bail!(
                        "{shown}:{}: stage {name:?} is defined twice (first as stage {})",
                        start + 1,
                        prev + 1
                    );
                }
            }
            for t in &def.files {
                if let Some(from) = &t.from_stage {
                    if !stages.iter().any(|d| d.stage.as_ref() == Some(from)) {
                        bail!(
                            "{shown}:{}: %files from {from:?}: no earlier stage has \"Stage: {from}\"",
                            t.line
                        );
                    }
                }
            }
            stages.push(def);
        }
        Ok(DefinitionFile {
            stages,
            unused_args,
        })
    }

    fn into_single(mut self, origin: &Path) -> Result<Definition> {
        if self.stages.len() > 1 {
            bail!(
                "{}: a multi-stage definition ({} stages) where one stage was expected",
                origin.display(),
                self.stages.len()
            );
        }
        Ok(self.stages.remove(0))
    }
}

fn is_bootstrap_line(line: &str) -> bool {
    line.trim_start()
        .split_once(':')
        .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("bootstrap"))
        && !line.starts_with('%')
}

/// Header values of one stage, with their lines.
#[derive(Default)]
struct Header {
    bootstrap: Option<(String, usize)>,
    from: Option<(String, usize)>,
    stage: Option<(String, usize)>,
    os_version: Option<(String, usize)>,
    mirror_url: Option<(String, usize)>,
    include: Option<(String, usize)>,
    /// Legacy `IncludeCmd: yes|no` of the docker agents: checked, without effect (the
    /// runscript made from an image runs its ENTRYPOINT and CMD, as Apptainer 3+ does).
    include_cmd: Option<(String, usize)>,
}

fn parse_header(lines: &[&str], start: usize, end: usize, shown: &str) -> Result<Header> {
    let mut h = Header::default();
    for (i, line) in lines[start..end].iter().enumerate() {
        let n = start + i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            bail!("{shown}:{n}: expected a header line \"Key: value\" before the first %section, found {trimmed:?}");
        };
        let key = key.trim().to_ascii_lowercase();
        // A trailing comment is not part of the value.
        let value = value.split(" #").next().unwrap_or("").trim().to_string();
        let slot = match key.as_str() {
            "bootstrap" => &mut h.bootstrap,
            "from" => &mut h.from,
            "stage" => &mut h.stage,
            "osversion" => &mut h.os_version,
            "mirrorurl" => &mut h.mirror_url,
            "include" => &mut h.include,
            "includecmd" => &mut h.include_cmd,
            _ => bail!(
                "{shown}:{n}: unknown header keyword {:?}; rctr supports Bootstrap, From, Stage, \
                 OSVersion, MirrorURL, Include and IncludeCmd",
                key_as_written(trimmed)
            ),
        };
        if let Some((_, prev)) = slot {
            bail!(
                "{shown}:{n}: header keyword {:?} repeated (first on line {prev})",
                key_as_written(trimmed)
            );
        }
        *slot = Some((value, n));
    }
    Ok(h)
}

fn bootstrap_of(h: &Header, shown: &str) -> Result<Bootstrap> {
    let (agent, agent_line) = h
        .bootstrap
        .clone()
        .expect("a stage starts at its Bootstrap line");
    let agent = agent.to_ascii_lowercase();
    let from = h.from.clone().filter(|(f, _)| !f.is_empty());
    let no = |what: &Option<(String, usize)>, name: &str| -> Result<()> {
        if let Some((_, n)) = what {
            bail!("{shown}:{n}: \"{name}:\" has no meaning with \"Bootstrap: {agent}\"; remove it");
        }
        Ok(())
    };
    let need_from = |hint: &str| -> Result<String> {
        match &from {
            Some((f, _)) => Ok(f.clone()),
            None => bail!(
                "{shown}:{agent_line}: \"Bootstrap: {agent}\" needs a \"From:\" line naming {hint}"
            ),
        }
    };
    const AGENTS: &[&str] = &[
        "localimage",
        "scratch",
        "debootstrap",
        "docker",
        "docker-archive",
        "oci",
        "oci-archive",
    ];
    if AGENTS.contains(&agent.as_str()) && agent != "debootstrap" {
        no(&h.os_version, "OSVersion")?;
        no(&h.mirror_url, "MirrorURL")?;
        no(&h.include, "Include")?;
    }
    if let Some((value, n)) = &h.include_cmd {
        if !matches!(
            agent.as_str(),
            "docker" | "docker-archive" | "oci" | "oci-archive"
        ) {
            no(&h.include_cmd, "IncludeCmd")?;
        }
        if !matches!(
            value.to_ascii_lowercase().as_str(),
            "yes" | "no" | "true" | "false"
        ) {
            bail!("{shown}:{n}: \"IncludeCmd:\" takes yes or no, not {value:?}");
        }
    }
    let oci = |kind: OciKind, hint: &str| -> Result<Bootstrap> {
        Ok(Bootstrap::Oci {
            kind,
            from: need_from(hint)?,
        })
    };
    Ok(match agent.as_str() {
        "localimage" => Bootstrap::LocalImage {
            from: need_from("a SIF, squashfs image or directory")?,
        },
        "scratch" => {
            no(&h.from, "From")?;
            Bootstrap::Scratch
        }
        "debootstrap" => {
            no(&h.from, "From")?;
            let value = |v: &Option<(String, usize)>, name: &str, eg: &str| match v {
                Some((s, _)) if !s.is_empty() => Ok(s.clone()),
                _ => bail!("{shown}:{agent_line}: \"Bootstrap: debootstrap\" needs \"{name}: {eg}\""),
            };
            Bootstrap::Debootstrap {
                os_version: value(&h.os_version, "OSVersion", "bookworm")?,
                mirror_url: value(&h.mirror_url, "MirrorURL", "http://deb.debian.org/debian")?,
                include: h
                    .include
                    .as_ref()
                    .map(|(s, _)| {
                        s.split([',', ' '])
                            .filter(|p| !p.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        }
        "docker" => oci(OciKind::Registry, "an image, e.g. debian:bookworm")?,
        "docker-archive" => oci(OciKind::DockerArchive, "a `docker save` tar file")?,
        "oci" => oci(OciKind::Layout, "an OCI layout directory")?,
        "oci-archive" => oci(OciKind::LayoutArchive, "an OCI archive tar file")?,
        "" => bail!("{shown}:{agent_line}: empty Bootstrap; use localimage, scratch, debootstrap, docker, docker-archive, oci or oci-archive"),
        other => bail!(
            "{shown}:{agent_line}: bootstrap agent {other:?} is not supported; rctr builds from \
             localimage, scratch, debootstrap, docker, docker-archive, oci or oci-archive"
        ),
    })
}

/// Parses lines `start..end` (one stage) of a definition file.
fn parse_stage(
    lines: &[&str],
    start: usize,
    end: usize,
    origin: &Path,
    base_dir: &Path,
    raw: &str,
) -> Result<Definition> {
    let shown = origin.display().to_string();
    let shown = shown.as_str();
    let first_section = lines[start..end]
        .iter()
        .position(|l| l.starts_with('%'))
        .map_or(end, |p| start + p);
    let header = parse_header(lines, start, first_section, shown)?;
    let mut def = Definition::empty(origin, base_dir, raw, bootstrap_of(&header, shown)?);
    def.stage = header.stage.map(|(s, _)| s).filter(|s| !s.is_empty());

    let mut seen: Vec<(String, usize)> = Vec::new();
    let mut i = first_section;
    while i < end {
        let n = i + 1;
        let header = &lines[i][1..];
        let (name, args) = match header.split_once(char::is_whitespace) {
            Some((name, args)) => (name.to_ascii_lowercase(), args.trim()),
            None => (header.trim().to_ascii_lowercase(), ""),
        };
        // As in Apptainer, a '#' anywhere starts a comment on the section line.
        let words: Vec<String> = args
            .split('#')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let section_end = lines[i + 1..end]
            .iter()
            .position(|l| l.starts_with('%'))
            .map_or(end, |p| i + 1 + p);
        let body = &lines[i + 1..section_end];
        if UNSUPPORTED_SECTIONS.contains(&name.as_str()) {
            bail!("{shown}:{n}: section %{name} is not supported by rctr build");
        }
        let known = [SCRIPT_SECTIONS, APP_SECTIONS, PLAIN_SECTIONS].concat();
        if !known.contains(&name.as_str()) {
            bail!(
                "{shown}:{n}: unknown section %{name}; rctr supports %arguments, %setup, %files, \
                 %post, %environment, %runscript, %startscript, %test, %labels, %help and the \
                 %app* sections"
            );
        }
        // Sections that may repeat are told apart by their arguments.
        let key = if APP_SECTIONS.contains(&name.as_str()) {
            format!("{name} {}", words.join(" "))
        } else {
            name.clone()
        };
        if !matches!(name.as_str(), "files" | "appfiles" | "arguments") {
            if let Some((_, prev)) = seen.iter().find(|(s, _)| *s == key) {
                bail!(
                    "{shown}:{n}: section %{key} appears twice (first on line {prev})",
                    key = key.trim_end()
                );
            }
        }
        seen.push((key, n));
        if APP_SECTIONS.contains(&name.as_str()) {
            parse_app_section(&mut def, &name, &words, body, n, shown)?;
        } else if SCRIPT_SECTIONS.contains(&name.as_str()) {
            let section = parse_script(body, words, &name, n, shown)?;
            match name.as_str() {
                "setup" => def.setup = section,
                "post" => def.post = section,
                "runscript" => def.runscript = section,
                "startscript" => def.startscript = section,
                "test" => def.test = section,
                _ => unreachable!("SCRIPT_SECTIONS"),
            }
        } else {
            let from_stage = match (name.as_str(), words.as_slice()) {
                ("files", [from, stage]) if from.eq_ignore_ascii_case("from") => {
                    Some(stage.clone())
                }
                (_, []) => None,
                ("files", _) => bail!(
                    "{shown}:{n}: arguments after %files ({args:?}) are not supported; \
                     use \"%files from STAGE\""
                ),
                _ => bail!("{shown}:{n}: arguments after %{name} ({args:?}) are not supported"),
            };
            match name.as_str() {
                "files" => def
                    .files
                    .extend(parse_files(body, n + 1, shown, &from_stage)?),
                "labels" => def.labels.extend(parse_labels(body)),
                "environment" => def.environment = script(body),
                "help" => def.help = script(body),
                "arguments" => {} // substituted before parsing
                _ => unreachable!("PLAIN_SECTIONS"),
            }
        }
        i = section_end;
    }
    Ok(def)
}

fn parse_app_section(
    def: &mut Definition,
    section: &str,
    words: &[String],
    body: &[&str],
    n: usize,
    shown: &str,
) -> Result<()> {
    let [name] = words else {
        bail!("{shown}:{n}: %{section} needs exactly one app name, e.g. \"%{section} myapp\"");
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || name.starts_with('.')
    {
        bail!("{shown}:{n}: app name {name:?} may only hold letters, digits, '_', '-' and '.'");
    }
    let app = match def.apps.iter().position(|a| &a.name == name) {
        Some(k) => &mut def.apps[k],
        None => {
            def.apps.push(App {
                name: name.clone(),
                line: n,
                ..App::default()
            });
            def.apps.last_mut().expect("just pushed")
        }
    };
    match section {
        "appinstall" => app.install = script(body),
        "apprun" => app.run = script(body),
        "appenv" => app.env = script(body),
        "apptest" => app.test = script(body),
        "apphelp" => app.help = script(body),
        "applabels" => app.labels.extend(parse_labels(body)),
        "appfiles" => app.files.extend(parse_files(body, n + 1, shown, &None)?),
        _ => unreachable!("APP_SECTIONS"),
    }
    Ok(())
}

fn key_as_written(line: &str) -> &str {
    line.split(':').next().unwrap_or(line).trim()
}

/// A script section's text: leading blank lines and trailing whitespace removed; None if empty.
fn script(body: &[&str]) -> Option<String> {
    let start = body.iter().position(|l| !l.trim().is_empty())?;
    let text = body[start..].join("\n");
    Some(text.trim_end().to_string())
}

/// `%post [ARGS]` (and the other script sections): Apptainer passes the words after the
/// section name to the shell running the script; `-c` must name an interpreter. Scripts
/// that are files in the image (%runscript, %startscript, %test) take only `-c`.
fn parse_script(
    body: &[&str],
    args: Vec<String>,
    name: &str,
    line: usize,
    shown: &str,
) -> Result<Option<ScriptSection>> {
    if args.last().is_some_and(|a| a == "-c") {
        bail!("{shown}:{line}: \"%{name} -c\" needs an interpreter, e.g. \"%{name} -c /bin/bash\"");
    }
    let as_file = matches!(name, "runscript" | "startscript" | "test");
    if as_file && !args.is_empty() && args[0] != "-c" {
        bail!(
            "{shown}:{line}: arguments after %{name} ({:?}) are not supported; \
             only \"-c INTERPRETER\"",
            args.join(" ")
        );
    }
    Ok(script(body).map(|script| ScriptSection { script, args, line }))
}

fn parse_files(
    body: &[&str],
    first_line: usize,
    shown: &str,
    from_stage: &Option<String>,
) -> Result<Vec<FileTransfer>> {
    let mut out = Vec::new();
    for (k, line) in body.iter().enumerate() {
        let n = first_line + k;
        let content = line.trim();
        let mut fields = shell_words(content)
            .ok_or_else(|| anyhow::anyhow!("{shown}:{n}: unterminated quote in {content:?}"))?;
        let (src, dst) = match fields.len() {
            0 => continue,
            1 => (fields.remove(0), None),
            2 => {
                let dst = fields.pop();
                (fields.remove(0), dst)
            }
            _ => bail!(
                "{shown}:{n}: a %files line is \"source [destination]\" (quote paths with \
                 spaces), found {content:?}"
            ),
        };
        out.push(FileTransfer {
            src,
            dst,
            from_stage: from_stage.clone(),
            line: n,
        });
    }
    Ok(out)
}

/// Splits a `%files` line into words as a shell would (Apptainer does the same): '...' and
/// "..." quote spaces, a backslash escapes the next character, an unquoted `#` starting a
/// word begins a comment. None if a quote is not closed.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return Some(words),
            Some(_) => {}
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            match c {
                '\'' => loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                },
                '"' => loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$' | '`')) => {
                            word.push(chars.next()?)
                        }
                        c => word.push(c),
                    }
                },
                '\\' => word.push(chars.next().unwrap_or('\\')),
                c => word.push(c),
            }
        }
        words.push(word);
    }
}

/// `%labels` lines are "KEY VALUE..." (the value may contain spaces); comments and blank lines
/// are skipped.
pub(crate) fn parse_labels(body: &[&str]) -> Vec<(String, String)> {
    body.iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((k, v)) => (k.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Definition> {
        Definition::parse(text, Path::new("/defs/app.def"), Path::new("/defs"))
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn parses_a_full_definition() {
        let text = "\
# a comment
Bootstrap: localimage
From: base.sif

%files
    hello.txt /opt/hello.txt   # trailing comment
    data
# comment line

%environment
    export FOO=bar

%runscript
    echo \"run $@\"

%startscript
    exec sleep 100
%test
    test -f /opt/hello.txt
%labels
    Author Jane Doe
    Version 1.2
%help
    Usage: run it.
%files
    more.txt /more.txt
";
        let def = parse(text).unwrap();
        assert_eq!(
            def.bootstrap,
            Bootstrap::LocalImage {
                from: "base.sif".into()
            }
        );
        assert_eq!(def.base_dir, Path::new("/defs"));
        assert_eq!(
            def.files,
            vec![
                FileTransfer {
                    src: "hello.txt".into(),
                    dst: Some("/opt/hello.txt".into()),
                    line: 6,
                    from_stage: None
                },
                FileTransfer {
                    src: "data".into(),
                    dst: None,
                    line: 7,
                    from_stage: None
                },
                FileTransfer {
                    src: "more.txt".into(),
                    dst: Some("/more.txt".into()),
                    line: 26,
                    from_stage: None
                },
            ]
        );
        assert_eq!(def.environment.as_deref(), Some("    export FOO=bar"));
        assert_eq!(
            def.runscript.as_ref().map(|s| s.script.as_str()),
            Some("    echo \"run $@\"")
        );
        assert_eq!(
            def.startscript.as_ref().map(|s| s.script.as_str()),
            Some("    exec sleep 100")
        );
        assert_eq!(
            def.test.as_ref().map(|s| s.script.as_str()),
            Some("    test -f /opt/hello.txt")
        );
        assert_eq!(def.help.as_deref(), Some("    Usage: run it."));
        assert_eq!(
            def.labels,
            vec![
                ("Author".to_string(), "Jane Doe".to_string()),
                ("Version".to_string(), "1.2".to_string())
            ]
        );
        assert_eq!(def.raw, text);
    }

    #[test]
    fn parses_post_with_its_arguments_and_line() {
        let text = "Bootstrap: localimage\nFrom: base\n\n%files\n  a /a\n%post -c /bin/bash -l  # login shell\n\n    echo built > /opt/marker\n    mkdir -p /data\n\n%runscript\n  cat /opt/marker\n";
        let def = parse(text).unwrap();
        let post = def.post.expect("%post parsed");
        assert_eq!(post.line, 6);
        assert_eq!(post.args, vec!["-c", "/bin/bash", "-l"]);
        assert_eq!(
            post.script,
            "    echo built > /opt/marker\n    mkdir -p /data"
        );
        assert_eq!(
            def.runscript.as_ref().map(|s| s.script.as_str()),
            Some("  cat /opt/marker")
        );

        let def = parse("Bootstrap: scratch\n%post\nexit 3\n").unwrap();
        let post = def.post.unwrap();
        assert!(post.args.is_empty());
        assert_eq!((post.script.as_str(), post.line), ("exit 3", 2));

        // An empty %post runs nothing, as in Apptainer.
        assert_eq!(parse("Bootstrap: scratch\n%post\n\n").unwrap().post, None);
    }

    #[test]
    fn header_is_case_insensitive_and_scratch_needs_no_from() {
        let def = parse("bootstrap: SCRATCH\n%runscript\necho hi\n").unwrap();
        assert_eq!(def.bootstrap, Bootstrap::Scratch);
        assert_eq!(
            def.runscript.as_ref().map(|s| s.script.as_str()),
            Some("echo hi")
        );
        assert!(def.files.is_empty() && def.labels.is_empty() && def.environment.is_none());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = err("Bootstrap: localimage\nFrom: x.sif\nRegistry: one\n");
        assert!(
            e.contains("/defs/app.def:3:") && e.contains("unknown header keyword \"Registry\""),
            "{e}"
        );

        let e = err("Bootstrap: scratch\n\n%runscript\necho\n%bogus\nx\n");
        assert!(
            e.contains("/defs/app.def:5:") && e.contains("unknown section %bogus"),
            "{e}"
        );

        let e = err("Bootstrap: scratch\n%post -c   # no interpreter\necho hi\n");
        assert!(
            e.contains("/defs/app.def:2:") && e.contains("\"%post -c\" needs an interpreter"),
            "{e}"
        );

        let e = err("Bootstrap: scratch\n%post\na\n%post\nb\n");
        assert!(
            e.contains(":4:") && e.contains("%post appears twice (first on line 2)"),
            "{e}"
        );

        let e = err("Bootstrap: scratch\n%pre\ntouch x\n");
        assert!(
            e.contains(":2:") && e.contains("%pre is not supported"),
            "{e}"
        );

        let e = err("Bootstrap: yum\nOSVersion: 9\n");
        assert!(
            e.contains(":1:") && e.contains("\"yum\" is not supported"),
            "{e}"
        );

        let e = err("Bootstrap: localimage\n");
        assert!(e.contains(":1:") && e.contains("needs a \"From:\""), "{e}");

        let e = err("From: x.sif\n");
        assert!(
            e.contains("/defs/app.def:") && e.contains("no \"Bootstrap:\" header"),
            "{e}"
        );

        let e = err("Bootstrap: scratch\nthis is not a header\n");
        assert!(e.contains(":2:") && e.contains("Key: value"), "{e}");

        let e = err("Bootstrap: scratch\nStage: a\nstage: b\n");
        assert!(
            e.contains(":3:") && e.contains("repeated (first on line 2)"),
            "{e}"
        );

        let e = err("Bootstrap: scratch\n%runscript\na\n%runscript\nb\n");
        assert!(
            e.contains(":4:") && e.contains("appears twice (first on line 2)"),
            "{e}"
        );

        let e = err("Bootstrap: scratch\n%files\na b c\n");
        assert!(
            e.contains(":3:") && e.contains("source [destination]"),
            "{e}"
        );

        let e = err("Bootstrap: scratch\n%files from build\na b\n");
        assert!(
            e.contains(":3:") && e.contains("no earlier stage has \"Stage: build\""),
            "{e}"
        );
        let e = err("Bootstrap: scratch\n%files to build\na b\n");
        assert!(
            e.contains(":2:") && e.contains("arguments after %files"),
            "{e}"
        );

        let e = err("Bootstrap: scratch\nFrom: x\n");
        assert!(e.contains(":2:") && e.contains("no meaning"), "{e}");
    }

    #[test]
    fn files_lines_split_like_a_shell() {
        let w = |s: &str| shell_words(s).unwrap();
        assert_eq!(
            w(r#"  "file 1" "with space 1"  "#),
            ["file 1", "with space 1"]
        );
        assert_eq!(w("file2 'with space 2'"), ["file2", "with space 2"]);
        assert_eq!(w(r"a\ b c # comment"), ["a b", "c"]);
        assert_eq!(w(r#""a \"q\" #x" a#b"#), [r#"a "q" #x"#, "a#b"]);
        assert!(w("  # only a comment").is_empty());
        assert_eq!(shell_words("\"open"), None);

        let def = parse(
            "Bootstrap: scratch\n%files\n    \"my file.txt\" \"/opt/with space.txt\"\n    plain /p # c\n",
        )
        .unwrap();
        assert_eq!(def.files[0].src, "my file.txt");
        assert_eq!(def.files[0].dst.as_deref(), Some("/opt/with space.txt"));
        assert_eq!((def.files[1].src.as_str(), def.files[1].line), ("plain", 4));
        let e = err("Bootstrap: scratch\n%files\n    \"unclosed /x\n");
        assert!(e.contains(":3:") && e.contains("unterminated quote"), "{e}");
        let e = err("Bootstrap: scratch\n%files\n    a b c\n");
        assert!(
            e.contains(":3:") && e.contains("quote paths with spaces"),
            "{e}"
        );
    }

    #[test]
    fn reads_files_and_synthesizes_local_image_definitions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.def");
        std::fs::write(&path, "Bootstrap: scratch\n%labels\nA 1\n").unwrap();
        let def = Definition::from_file(&path).unwrap();
        assert_eq!(def.base_dir, std::env::current_dir().unwrap());
        assert_eq!(def.labels, vec![("A".to_string(), "1".to_string())]);
        let e = format!(
            "{:#}",
            Definition::from_file(&dir.path().join("missing.def")).unwrap_err()
        );
        assert!(e.contains("missing.def"), "{e}");

        let def = Definition::for_local_image(Path::new("/srv/rootfs"));
        assert_eq!(def.raw, "bootstrap: localimage\nfrom: /srv/rootfs\n");
        assert_eq!(
            def.bootstrap,
            Bootstrap::LocalImage {
                from: "/srv/rootfs".into()
            }
        );
    }
}

#[cfg(test)]
mod stage_tests {
    use super::*;

    fn parse_file(text: &str, args: &[&str]) -> Result<DefinitionFile> {
        let mut a = BuildArgs::new();
        for s in args {
            a.add(s)?;
        }
        DefinitionFile::parse(text, Path::new("/defs/app.def"), Path::new("/defs"), &a)
    }

    #[test]
    fn multi_stage_files_from_an_earlier_stage() {
        let text = "# builder first\nBootstrap: debootstrap\nOSVersion: {{ SUITE }}\nMirrorURL: http://deb.debian.org/debian\nInclude: gcc, make\nStage: build\n%arguments\n  SUITE=bookworm\n%post\n  make\n\nBootstrap: docker\nFrom: debian:{{ SUITE }}-slim\nStage: final\n%files from build\n  /src/app /usr/local/bin/app\n%runscript -c /bin/bash\n  exec app \"$@\"\n";
        let f = parse_file(text, &["SUITE=trixie"]).unwrap();
        assert_eq!(f.stages.len(), 2);
        let (b, fin) = (&f.stages[0], &f.stages[1]);
        assert_eq!(b.stage.as_deref(), Some("build"));
        assert_eq!(
            b.bootstrap,
            Bootstrap::Debootstrap {
                os_version: "trixie".into(),
                mirror_url: "http://deb.debian.org/debian".into(),
                include: vec!["gcc".into(), "make".into()],
            }
        );
        assert_eq!(b.post.as_ref().unwrap().line, 9);
        assert_eq!(
            fin.bootstrap,
            Bootstrap::Oci {
                kind: OciKind::Registry,
                from: "debian:trixie-slim".into()
            }
        );
        assert_eq!(
            fin.files,
            vec![FileTransfer {
                src: "/src/app".into(),
                dst: Some("/usr/local/bin/app".into()),
                from_stage: Some("build".into()),
                line: 16
            }]
        );
        let rs = fin.runscript.as_ref().unwrap();
        assert_eq!(rs.interpreter().as_deref(), Some("/bin/bash"));
        assert!(fin.raw.contains("From: debian:trixie-slim"));
        assert!(f.unused_args.is_empty());
    }

    #[test]
    fn setup_apps_and_their_errors() {
        let f = parse_file(
            "Bootstrap: scratch\n%setup\n  touch $APPTAINER_ROOTFS/x\n%apprun foo\n  echo foo\n%appenv foo\n  A=1\n%apprun bar\n  echo bar\n",
            &["UNUSED=1"],
        )
        .unwrap();
        let d = &f.stages[0];
        assert_eq!(
            d.setup.as_ref().unwrap().script,
            "  touch $APPTAINER_ROOTFS/x"
        );
        assert_eq!(d.apps.len(), 2);
        assert_eq!((d.apps[0].name.as_str(), d.apps[0].line), ("foo", 4));
        assert_eq!(d.apps[0].env.as_deref(), Some("  A=1"));
        assert_eq!(d.apps[1].run.as_deref(), Some("  echo bar"));
        assert_eq!(f.unused_args, ["UNUSED"]);

        let e = |t: &str| format!("{:#}", parse_file(t, &[]).unwrap_err());
        let m = e("Bootstrap: scratch\n%apprun\n echo\n");
        assert!(
            m.contains(":2:") && m.contains("exactly one app name"),
            "{m}"
        );
        let m = e("Bootstrap: scratch\n%apprun a\n x\n%apprun a\n y\n");
        assert!(
            m.contains(":4:") && m.contains("%apprun a appears twice"),
            "{m}"
        );
        let m = e("Bootstrap: scratch\n%apprun ../x\n y\n");
        assert!(m.contains(":2:") && m.contains("app name"), "{m}");
        let m = e("Bootstrap: scratch\n%runscript -x\n y\n");
        assert!(
            m.contains(":2:") && m.contains("only \"-c INTERPRETER\""),
            "{m}"
        );
        let m = e("Bootstrap: scratch\nStage: a\nBootstrap: scratch\nStage: a\n");
        assert!(m.contains(":3:") && m.contains("defined twice"), "{m}");
        let m = e("Bootstrap: debootstrap\nOSVersion: bookworm\n");
        assert!(m.contains(":1:") && m.contains("MirrorURL"), "{m}");
        let m = e("Bootstrap: docker\nFrom: debian\nOSVersion: x\n");
        assert!(m.contains(":3:") && m.contains("no meaning"), "{m}");
        let m = e("Bootstrap: docker\n");
        assert!(m.contains(":1:") && m.contains("needs a \"From:\""), "{m}");
        let m = e("Bootstrap: docker\nFrom: x\nIncludeCmd: maybe\n");
        assert!(m.contains(":3:") && m.contains("yes or no"), "{m}");
        let m = e("Bootstrap: scratch\nIncludeCmd: yes\n");
        assert!(m.contains(":2:") && m.contains("no meaning"), "{m}");
        Definition::parse(
            "Bootstrap: docker\nFrom: x\n\nIncludeCmd: yes\n",
            Path::new("x"),
            Path::new("/"),
        )
        .unwrap();
        let m = format!(
            "{:#}",
            Definition::parse(
                "Bootstrap: scratch\nBootstrap: scratch\n",
                Path::new("x"),
                Path::new("/")
            )
            .unwrap_err()
        );
        assert!(m.contains("multi-stage"), "{m}");
    }

    #[test]
    fn oci_sources_by_prefix() {
        assert_eq!(
            OciKind::from_source("docker-archive:/x/img.tar"),
            Some((OciKind::DockerArchive, "/x/img.tar"))
        );
        assert_eq!(
            OciKind::from_source("oci:dir:tag"),
            Some((OciKind::Layout, "dir:tag"))
        );
        assert_eq!(
            OciKind::from_source("docker://debian:12"),
            Some((OciKind::Registry, "debian:12"))
        );
        assert_eq!(OciKind::from_source("plain.def"), None);
    }
}
