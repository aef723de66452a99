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

/// A span of time that relative timestamps and windows step back by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    Minutes,
    Hours,
    Days,
    Weeks,
    /// Calendar months: the day is clamped to the month's end (31 March − 1 month is the last
    /// day of February), as in PostgreSQL.
    Months,
}

impl Span {
    fn word(self) -> &'static str {
        match self {
            Span::Minutes => "minutes",
            Span::Hours => "hours",
            Span::Days => "days",
            Span::Weeks => "weeks",
            Span::Months => "months",
        }
    }

    fn parse(w: &str) -> Option<Span> {
        Some(match w.to_ascii_lowercase().trim_end_matches('s') {
            "minute" | "min" => Span::Minutes,
            "hour" => Span::Hours,
            "day" => Span::Days,
            "week" => Span::Weeks,
            "month" => Span::Months,
            _ => return None,
        })
    }
}

/// `at` stepped back by `n` spans (epoch µs; saturating at the far past).
pub fn back(at: i64, n: u64, span: Span) -> i64 {
    let fixed = |unit: i64| at.saturating_sub((n as i64).saturating_mul(unit));
    match span {
        Span::Minutes => fixed(60_000_000),
        Span::Hours => fixed(3_600_000_000),
        Span::Days => fixed(86_400_000_000),
        Span::Weeks => fixed(7 * 86_400_000_000),
        Span::Months => {
            let Some(t) = DateTime::from_timestamp_micros(at) else {
                return i64::MIN;
            };
            u32::try_from(n)
                .ok()
                .and_then(|m| t.checked_sub_months(chrono::Months::new(m)))
                .map_or(i64::MIN, |d| d.timestamp_micros())
        }
    }
}

/// A timestamp as written in a window or a setting: absolute, or relative to a reference time
/// (`as_of` in a window, now in `SET segdb.as_of` and `AS OF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ts {
    At(i64),
    /// `'today'`: the UTC midnight starting the reference time's day.
    Today,
    /// `'yesterday'`: the UTC midnight before that.
    Yesterday,
    /// `'-7 days'`, `'-3 months'`, …: the reference time stepped back.
    Ago(u64, Span),
}

impl Ts {
    /// An absolute timestamp (`parse_micros`) or a relative one.
    pub fn parse(s: &str) -> Option<Ts> {
        if let Some(t) = parse_micros(s) {
            return Some(Ts::At(t));
        }
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "today" => return Some(Ts::Today),
            "yesterday" => return Some(Ts::Yesterday),
            _ => {}
        }
        let rest = t.strip_prefix('-')?.trim_start();
        let (n, unit) = rest.split_once(char::is_whitespace)?;
        let n: u64 = n.parse().ok()?;
        Some(Ts::Ago(n, Span::parse(unit.trim())?))
    }

    /// The time it names, relative to `reference`.
    pub fn resolve(self, reference: i64) -> i64 {
        const DAY: i64 = 86_400_000_000;
        match self {
            Ts::At(t) => t,
            Ts::Today => reference.div_euclid(DAY) * DAY,
            Ts::Yesterday => reference.div_euclid(DAY) * DAY - DAY,
            Ts::Ago(n, s) => back(reference, n, s),
        }
    }

    /// As written back in a definition: RFC 3339 for absolute times, the relative form else.
    pub fn text(self) -> String {
        match self {
            Ts::At(t) => format_micros(t),
            Ts::Today => "today".into(),
            Ts::Yesterday => "yesterday".into(),
            Ts::Ago(n, s) => format!("-{n} {}", s.word()),
        }
    }
}

#[cfg(test)]
mod relative_tests {
    use super::*;

