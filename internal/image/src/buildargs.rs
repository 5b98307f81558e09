//! Build arguments: `{{ NAME }}` in a definition file replaced by the value given with
//! `--build-arg NAME=VALUE` / `--build-arg-file FILE`, else by the default in the file's
//! `%arguments` section, as Apptainer does. A placeholder with no value is an error naming
//! the file and line; a given argument the file never uses is reported back to warn about.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Values given on the command line, later ones winning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildArgs {
    values: BTreeMap<String, String>,
}

impl BuildArgs {
    pub fn new() -> BuildArgs {
        BuildArgs::default()
    }

    /// Adds one `NAME=VALUE` (`--build-arg`).
    pub fn add(&mut self, arg: &str) -> Result<()> {
        let (name, value) = split_assignment(arg).with_context(|| {
            format!(
                "--build-arg {arg:?}: expected NAME=VALUE with NAME made of letters, digits and _"
            )
        })?;
        self.values.insert(name, value);
        Ok(())
    }

    /// Adds the `NAME=VALUE` lines of `path` (`--build-arg-file`); blank lines and `#`
    /// comments are skipped.
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read build argument file {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = split_assignment(line).with_context(|| {
                format!(
                    "{}:{}: expected NAME=VALUE, found {line:?}",
                    path.display(),
                    i + 1
                )
            })?;
            self.values.insert(name, value);
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// `NAME=VALUE`, the value's surrounding quotes removed.
fn split_assignment(s: &str) -> Option<(String, String)> {
    let (name, value) = s.split_once('=')?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let value = value.trim();
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
        .unwrap_or(value);
    Some((name.to_string(), unquoted.to_string()))
}

/// The defaults of every `%arguments` section of `text`.
fn defaults(text: &str, shown: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(header) = line.strip_prefix('%') {
            let name = header.split_whitespace().next().unwrap_or("");
            inside = name.eq_ignore_ascii_case("arguments");
            continue;
        }
        let l = line.trim();
        if !inside || l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (name, value) = split_assignment(l).with_context(|| {
            format!(
                "{shown}:{}: a %arguments line is NAME=VALUE, found {l:?}",
                i + 1
            )
        })?;
        out.insert(name, value);
    }
    Ok(out)
}

/// `text` with every `{{ NAME }}` replaced, and the given arguments it never used.
pub(crate) fn substitute(
    text: &str,
    shown: &str,
    given: &BuildArgs,
) -> Result<(String, Vec<String>)> {
    let defaults = defaults(text, shown)?;
    let mut used = std::collections::BTreeSet::new();
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                break;
            };
            let name = rest[start + 2..start + 2 + len].trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                // Not a placeholder (say, a Go template in a script): keep it.
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                continue;
            }
            let Some(value) = given.values.get(name).or_else(|| defaults.get(name)) else {
                bail!(
                    "{shown}:{}: build argument {name} has no value; give --build-arg {name}=VALUE \
                     or a default in %arguments",
                    i + 1
                );
            };
            used.insert(name.to_string());
            out.push_str(&rest[..start]);
            out.push_str(value);
            rest = &rest[start + 2 + len + 2..];
        }
        out.push_str(rest);
    }
    let unused = given
        .values
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    Ok((out, unused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> BuildArgs {
        let mut a = BuildArgs::new();
        for s in list {
            a.add(s).unwrap();
        }
        a
    }

    #[test]
    fn values_from_the_command_line_win_over_defaults() {
        let text = "Bootstrap: docker\nFrom: debian:{{ RELEASE }}\n%arguments\n  RELEASE=bookworm\n  GREETING=\"hello there\"\n%post\n  echo {{GREETING}} {{ RELEASE}} {{ not a placeholder }}\n";
        let (out, unused) = substitute(text, "x.def", &args(&[])).unwrap();
        assert!(out.contains("From: debian:bookworm\n"), "{out}");
        assert!(
            out.contains("echo hello there bookworm {{ not a placeholder }}\n"),
            "{out}"
        );
        assert!(unused.is_empty());

        let (out, unused) =
            substitute(text, "x.def", &args(&["RELEASE=trixie", "EXTRA=1"])).unwrap();
        assert!(out.contains("From: debian:trixie\n") && out.contains("echo hello there trixie"));
        assert_eq!(unused, ["EXTRA"]);
    }

    #[test]
    fn a_placeholder_without_value_names_file_and_line() {
        let e = format!(
            "{:#}",
            substitute(
                "Bootstrap: scratch\n%post\n echo {{ WHO }}\n",
                "x.def",
                &args(&[])
            )
            .unwrap_err()
        );
        assert!(
            e.starts_with("x.def:3: build argument WHO has no value"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            substitute(
                "Bootstrap: scratch\n%arguments\n not an assignment\n",
                "x.def",
                &args(&[])
            )
            .unwrap_err()
        );
        assert!(
            e.starts_with("x.def:3: a %arguments line is NAME=VALUE"),
            "{e}"
        );
        assert!(BuildArgs::new().add("=x").is_err());
        assert!(BuildArgs::new().add("A B=x").is_err());
    }

    #[test]
    fn reads_argument_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("args");
        std::fs::write(&f, "# comment\nA=1\n\nB='two words'\n").unwrap();
        let mut a = BuildArgs::new();
        a.add_file(&f).unwrap();
        a.add("A=3").unwrap();
        let (out, _) = substitute("{{A}} {{B}}\n", "x", &a).unwrap();
        assert_eq!(out, "3 two words\n");
        std::fs::write(&f, "A=1\nbroken\n").unwrap();
        let e = format!("{:#}", BuildArgs::new().add_file(&f).unwrap_err());
        assert!(e.contains("args:2: expected NAME=VALUE"), "{e}");
    }
}
