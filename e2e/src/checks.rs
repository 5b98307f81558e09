//! Assertions about rctr's error output, and probes for leaked host resources.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Panics when stderr shows a Rust panic or a backtrace.
pub fn assert_no_panic(stderr: &str, what: &str) {
    for marker in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(
            !stderr.contains(marker),
            "{what}: stderr shows a panic ({marker:?}):\n{stderr}"
        );
    }
}

/// Asserts that stderr is exactly one line, `rctr: error: ...`; returns that line.
pub fn assert_one_line_error<'a>(stderr: &'a str, what: &str) -> &'a str {
    assert_no_panic(stderr, what);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("rctr: error: "),
        "{what}: expected one line `rctr: error: ...` on stderr, got {} line(s):\n{stderr}",
        lines.len()
    );
    lines[0]
}

/// Asserts that stderr is a usage error as clap writes it: `rctr: error: ...` first, then
/// its hints and the usage line (several lines, on purpose); returns the first line.
pub fn assert_usage_error<'a>(stderr: &'a str, what: &str) -> &'a str {
    assert_no_panic(stderr, what);
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("rctr: error: ") && stderr.contains("\nUsage: rctr "),
        "{what}: expected `rctr: error: ...` and clap's usage line on stderr, got:\n{stderr}"
    );
    first
}

/// Asserts that stderr ends with the only `rctr: error: ...` line it holds (lines before it,
/// such as a failed application's log tail, are allowed); returns that line.
pub fn assert_error_line<'a>(stderr: &'a str, what: &str) -> &'a str {
    assert_no_panic(stderr, what);
    let errors = stderr
        .lines()
        .filter(|l| l.starts_with("rctr: error: "))
        .count();
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        errors == 1 && last.starts_with("rctr: error: "),
        "{what}: expected stderr to end with its only `rctr: error: ...` line, found {errors} such line(s):\n{stderr}"
    );
    last
}

/// Loop devices whose backing file is `file` (matched by device and inode, so any path
/// spelling counts), as `losetup` lists them.
pub fn loop_devices_backed_by(file: &Path) -> Vec<String> {
    let meta = std::fs::metadata(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let out = Command::new("losetup")
        .args([
            "--list",
            "--noheadings",
            "--raw",
            "--output",
            "NAME,BACK-INO,BACK-MAJ:MIN",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run losetup (util-linux): {e}"));
    assert!(
        out.status.success(),
        "losetup --list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // --raw separates columns by single spaces and writes padding inside a value as \x20.
            let f: Vec<String> = line.split(' ').map(unescape_raw).collect();
            let same = f.len() == 3
                && f[1].trim().parse::<u64>().ok() == Some(meta.ino())
                && f[2].trim() == format!("{major}:{minor}");
            same.then(|| f[0].trim().to_string())
        })
        .collect()
}

/// Decodes the `\xHH` escapes of `losetup --raw` output.
fn unescape_raw(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 2..i + 4)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Lines of this process's /proc/self/mountinfo (the host's mount namespace) containing any
/// of `needles`.
pub fn mountinfo_lines_mentioning(needles: &[&str]) -> Vec<String> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").expect("/proc/self/mountinfo is readable");
    text.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// True when `pid` exists and is not a zombie (an exited process its parent has not reaped).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start())
            .is_some_and(|r| !r.starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `cond` every 10 ms until it holds (true) or `timeout` passes (false). For conditions
/// that become true asynchronously, e.g. the kernel releasing a loop device after the last
/// process of a mount namespace is gone.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where the CRIU engine keeps its kernel-feature cache (a tmpfs that lives until reboot).
const ENGINE_KDAT_CACHE: &str = "/run/rctr/criu-kdat";
/// Where the images of checkpointed containers stay mounted between them (until reboot);
/// an image mounted there is still found by the loop-device check below.
const KEPT_IMAGES: &str = "/run/rctr/image-cache/";

/// Asserts that nothing of a run on `image` is left on the host: no loop device backed by it
/// (given 5 s, as the kernel frees a loop device shortly after the last mount namespace using
/// it is gone) and no host mount naming it or rctr's runtime directory.
pub fn assert_image_released(image: &Path) {
    let clear = wait_until(Duration::from_secs(5), || {
        loop_devices_backed_by(image).is_empty()
    });
    assert!(
        clear,
        "loop devices still backed by the image: {:?}",
        loop_devices_backed_by(image)
    );
    // The engine's kernel-feature cache is a host tmpfs that stays until reboot, on purpose.
    let mounts: Vec<String> =
        mountinfo_lines_mentioning(&[&image.display().to_string(), "/run/rctr"])
            .into_iter()
            .filter(|l| !l.contains(ENGINE_KDAT_CACHE) && !l.contains(KEPT_IMAGES))
            .collect();
    assert!(
        mounts.is_empty(),
        "host mounts left behind:\n{}",
        mounts.join("\n")
    );
}
