//! What the collector counted since the server started: per source accepted, deduplicated and
//! rejected messages, the last 1,000 rejects (reason and field, never a value or an id), commit
//! latencies and 429s. `SHOW SOURCES`, `collector_rejects()` and `/metrics` read it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Rejects kept for `collector_rejects()`.
pub const KEPT_REJECTS: usize = 1_000;

/// Why a message (or one of its fields) was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// No usable userId or anonymousId.
    NoId,
    /// Not an object, an unknown type, a track without an event name.
    Invalid,
    /// A value that does not fit its column (stored NULL).
    Type,
    /// An undeclared personal key (dropped).
    Pii,
    /// A key over `[collector] max_columns`, or a second key with the same column name.
    Columns,
    /// A message of a forgotten user.
    Forgotten,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::NoId,
        Reason::Invalid,
        Reason::Type,
        Reason::Pii,
        Reason::Columns,
        Reason::Forgotten,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reason::NoId => "no_id",
            Reason::Invalid => "invalid",
            Reason::Type => "type",
            Reason::Pii => "pii",
            Reason::Columns => "columns",
            Reason::Forgotten => "forgotten",
        }
    }
}

/// One reject: when, where, why, the message type and the field (a column name, never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub at: i64,
    pub source: String,
    pub reason: Reason,
    pub kind: Option<String>,
    pub field: Option<String>,
}

/// Counts of one source.
#[derive(Debug, Clone, Default)]
pub struct SourceCounts {
    pub accepted: u64,
    pub deduplicated: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub last_seen_at: Option<i64>,
}

impl SourceCounts {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Upper bounds (seconds) of the commit latency histogram.
pub const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct Inner {
    sources: BTreeMap<String, SourceCounts>,
    rejects: VecDeque<Reject>,
    latency_counts: [u64; LATENCY_BUCKETS.len()],
    latency_sum: f64,
    latency_n: u64,
}

/// The collector's counters (one per server process).
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<Inner>,
    /// Messages waiting for a commit.
    pub pending: AtomicU64,
    /// Requests answered 429.
    pub throttled: AtomicU64,
    /// Requests answered 503.
    pub failed: AtomicU64,
    /// Commits that stored something.
    pub commits: AtomicU64,
}

impl Stats {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A request of `source` arrived now.
    pub fn seen(&self, source: &str, now: i64) {
        self.with(|i| {
            i.sources
                .entry(source.to_string())
                .or_default()
                .last_seen_at = Some(now);
        });
    }

    pub fn accepted(&self, source: &str, n: u64) {
        if n > 0 {
            self.with(|i| i.sources.entry(source.to_string()).or_default().accepted += n);
        }
    }

    pub fn deduplicated(&self, source: &str, n: u64) {
        if n > 0 {
            self.with(|i| {
                i.sources
                    .entry(source.to_string())
                    .or_default()
                    .deduplicated += n
            });
        }
    }

    /// Count a reject and keep it among the last [`KEPT_REJECTS`].
    pub fn reject(&self, r: Reject) {
        self.with(|i| {
            *i.sources
                .entry(r.source.clone())
                .or_default()
                .rejected
                .entry(r.reason.name())
                .or_default() += 1;
            if i.rejects.len() == KEPT_REJECTS {
                i.rejects.pop_front();
            }
            i.rejects.push_back(r);
        });
    }

