//! The calling user's passwd and group entries inside the container, as
//! Apptainer adds them by default, so that `id`, `whoami`, `ls -l` and
//! programs calling getpwuid() work for a user the image has never heard of.
//!
//! The functions producing the files are pure: they take the image's files
//! (if any) and return the new contents, to be bound over /etc/passwd and
//! /etc/group.

use anyhow::{Context, Result};
use nix::unistd::{geteuid, Gid, Group, User};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub gecos: String,
    /// Home directory inside the container.
    pub home: String,
    pub shell: String,
    /// Name of the primary group (`gid`).
    pub group_name: String,
}

/// The effective user's entry from the host's passwd/group databases, with
/// `home_in_container` as its home directory.
pub fn current_user_entry(home_in_container: &str) -> Result<UserEntry> {
    let uid = geteuid();
    let user = User::from_uid(uid)
        .with_context(|| format!("cannot look up uid {uid} in the host's passwd database"))?
        .with_context(|| {
            format!("uid {uid} has no passwd entry on this host, so the container's /etc/passwd cannot name it")
        })?;
    let group_name = host_group_name(user.gid.as_raw()).unwrap_or_else(|| user.name.clone());
    Ok(UserEntry {
        uid: uid.as_raw(),
        gid: user.gid.as_raw(),
        name: user.name,
        gecos: user.gecos.to_string_lossy().into_owned(),
        home: home_in_container.to_string(),
        shell: user.shell.to_string_lossy().into_owned(),
        group_name,
    })
}

/// The host's name for group `gid`, if it has one.
pub fn host_group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// The image's passwd with the caller in it. The caller's line (same uid, else same
/// name) is edited in place, keeping the image's order and its login shell (the
/// host's may not exist in the image); without one, a line is appended. Other lines
/// with the caller's uid or name are dropped, so that lookups by either return the
/// caller (Apptainer leaves them, shadowing or shadowed).
pub fn passwd_with_user(image_passwd: &str, user: &UserEntry) -> String {
    let uid = user.uid.to_string();
    let fields_of = |line: &str| -> Vec<String> { line.split(':').map(str::to_string).collect() };
    let is_entry = |f: &[String]| f.len() >= 7;
    let lines: Vec<&str> = image_passwd.lines().collect();
    let own = lines
        .iter()
        .position(|l| {
            let f = fields_of(l);
            is_entry(&f) && f[2] == uid
        })
        .or_else(|| {
            lines.iter().position(|l| {
                let f = fields_of(l);
                is_entry(&f) && f[0] == user.name
            })
        });
    let entry = |shell: &str| {
        format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            field(&user.name),
            user.uid,
            user.gid,
            field(&user.gecos),
            field(&user.home),
            field(shell)
        )
    };
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let f = fields_of(line);
        if Some(i) == own {
            out.push_str(&entry(&f[6]));
            continue;
        }
        let same_user = f.len() >= 3 && (f[0] == user.name || f[2] == uid);
        if !same_user {
            out.push_str(line);
            out.push('\n');
        }
    }
    if own.is_none() {
        out.push_str(&entry(&user.shell));
    }
    out
}

