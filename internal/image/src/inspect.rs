//! `inspect`: an image's labels, scripts, environment and definition file, shaped like
//! `apptainer inspect` (text and `--json`). SIF images built by Apptainer (or rctr) carry this
//! as an "inspect-metadata.json" object; otherwise it is read from /.singularity.d.

use crate::labels::{parse_labels_json, to_go_json};
use crate::source::{ImageSource, INSPECT_METADATA_OBJECT};
use anyhow::Result;
use rctr_sif::DataType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectItem {
    Labels,
    Deffile,
    Runscript,
    Startscript,
    Test,
    Helpfile,
    Environment,
}

/// Apptainer's inspect attributes (field order and names as in its JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runscript: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub test: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub helpfile: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deffile: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub startscript: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectData {
    pub attributes: Attributes,
}

/// `apptainer inspect --json` output: {"data": {"attributes": {...}}, "type": "container"}.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InspectMetadata {
    pub data: InspectData,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Default for InspectMetadata {
    fn default() -> Self {
        InspectMetadata {
            data: InspectData::default(),
            kind: "container".to_string(),
        }
    }
}

/// Text of a metadata file: trailing newlines dropped, as Apptainer does.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes)
        .trim_end_matches('\n')
        .to_string()
}

/// Environment files Apptainer reports: env/10-docker*.sh and env/9*-environment.sh.
fn is_reported_env_file(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".sh") else {
        return false;
    };
    stem.starts_with("10-docker") || (stem.starts_with('9') && stem.ends_with("-environment"))
}

/// Reads every attribute from the files in /.singularity.d.
fn attributes_from_files(image: &ImageSource) -> Result<Attributes> {
    let sd = Path::new("/.singularity.d");
    let read = |name: &str| -> Result<String> {
        Ok(image
            .read_file(sd.join(name))?
            .map(text)
            .unwrap_or_default())
    };
    let mut a = Attributes {
        runscript: read("runscript")?,
        startscript: read("startscript")?,
        test: read("test")?,
        helpfile: read("runscript.help")?,
        deffile: read("Singularity")?,
        ..Default::default()
    };
    if let Some(bytes) = image.read_file(sd.join("labels.json"))? {
        a.labels = parse_labels_json(&bytes).unwrap_or_default();
    }
    for name in image.list_dir(sd.join("env"))? {
        if is_reported_env_file(&name) {
            let path = sd.join("env").join(&name);
            if let Some(bytes) = image.read_file(&path)? {
                a.environment
                    .insert(path.display().to_string(), text(bytes));
            }
        }
    }
    Ok(a)
}

/// All attributes of an opened image: from the SIF's inspect metadata when present (like
/// Apptainer), else from the image's files; the SIF definition-file object wins for `deffile`.
pub fn read_attributes(image: &ImageSource) -> Result<Attributes> {
    if let Some(bytes) = image.sif_object(DataType::GenericJson, Some(INSPECT_METADATA_OBJECT))? {
        if let Ok(meta) = serde_json::from_slice::<InspectMetadata>(&bytes) {
            return Ok(meta.data.attributes);
        }
    }
    let mut a = attributes_from_files(image)?;
    if let Some(def) = image.sif_object(DataType::Deffile, None)? {
        a.deffile = text(def);
    }
    Ok(a)
}

/// Inspects the image at `path`: only the `items` asked for (labels if none, like Apptainer).
pub fn inspect(path: &Path, items: &[InspectItem]) -> Result<InspectMetadata> {
    let image = ImageSource::open_any_arch(path)?;
    let all = read_attributes(&image)?;
    let items = if items.is_empty() {
        &[InspectItem::Labels][..]
    } else {
        items
    };
    let mut a = Attributes::default();
    for item in items {
        match item {
            InspectItem::Labels => a.labels = all.labels.clone(),
            InspectItem::Deffile => a.deffile = all.deffile.clone(),
            InspectItem::Runscript => a.runscript = all.runscript.clone(),
            InspectItem::Startscript => a.startscript = all.startscript.clone(),
            InspectItem::Test => a.test = all.test.clone(),
            InspectItem::Helpfile => a.helpfile = all.helpfile.clone(),
            InspectItem::Environment => a.environment = all.environment.clone(),
        }
    }
    Ok(InspectMetadata {
        data: InspectData { attributes: a },
        ..Default::default()
    })
}

impl InspectMetadata {
    /// `apptainer inspect --json` formatting (tab-indented, Go escaping).
    pub fn to_json(&self) -> String {
        to_go_json(self)
    }

    /// `apptainer inspect` plain output: definition, runscript, startscript, test, help,
    /// environment files, then labels as "key: value", each followed by a newline.
    pub fn to_text(&self) -> String {
        let a = &self.data.attributes;
        let mut out = String::new();
        for s in [
            &a.deffile,
            &a.runscript,
            &a.startscript,
            &a.test,
            &a.helpfile,
        ] {
            if !s.is_empty() {
                out.push_str(s);
                out.push('\n');
            }
        }
        for (file, content) in &a.environment {
            out.push_str(&format!("=== {file} ===\n{content}\n\n"));
        }
        for (k, v) in &a.labels {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_selection_matches_apptainer() {
        assert!(is_reported_env_file("90-environment.sh"));
        assert!(is_reported_env_file("91-environment.sh"));
        assert!(is_reported_env_file("10-docker2singularity.sh"));
        assert!(!is_reported_env_file("01-base.sh"));
        assert!(!is_reported_env_file("94-appsbase.sh"));
        assert!(!is_reported_env_file("99-runtimevars.sh"));
    }

    #[test]
    fn json_and_text_shapes() {
        let mut m = InspectMetadata::default();
        m.data.attributes.labels.insert("b".into(), "2".into());
        m.data.attributes.labels.insert("a".into(), "1".into());
        m.data.attributes.runscript = "#!/bin/sh\nexec x".into();
        assert_eq!(
            m.to_json(),
            "{\n\t\"data\": {\n\t\t\"attributes\": {\n\t\t\t\"labels\": {\n\t\t\t\t\"a\": \"1\",\n\t\t\t\t\"b\": \"2\"\n\t\t\t},\n\
             \t\t\t\"runscript\": \"#!/bin/sh\\nexec x\"\n\t\t}\n\t},\n\t\"type\": \"container\"\n}"
        );
        assert_eq!(m.to_text(), "#!/bin/sh\nexec x\na: 1\nb: 2\n");
        let back: InspectMetadata = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(back, m);
    }
}
