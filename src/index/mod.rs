//! The event index: per (event, UTC day) the bit-sliced count of each user's events that day,
//! persisted as the Delta table `_segdb/event_index` and tagged with the events-table version it
//! reflects. [`store`] reads and writes it; [`catchup`] brings an index up to a newer events
//! version — in memory for readers (who never commit), persisted by writers.

pub mod catchup;
pub mod store;
pub mod timeline;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};

use crate::bitmap::bsi::Bsi;
use crate::error::{Error, Result};

/// Microseconds per day.
pub const DAY_US: i64 = 86_400_000_000;

/// Per-(event, day) counts.
pub type Days = HashMap<(String, i32), Bsi>;

/// The in-memory index.
#[derive(Debug, Default, Clone)]
pub struct EventIndex {
    /// Per (event, day) counts; change them through [`EventIndex::add`] (it drops cached sums).
    pub days: Days,
    /// The events-table version this index reflects (0: no events committed yet).
    pub events_version: u64,
    /// Sums already computed over day ranges of this index (see [`EventIndex::counts`]).
    sums: Sums,
}

/// Bytes of sums kept per index; past it the cache starts over.
const SUMS_BUDGET: usize = 64 << 20;

/// Sums over (event or any, first day, end day). The whole days of a window stay the same from
/// one midnight to the next while `as_of` moves, so a dashboard or a schedule asking all day
/// adds the per-day counts once. A clone starts empty: clones are made to be changed.
#[derive(Debug, Default)]
struct Sums {
    map: std::sync::Mutex<(HashMap<(Option<String>, i32, i32), Arc<Bsi>>, usize)>,
}

impl Clone for Sums {
    fn clone(&self) -> Sums {
        Sums::default()
    }
}