/// The image's group file with the user's primary group: if the image
/// already has a group with that gid, the user is added to its members;
/// otherwise a `group_name:x:gid:user` entry is appended.
pub fn group_with_user(image_group: &str, user: &UserEntry) -> String {
    let existing = image_group;
    let gid = user.gid.to_string();
    let name = field(&user.name);
    let mut found = false;
    let mut out = String::new();
    for line in existing.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if !found && fields.len() == 4 && fields[2] == gid {
            found = true;
            let mut members: Vec<&str> = fields[3].split(',').filter(|m| !m.is_empty()).collect();
            if !members.contains(&name.as_str()) {
                members.push(&name);
            }
            out.push_str(&format!(
                "{}:{}:{}:{}\n",
                fields[0],
                fields[1],
                fields[2],
                members.join(",")
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&format!(
            "{}:x:{}:{}\n",
            field(&user.group_name),
            user.gid,
            name
        ));
    }
    out
}

/// A value safe inside a colon-separated line.
fn field(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, ':' | '\n' | '\r') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserEntry {
        UserEntry {
            uid: 1000,
            gid: 1000,
            name: "alice".into(),
            gecos: "Alice A.".into(),
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
            group_name: "alice".into(),
        }
    }

    const IMAGE_PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
    const IMAGE_GROUP: &str = "root:x:0:\nusers:x:100:\n";

    #[test]
    fn passwd_appends_user() {
        let out = passwd_with_user(IMAGE_PASSWD, &alice());
        assert_eq!(
            out,
            format!("{IMAGE_PASSWD}alice:x:1000:1000:Alice A.:/home/alice:/bin/bash\n")
        );
    }

    #[test]
    fn passwd_edits_the_same_uid_in_place_and_drops_the_same_name() {
        let image = "root:x:0:0:root:/root:/bin/sh\nubuntu:x:1000:1000::/home/ubuntu:/bin/zsh\nalice:x:1001:1001::/home/other:/bin/sh\nbin:x:2:2::/:/bin/false\n";
        let out = passwd_with_user(image, &alice());
        assert_eq!(
            out,
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice A.:/home/alice:/bin/zsh\nbin:x:2:2::/:/bin/false\n"
        );
    }

    #[test]
    fn passwd_edits_the_same_name_in_place_without_a_same_uid() {
        let image = "alice:x:1001:1001::/home/other:/bin/ash\nbin:x:2:2::/:/bin/false\n";
        let out = passwd_with_user(image, &alice());
        assert_eq!(
            out,
            "alice:x:1000:1000:Alice A.:/home/alice:/bin/ash\nbin:x:2:2::/:/bin/false\n"
        );
    }

    #[test]
    fn passwd_for_root_edits_root_in_place() {
        let mut root = alice();
        root.uid = 0;
        root.gid = 0;
        root.name = "root".into();
        root.home = "/home/admin".into();
        let out = passwd_with_user(IMAGE_PASSWD, &root);
        assert_eq!(
            out,
            "root:x:0:0:Alice A.:/home/admin:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        );
    }

    #[test]
    fn passwd_without_final_newline() {
        let out = passwd_with_user("root:x:0:0::/root:/bin/sh", &alice());
        assert_eq!(out.lines().count(), 2);
    }

    #[test]
    fn passwd_keeps_comments_and_sanitizes_fields() {
        let mut u = alice();
        u.gecos = "evil:0:0\nroot".into();
        let out = passwd_with_user("# comment\n\n", &u);
        assert_eq!(
            out,
            "# comment\n\nalice:x:1000:1000:evil 0 0 root:/home/alice:/bin/bash\n"
        );
    }

    #[test]
    fn group_appends_primary_group() {
        let out = group_with_user(IMAGE_GROUP, &alice());
        assert_eq!(out, format!("{IMAGE_GROUP}alice:x:1000:alice\n"));
    }

    #[test]
    fn group_with_existing_gid_gains_member() {
        let mut u = alice();
        u.gid = 100;
        u.group_name = "staff".into();
        let out = group_with_user("root:x:0:\nusers:x:100:bob\n", &u);
        assert_eq!(out, "root:x:0:\nusers:x:100:bob,alice\n");
        // Already a member: unchanged.
        let out = group_with_user("users:x:100:alice,bob\n", &u);
        assert_eq!(out, "users:x:100:alice,bob\n");
        let out = group_with_user("users:x:100:\n", &u);
        assert_eq!(out, "users:x:100:alice\n");
    }

    #[test]
    fn current_user_matches_host_passwd() {
        let me = current_user_entry("/home/inside").unwrap();
        assert_eq!(me.uid, geteuid().as_raw());
        assert_eq!(me.home, "/home/inside");
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let line = passwd
            .lines()
            .find(|l| l.split(':').nth(2) == Some(&me.uid.to_string()))
            .expect("current uid in /etc/passwd");
        let f: Vec<&str> = line.split(':').collect();
        assert_eq!(
            (f[0], f[3], f[6]),
            (
                me.name.as_str(),
                me.gid.to_string().as_str(),
                me.shell.as_str()
            )
        );
        assert_eq!(
            host_group_name(me.gid).as_deref(),
            Some(me.group_name.as_str())
        );
    }
}
