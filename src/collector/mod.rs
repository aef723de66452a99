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
            crate::time::config_duration("collector", key, s, std::time::Duration::from_micros(1))
                .map(|d| d.as_micros() as i64)
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
