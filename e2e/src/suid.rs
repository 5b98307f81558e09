//! The checkpoint helper (rctr installed setuid root) for tests with real users: a copy of
//! the binary under test, installed by the setup's own script into a root-owned directory
//! of its own, which the users' rctr is pointed at with `RCTR_SUID_HELPER`; removed, with
//! the helper's state of each user the test names, when dropped.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SuidHelper {
    dir: PathBuf,
    pub path: PathBuf,
    uids: Vec<u32>,
}

impl SuidHelper {
    /// Installs the helper; None (reason printed) where it cannot work: not root, or a
    /// file system mounted nosuid.
    pub fn install(test: &str) -> Option<SuidHelper> {
        if !crate::is_root() {
            eprintln!("skipped {test}: installing a setuid helper needs root");
            return None;
        }
        // Tests of one process run in parallel: each has its own copy.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/var/lib/rctr-e2e-suid-{}-{n}", std::process::id()));
        let path = dir.join("rctr-suid");
        let script = crate::workspace_root().join("etc/setup/install-suid.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(crate::rctr_bin())
            .arg(&path)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "install-suid.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let helper = SuidHelper {
            dir,
            path,
            uids: vec![],
        };
        let nosuid = {
            let c = std::ffi::CString::new(helper.path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: statvfs writes into a zeroed struct of the right type; c is a valid
            // NUL-terminated path.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
            rc != 0 || st.f_flag & libc::ST_NOSUID != 0
        };
        if nosuid {
            eprintln!(
                "skipped {test}: {} is on a nosuid file system",
                helper.path.display()
            );
            return None;
        }
        Some(helper)
    }

    /// Points `user`'s rctr at this helper; its state is removed with the helper.
    pub fn enable_for(&mut self, user: &mut crate::RealUser) {
        user.env
            .push(format!("RCTR_SUID_HELPER={}", self.path.display()));
        self.uids.push(user.uid());
    }

    /// Root's state for `uid`: where the helper keeps that user's instances and checkpoints.
    pub fn state_of(uid: u32) -> PathBuf {
        Path::new("/var/lib/rctr/users").join(uid.to_string())
    }

    pub fn is_setuid_root(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o4000 != 0)
    }
}

impl Drop for SuidHelper {
    fn drop(&mut self) {
        for uid in &self.uids {
            let state = Self::state_of(*uid);
            // Instances the helper still runs for the user go first.
            let _ = Command::new(crate::rctr_bin())
                .args(["instance", "stop", "--all", "-F"])
                .env("HOME", &state)
                .output();
            let _ = std::fs::remove_dir_all(&state);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
