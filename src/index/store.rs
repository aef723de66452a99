//! The persisted event index, `_segdb/event_index`: rows of (event, day, slice, bitmap,
//! events_version). Counts add, so an events load appends the counts of its own rows; a full
//! rebuild overwrites. Every index commit records in its commit info the events version the
//! index reflects after it (`segdb.events_version`) and is made at exactly the next index
//! version, so a version is never applied twice and two writers never both extend one state.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Int32Type, Int64Type};
use deltalake::DeltaTable;
use roaring::RoaringBitmap;

use super::{Days, EventIndex};
use crate::bitmap::bsi::Bsi;
use crate::bitmap::codec::{from_bytes, to_bytes};
use crate::error::{Error, Result};
use crate::storage::commit::{self, Committed};
use crate::storage::{Database, Table, base_schema, snapshot_column as column};

const VERSION_KEY: &str = "segdb.events_version";

fn to_batch(days: &Days, version: u64) -> Result<RecordBatch> {
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
            v.append_value(version as i64);
        }
    }
    if days.is_empty() {
        // A marker row: the index reflects `version` and holds no new counts.
        e.append_null();
        d.append_null();
        s.append_null();
        b.append_null();
        v.append_value(version as i64);
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

fn meta(version: u64) -> commit::Meta {
    let mut m = commit::op("index");
    m.push((VERSION_KEY.to_string(), serde_json::Value::from(version)));
    m
}

/// The events version the persisted index (at `table`'s version) reflects, from the commit
/// info of that version; `None` when it does not say (an index written by wave 1, or a version
/// whose log entry is gone): then the rows tell.
pub async fn recorded_version(db: &Database, table: &DeltaTable) -> Result<Option<u64>> {
    let v = table.version().unwrap_or(0);
    if v == 0 {
        return Ok(Some(0));
    }
    Ok(crate::storage::log::commit(db, Table::EventIndex, v)
        .await?
        .and_then(|c| c.info.get(VERSION_KEY).and_then(|x| x.as_u64())))
}

/// Load the persisted index at `table`'s version.
pub async fn load(db: &Database, table: &DeltaTable) -> Result<EventIndex> {
    let recorded = recorded_version(db, table).await?;
    let batches = crate::storage::read_pinned(db, Table::EventIndex, table).await?;
    let mut idx = EventIndex::default();
    let mut max_version = 0u64;
    let mut parts: std::collections::HashMap<(String, i32, i64), Vec<(usize, RoaringBitmap)>> =
        Default::default();
    for b in batches {
        let ev = column(&b, "event", &DataType::Utf8)?;
        let ev = ev.as_string::<i32>();
        let day = column(&b, "day", &DataType::Date32)?;
        let day = day.as_primitive::<Date32Type>();
        let slice = column(&b, "slice", &DataType::Int32)?;
        let slice = slice.as_primitive::<Int32Type>();
        let bin = column(&b, "bitmap", &DataType::Binary)?;
        let bin = bin.as_binary::<i32>();
        let ver = column(&b, "events_version", &DataType::Int64)?;
        let ver = ver.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let v = if ver.is_valid(i) { ver.value(i) } else { 0 };
            max_version = max_version.max(v.max(0) as u64);
            if ev.is_null(i) || day.is_null(i) || slice.is_null(i) || bin.is_null(i) {
                continue; // a marker row
            }
            let bm = from_bytes(bin.value(i)).ok_or_else(|| {
                Error::storage("the event index holds a damaged bitmap; run `segdb index rebuild`")
            })?;
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
    idx.events_version = recorded.unwrap_or(max_version);
    Ok(idx)
}

/// Append `days` (the counts of the commits after the index's version) so that the index
/// reflects `to_version`, as exactly the next version of the index table read as `table`.
pub async fn append(table: &DeltaTable, days: &Days, to_version: u64) -> Result<Committed> {
    commit::append_exact(table, vec![to_batch(days, to_version)?], meta(to_version)).await
}

/// Replace the whole index with `idx`, as exactly the next version of `table`.
pub async fn overwrite(table: &DeltaTable, idx: &EventIndex) -> Result<Committed> {
    commit::overwrite_exact(
        table,
        vec![to_batch(&idx.days, idx.events_version)?],
        meta(idx.events_version),
    )
    .await
}
