//! Reading what users type: `--env` values and env files.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Splits one `--env` value like Apptainer's flag parser: commas separate
/// assignments, but a piece that is not itself `NAME=...` continues the
/// previous value (`LIST=a,b` is one variable, `A=1,B=2` two).
pub fn split_env_flag(entry: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for piece in entry.split(',') {
        match piece.split_once('=') {
            Some((name, value)) if is_valid_name(name) => {
                check_value(value).with_context(|| format!("--env {entry:?}"))?;
                out.push((name.to_string(), value.to_string()));
            }
            _ => match out.last_mut() {
                Some((_, value)) => {
                    value.push(',');
                    value.push_str(piece);
                }
                None => match piece.split_once('=') {
                    Some((name, _)) => {
                        bail!("--env {entry:?}: {name:?} is not a valid variable name")
                    }
                    None => bail!("--env {entry:?}: expected NAME=VALUE"),
                },
            },
        }
    }
    Ok(out)
}

/// Reads an env file: `NAME=VALUE` lines (optionally `export NAME=VALUE`),
/// blank lines and `#` comments. A value may be single-quoted (literal) or
/// double-quoted (`\"`, `\\`, `\$` and `` \` `` escapes); an unquoted value
/// runs to the end of the line or to a ` #` comment. Nothing is expanded.
pub fn parse_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read env file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = parse_env_line(line)
            .with_context(|| format!("env file {} line {}", path.display(), i + 1))?;
        out.push(parsed);
    }
    Ok(out)
}

fn parse_env_line(line: &str) -> Result<(String, String)> {
    let assignment = line
        .strip_prefix("export ")
        .map(str::trim_start)
        .unwrap_or(line);
    let Some((name, rest)) = assignment.split_once('=') else {
        bail!("expected NAME=VALUE, found {line:?}");
    };
    if !is_valid_name(name) {
        bail!("{name:?} is not a valid variable name (letters, digits and '_', not starting with a digit)");
    }
    let value = parse_env_value(rest)?;
    check_value(&value)?;
    Ok((name.to_string(), value))
}

fn parse_env_value(rest: &str) -> Result<String> {
    let mut chars = rest.chars();
    let (value, after) = match chars.next() {
        Some('\'') => {
            let body = chars.as_str();
            let Some(end) = body.find('\'') else {
                bail!("unterminated single quote")
            };
            (body[..end].to_string(), &body[end + 1..])
        }
        Some('"') => {
            let mut value = String::new();
            let mut closed = None;
            let body = chars.as_str();
            let mut it = body.char_indices();
            while let Some((i, c)) = it.next() {
                match c {
                    '"' => {
                        closed = Some(i + 1);
                        break;
                    }
                    '\\' => match it.next() {
                        Some((_, e @ ('"' | '\\' | '$' | '`'))) => value.push(e),
                        Some((_, e)) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => value.push('\\'),
                    },
                    c => value.push(c),
                }
            }
            let Some(end) = closed else {
                bail!("unterminated double quote")
            };
            (value, &body[end..])
        }
        _ => {
            let unquoted = match rest.find(" #").or_else(|| rest.find("\t#")) {
                Some(comment) => &rest[..comment],
                None => rest,
            };
            return Ok(unquoted.trim_end().to_string());
        }
    };
    let after = after.trim_start();
    if !(after.is_empty() || after.starts_with('#')) {
        bail!("unexpected text {after:?} after the quoted value");
    }
    Ok(value)
}

fn check_value(value: &str) -> Result<()> {
    if value.contains('\0') {
        bail!("values cannot contain a NUL byte");
    }
    Ok(())
}

/// A name the shell can assign: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::test_support::Scratch;

    #[test]
    fn env_flag_splitting() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            split_env_flag("A=1,B=2").unwrap(),
            pairs(&[("A", "1"), ("B", "2")])
        );
        assert_eq!(
            split_env_flag("LIST=a,b,c").unwrap(),
            pairs(&[("LIST", "a,b,c")])
        );
        assert_eq!(
            split_env_flag("OPTS=-Da=1,-Db=2").unwrap(),
            pairs(&[("OPTS", "-Da=1,-Db=2")])
        );
        assert_eq!(split_env_flag("E=").unwrap(), pairs(&[("E", "")]));
        assert_eq!(split_env_flag("V=a=b").unwrap(), pairs(&[("V", "a=b")]));
        for (bad, msg) in [
            ("NOVALUE", "expected NAME=VALUE"),
            ("1X=2", "not a valid variable name"),
            ("=x", "not a valid"),
        ] {
            let e = format!("{:#}", split_env_flag(bad).unwrap_err());
            assert!(e.contains(msg) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn env_file_format() {
        let dir = Scratch::new("file");
        let file = dir.write(
            "vars",
            "# comment\n\n  A=plain value  \nexport B=exported\nC='single $HOME \"q\"'\nD=\"dq \\\"x\\\" \\$HOME \\\\ \\n\" # trailing\nE=x #comment\nF=\nG=a=b\r\n",
        );
        let vars = parse_env_file(&file).unwrap();
        let expect = [
            ("A", "plain value"),
            ("B", "exported"),
            ("C", "single $HOME \"q\""),
            ("D", "dq \"x\" $HOME \\ \\n"),
            ("E", "x"),
            ("F", ""),
            ("G", "a=b"),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(vars, expect);
    }

    #[test]
    fn env_file_errors_name_file_and_line() {
        let dir = Scratch::new("bad");
        for (text, msg) in [
            ("OK=1\nnot an assignment\n", "expected NAME=VALUE"),
            ("OK=1\n9X=1\n", "not a valid variable name"),
            ("OK=1\nA='open\n", "unterminated single quote"),
            ("OK=1\nA=\"open\n", "unterminated double quote"),
            ("OK=1\nA='x' y\n", "unexpected text"),
        ] {
            let file = dir.write("bad", text);
            let e = format!("{:#}", parse_env_file(&file).unwrap_err());
            assert!(
                e.starts_with(&format!("env file {} line 2: ", file.display())),
                "{e}"
            );
            assert!(e.contains(msg), "{e}");
        }
        let e = format!(
            "{:#}",
            parse_env_file(Path::new("/nonexistent-rctr-env")).unwrap_err()
        );
        assert!(
            e.contains("cannot read env file /nonexistent-rctr-env"),
            "{e}"
        );
    }
}
