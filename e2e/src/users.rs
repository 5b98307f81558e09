//! Real users who are not root, made with `useradd` for one test and removed (with their
//! home) when dropped: what the unprivileged mode and the isolation between users are
//! tested with. rctr runs as them through `runuser`, from a copy of the binary and of the
//! images in a directory they can read (the build tree may not be).

use crate::output_with_timeout;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub struct RealUser {
    pub name: String,
    pub home: PathBuf,
    /// World-readable directory with the rctr binary and the images this user runs.
    pub files: PathBuf,
    /// Variables set for every rctr run as this user (`NAME=value`).
    pub env: Vec<String>,
}

impl RealUser {
    /// Creates user `rctr<tag><pid>` with a home directory; None (reason printed) where
    /// there is no useradd or the caller is not root.
    pub fn create(test: &str, tag: &str) -> Option<RealUser> {
        if !crate::is_root() {
            eprintln!("skipped {test}: creating users needs root");
            return None;
        }
        // Tests of one process run in parallel: a counter keeps their users apart.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("rctr{tag}{}x{n}", std::process::id() % 100_000);
        let _ = Command::new("userdel").args(["-r", &name]).output();
        let st = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .status();
        if !st.is_ok_and(|s| s.success()) {
            eprintln!("skipped {test}: useradd {name} failed");
            return None;
        }
        let home = PathBuf::from(format!("/home/{name}"));
        let files = std::env::temp_dir().join(format!("rctr-e2e-{name}"));
        let _ = std::fs::remove_dir_all(&files);
        std::fs::create_dir_all(&files).unwrap();
        std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = files.join("rctr");
        std::fs::copy(crate::rctr_bin(), &bin).unwrap();
        Some(RealUser {
            name,
            home,
            files,
            env: vec![],
        })
    }

    /// Copies `image` where this user can read it; returns the copy's path.
    pub fn image(&self, image: &Path) -> String {
        let dst = self.files.join(image.file_name().unwrap());
        if !dst.exists() {
            std::fs::copy(image, &dst).unwrap();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        dst.to_string_lossy().into_owned()
    }

    /// rctr as this user, in `files`, with `home` as $HOME.
    pub fn rctr_with_home<I, S>(&self, home: &Path, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.name, "--", "env"])
            .arg(format!("HOME={}", home.display()))
            .args(&self.env)
            .arg(self.files.join("rctr"))
            .args(args)
            .current_dir(&self.files)
            .stdin(std::process::Stdio::null());
        output_with_timeout(cmd, Duration::from_secs(120))
    }

    pub fn rctr<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.rctr_with_home(&self.home, args)
    }

    /// rctr as this user must succeed: its stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self.rctr(args);
        assert!(
            out.status.success(),
            "rctr as {} failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// This user's uid.
    pub fn uid(&self) -> u32 {
        let out = self.sh("id -u");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Any shell command as this user.
    pub fn sh(&self, script: &str) -> Output {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", &self.name, "--", "sh", "-c", script])
            .current_dir(&self.files);
        output_with_timeout(cmd, Duration::from_secs(60))
    }
}

impl Drop for RealUser {
    fn drop(&mut self) {
        // Whatever the test left running as this user goes first (userdel refuses otherwise).
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
        let _ = std::fs::remove_dir_all(&self.files);
    }
}

/// Why unprivileged containers cannot be tested here, if they cannot: no user namespaces,
/// no FUSE, or no squashfuse.
pub fn unprivileged_missing() -> Option<String> {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        return Some("user namespaces are disabled (user.max_user_namespaces = 0)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (no FUSE)".into());
    }
    let squashfuse = ["/usr/bin/squashfuse_ll", "/usr/bin/squashfuse"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !squashfuse {
        return Some("squashfuse is not installed".into());
    }
    None
}