    #[test]
    fn durations_of_the_config_file() {
        assert_eq!(duration_micros("100 milliseconds"), Some(100_000));
        assert_eq!(duration_micros("100ms"), Some(100_000));
        assert_eq!(duration_micros("1 hour 30 minutes"), Some(5_400_000_000));
        assert_eq!(duration_micros("24 hours"), Some(86_400_000_000));
        assert_eq!(duration_micros("soon"), None);
        assert_eq!(duration_micros("5"), None);
        assert_eq!(duration_micros(""), None);
        let ms = std::time::Duration::from_millis(10);
        assert_eq!(
            config_duration("live", "tick", "1 second", ms)
                .unwrap()
                .as_secs(),
            1
        );
        let err = config_duration("live", "tick", "5 ms", ms)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[live] tick = \"5 ms\" is not a duration of at least 10ms"),
            "{err}"
        );
    }

    #[test]
    fn relative_timestamps_and_calendar_months() {
        let t = parse_micros("2026-03-31T10:30:00Z").unwrap();
        assert_eq!(
            Ts::parse("today").unwrap().resolve(t),
            parse_micros("2026-03-31").unwrap()
        );
        assert_eq!(
            Ts::parse(" Yesterday ").unwrap().resolve(t),
            parse_micros("2026-03-30").unwrap()
        );
        assert_eq!(
            Ts::parse("-7 days").unwrap().resolve(t),
            parse_micros("2026-03-24T10:30:00Z").unwrap()
        );
        // 31 March - 1 month = the last day of February, keeping the time of day.
        assert_eq!(
            Ts::parse("-1 month").unwrap().resolve(t),
            parse_micros("2026-02-28T10:30:00Z").unwrap()
        );
        assert_eq!(
            back(parse_micros("2024-05-31").unwrap(), 3, Span::Months),
            parse_micros("2024-02-29").unwrap()
        );
        assert_eq!(
            Ts::parse("2026-01-01"),
            Some(Ts::At(parse_micros("2026-01-01").unwrap()))
        );
        for bad in ["-x days", "7 days", "-7 fortnights", "tomorrow", ""] {
            assert_eq!(Ts::parse(bad), None, "{bad}");
        }
        assert_eq!(Ts::parse("-3 Months").unwrap().text(), "-3 months");
    }
}

/// A duration such as `'100 milliseconds'`, `'15 minutes'` or `'1 hour 30 minutes'`, in µs.
pub fn duration_micros(s: &str) -> Option<i64> {
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut total: i64 = 0;
    let mut i = 0;
    if words.is_empty() {
        return None;
    }
    while i < words.len() {
        // "100ms" or "100 ms".
        let w = words[i];
        let split = w
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(w.len());
        let (num, mut unit) = w.split_at(split);
        let n: f64 = num.parse().ok()?;
        if unit.is_empty() {
            i += 1;
            unit = words.get(i)?;
        }
        let per: f64 = match unit.to_ascii_lowercase().as_str() {
            "us" | "microsecond" | "microseconds" => 1.0,
            "ms" | "millisecond" | "milliseconds" | "millis" => 1e3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
            "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86_400e6,
            "w" | "week" | "weeks" => 604_800e6,
            _ => return None,
        };
        let v = n * per;
        if !v.is_finite() || v > 1e17 {
            return None;
        }
        total = total.checked_add(v as i64)?;
        i += 1;
    }
    Some(total)
}

/// A duration of the config file, `[section] key = "…"` ('100 milliseconds', '15 minutes',
/// '1 hour 30 minutes'), at least `min`; the error names the key and says how to write one.
pub fn config_duration(
    section: &str,
    key: &str,
    text: &str,
    min: std::time::Duration,
) -> crate::error::Result<std::time::Duration> {
    match duration_micros(text) {
        Some(us) if us >= 0 && us as u128 >= min.as_micros() => {
            Ok(std::time::Duration::from_micros(us as u64))
        }
        _ => Err(crate::error::Error::Invalid(format!(
            "[{section}] {key} = {text:?} is not a duration of at least {}; write it like '100 milliseconds', '15 seconds' or '24 hours'",
            humantime::format_duration(min)
        ))),
    }
}
