//! Go's `time.Time.String()` for a whole-second UTC time, which is how siftool prints times:
//! `2020-06-30 00:01:56 +0000 UTC`. Always UTC, so the output is deterministic.

/// Formats Unix seconds the way Go prints `time.Unix(secs, 0).UTC()`.
pub fn format_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    // Go pads the year to 4 digits after the sign ("-0001", "10000").
    let year = if year < 0 {
        format!("-{:04}", year.unsigned_abs())
    } else {
        format!("{year:04}")
    };
    format!(
        "{year}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000 UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
/// No overflow for any day count derived from an `i64` of seconds.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_times() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(format_utc(1_593_475_316), "2020-06-30 00:01:56 +0000 UTC");
        assert_eq!(format_utc(1_590_175_859), "2020-05-22 19:30:59 +0000 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 +0000 UTC");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59 +0000 UTC");
        assert_eq!(
            format_utc(crate::header::GO_ZERO_TIME_UNIX),
            "0001-01-01 00:00:00 +0000 UTC"
        );
        assert_eq!(
            format_utc(253_402_300_800),
            "10000-01-01 00:00:00 +0000 UTC"
        );
    }

    #[test]
    fn extremes_do_not_panic() {
        assert!(format_utc(i64::MIN).contains("UTC"));
        assert!(format_utc(i64::MAX).contains("UTC"));
    }
}
