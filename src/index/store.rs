//! The event index: per (event, UTC day) the bit-sliced count of each user's events that day,
//! persisted as the Delta table `_segdb/event_index` (event, day, slice, bitmap, events_version).
//! Every load appends the counts of its own rows (counts add, so appends never rewrite), tagged
//! with the events-table version it committed; the index as a whole reflects the highest version
//! it holds. A reader whose events table is newer rebuilds it from `events`, so it is never ahead
//! of or silently behind its data. `segdb index rebuild` recreates it from scratch.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Int32Type, Int64Type};
use datafusion::prelude::SessionContext;
use deltalake::protocol::SaveMode;
use futures::StreamExt;
use roaring::RoaringBitmap;

use super::bsi::Bsi;
use super::codec::{from_bytes, to_bytes};
use crate::error::{Error, Result};
use crate::storage::{Database, Table, base_schema};

/// Microseconds per day.
pub const DAY_US: i64 = 86_400_000_000;

/// The in-memory index.
#[derive(Debug, Default, Clone)]
pub struct EventIndex {
    pub days: HashMap<(String, i32), Bsi>,
    /// The events-table version this index reflects (`None`: no events committed yet).
    pub events_version: Option<u64>,
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
        let mut acc = Bsi::default();
        for ((e, d), bsi) in &self.days {
            if *d >= from_day && *d < to_day && event.is_none_or(|want| want == e) {
                acc.add(bsi);
            }
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

    /// Collects (event, day, uid) occurrences of a load, to append after the events commit.
    pub fn collector() -> Collector {
        Collector::default()
    }
}

/// Occurrences of one load, grouped by (event, day).
#[derive(Debug, Default)]
pub struct Collector {
    occurrences: HashMap<(String, i32), Vec<u32>>,
}

impl Collector {
    /// Record the rows of a normalised events batch (`uid`, `event`, `ts` columns).
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
            let key = (ev.value(i).to_string(), day);
            self.occurrences
                .entry(key)
                .or_default()
                .push(uid.value(i) as u32);
        }
        Ok(())
    }

    /// Turn occurrences into per-key BSIs.
    pub fn finish(self) -> HashMap<(String, i32), Bsi> {
        self.occurrences
            .into_iter()
            .map(|(k, mut uids)| {
                uids.sort_unstable();
                let mut counts: Vec<(u32, u64)> = Vec::new();
                for u in uids {
                    match counts.last_mut() {
                        Some((x, c)) if *x == u => *c += 1,
                        _ => counts.push((u, 1)),
                    }
                }
                (k, Bsi::from_counts(counts))
            })
            .collect()
    }
}

fn to_batch(days: &HashMap<(String, i32), Bsi>, version: i64) -> Result<RecordBatch> {
    let (mut e, mut d, mut s, mut b, mut v) = (
        StringBuilder::new(),
        Date32Builder::new(),
        Int32Builder::new(),
        BinaryBuilder::new(),
        Int64Builder::new(),
    );
    let mut keys: Vec<_> = days.keys().collect();
    keys.sort();
    for key in keys {
        for (k, slice) in days[key].slices.iter().enumerate() {
            e.append_value(&key.0);
            d.append_value(key.1);
            s.append_value(k as i32);
            b.append_value(to_bytes(slice));
            v.append_value(version);
        }
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(e.finish()),
        Arc::new(d.finish()),
        Arc::new(s.finish()),
        Arc::new(b.finish()),
        Arc::new(v.finish()),
    ];
    Ok(RecordBatch::try_new(base_schema(Table::EventIndex), cols)?)
}

/// Append the counts of one load that committed `events_version`.
pub async fn append(
    db: &Database,
    days: &HashMap<(String, i32), Bsi>,
    events_version: u64,
) -> Result<()> {
    if days.is_empty() {
        return Ok(());
    }
    let batch = to_batch(days, events_version as i64)?;
    let table = db.load(Table::EventIndex).await?;
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .await?;
    Ok(())
}

/// The latest committed version of `events`.
pub async fn events_version(db: &Database) -> Result<Option<u64>> {
    let t = db.latest(Table::Events).await?;
    // Version 0 is the table's creation (no rows).
    Ok(t.version().filter(|v| *v > 0))
}

