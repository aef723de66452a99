//! The collector: events from websites and apps over Segment's and RudderStack's HTTP API
//! (DESIGN §14). `wire` turns a request into messages, `map` turns a message into rows,
//! `commit` groups the messages of many requests into one commit per table and answers each
//! request only after its commit, `dedup` remembers what was acknowledged, and `sources` keeps the
//! write keys (as keyed hashes only). The HTTP routes themselves live in `crate::http`.

pub mod commit;
pub mod dedup;
pub mod json;
pub mod map;
pub mod sources;
pub mod stats;
pub mod wire;

use serde::Deserialize;

use crate::error::{Error, Result};

/// `[collector]` of the config file (every key optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// How long a message may wait before its commit starts.
    pub commit_interval: String,
    /// Messages one commit takes at most.
    pub max_batch_events: usize,
    /// How long an acknowledged `(source, messageId)` is remembered.
    pub dedup_window: String,
    /// How many acknowledged ids are remembered at most (the oldest are forgotten first).
    pub dedup_max_ids: usize,
    /// Messages waiting for a commit beyond which requests get 429.
    pub max_pending_events: usize,
    /// Columns a collected table may have at most; keys beyond are rejected (`columns`).
    pub max_columns: usize,
    /// How long a rotated key keeps working.
    pub key_grace: String,
    /// Origins allowed by CORS (`*`: any).
    pub cors_origins: Vec<String>,
    /// How often `segdb serve` compacts the tables the collector wrote.
    pub compact_every: String,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            commit_interval: "100 milliseconds".into(),
            max_batch_events: 50_000,
            dedup_window: "24 hours".into(),
            dedup_max_ids: 20_000_000,
            max_pending_events: 500_000,
            max_columns: 500,
            key_grace: "24 hours".into(),
            cors_origins: vec!["*".into()],
            compact_every: "15 minutes".into(),
        }
    }
}

/// [`CollectorConfig`] with its durations read (microseconds).
#[derive(Debug, Clone)]
pub struct Settings {
    pub commit_interval: std::time::Duration,
    pub max_batch_events: usize,
    pub dedup_window_micros: i64,
    pub dedup_max_ids: usize,
    pub max_pending_events: usize,
    pub max_columns: usize,
    pub key_grace_micros: i64,
    pub cors_origins: Vec<String>,
    pub compact_every: std::time::Duration,
}

impl CollectorConfig {
    /// Check and read the section.
    pub fn settings(&self) -> Result<Settings> {
        let dur = |key: &str, s: &str| -> Result<i64> {
            let us = duration_micros(s)
                .ok_or_else(|| Error::invalid(format!("[collector] {key}: {s:?} is not a duration such as '100 milliseconds', '15 minutes' or '24 hours'")))?;
            if us <= 0 {
                return Err(Error::invalid(format!(
                    "[collector] {key} must be longer than zero"
                )));
            }
            Ok(us)
        };
        let positive = |key: &str, n: usize| -> Result<usize> {
            if n == 0 {
                return Err(Error::invalid(format!(
                    "[collector] {key} must be at least 1"
                )));
            }
            Ok(n)
        };
        Ok(Settings {
            commit_interval: std::time::Duration::from_micros(dur(
                "commit_interval",
                &self.commit_interval,
            )? as u64),
            max_batch_events: positive("max_batch_events", self.max_batch_events)?,
            dedup_window_micros: dur("dedup_window", &self.dedup_window)?,
            dedup_max_ids: positive("dedup_max_ids", self.dedup_max_ids)?,
            max_pending_events: positive("max_pending_events", self.max_pending_events)?,
            max_columns: positive("max_columns", self.max_columns)?,
            key_grace_micros: dur("key_grace", &self.key_grace)?,
            cors_origins: self.cors_origins.clone(),
            compact_every: std::time::Duration::from_micros(dur(
                "compact_every",
                &self.compact_every,
            )? as u64),
        })
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

impl Default for Settings {
    fn default() -> Self {
        CollectorConfig::default()
            .settings()
            .expect("the defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_micros("100 milliseconds"), Some(100_000));
        assert_eq!(duration_micros("100ms"), Some(100_000));
        assert_eq!(duration_micros("1 hour 30 minutes"), Some(5_400_000_000));
        assert_eq!(duration_micros("24 hours"), Some(86_400_000_000));
        assert_eq!(duration_micros("soon"), None);
        assert_eq!(duration_micros("5"), None);
        assert_eq!(duration_micros(""), None);
    }

    #[test]
    fn defaults_and_bad_values() {
        let s = Settings::default();
        assert_eq!(s.commit_interval, std::time::Duration::from_millis(100));
        assert_eq!(s.dedup_window_micros, 24 * 3600 * 1_000_000);
        let bad = CollectorConfig {
            commit_interval: "soon".into(),
            ..Default::default()
        };
        let e = bad.settings().unwrap_err().to_string();
        assert!(e.contains("[collector] commit_interval"), "{e}");
        let zero = CollectorConfig {
            max_columns: 0,
            ..Default::default()
        };
        assert!(zero.settings().is_err());
    }
}
