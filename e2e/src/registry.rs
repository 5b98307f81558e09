//! A real OCI registry on loopback for the `docker://` tests: Debian's `docker-registry`
//! (the CNCF distribution registry) with its own config and storage directory on a free
//! port, its access log kept so a test can see which blobs were fetched. Plain HTTP, or
//! ([`Registry::start_secure`]) HTTPS with a certificate from a test CA and Docker's token
//! authentication, the tokens issued by token_server.py for one user. Images are pushed
//! into it with skopeo. Stopped when dropped.

use crate::net::{free_port, try_wait_for_port};
use crate::run::output_with_timeout;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Registry {
    /// The registry, then the token service if any.
    children: Vec<Child>,
    port: u16,
    dir: PathBuf,
    secure: bool,
}

/// The user and password the secure registry's token service knows.
pub const REGISTRY_USER: (&str, &str) = ("tester", "s3cret");
const TOKEN_SERVER_PY: &str = include_str!("token_server.py");
const OPENSSL_SCRIPT: &str = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=rctr-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.pem -days 2 -subj /CN=rctr-test-token 2>/dev/null
openssl x509 -in token.pem -outform DER -out token.der
";

impl Registry {
    /// Why registry tests cannot run here, if they cannot.
    pub fn missing() -> Option<String> {
        for tool in ["docker-registry", "skopeo", "umoci", "openssl", "python3"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Some(format!("{tool} is not installed (make deps)"));
            }
        }
        None
    }

    /// Starts a plain-HTTP registry without authentication keeping its config, storage
    /// and logs in `dir`.
    pub fn start(dir: &Path) -> Result<Registry> {
        Self::start_with(dir, false)
    }

    /// Starts an HTTPS registry (certificate from the CA at [`Registry::ca_file`]) whose
    /// token service grants [`REGISTRY_USER`] everything and anonymous callers nothing.
    pub fn start_secure(dir: &Path) -> Result<Registry> {
        Self::start_with(dir, true)
    }

    fn start_with(dir: &Path, secure: bool) -> Result<Registry> {
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = free_port();
        // Built first so that whatever was started is stopped if a later step fails.
        let mut reg = Registry {
            children: Vec::new(),
            port,
            dir: dir.to_path_buf(),
            secure,
        };
        let mut extra = String::new();
        if secure {
            let out = Command::new("sh")
                .args(["-c", OPENSSL_SCRIPT])
                .current_dir(dir)
                .output()
                .context("cannot run openssl")?;
            if !out.status.success() {
                bail!(
                    "making the test certificates failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let token_port = free_port();
            std::fs::write(dir.join("token_server.py"), TOKEN_SERVER_PY)?;
            let child = Command::new("python3")
                .arg(dir.join("token_server.py"))
                .arg(token_port.to_string())
                .arg(dir.join("token.key"))
                .arg(dir.join("token.der"))
                .args(["rctr-test-issuer", REGISTRY_USER.0, REGISTRY_USER.1])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.join("token.log"))?)
                .stderr(std::fs::File::create(dir.join("token.err"))?)
                .spawn()
                .context("cannot start the token service")?;
            reg.children.push(child);
            if !try_wait_for_port(token_port, Duration::from_secs(30)) {
                bail!("the token service did not listen on port {token_port}");
            }
            extra = format!(
                "  tls:\n    certificate: {d}/server.pem\n    key: {d}/server.key\n\
                 auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: rctr-test-registry\n\
                 \x20   issuer: rctr-test-issuer\n    rootcertbundle: {d}/token.pem\n",
                d = dir.display()
            );
        }
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: rctr-e2e-test\n{extra}",
                dir.join("storage").display()
            ),
        )?;
        // The access log (one line per request) goes to stdout, the rest to stderr.
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("access.log"))?)
            .stderr(std::fs::File::create(dir.join("registry.log"))?)
            .spawn()
            .context("cannot start docker-registry")?;
        reg.children.insert(0, child);
        if !try_wait_for_port(port, Duration::from_secs(30)) {
            reg.stop();
            let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            bail!("docker-registry did not listen on port {port}: {log}");
        }
        Ok(reg)
    }

    /// The CA that signed a secure registry's certificate (for $SSL_CERT_FILE).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The token service's lines so far: `token user=WHO scope=SCOPES`.
    pub fn token_requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("token.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies `source` (a skopeo transport reference, e.g. `oci:DIR:TAG`) into the registry
    /// as `REPO:TAG`; returns the pushed manifest's digest.
    pub fn push(&self, source: &str, repo_tag: &str) -> Result<String> {
        let digest_file = self.dir.join("pushed.digest");
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "-q", "--dest-tls-verify=false", "--digestfile"])
            .arg(&digest_file);
        if self.secure {
            cmd.arg("--dest-creds")
                .arg(format!("{}:{}", REGISTRY_USER.0, REGISTRY_USER.1));
        }
        cmd.arg(source)
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = output_with_timeout(cmd, Duration::from_secs(600));
        if !out.status.success() {
            bail!(
                "skopeo copy {source} to the registry failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(std::fs::read_to_string(digest_file)?.trim().to_string())
    }

    /// The blobs fetched from the registry so far (GET requests of /v2/.../blobs/...).
    pub fn blob_downloads(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .map(str::to_string)
            .collect()
    }

    /// Where the registry keeps blob `digest` on disk (to corrupt it in a test).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry and its token service (they are gone when this returns).
    pub fn stop(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
