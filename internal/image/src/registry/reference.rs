//! `docker://` references: `[HOST[:PORT]/]REPO[:TAG][@sha256:HEX]`, with Docker's defaults
//! (Docker Hub, `library/` for one-component names, tag `latest`).

use anyhow::{bail, Result};

/// Where Docker Hub's registry API lives (`docker.io` is only its name).
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry's host[:port] to talk to.
    pub host: String,
    /// The repository path (`library/debian`).
    pub repository: String,
    /// The tag, when the reference names no digest or names both.
    pub tag: Option<String>,
    /// `sha256:HEX`, when the reference pins one.
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                if !is_sha256_digest(d) {
                    bail!("{d:?} is not a sha256:HEX digest (64 lowercase hex digits)");
                }
                (r, Some(d.to_string()))
            }
            None => (text, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => ("docker.io".to_string(), rest.to_string()),
        };
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p.to_string(), Some(t.to_string())),
            _ => (path, None),
        };
        if let Some(t) = &tag {
            let ok = t.len() <= 128
                && t.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                bail!("{t:?} is not a valid tag (letters, digits, _ . -)");
            }
        }
        let valid_component = |c: &str| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_alphanumeric())
        };
        if path.is_empty() || !path.split('/').all(valid_component) {
            bail!(
                "{path:?} is not a valid repository name (lowercase letters, digits, . _ - and /)"
            );
        }
        let (host, repository) = if host == "docker.io" || host == "index.docker.io" {
            let repo = if path.contains('/') {
                path
            } else {
                format!("library/{path}")
            };
            (DOCKER_HUB_API.to_string(), repo)
        } else {
            (host, path)
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            host,
            repository,
            tag,
            digest,
        })
    }

    /// What the registry is asked for: the digest when pinned, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .expect("parse sets a tag or a digest")
    }

    /// Apptainer's default file name for a pull: `NAME_TAG.sif` (`NAME_HEX12.sif` for a
    /// reference that only pins a digest).
    pub fn default_sif_name(&self) -> String {
        let name = self.repository.rsplit('/').next().unwrap_or("image");
        match (&self.tag, &self.digest) {
            (Some(tag), _) => format!("{name}_{tag}.sif"),
            (None, Some(d)) => format!("{name}_{}.sif", &d["sha256:".len()..][..12]),
            (None, None) => format!("{name}.sif"),
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_defaults() {
        let r = Reference::parse("debian").unwrap();
        assert_eq!(r.host, "registry-1.docker.io");
        assert_eq!(r.repository, "library/debian");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.default_sif_name(), "debian_latest.sif");
        let r = Reference::parse("rocker/r-ver:4.3").unwrap();
        assert_eq!(r.repository, "rocker/r-ver");
        assert_eq!(r.manifest_ref(), "4.3");
    }

    #[test]
    fn registry_hosts_ports_and_digests() {
        let r = Reference::parse(&format!("127.0.0.1:5000/test/busybox:v1@{D}")).unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "test/busybox");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.manifest_ref(), D);
        let r = Reference::parse(&format!("localhost/x@{D}")).unwrap();
        assert_eq!((r.host.as_str(), r.tag.as_deref()), ("localhost", None));
        assert_eq!(r.default_sif_name(), "x_0123456789ab.sif");
        assert_eq!(r.to_string(), format!("localhost/x@{D}"));
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in ["Debian", "a//b", "x:bad tag", "x@sha256:12", "", "reg.io/"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }
}
