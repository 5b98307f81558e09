//! The labels `apptainer build` records (org.label-schema.*), and the labels.json format.

use crate::deffile::{Bootstrap, Definition};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Apptainer's build-date label format (Go layout "Monday_2_January_2006_15:4:5_MST"), in UTC:
/// e.g. "Sunday_20_October_2024_19:58:50_UTC".
pub fn format_build_date(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    format!(
        "{weekday}_{day}_{}_{year}_{}:{}:{}_UTC",
        MONTHS[month as usize - 1],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Build time: $SOURCE_DATE_EPOCH if set (reproducible builds), else now.
pub fn build_time() -> i64 {
    if let Some(t) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return t;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The labels recorded for every build, as Apptainer names them.
pub fn build_labels(def: &Definition, arch: &str, when: i64) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        labels.insert(k.to_string(), v);
    };
    put("org.label-schema.build-arch", arch.to_string());
    put("org.label-schema.build-date", format_build_date(when));
    put("org.label-schema.schema-version", "1.0".to_string());
    put(
        "org.label-schema.usage.rctr.version",
        env!("CARGO_PKG_VERSION").to_string(),
    );
    put(
        "org.label-schema.usage.singularity.deffile.bootstrap",
        def.bootstrap.agent().to_string(),
    );
    if let Some(from) = def.bootstrap.from() {
        let key = match def.bootstrap {
            Bootstrap::Debootstrap { .. } => "org.label-schema.usage.singularity.deffile.osversion",
            _ => "org.label-schema.usage.singularity.deffile.from",
        };
        put(key, from.to_string());
    }
    labels
}

/// Labels from a labels.json file. Non-string values are kept as their JSON text; anything
/// that is not a JSON object yields None.
pub fn parse_labels_json(bytes: &[u8]) -> Option<BTreeMap<String, String>> {
    let Value::Object(map) = serde_json::from_slice::<Value>(bytes).ok()? else {
        return None;
    };
    Some(
        map.into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
    )
}

/// labels.json as Apptainer writes it: tab-indented, keys sorted, no trailing newline.
pub fn labels_json(labels: &BTreeMap<String, String>) -> Vec<u8> {
    let map: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    to_go_json(&Value::Object(map)).into_bytes()
}

/// JSON the way Go's json.MarshalIndent(v, "", "\t") prints it: tab indentation and `<`, `>`,
/// `&` escaped (they can only appear inside strings, so replacing them is safe).
pub fn to_go_json<T: serde::Serialize>(value: &T) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    value
        .serialize(&mut ser)
        .expect("serializing to memory cannot fail");
    String::from_utf8(buf)
        .expect("serde_json writes UTF-8")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_dates_match_go_layout() {
        assert_eq!(format_build_date(0), "Thursday_1_January_1970_0:0:0_UTC");
        // 2021-08-02 19:09:36 UTC (the busybox test image was built then, in CDT).
        assert_eq!(
            format_build_date(1_627_931_376),
            "Monday_2_August_2021_19:9:36_UTC"
        );
        assert_eq!(
            format_build_date(1_709_210_096),
            "Thursday_29_February_2024_12:34:56_UTC"
        );
        assert_eq!(
            format_build_date(4_102_444_799),
            "Thursday_31_December_2099_23:59:59_UTC"
        );
    }

    #[test]
    fn labels_round_trip_in_apptainer_format() {
        let mut l = BTreeMap::new();
        l.insert("b".to_string(), "x<y & z".to_string());
        l.insert("a".to_string(), "1".to_string());
        let text = String::from_utf8(labels_json(&l)).unwrap();
        assert_eq!(
            text,
            "{\n\t\"a\": \"1\",\n\t\"b\": \"x\\u003cy \\u0026 z\"\n}"
        );
        assert_eq!(parse_labels_json(text.as_bytes()), Some(l));
        let parsed = parse_labels_json(br#"{"n": 3, "s": "t"}"#).unwrap();
        assert_eq!(parsed["n"], "3");
        assert!(parse_labels_json(b"[1]").is_none());
        assert!(parse_labels_json(b"not json").is_none());
    }

    #[test]
    fn build_labels_name_bootstrap_and_source() {
        let def = Definition::for_local_image(std::path::Path::new("/src/root"));
        let l = build_labels(&def, "amd64", 0);
        assert_eq!(l["org.label-schema.build-arch"], "amd64");
        assert_eq!(l["org.label-schema.schema-version"], "1.0");
        assert_eq!(
            l["org.label-schema.usage.singularity.deffile.bootstrap"],
            "localimage"
        );
        assert_eq!(
            l["org.label-schema.usage.singularity.deffile.from"],
            "/src/root"
        );
        assert_eq!(
            l["org.label-schema.build-date"],
            "Thursday_1_January_1970_0:0:0_UTC"
        );
    }
}