    /// A commit took `secs`.
    pub fn commit_took(&self, secs: f64) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.with(|i| {
            for (b, bound) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    i.latency_counts[b] += 1;
                }
            }
            i.latency_sum += secs;
            i.latency_n += 1;
        });
    }

    /// The counts of every source seen since the start.
    pub fn sources(&self) -> BTreeMap<String, SourceCounts> {
        self.with(|i| i.sources.clone())
    }

    /// The kept rejects, oldest first (of one source, or all).
    pub fn rejects(&self, source: Option<&str>) -> Vec<Reject> {
        self.with(|i| {
            i.rejects
                .iter()
                .filter(|r| source.is_none_or(|s| r.source == s))
                .cloned()
                .collect()
        })
    }

    /// Prometheus text format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::new();
        let (sources, counts, sum, n) = self.with(|i| {
            (
                i.sources.clone(),
                i.latency_counts,
                i.latency_sum,
                i.latency_n,
            )
        });
        let _ = writeln!(
            out,
            "# HELP segdb_collector_accepted_total Messages stored by the collector.\n# TYPE segdb_collector_accepted_total counter"
        );
        for (s, c) in &sources {
            let _ = writeln!(
                out,
                "segdb_collector_accepted_total{{source=\"{}\"}} {}",
                label(s),
                c.accepted
            );
        }
        let _ = writeln!(
            out,
            "# HELP segdb_collector_deduplicated_total Messages acknowledged again and not stored again.\n# TYPE segdb_collector_deduplicated_total counter"
        );
        for (s, c) in &sources {
            let _ = writeln!(
                out,
                "segdb_collector_deduplicated_total{{source=\"{}\"}} {}",
                label(s),
                c.deduplicated
            );
        }
        let _ = writeln!(
            out,
            "# HELP segdb_collector_rejected_total Messages or fields not stored, by reason.\n# TYPE segdb_collector_rejected_total counter"
        );
        for (s, c) in &sources {
            for r in Reason::ALL {
                let _ = writeln!(
                    out,
                    "segdb_collector_rejected_total{{source=\"{}\",reason=\"{}\"}} {}",
                    label(s),
                    r.name(),
                    c.rejected.get(r.name()).copied().unwrap_or(0)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP segdb_collector_pending_events Messages waiting for a commit.\n# TYPE segdb_collector_pending_events gauge\nsegdb_collector_pending_events {}",
            self.pending.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP segdb_collector_throttled_total Requests answered 429.\n# TYPE segdb_collector_throttled_total counter\nsegdb_collector_throttled_total {}",
            self.throttled.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP segdb_collector_unavailable_total Requests answered 503 (a failed commit).\n# TYPE segdb_collector_unavailable_total counter\nsegdb_collector_unavailable_total {}",
            self.failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP segdb_collector_commit_seconds Time from a commit's start to its last table's commit.\n# TYPE segdb_collector_commit_seconds histogram"
        );
        for (b, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "segdb_collector_commit_seconds_bucket{{le=\"{bound}\"}} {}",
                counts[b]
            );
        }
        let _ = writeln!(
            out,
            "segdb_collector_commit_seconds_bucket{{le=\"+Inf\"}} {n}\nsegdb_collector_commit_seconds_sum {sum}\nsegdb_collector_commit_seconds_count {n}"
        );
        out
    }
}

/// `collector_rejects([source])`: the kept rejects, oldest first — `at, source, reason, type,
/// field`.
pub fn udtf(stats: Arc<Stats>) -> Arc<dyn datafusion::catalog::TableFunctionImpl> {
    Arc::new(RejectsFunction { stats })
}

#[derive(Debug)]
struct RejectsFunction {
    stats: Arc<Stats>,
}

impl datafusion::catalog::TableFunctionImpl for RejectsFunction {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> datafusion::common::Result<Arc<dyn datafusion::catalog::TableProvider>> {
        use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
        use arrow::datatypes::{DataType, Field, Schema};
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::Expr;
        let exprs = args.exprs();
        let source = match exprs {
            [] => None,
            [Expr::Literal(ScalarValue::Utf8(Some(s)), _)] => Some(s.clone()),
            _ => {
                return datafusion::common::plan_err!(
                    "collector_rejects() takes no argument or one source name: collector_rejects('web')"
                );
            }
        };
        let rows = self.stats.rejects(source.as_deref());
        let schema = Arc::new(Schema::new(vec![
            Field::new("at", crate::storage::ts_type(), false),
            Field::new("source", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, true),
            Field::new("field", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.at))
                        .with_timezone("UTC"),
                ) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.source.clone()),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.reason.name()),
                )),
                Arc::new(rows.iter().map(|r| r.kind.clone()).collect::<StringArray>()),
                Arc::new(
                    rows.iter()
                        .map(|r| r.field.clone())
                        .collect::<StringArray>(),
                ),
            ],
        )?;
        Ok(Arc::new(datafusion::datasource::MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_keep_the_last_thousand_and_count_all() {
        let s = Stats::default();
        for i in 0..1_200 {
            s.reject(Reject {
                at: i,
                source: if i % 2 == 0 { "web" } else { "app" }.into(),
                reason: Reason::Type,
                kind: Some("track".into()),
                field: Some("price".into()),
            });
        }
        assert_eq!(s.rejects(None).len(), KEPT_REJECTS);
        assert_eq!(s.rejects(None)[0].at, 200);
        assert_eq!(s.rejects(Some("web")).len(), 500);
        assert_eq!(s.sources()["web"].rejected_total(), 600);
        let m = s.prometheus();
        assert!(
            m.contains("segdb_collector_rejected_total{source=\"web\",reason=\"type\"} 600"),
            "{m}"
        );
        s.commit_took(0.03);
        let m = s.prometheus();
        assert!(m.contains("segdb_collector_commit_seconds_bucket{le=\"0.05\"} 1"));
        assert!(m.contains("segdb_collector_commit_seconds_bucket{le=\"0.025\"} 0"));
    }
}
