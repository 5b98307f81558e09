//! `--bind` values, parsed with Apptainer's syntax:
//!
//! ```text
//! --bind src[:dst[:opts]][,src[:dst[:opts]]...]
//! ```
//!
//! `opts` is a comma-separated list of `ro` / `rw`. Because binds are also
//! separated by commas, an item following a `src:dst` pair that is exactly an
//! option word extends that bind's options (`/a:/b:ro,rw` is one bind), any
//! other item starts a new bind. `\,` and `\:` stand for a literal comma or
//! colon inside a path. `dst` defaults to `src`; a relative `src` is taken
//! from the current directory.

use anyhow::{bail, Context, Result};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    /// Absolute host path.
    pub src: PathBuf,
    /// Absolute path inside the container, without `..`.
    pub dst: PathBuf,
    pub readonly: bool,
}

/// Options Apptainer accepts only for image binds (`--bind img.sif:/dst:image-src=/`).
const IMAGE_BIND_OPTIONS: [&str; 2] = ["image-src", "id"];

/// Parses every `--bind` value (each possibly a comma-separated list).
pub fn parse_bind_specs(values: &[String], cwd: &Path) -> Result<Vec<BindSpec>> {
    parse_bind_specs_from("--bind", values, cwd)
}

/// [`parse_bind_specs`] for values from `origin` (an option, a variable such as
/// APPTAINER_BIND, or the site configuration), which errors name.
pub fn parse_bind_specs_from(origin: &str, values: &[String], cwd: &Path) -> Result<Vec<BindSpec>> {
    let mut specs = Vec::new();
    for value in values {
        parse_one_value(value, cwd, &mut specs)
            .with_context(|| format!("invalid {origin} {value:?}"))?;
    }
    Ok(specs)
}

/// Errors naming the first bind whose source does not exist on the host.
pub fn check_sources(specs: &[BindSpec]) -> Result<()> {
    for spec in specs {
        match std::fs::metadata(&spec.src) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("bind source {} does not exist", spec.src.display())
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot access bind source {}", spec.src.display()))
            }
        }
    }
    Ok(())
}

/// One `src[:dst[:opts]]` being assembled; more options may follow after commas.
struct Pending {
    text: String,
    src: String,
    dst: Option<String>,
    opts: Vec<String>,
}

fn parse_one_value(value: &str, cwd: &Path, out: &mut Vec<BindSpec>) -> Result<()> {
    let mut pending: Option<Pending> = None;
    for item in split_unescaped(value, ',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if is_option_word(item) {
            match pending.as_mut() {
                Some(p) if p.dst.is_some() => {
                    p.opts.push(item.to_string());
                    continue;
                }
                _ => bail!(
                    "option {item:?} must follow a source:destination pair, as in /data:/data:{item} \
                     (write ./{item} for a directory named {item:?})"
                ),
            }
        }
        if let Some(p) = pending.take() {
            out.push(finish_named(p, value, cwd)?);
        }
        pending = Some(name_item(start(item), item, value)?);
    }
    if let Some(p) = pending {
        out.push(finish_named(p, value, cwd)?);
    }
    Ok(())
}

fn finish_named(p: Pending, value: &str, cwd: &Path) -> Result<BindSpec> {
    let item = p.text.clone();
    name_item(finish(p, cwd), &item, value)
}

/// Names the failing bind when the value is a list of several.
fn name_item<T>(r: Result<T>, item: &str, value: &str) -> Result<T> {
    if item == value.trim() {
        r
    } else {
        r.with_context(|| format!("bind {item:?}"))
    }
}

fn is_option_word(item: &str) -> bool {
    matches!(item, "ro" | "rw")
        || IMAGE_BIND_OPTIONS
            .iter()
            .any(|o| item.strip_prefix(o).is_some_and(|r| r.starts_with('=')))
}

fn start(item: &str) -> Result<Pending> {
    let parts: Vec<String> = split_unescaped(item, ':')
        .into_iter()
        .map(|p| unescape(&p))
        .collect();
    if parts.len() > 3 {
        bail!("too many ':' (expected src[:dst[:options]]; write \\: for a colon in a path)");
    }
    let src = parts[0].trim().to_string();
    if src.is_empty() {
        bail!("empty source");
    }
    let dst = parts.get(1).map(|d| d.trim().to_string());
    let opts = match parts.get(2) {
        Some(o) => o.split(',').map(|s| s.trim().to_string()).collect(),
        None => Vec::new(),
    };
    Ok(Pending {
        text: item.to_string(),
        src,
        dst,
        opts,
    })
}

fn finish(p: Pending, cwd: &Path) -> Result<BindSpec> {
    let src = clean(&cwd.join(&p.src));
    if !src.is_absolute() {
        bail!("source {} is not an absolute path", src.display());
    }
    let dst = match p.dst.as_deref() {
        None => src.clone(),
        Some("") => bail!("empty destination"),
        Some(d) => {
            let d = Path::new(d);
            if !d.is_absolute() {
                bail!(
                    "destination {} must be an absolute path inside the container",
                    d.display()
                );
            }
            if d.components().any(|c| c == Component::ParentDir) {
                bail!("destination {} must not contain '..'", d.display());
            }
            clean(d)
        }
    };
    if dst == Path::new("/") {
        bail!("cannot bind over the container's root directory");
    }
    let mut readonly = None;
    for opt in &p.opts {
        let ro = match opt.as_str() {
            "ro" => true,
            "rw" => false,
            o if is_option_word(o) => {
                bail!("option {o:?} is for image binds, which rctr does not support")
            }
            "" => bail!("empty option"),
            o => bail!("{o:?} is not a valid bind option (valid: ro, rw)"),
        };
        if readonly.is_some_and(|r| r != ro) {
            bail!("options ro and rw contradict each other");
        }
        readonly = Some(ro);
    }
    Ok(BindSpec {
        src,
        dst,
        readonly: readonly.unwrap_or(false),
    })
}

