//! Host and user names used to partition the state directory, so that a home
//! directory shared between cluster nodes keeps each node's instances apart.

use nix::unistd::{geteuid, User};

/// The kernel's host name, or "localhost" when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The user name of the effective uid (via the passwd database), or the uid
/// number when the uid has no passwd entry.
pub fn username() -> String {
    let uid = geteuid();
    match User::from_uid(uid) {
        Ok(Some(user)) if !user.name.is_empty() => user.name,
        _ => uid.as_raw().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_matches_kernel() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(hostname(), kernel.trim_end());
    }

    #[test]
    fn username_matches_passwd() {
        let uid = geteuid().as_raw();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let expected = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == uid.to_string())
            .map(|f| f[0].to_string())
            .unwrap_or_else(|| uid.to_string());
        assert_eq!(username(), expected);
    }
}
