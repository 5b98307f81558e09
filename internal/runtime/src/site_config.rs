//! The site configuration, `/etc/rctr/rctr.conf` (or `$RCTR_CONF`): what a cluster's
//! administrators set for every container, in the subset of Apptainer's
//! `apptainer.conf` syntax rctr understands:
//!
//! ```text
//! # comment
//! bind path = /etc/localtime
//! bind path = /scratch:/scratch:rw      (repeatable; --bind syntax)
//! sessiondir max size = 64              (MiB; limits --writable-tmpfs)
//! ```
//!
//! Unknown keys are errors naming file and line: a misspelt setting must not be
//! silently ignored on a whole cluster.

use crate::options::DEFAULT_SESSION_SIZE_MIB;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Where the site configuration lives unless `$RCTR_CONF` says otherwise.
pub const DEFAULT_CONF: &str = "/etc/rctr/rctr.conf";

/// The variable naming another configuration file.
pub const CONF_VAR: &str = "RCTR_CONF";

const KEYS: &str = "bind path, sessiondir max size";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// `bind path` values, in file order.
    pub bind_paths: Vec<String>,
    pub session_size_mib: u64,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            bind_paths: vec![],
            session_size_mib: DEFAULT_SESSION_SIZE_MIB,
        }
    }
}

impl SiteConfig {
    /// Reads `$RCTR_CONF` (which must exist) or [`DEFAULT_CONF`] (which may not).
    pub fn load() -> Result<SiteConfig> {
        match std::env::var_os(CONF_VAR).filter(|v| !v.is_empty()) {
            Some(path) => Self::read(Path::new(&path)),
            None if Path::new(DEFAULT_CONF).exists() => Self::read(Path::new(DEFAULT_CONF)),
            None => Ok(SiteConfig::default()),
        }
    }

    pub fn read(path: &Path) -> Result<SiteConfig> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the site configuration {} (set {CONF_VAR} to another file, or unset it)",
                path.display()
            )
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of `origin` (named in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<SiteConfig> {
        let mut conf = SiteConfig::default();
        for (i, raw) in text.lines().enumerate() {
            let at = || format!("{}:{}", origin.display(), i + 1);
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("{}: expected `key = value`, found {line:?}", at());
            };
            let key = key.split_whitespace().collect::<Vec<_>>().join(" ");
            let value = value.trim();
            match key.as_str() {
                "bind path" if value.is_empty() => bail!("{}: bind path needs a value", at()),
                "bind path" => conf.bind_paths.push(value.to_string()),
                "sessiondir max size" => {
                    conf.session_size_mib = match value.parse::<u64>() {
                        Ok(n) if n > 0 => n,
                        _ => bail!(
                        "{}: sessiondir max size must be a positive number of MiB, not {value:?}",
                        at()
                    ),
                    }
                }
                other => bail!("{}: unknown key {other:?} (known: {KEYS})", at()),
            }
        }
        Ok(conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SiteConfig> {
        SiteConfig::parse(text, Path::new("/etc/rctr/rctr.conf"))
    }

    #[test]
    fn reads_binds_in_order_and_the_session_size() {
        let conf = parse(
            "# site\n\nbind path = /etc/localtime\n  bind   path=/scratch:/scratch:rw\nsessiondir max size = 128\n",
        )
        .unwrap();
        assert_eq!(
            conf.bind_paths,
            vec!["/etc/localtime", "/scratch:/scratch:rw"]
        );
        assert_eq!(conf.session_size_mib, 128);
        assert_eq!(parse("").unwrap(), SiteConfig::default());
        assert_eq!(SiteConfig::default().session_size_mib, 64);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "\nmount dev = yes\n",
                "/etc/rctr/rctr.conf:2: unknown key \"mount dev\"",
            ),
            (
                "bind path\n",
                "/etc/rctr/rctr.conf:1: expected `key = value`",
            ),
            (
                "bind path =\n",
                "/etc/rctr/rctr.conf:1: bind path needs a value",
            ),
            (
                "sessiondir max size = lots\n",
                "/etc/rctr/rctr.conf:1: sessiondir max size must be",
            ),
            ("sessiondir max size = 0\n", "must be a positive number"),
        ];
        for (text, expected) in cases {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }
}