/// Splits at every `sep` not preceded by a backslash; escapes are kept for
/// [`unescape`] so that nested splitting (',' then ':') sees them.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let cur = parts.last_mut().expect("parts is never empty");
        if c == '\\' {
            cur.push(c);
            if let Some(next) = chars.next() {
                cur.push(next);
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            cur.push(c);
        }
    }
    parts
}

/// `\,` -> `,` and `\:` -> `:`; other backslashes stay as they are.
fn unescape(s: &str) -> String {
    s.replace("\\,", ",").replace("\\:", ":")
}

/// Drops `.` components, repeated and trailing slashes (keeps `..`, which is
/// meaningful on the host side).
fn clean(p: &Path) -> PathBuf {
    p.components().filter(|c| *c != Component::CurDir).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<Vec<BindSpec>> {
        let v: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        parse_bind_specs(&v, Path::new("/work/dir"))
    }

    fn spec(src: &str, dst: &str, readonly: bool) -> BindSpec {
        BindSpec {
            src: src.into(),
            dst: dst.into(),
            readonly,
        }
    }

    fn err(values: &[&str]) -> String {
        format!("{:#}", parse(values).unwrap_err())
    }

    #[test]
    fn source_only_defaults_destination() {
        assert_eq!(
            parse(&["/data"]).unwrap(),
            vec![spec("/data", "/data", false)]
        );
    }

    #[test]
    fn source_and_destination() {
        assert_eq!(
            parse(&["/data:/mnt"]).unwrap(),
            vec![spec("/data", "/mnt", false)]
        );
    }

    #[test]
    fn options() {
        assert_eq!(
            parse(&["/data:/mnt:ro"]).unwrap(),
            vec![spec("/data", "/mnt", true)]
        );
        assert_eq!(
            parse(&["/data:/mnt:rw"]).unwrap(),
            vec![spec("/data", "/mnt", false)]
        );
        // Repeating an option is harmless.
        assert_eq!(
            parse(&["/a:/b:ro,ro"]).unwrap(),
            vec![spec("/a", "/b", true)]
        );
    }

    #[test]
    fn comma_separated_list() {
        assert_eq!(
            parse(&["/a,/b:/c:ro,/d:/e"]).unwrap(),
            vec![
                spec("/a", "/a", false),
                spec("/b", "/c", true),
                spec("/d", "/e", false)
            ]
        );
    }

    #[test]
    fn several_values_keep_order() {
        assert_eq!(
            parse(&["/x:/y", "/z"]).unwrap(),
            vec![spec("/x", "/y", false), spec("/z", "/z", false)]
        );
    }

    #[test]
    fn relative_source_from_cwd() {
        assert_eq!(
            parse(&["data", "./sub/dir:/mnt", "../up:/up"]).unwrap(),
            vec![
                spec("/work/dir/data", "/work/dir/data", false),
                spec("/work/dir/sub/dir", "/mnt", false),
                spec("/work/dir/../up", "/up", false),
            ]
        );
    }

    #[test]
    fn escaped_separators() {
        assert_eq!(
            parse(&[r"/a\,b:/c\:d:ro"]).unwrap(),
            vec![spec("/a,b", "/c:d", true)]
        );
    }

    #[test]
    fn whitespace_and_empty_items_ignored() {
        assert_eq!(
            parse(&[" /a : /b , ,/c "]).unwrap(),
            vec![spec("/a", "/b", false), spec("/c", "/c", false)]
        );
        assert_eq!(parse(&[""]).unwrap(), vec![]);
    }

    #[test]
    fn destination_is_cleaned() {
        assert_eq!(
            parse(&["/a:/b/./c//"]).unwrap(),
            vec![spec("/a", "/b/c", false)]
        );
    }

    #[test]
    fn rejects_bad_specs_naming_them() {
        let cases: &[(&str, &str)] = &[
            ("/a:rel", "destination rel must be an absolute path"),
            ("/a:/b/../etc", "must not contain '..'"),
            (":/b", "empty source"),
            ("/a:", "empty destination"),
            ("/a:/b:bogus", "\"bogus\" is not a valid bind option"),
            ("/a:/b:ro:x", "too many ':'"),
            ("/a:/b:ro,rw", "contradict"),
            ("/a:/b:image-src=/", "image binds"),
            ("/a,ro", "must follow a source:destination pair"),
            ("/a:/", "root directory"),
        ];
        for (value, expected) in cases {
            let e = err(&[value]);
            assert!(e.contains(expected), "{value}: {e}");
            assert!(
                e.starts_with(&format!("invalid --bind {value:?}")),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn error_names_the_failing_bind_of_a_list() {
        assert_eq!(
            err(&["/ok,/a:rel"]),
            "invalid --bind \"/ok,/a:rel\": bind \"/a:rel\": destination rel must be an absolute path inside the container"
        );
        assert_eq!(
            err(&["/a:rel"]),
            "invalid --bind \"/a:rel\": destination rel must be an absolute path inside the container"
        );
    }

    #[test]
    fn check_sources_names_missing_source() {
        let specs = vec![
            spec("/", "/host", false),
            spec("/nonexistent-rctr-bind-src", "/x", false),
        ];
        let e = format!("{:#}", check_sources(&specs).unwrap_err());
        assert_eq!(e, "bind source /nonexistent-rctr-bind-src does not exist");
        check_sources(&specs[..1]).unwrap();
    }
}
