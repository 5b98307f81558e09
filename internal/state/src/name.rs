//! Names chosen by users (instances, checkpoints) end up as path components
//! and in process titles, so they are restricted to a conservative alphabet.

use anyhow::{bail, Result};

/// Longest accepted name, in bytes (all accepted characters are ASCII).
pub const MAX_NAME_LEN: usize = 64;

const ALLOWED: &str = "letters, digits, '.', '_' and '-', starting with a letter or digit";

/// Checks that `name` matches `[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}`.
///
/// `kind` ("instance", "checkpoint", ...) only appears in the error message,
/// which explains exactly what is wrong with the name.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("{kind} name must not be empty");
    }
    if name.contains('\0') {
        bail!("{kind} name {name:?} must not contain a NUL byte");
    }
    if name.contains('/') {
        bail!("{kind} name {name:?} must not contain '/' (allowed: {ALLOWED})");
    }
    if name == "." || name == ".." {
        bail!("{kind} name {name:?} is not allowed (allowed: {ALLOWED})");
    }
    if name.starts_with('-') {
        bail!("{kind} name {name:?} must not start with '-' (allowed: {ALLOWED})");
    }
    if name.starts_with('.') {
        bail!("{kind} name {name:?} must not start with '.' (allowed: {ALLOWED})");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        bail!("{kind} name {name:?} contains the invalid character {bad:?} (allowed: {ALLOWED})");
    }
    if name.len() > MAX_NAME_LEN {
        bail!(
            "{kind} name {name:?} is too long ({} characters, at most {MAX_NAME_LEN})",
            name.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(name: &str) -> String {
        format!("{:#}", validate_name("instance", name).unwrap_err())
    }

    #[test]
    fn accepts_good_names() {
        for name in [
            "a",
            "A",
            "0",
            "web1",
            "my-app_2.v3",
            "x..y",
            &"a".repeat(64),
        ] {
            validate_name("instance", name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(err(""), "instance name must not be empty");
    }

    #[test]
    fn rejects_too_long() {
        let e = err(&"a".repeat(65));
        assert!(e.contains("too long (65 characters, at most 64)"), "{e}");
    }

    #[test]
    fn rejects_slash() {
        assert!(err("a/b").contains("must not contain '/'"));
        assert!(err("/abs").contains("must not contain '/'"));
    }

    #[test]
    fn rejects_dot_names() {
        assert!(err("..").contains("is not allowed"));
        assert!(err(".").contains("is not allowed"));
        assert!(err(".hidden").contains("must not start with '.'"));
    }

    #[test]
    fn rejects_leading_dash() {
        assert!(err("-rf").contains("must not start with '-'"));
    }

    #[test]
    fn rejects_nul() {
        assert!(err("a\0b").contains("NUL byte"));
    }

    #[test]
    fn rejects_other_characters() {
        for (name, bad) in [
            ("a b", "' '"),
            ("a:b", "':'"),
            ("é", "'é'"),
            ("a\nb", "'\\n'"),
        ] {
            let e = err(name);
            assert!(
                e.contains(&format!("invalid character {bad}")),
                "{name:?}: {e}"
            );
        }
    }

    #[test]
    fn kind_appears_in_message() {
        let e = format!("{:#}", validate_name("checkpoint", "").unwrap_err());
        assert!(e.starts_with("checkpoint name"), "{e}");
    }
}
