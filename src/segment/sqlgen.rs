//! SQL text for the scan paths: time literals, event conditions, and the leaf queries.

use chrono::{DateTime, SecondsFormat};

use super::ast::{EventRef, EventSpec};

/// A UTC timestamp literal for epoch microseconds.
pub(crate) fn ts_lit(micros: i64) -> String {
    let t = DateTime::from_timestamp_micros(micros).unwrap_or_default();
    format!(
        "TIMESTAMP '{}'",
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// Human form of epoch microseconds.
pub(crate) fn ts_text(micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The condition selecting one side of a DID leaf.
pub(crate) fn event_cond(spec: &EventSpec) -> String {
    let ev = match &spec.event {
        EventRef::Named(n) => format!("event = {}", quote(n)),
        EventRef::Any => "TRUE".to_string(),
    };
    match &spec.filter {
        Some(f) => format!("({ev}) AND ({})", f.text),
        None => ev,
    }
}

/// `ts` within `[lo, hi)` (`lo` absent: unbounded below).
pub(crate) fn window_cond(lo: Option<i64>, hi: i64) -> String {
    match lo {
        Some(lo) => format!("ts >= {} AND ts < {}", ts_lit(lo), ts_lit(hi)),
        None => format!("ts < {}", ts_lit(hi)),
    }
}