/// Load the persisted index. Returns it with the version it reflects.
pub async fn load(db: &Database) -> Result<EventIndex> {
    let (_, batches) = db.scan(Table::EventIndex).await?;
    let mut idx = EventIndex::default();
    let mut parts: HashMap<(String, i32, i64), Vec<(usize, RoaringBitmap)>> = HashMap::new();
    for b in batches {
        let ev = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let ev = ev.as_string::<i32>();
        let day = b.column(1).as_primitive::<Date32Type>();
        let slice = b.column(2).as_primitive::<Int32Type>();
        let bin = crate::functions::bitmap::binary::as_binary(b.column(3))?;
        let ver = b.column(4).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let bm = from_bytes(bin.value(i)).ok_or_else(|| {
                Error::storage("the event index holds a damaged bitmap; run `segdb index rebuild`")
            })?;
            let v = ver.value(i);
            idx.events_version = Some(idx.events_version.map_or(v as u64, |x| x.max(v as u64)));
            parts
                .entry((ev.value(i).to_string(), day.value(i), v))
                .or_default()
                .push((slice.value(i) as usize, bm));
        }
    }
    for ((event, day, _), mut slices) in parts {
        slices.sort_by_key(|(k, _)| *k);
        let n = slices.last().map(|(k, _)| k + 1).unwrap_or(0);
        let mut bsi = Bsi {
            slices: vec![RoaringBitmap::new(); n],
        };
        for (k, bm) in slices {
            bsi.slices[k] = bm;
        }
        idx.days.entry((event, day)).or_default().add(&bsi);
    }
    Ok(idx)
}

/// Recreate the index from `events` (one overwrite commit).
pub async fn rebuild(db: &Database, ctx: &SessionContext) -> Result<EventIndex> {
    let version = events_version(db).await?;
    let df = ctx
        .sql("SELECT event, CAST(floor(CAST(arrow_cast(ts, 'Int64') AS DOUBLE) / 86400000000.0) AS INT) AS day, uid, count(*) AS c FROM events WHERE ts IS NOT NULL AND event IS NOT NULL AND uid IS NOT NULL GROUP BY 1, 2, 3")
        .await?;
    let mut stream = df.execute_stream().await?;
    let mut counts: HashMap<(String, i32), Vec<(u32, u64)>> = HashMap::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        let ev = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let ev = ev.as_string::<i32>();
        let day = arrow::compute::cast(b.column(1), &DataType::Int32)?;
        let day = day.as_primitive::<Int32Type>();
        let uid = arrow::compute::cast(b.column(2), &DataType::Int64)?;
        let uid = uid.as_primitive::<Int64Type>();
        let c = arrow::compute::cast(b.column(3), &DataType::Int64)?;
        let c = c.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            counts
                .entry((ev.value(i).to_string(), day.value(i)))
                .or_default()
                .push((uid.value(i) as u32, c.value(i) as u64));
        }
    }
    let days: HashMap<(String, i32), Bsi> = counts
        .into_iter()
        .map(|(k, v)| (k, Bsi::from_counts(v)))
        .collect();
    let batch = to_batch(&days, version.unwrap_or(0) as i64)?;
    let table = db.load(Table::EventIndex).await?;
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Overwrite)
        .await?;
    Ok(EventIndex {
        days,
        events_version: version,
    })
}

/// The highest events version the persisted index holds (0 when it is empty). Reads only the
/// `events_version` column.
pub async fn persisted_version(db: &Database) -> Result<u64> {
    let table = db.latest(Table::EventIndex).await?;
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let max =
        datafusion::functions_aggregate::expr_fn::max(datafusion::prelude::col("events_version"));
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .aggregate(vec![], vec![max])?
        .collect()
        .await?;
    let v = match batches.first() {
        Some(b) => {
            let c = arrow::compute::cast(b.column(0), &DataType::Int64)?;
            let c = c.as_primitive::<Int64Type>();
            if c.is_valid(0) { c.value(0) } else { 0 }
        }
        None => 0,
    };
    Ok(v.max(0) as u64)
}
