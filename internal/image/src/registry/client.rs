//! The registry HTTP API v2: manifests and blobs of one repository, with the token
//! authentication registries ask for (`WWW-Authenticate: Bearer realm=...`, anonymous or
//! with $RCTR_DOCKER_USERNAME / $APPTAINER_DOCKER_USERNAME credentials).

use super::reference::Reference;
use anyhow::{anyhow, bail, Context, Result};
use std::time::Duration;
use ureq::tls::{RootCerts, TlsConfig};
use ureq::Agent;

/// What a manifest request accepts: OCI and Docker manifests and indexes.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";
/// Manifests are small JSON documents; anything bigger is not one.
const MANIFEST_LIMIT: u64 = 8 << 20;

pub(crate) struct Client {
    agent: Agent,
    /// `https://host` or `http://host`.
    base: String,
    reference: Reference,
    /// The Authorization header value once the registry asked for one.
    auth: Option<String>,
}

/// A fetched response, its status already checked.
pub(crate) type Response = ureq::http::Response<ureq::Body>;

impl Client {
    pub(crate) fn new(reference: &Reference, no_https: bool) -> Client {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::PlatformVerifier)
                    .build(),
            )
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled transfer fails instead of hanging a build forever.
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(concat!("rctr/", env!("CARGO_PKG_VERSION")))
            .build();
        let scheme = if no_https { "http" } else { "https" };
        Client {
            agent: config.into(),
            base: format!("{scheme}://{}", reference.host),
            reference: reference.clone(),
            auth: None,
        }
    }

    /// GET `/v2/REPO/KIND/NAME`, authenticating once if the registry asks.
    fn get(&mut self, kind: &str, name: &str, accept: Option<&str>) -> Result<Response> {
        let url = format!(
            "{}/v2/{}/{kind}/{name}",
            self.base, self.reference.repository
        );
        let mut retried = false;
        loop {
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(auth) = &self.auth {
                req = req.header("Authorization", auth);
            }
            let resp = req.call().map_err(|e| self.unreachable(e))?;
            let status = resp.status().as_u16();
            if status == 401 && !retried {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                self.auth = Some(self.authenticate(&challenge)?);
                retried = true;
                continue;
            }
            return match status {
                200 => Ok(resp),
                401 | 403 => bail!(
                    "the registry refused access ({status}); for a private image set \
                     RCTR_DOCKER_USERNAME and RCTR_DOCKER_PASSWORD",
                ),
                404 => bail!(
                    "the registry has no {} {name}; check the name, tag or digest",
                    if kind == "manifests" { "image" } else { "blob" }
                ),
                _ => bail!("the registry answered {status} for {kind}/{name}"),
            };
        }
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        let https = self.base.starts_with("https");
        let text = e.to_string();
        let hint = if https && text.contains("certificate") {
            "; if a site CA signed it, add the CA to the host's store (or name its file in $SSL_CERT_FILE)"
        } else if https
            && matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData)
        {
            // A plain-HTTP server answering a TLS hello.
            "; for a registry without TLS use --no-https"
        } else {
            ""
        };
        anyhow!(
            "cannot reach registry {} ({}): {e}{hint}",
            self.reference.host,
            self.base
        )
    }

    /// The Authorization header for `challenge`: a bearer token from the realm it names
    /// (for this repository, pull only), or basic credentials.
    fn authenticate(&self, challenge: &str) -> Result<String> {
        let creds = credentials();
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, pass) = creds.ok_or_else(|| {
                anyhow!(
                    "the registry wants a login; set RCTR_DOCKER_USERNAME and RCTR_DOCKER_PASSWORD"
                )
            })?;
            return Ok(format!("Basic {}", base64(&format!("{user}:{pass}"))));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            bail!("the registry asks for {scheme:?} authentication, which rctr does not speak");
        }
        let params = challenge_params(params);
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| anyhow!("the registry's token challenge names no realm"))?;
        let mut req = self.agent.get(&realm);
        if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
            req = req.query("service", service);
        }
        let scope = params
            .iter()
            .find(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
        req = req.query("scope", &scope);
        if let Some((user, pass)) = &creds {
            req = req.header(
                "Authorization",
                &format!("Basic {}", base64(&format!("{user}:{pass}"))),
            );
        }
        let mut resp = req
            .call()
            .map_err(|e| anyhow!("cannot get a token from {realm}: {e}"))?;
        if resp.status() != 200 {
            bail!(
                "the token service {realm} answered {}",
                resp.status().as_u16()
            );
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice(&b)?))
            .with_context(|| format!("the token service {realm} sent no token"))?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| anyhow!("the token service {realm} sent no token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// A manifest or index by tag or digest: its bytes, its media type, and the digest the
    /// registry gives for it (Docker-Content-Digest), if any.
    pub(crate) fn manifest(
        &mut self,
        name: &str,
    ) -> Result<(Vec<u8>, Option<String>, Option<String>)> {
        let mut resp = self.get("manifests", name, Some(MANIFEST_TYPES))?;
        let header = |r: &Response, h: &str| {
            r.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let media_type = header(&resp, "content-type");
        let digest = header(&resp, "docker-content-digest");
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .with_context(|| format!("cannot read manifest {name}"))?;
        Ok((bytes, media_type, digest))
    }

    /// A blob's content as a stream.
    pub(crate) fn blob(&mut self, digest: &str) -> Result<Response> {
        self.get("blobs", digest, None)
    }
}

/// `realm="x",service="y"` → [(realm, x), (service, y)].
fn challenge_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        rest = tail.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    out
}

/// Login for registries that want one, from Apptainer's or rctr's variables.
fn credentials() -> Option<(String, String)> {
    let var = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    Some((
        var(&["RCTR_DOCKER_USERNAME", "APPTAINER_DOCKER_USERNAME"])?,
        var(&["RCTR_DOCKER_PASSWORD", "APPTAINER_DOCKER_PASSWORD"])?,
    ))
}

fn base64(text: &str) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed() {
        let p = challenge_params(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.docker.io/token".into()),
                ("service".into(), "registry.docker.io".into()),
                ("scope".into(), "repository:library/debian:pull".into()),
            ]
        );
        assert_eq!(
            challenge_params("realm=x, service=y")[1],
            ("service".into(), "y".into())
        );
    }

    #[test]
    fn basic_credentials_are_base64() {
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64("ab"), "YWI=");
        assert_eq!(base64("a"), "YQ==");
    }
}
