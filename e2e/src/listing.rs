//! What `rctr instance list` and `rctr checkpoint list` show, and where checkpoints live.

use crate::TestEnv;
use std::path::PathBuf;

/// The first column of a table's rows (the header line left out), as `rctr instance list`
/// and `rctr checkpoint list` print them.
pub fn table_first_column(table: &str) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

impl TestEnv {
    /// The entries of `rctr checkpoint list --json`.
    pub fn checkpoints_json(&self) -> Vec<serde_json::Value> {
        let text = self.ok(["checkpoint", "list", "--json"]);
        let doc: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`checkpoint list --json` is not JSON ({e}):\n{text}"));
        doc["checkpoints"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no \"checkpoints\" array:\n{text}"))
    }

    /// Checkpoint `name`'s entry of `rctr checkpoint list --json`, if listed.
    pub fn checkpoint_json(&self, name: &str) -> Option<serde_json::Value> {
        self.checkpoints_json()
            .into_iter()
            .find(|c| c["name"] == name)
    }

    /// The names in the `rctr checkpoint list` table.
    pub fn checkpoint_names(&self) -> Vec<String> {
        table_first_column(&self.ok(["checkpoint", "list"]))
    }

    /// `$HOME/.rctr/checkpoint/<engine>/<name>`: where checkpoint `name` keeps its
    /// generations (the criu directory when no engine's directory has it yet).
    pub fn checkpoint_dir(&self, name: &str) -> PathBuf {
        let app = self.home().join(".rctr/checkpoint/app").join(name);
        if app.exists() {
            return app;
        }
        self.home().join(".rctr/checkpoint/criu").join(name)
    }
}