impl EventIndex {
    /// The event names the index knows.
    pub fn event_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.days.keys().map(|(e, _)| e.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Sum of the day counts of `event` (`None` = any event) over days `[from, to)`.
    pub fn counts(&self, event: Option<&str>, from_day: i32, to_day: i32) -> Bsi {
        let key = (event.map(str::to_string), from_day, to_day);
        if let Some(b) = self.sums.map.lock().expect("not poisoned").0.get(&key) {
            return Bsi::clone(b);
        }
        let mut acc = Bsi::default();
        for ((e, d), bsi) in &self.days {
            if *d >= from_day && *d < to_day && event.is_none_or(|want| want == e) {
                acc.add(bsi);
            }
        }
        let bytes: usize = acc.slices.iter().map(|s| s.serialized_size()).sum();
        let mut g = self.sums.map.lock().expect("not poisoned");
        if g.1 + bytes > SUMS_BUDGET {
            g.0.clear();
            g.1 = 0;
        }
        if bytes <= SUMS_BUDGET {
            g.1 += bytes;
            g.0.insert(key, Arc::new(acc.clone()));
        }
        acc
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.days
            .values()
            .flat_map(|b| &b.slices)
            .map(|s| s.serialized_size())
            .sum()
    }

    /// A copy with `days` added, reflecting `events_version`. Cached sums over ranges none of
    /// the added (event, day) pairs falls in are kept (a stream of appends to today leaves the
    /// sums of other events and of past windows standing).
    pub fn extended(&self, days: &Days, events_version: u64) -> EventIndex {
        let mut out = EventIndex {
            days: self.days.clone(),
            events_version,
            sums: Sums::default(),
        };
        for (k, bsi) in days {
            out.days.entry(k.clone()).or_default().add(bsi);
        }
        let g = self.sums.map.lock().expect("not poisoned");
        let mut kept = HashMap::new();
        let mut bytes = 0usize;
        for (key, sum) in g.0.iter() {
            let (event, from, to) = key;
            let touched = days.keys().any(|(e, d)| {
                *d >= *from && *d < *to && event.as_deref().is_none_or(|want| want == e)
            });
            if !touched {
                bytes += sum
                    .slices
                    .iter()
                    .map(|s| s.serialized_size())
                    .sum::<usize>();
                kept.insert(key.clone(), sum.clone());
            }
        }
        *out.sums.map.lock().expect("not poisoned") = (kept, bytes);
        out
    }

    /// Add per-day counts.
    pub fn add(&mut self, days: &Days) {
        self.sums = Sums::default();
        for (k, bsi) in days {
            self.days.entry(k.clone()).or_default().add(bsi);
        }
    }
}

/// Collects (event, day, uid) occurrences of events rows, to turn into per-day counts.
#[derive(Debug, Default)]
pub struct Collector {
    occurrences: HashMap<(String, i32), Vec<u32>>,
}

impl Collector {
    /// Record the rows of a batch with `uid`, `event` and `ts` columns.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let col = |n: &str| {
            batch
                .column_by_name(n)
                .cloned()
                .ok_or_else(|| Error::ingest(format!("index: batch has no {n}")))
        };
        let uid = arrow::compute::cast(&col("uid")?, &DataType::Int64)?;
        let uid = uid.as_primitive::<Int64Type>();
        let ev = arrow::compute::cast(&col("event")?, &DataType::Utf8)?;
        let ev = ev.as_string::<i32>();
        let ts = arrow::compute::cast(&col("ts")?, &DataType::Int64)?;
        let ts = ts.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if uid.is_null(i) || ev.is_null(i) || ts.is_null(i) {
                continue;
            }
            let day = ts.value(i).div_euclid(DAY_US) as i32;
            match self.occurrences.get_mut(&(ev.value(i).to_string(), day)) {
                Some(v) => v.push(uid.value(i) as u32),
                None => {
                    self.occurrences
                        .insert((ev.value(i).to_string(), day), vec![uid.value(i) as u32]);
                }
            }
        }
        Ok(())
    }

    /// Turn occurrences into per-key counts.
    pub fn finish(self) -> Days {
        self.occurrences
            .into_iter()
            .map(|(k, mut uids)| {
                timeline::radix_sort(&mut uids);
                (k, Bsi::from_counts(timeline::runs(uids)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(users: &[(u32, u64)]) -> Bsi {
        Bsi::from_counts(users.iter().copied())
    }

    #[test]
    fn an_extended_copy_keeps_only_untouched_sums() {
        let mut idx = EventIndex::default();
        let one = |uid: u32| Bsi::from_counts([(uid, 1)]);
        idx.add(&Days::from([
            (("buy".to_string(), 10), one(1)),
            (("view".to_string(), 10), one(2)),
        ]));
        let buy = idx.counts(Some("buy"), 0, 20);
        let view = idx.counts(Some("view"), 0, 20);
        let any = idx.counts(None, 0, 20);
        let more = Days::from([(("view".to_string(), 11), one(3))]);
        let ext = idx.extended(&more, 7);
        assert_eq!(ext.events_version, 7);
        // Every sum equals a fresh sum over the extended days…
        let mut fresh = EventIndex::default();
        fresh.add(&ext.days);
        for (e, from, to) in [
            (Some("buy"), 0, 20),
            (Some("view"), 0, 20),
            (None, 0, 20),
            (Some("view"), 11, 12),
        ] {
            assert_eq!(
                ext.counts(e, from, to),
                fresh.counts(e, from, to),
                "{e:?} {from}..{to}"
            );
        }
        // …the untouched one came from the cache, the touched ones were recomputed.
        assert_eq!(ext.counts(Some("buy"), 0, 20), buy);
        assert_ne!(ext.counts(Some("view"), 0, 20), view);
        assert_ne!(ext.counts(None, 0, 20), any);
        // The original is unchanged.
        assert_eq!(idx.counts(Some("view"), 0, 20), view);
    }

    #[test]
    fn cached_sums_equal_fresh_sums_and_follow_added_days() {
        let mut days = Days::new();
        days.insert(("a".into(), 10), day(&[(1, 2), (2, 1)]));
        days.insert(("a".into(), 11), day(&[(1, 1), (3, 4)]));
        days.insert(("b".into(), 11), day(&[(2, 7)]));
        let mut idx = EventIndex::default();
        idx.add(&days);
        let fresh = |idx: &EventIndex, e: Option<&str>, a: i32, b: i32| {
            let mut acc = Bsi::default();
            for ((k, d), bsi) in &idx.days {
                if *d >= a && *d < b && e.is_none_or(|w| w == k) {
                    acc.add(bsi);
                }
            }
            acc
        };
        for _ in 0..2 {
            for (e, a, b) in [
                (Some("a"), 10, 12),
                (None, 10, 12),
                (Some("b"), 0, 11),
                (None, 11, 12),
            ] {
                assert_eq!(idx.counts(e, a, b), fresh(&idx, e, a, b), "{e:?} {a} {b}");
            }
        }
        assert_eq!(
            idx.counts(Some("a"), 10, 12).at_least(3),
            [1, 3].into_iter().collect()
        );
        // New days for a range already summed: the next sum includes them.
        let mut more = Days::new();
        more.insert(("a".into(), 11), day(&[(2, 5)]));
        idx.add(&more);
        assert_eq!(
            idx.counts(Some("a"), 10, 12),
            fresh(&idx, Some("a"), 10, 12)
        );
        assert_eq!(
            idx.counts(Some("a"), 10, 12).at_least(6),
            [2].into_iter().collect()
        );
        // A clone starts with no sums, and its changes do not reach the original.
        let mut c = idx.clone();
        c.add(&more);
        assert_eq!(
            idx.counts(Some("a"), 10, 12).at_least(6),
            [2].into_iter().collect()
        );
        assert_eq!(
            c.counts(Some("a"), 10, 12).at_least(11),
            [2].into_iter().collect()
        );
    }
}
