//! Apptainer definition files, the subset rctr can build: a header (`Bootstrap: localimage`
//! with `From:`, or `Bootstrap: scratch`) and the sections %files, %post, %environment,
//! %runscript, %startscript, %test, %labels and %help. Anything else is refused with the file
//! and line.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Where the root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// An existing SIF, squashfs or sandbox directory (`From:` as written in the file).
    LocalImage { from: String },
    /// An empty root filesystem.
    Scratch,
}

impl Bootstrap {
    /// The agent name as Apptainer spells it in labels.
    pub fn agent(&self) -> &'static str {
        match self {
            Bootstrap::LocalImage { .. } => "localimage",
            Bootstrap::Scratch => "scratch",
        }
    }
}

/// One `%files` line: copy `src` (on the host) to `dst` (in the image; defaults to `src`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransfer {
    pub src: String,
    pub dst: Option<String>,
    /// Line number in the definition file, for messages.
    pub line: usize,
}

/// The `%post` section: a script run inside the image being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostSection {
    pub script: String,
    /// Words after `%post` (e.g. `-c /bin/bash`), without a trailing comment.
    pub args: Vec<String>,
    /// Line of the `%post` header, for messages.
    pub line: usize,
}

/// A parsed definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The definition file, or the source named in a synthesized definition; for messages.
    pub origin: PathBuf,
    /// Directory relative paths in `From:` and `%files` are taken from: the current directory
    /// when the build started, as in Apptainer.
    pub base_dir: PathBuf,
    /// The text stored in the image as its definition file.
    pub raw: String,
    pub bootstrap: Bootstrap,
    pub files: Vec<FileTransfer>,
    pub post: Option<PostSection>,
    pub environment: Option<String>,
    pub runscript: Option<String>,
    pub startscript: Option<String>,
    pub test: Option<String>,
    pub help: Option<String>,
    /// `%labels` in file order.
    pub labels: Vec<(String, String)>,
}

/// Sections Apptainer knows that rctr cannot build (yet).
const UNSUPPORTED_SECTIONS: &[&str] = &[
    "setup",
    "pre",
    "arguments",
    "appinstall",
    "apprun",
    "appenv",
    "apphelp",
    "appfiles",
    "applabels",
    "appstart",
    "apptest",
];

impl Definition {
    /// Reads and parses the definition file at `path`.
    pub fn from_file(path: &Path) -> Result<Definition> {
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
        Self::parse(&text, path, &base_dir)
    }

    /// The definition Apptainer records when building straight from an image or directory.
    pub fn for_local_image(source: &Path) -> Definition {
        let from = source.display().to_string();
        Definition {
            origin: source.to_path_buf(),
            base_dir: PathBuf::from("."),
            raw: format!("bootstrap: localimage\nfrom: {from}\n"),
            bootstrap: Bootstrap::LocalImage { from },
            files: Vec::new(),
            post: None,
            environment: None,
            runscript: None,
            startscript: None,
            test: None,
            help: None,
            labels: Vec::new(),
        }
    }

