//! A real OCI registry on loopback for the `docker://` tests: Debian's `docker-registry`
//! (the CNCF distribution registry) with its own config and storage directory on a free
//! port, plain HTTP, its access log kept so a test can see which blobs were fetched.
//! Images are pushed into it with skopeo. Stopped when dropped.

use crate::net::{free_port, try_wait_for_port};
use crate::run::output_with_timeout;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Registry {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    /// Why registry tests cannot run here, if they cannot.
    pub fn missing() -> Option<String> {
        for tool in ["docker-registry", "skopeo", "umoci"] {
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

    /// Starts a registry keeping its config, storage and logs in `dir`.
    pub fn start(dir: &Path) -> Result<Registry> {
        std::fs::create_dir_all(dir.join("storage"))?;
        let port = free_port();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: rctr-e2e-test\n",
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
        let mut reg = Registry {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
        };
        if !try_wait_for_port(port, Duration::from_secs(30)) {
            reg.stop();
            let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
            bail!("docker-registry did not listen on port {port}: {log}");
        }
        Ok(reg)
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
            .arg(&digest_file)
            .arg(source)
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

    /// Stops the registry (it is gone when this returns).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
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
