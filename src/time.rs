//! Timestamps as users write them (ingest columns, SET segdb.as_of, windows, function arguments):
//! ISO-8601 (with a zone, or without one meaning UTC, or a bare date meaning midnight UTC) and
//! integer epoch milliseconds. Output is epoch microseconds.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Parse one textual timestamp into epoch microseconds.
pub fn parse_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok()?.checked_mul(1000);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, f) {
            return Some(t.timestamp_micros());
        }
    }
    let naive = s.strip_suffix(" UTC").unwrap_or(s);
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(naive, f) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(naive, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::parse_micros;

    #[test]
    fn accepted_forms() {
        let t = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
        for s in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01 00:00:00",
            "2026-01-01 00:00:00.000",
            "2026-01-01T01:00:00+01:00",
            "2026-01-01 01:00:00+0100",
            "2025-12-31T19:00:00-05:00",
            "2026-01-01",
            "1767225600000",
            "2026-01-01 00:00",
        ] {
            assert_eq!(parse_micros(s), Some(t), "{s}");
        }
        assert_eq!(
            parse_micros("2026-01-01T00:00:00.123456Z"),
            Some(t + 123_456)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-01-01T25:00:00Z",
            "12:00",
        ] {
            assert_eq!(parse_micros(bad), None, "{bad}");
        }
    }
}

/// Epoch microseconds as RFC 3339 UTC (seconds, or fractions when there are any).
pub fn format_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}
