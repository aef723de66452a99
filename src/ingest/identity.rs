//! Identity: the dense, append-only mapping pseudonym → u32 ordinal that every bitmap is built
//! on. Ordinals are assigned at ingest in arrival order, persisted in the `identity` table before
//! the rows that use them are committed, and never reused.

use std::collections::HashMap;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::Int64Type;

use crate::error::{Error, Result};
use crate::storage::{Database, Table, base_schema};

/// The identity map as of one table version, plus the ordinals assigned since.
pub(crate) struct Identity {
    map: HashMap<String, i64>,
    next: i64,
    fresh: Vec<(String, i64)>,
    /// Version of the identity table this map reflects.
    pub(crate) version: Option<u64>,
}

impl Identity {
    /// Read the whole identity table.
    pub(crate) async fn load(db: &Database) -> Result<Identity> {
        let table = db.load(Table::Identity).await?;
        let version = table.version();
        let batches = crate::storage::read_pinned(db, Table::Identity, &table).await?;
        let mut map = HashMap::new();
        let mut next = 0i64;
        for b in batches {
            let ids =
                crate::storage::snapshot_column(&b, "user_id", &arrow::datatypes::DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
            let uids =
                crate::storage::snapshot_column(&b, "uid", &arrow::datatypes::DataType::Int64)?;
            let uids = uids.as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let uid = uids.value(i);
                next = next.max(uid + 1);
                // Erased users keep their row (ordinals are never reused) with user_id NULL.
                if ids.is_valid(i) {
                    map.insert(ids.value(i).to_string(), uid);
                }
            }
        }
        Ok(Identity {
            map,
            next,
            fresh: Vec::new(),
            version,
        })
    }

    /// The ordinal of `pseudonym`, assigning the next one if it is new.
    pub(crate) fn ordinal(&mut self, pseudonym: &str) -> Result<i64> {
        if let Some(&u) = self.map.get(pseudonym) {
            return Ok(u);
        }
        if self.next > i64::from(u32::MAX) {
            return Err(Error::ingest(
                "the identity space (2^32 users) is exhausted",
            ));
        }
        let u = self.next;
        self.next += 1;
        self.map.insert(pseudonym.to_string(), u);
        self.fresh.push((pseudonym.to_string(), u));
        Ok(u)
    }

    /// How many ordinals this load assigned.
    pub(crate) fn fresh_count(&self) -> usize {
        self.fresh.len()
    }

    /// The new identity rows as a batch.
    pub(crate) fn fresh_batch(&self, now_micros: i64) -> Result<Option<RecordBatch>> {
        if self.fresh.is_empty() {
            return Ok(None);
        }
        let ids = StringArray::from_iter_values(self.fresh.iter().map(|(p, _)| p.as_str()));
        let uids = Int64Array::from_iter_values(self.fresh.iter().map(|(_, u)| *u));
        let seen = TimestampMicrosecondArray::from(vec![now_micros; self.fresh.len()])
            .with_timezone("UTC");
        Ok(Some(RecordBatch::try_new(
            base_schema(Table::Identity),
            vec![
                std::sync::Arc::new(ids),
                std::sync::Arc::new(uids),
                std::sync::Arc::new(seen),
            ],
        )?))
    }
}
