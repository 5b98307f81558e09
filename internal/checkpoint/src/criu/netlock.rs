//! CRIU's network lock: while it dumps an application with TCP connections it adds an
//! nftables table (`inet CRIU-<id>`) that drops the connections' packets, and removes it when
//! it is done. A CRIU that dies half-way (SIGKILL, a batch system's grace time running out)
//! leaves the table behind, and the application's connections stay cut off. rctr removes the
//! tables a failed dump left, at once (the dump runs in a process of its own session, so that
//! it survives its caller). A dump that ends the application keeps its table on purpose: it
//! holds the connections for a `--tcp-established` restore, and any other restore removes it.
//! Needs the `nft` tool (Debian's nftables); without it nothing is removed and
//! `rctr checkpoint check` says so.

use std::process::{Command, Stdio};

const PREFIX: &str = "CRIU-";

/// `nft ARGS` in the network namespace of host process `net_of` (None: rctr's own).
fn nft(net_of: Option<i32>, args: &[&str]) -> Option<String> {
    let mut cmd = match net_of {
        None => Command::new("nft"),
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/proc/{pid}/ns/net")).arg("nft");
            c
        }
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the `nft` tool is there.
pub fn available() -> bool {
    nft(None, &["--version"]).is_some()
}

/// CRIU's lock tables in that network namespace.
pub fn tables(net_of: Option<i32>) -> Vec<String> {
    nft(net_of, &["list", "tables", "inet"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .filter(|t| t.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Removes lock tables; returns how many went.
pub fn remove(net_of: Option<i32>, names: &[String]) -> usize {
    names
        .iter()
        .filter(|t| t.starts_with(PREFIX) && !t.contains(char::is_whitespace))
        .filter(|t| nft(net_of, &["delete", "table", "inet", t]).is_some())
        .count()
}

/// Of `candidates` (CRIU's tables after a dump), the ones that dump made itself.
/// CRIU names its table after its run id, which it records in the images' inventory
/// (`inventory.img`) and logs first thing at -v3 (`CRIU run id = ...`), so a table belongs
/// to this dump when its id is there. Other dumps running at the same time in the same
/// network namespace have tables of their own that must not be taken or removed: a table
/// that cannot be attributed is left alone.
pub fn own_tables(
    images_dir: &std::path::Path,
    log: &std::path::Path,
    candidates: Vec<String>,
) -> Vec<String> {
    let evidence = std::fs::read(images_dir.join("inventory.img"))
        .ok()
        .or_else(|| logged_run_id(log).map(String::into_bytes))
        .unwrap_or_default();
    candidates
        .into_iter()
        .filter(|t| run_id_recorded(&evidence, t))
        .collect()
}

/// The run id CRIU logged at the start of `log`.
fn logged_run_id(log: &std::path::Path) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let file = std::fs::File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .take(20)
        .map_while(Result::ok)
        .find_map(|l| {
            l.split_once("CRIU run id = ")
                .map(|(_, id)| id.trim().to_string())
        })
        .filter(|id| !id.is_empty())
}

/// Whether the run id in table name `table` (`CRIU-<id>`) occurs in the inventory's bytes.
fn run_id_recorded(inventory: &[u8], table: &str) -> bool {
    let Some(id) = table.strip_prefix(PREFIX).filter(|id| !id.is_empty()) else {
        return false;
    };
    inventory
        .windows(id.len())
        .any(|window| window == id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tables_named_after_the_recorded_run_id_are_own() {
        let dir = tempfile::tempdir().unwrap();
        // A protobuf string field as CRIU writes it: tag, length, bytes.
        let mut inventory = vec![0x6a, 36];
        inventory.extend_from_slice(b"6609ca18-2345-44f8-b6aa-0123456789ab");
        std::fs::write(dir.path().join("inventory.img"), &inventory).unwrap();
        let candidates = vec![
            "CRIU-6609ca18-2345-44f8-b6aa-0123456789ab".to_string(),
            "CRIU-345e9652-3321-4ca3-87aa-0123456789ab".to_string(),
            "CRIU-".to_string(),
        ];
        assert_eq!(
            own_tables(dir.path(), &dir.path().join("no.log"), candidates.clone()),
            vec![candidates[0].clone()]
        );
    }

    #[test]
    fn without_an_inventory_the_logged_run_id_decides_and_else_nothing_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dump.log");
        let candidates = vec![
            "CRIU-a0051e96-3e88-464f-b8".to_string(),
            "CRIU-b1111111-3e88-464f-b8".to_string(),
        ];
        assert!(own_tables(dir.path(), &log, candidates.clone()).is_empty());
        std::fs::write(
            &log,
            "(00.000000) CRIU run id = a0051e96-3e88-464f-b8c9-d9e2ef286cbe\n(00.0001) Error: x\n",
        )
        .unwrap();
        assert_eq!(
            own_tables(dir.path(), &log, candidates.clone()),
            vec![candidates[0].clone()]
        );
    }
}