    /// Parses definition `text`; `origin` names it in messages, `base_dir` anchors relative paths.
    pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Definition> {
        let shown = origin.display();
        let lines: Vec<&str> = text.lines().collect();
        let mut def = Definition {
            origin: origin.to_path_buf(),
            base_dir: base_dir.to_path_buf(),
            raw: text.to_string(),
            bootstrap: Bootstrap::Scratch,
            files: Vec::new(),
            post: None,
            environment: None,
            runscript: None,
            startscript: None,
            test: None,
            help: None,
            labels: Vec::new(),
        };

        // Header: everything before the first line starting with '%'.
        let first_section = lines
            .iter()
            .position(|l| l.starts_with('%'))
            .unwrap_or(lines.len());
        let mut bootstrap: Option<(String, usize)> = None;
        let mut from: Option<(String, usize)> = None;
        for (i, line) in lines[..first_section].iter().enumerate() {
            let n = i + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once(':') else {
                bail!("{shown}:{n}: expected a header line \"Key: value\" before the first %section, found {trimmed:?}");
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            let slot = match key.as_str() {
                "bootstrap" => &mut bootstrap,
                "from" => &mut from,
                _ => bail!(
                    "{shown}:{n}: unknown header keyword {:?}; rctr supports Bootstrap and From",
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
        let Some((agent, agent_line)) = bootstrap else {
            bail!("{shown}: no \"Bootstrap:\" header; rctr builds from \"Bootstrap: localimage\" (with \"From:\") or \"Bootstrap: scratch\"");
        };
        def.bootstrap = match agent.to_ascii_lowercase().as_str() {
            "localimage" => match from {
                Some((from, _)) if !from.is_empty() => Bootstrap::LocalImage { from },
                _ => bail!("{shown}:{agent_line}: \"Bootstrap: localimage\" needs a \"From:\" line naming a SIF, squashfs image or directory"),
            },
            "scratch" => {
                if let Some((_, n)) = from {
                    bail!("{shown}:{n}: \"From:\" has no meaning with \"Bootstrap: scratch\"; remove it");
                }
                Bootstrap::Scratch
            }
            "" => bail!("{shown}:{agent_line}: empty Bootstrap; use localimage or scratch"),
            other => bail!(
                "{shown}:{agent_line}: bootstrap agent {other:?} is not supported; rctr builds from localimage or scratch"
            ),
        };

        // Sections.
        let mut seen: Vec<(String, usize)> = Vec::new();
        let mut i = first_section;
        while i < lines.len() {
            let n = i + 1;
            let header = &lines[i][1..];
            let (name, args) = match header.split_once(char::is_whitespace) {
                Some((name, args)) => (name.to_ascii_lowercase(), args.trim()),
                None => (header.trim().to_ascii_lowercase(), ""),
            };
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.starts_with('%'))
                .map_or(lines.len(), |p| i + 1 + p);
            let body = &lines[i + 1..end];
            if UNSUPPORTED_SECTIONS.contains(&name.as_str()) {
                bail!("{shown}:{n}: section %{name} is not supported by rctr build");
            }
            let known = [
                "files",
                "post",
                "environment",
                "runscript",
                "startscript",
                "test",
                "labels",
                "help",
            ];
            if !known.contains(&name.as_str()) {
                bail!(
                    "{shown}:{n}: unknown section %{name}; rctr supports %files, %post, %environment, \
                     %runscript, %startscript, %test, %labels and %help"
                );
            }
            if name != "post" && !args.is_empty() && !args.starts_with('#') {
                bail!("{shown}:{n}: arguments after %{name} ({args:?}) are not supported");
            }
            if name != "files" {
                if let Some((_, prev)) = seen.iter().find(|(s, _)| *s == name) {
                    bail!("{shown}:{n}: section %{name} appears twice (first on line {prev})");
                }
            }
            seen.push((name.clone(), n));
            match name.as_str() {
                "files" => def
                    .files
                    .extend(parse_files(body, n + 1, &shown.to_string())?),
                "post" => def.post = parse_post(body, args, n, &shown.to_string())?,
                "labels" => def.labels.extend(parse_labels(body)),
                "environment" => def.environment = script(body),
                "runscript" => def.runscript = script(body),
                "startscript" => def.startscript = script(body),
                "test" => def.test = script(body),
                "help" => def.help = script(body),
                _ => unreachable!("checked above"),
            }
            i = end;
        }
        Ok(def)
    }
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

/// `%post [ARGS]`: Apptainer passes the words after the section name to the shell running
/// the script; `-c` must name an interpreter.
fn parse_post(body: &[&str], args: &str, line: usize, shown: &str) -> Result<Option<PostSection>> {
    // As in Apptainer, a '#' anywhere starts a comment on the section line.
    let args: Vec<String> = args
        .split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if args.last().is_some_and(|a| a == "-c") {
        bail!("{shown}:{line}: \"%post -c\" needs an interpreter, e.g. \"%post -c /bin/bash\"");
    }
    Ok(script(body).map(|script| PostSection { script, args, line }))
}

fn parse_files(body: &[&str], first_line: usize, shown: &str) -> Result<Vec<FileTransfer>> {
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
        out.push(FileTransfer { src, dst, line: n });
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
                    line: 6
                },
                FileTransfer {
                    src: "data".into(),
                    dst: None,
                    line: 7
                },
                FileTransfer {
                    src: "more.txt".into(),
                    dst: Some("/more.txt".into()),
                    line: 26
                },
            ]
        );
        assert_eq!(def.environment.as_deref(), Some("    export FOO=bar"));
        assert_eq!(def.runscript.as_deref(), Some("    echo \"run $@\""));
        assert_eq!(def.startscript.as_deref(), Some("    exec sleep 100"));
        assert_eq!(def.test.as_deref(), Some("    test -f /opt/hello.txt"));
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
        assert_eq!(def.runscript.as_deref(), Some("  cat /opt/marker"));

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
        assert_eq!(def.runscript.as_deref(), Some("echo hi"));
        assert!(def.files.is_empty() && def.labels.is_empty() && def.environment.is_none());
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = err("Bootstrap: localimage\nFrom: x.sif\nStage: one\n");
        assert!(
            e.contains("/defs/app.def:3:") && e.contains("unknown header keyword \"Stage\""),
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

        let e = err("Bootstrap: scratch\n%setup\ntouch x\n");
        assert!(
            e.contains(":2:") && e.contains("%setup is not supported"),
            "{e}"
        );

        let e = err("Bootstrap: docker\nFrom: ubuntu\n");
        assert!(
            e.contains(":1:") && e.contains("\"docker\" is not supported"),
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

        let e = err("Bootstrap: scratch\nBootstrap: scratch\n");
        assert!(
            e.contains(":2:") && e.contains("repeated (first on line 1)"),
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
