//! Identity: the dense, append-only mapping pseudonym → u32 ordinal that every bitmap is built
//! on. Ordinals are assigned at ingest in arrival order, persisted in the `identity` table before
//! the rows that use them are committed, and never reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::Int64Type;

use crate::error::{Error, Result};
use crate::storage::{Database, Table, base_schema};

/// The identity map as of one table version, plus the ordinals assigned since.
pub(crate) struct Identity {
    /// The committed map (shared with the process's cache).
    base: Arc<HashMap<String, i64>>,
    /// Ordinals assigned by this load.
    own: HashMap<String, i64>,
    next: i64,
    fresh: Vec<(String, i64)>,
    /// Version of the identity table this map reflects.
    pub(crate) version: Option<u64>,
}

/// The last identity map this process read, per database: the next load extends it with the
/// files appended since (the collector loads several times a second; re-reading the whole table
/// each time would cost more than the loads).
struct Cached {
    location: String,
    version: u64,
    map: Arc<HashMap<String, i64>>,
    next: i64,
}

static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

/// Add identity rows to a map.
fn absorb(map: &mut HashMap<String, i64>, next: &mut i64, batches: &[RecordBatch]) -> Result<()> {
    for b in batches {
        let ids = crate::storage::snapshot_column(b, "user_id", &arrow::datatypes::DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let uids = crate::storage::snapshot_column(b, "uid", &arrow::datatypes::DataType::Int64)?;
        let uids = uids.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let uid = uids.value(i);
            *next = (*next).max(uid + 1);
            // Erased users keep their row (ordinals are never reused) with user_id NULL.
            if ids.is_valid(i) {
                map.insert(ids.value(i).to_string(), uid);
            }
        }
    }
    Ok(())
}

impl Identity {
    /// The identity map at the table's latest version: the cached map extended by the appends
    /// since, or (after anything but appends, e.g. a FORGET) the whole table read again.
    pub(crate) async fn load(db: &Database) -> Result<Identity> {
        let table = db.latest(Table::Identity).await?;
        let version = table.version();
        // The table's id too: a database made again at the same place is another table.
        let location = format!("{} {}", db.location(), table.snapshot()?.metadata().id());
        let cached = {
            let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
            c.iter()
                .position(|e| e.location == location)
                .map(|i| c.swap_remove(i))
        };
        let v = version.unwrap_or(0);
        let mut state = None;
        if let Some(mut c) = cached
            && c.version <= v
        {
            let mut appended = Vec::new();
            let mut only_appends = true;
            for n in c.version + 1..=v {
                match crate::storage::log::commit(db, Table::Identity, n).await? {
                    Some(commit) if commit.removed == 0 => appended.extend(commit.added),
                    _ => {
                        only_appends = false;
                        break;
                    }
                }
            }
            if only_appends {
                let schema = table.snapshot()?.snapshot().arrow_schema();
                let rows =
                    crate::storage::read_files(db, Table::Identity, &appended, &schema).await?;
                absorb(Arc::make_mut(&mut c.map), &mut c.next, &rows)?;
                c.version = v;
                state = Some(c);
            }
        }
        let c = match state {
            Some(c) => c,
            None => {
                let batches = crate::storage::read_pinned(db, Table::Identity, &table).await?;
                let (mut map, mut next) = (HashMap::new(), 0i64);
                absorb(&mut map, &mut next, &batches)?;
                Cached {
                    location,
                    version: v,
                    map: Arc::new(map),
                    next,
                }
            }
        };
        let identity = Identity {
            base: c.map.clone(),
            own: HashMap::new(),
            next: c.next,
            fresh: Vec::new(),
            version,
        };
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 4 {
            cache.remove(0);
        }
        cache.push(c);
        Ok(identity)
    }

    /// The ordinal of `pseudonym`, assigning the next one if it is new.
    pub(crate) fn ordinal(&mut self, pseudonym: &str) -> Result<i64> {
        if let Some(&u) = self.base.get(pseudonym).or_else(|| self.own.get(pseudonym)) {
            return Ok(u);
        }
        if self.next > i64::from(u32::MAX) {
            return Err(Error::ingest(
                "the identity space (2^32 users) is exhausted",
            ));
        }
        let u = self.next;
        self.next += 1;
        self.own.insert(pseudonym.to_string(), u);
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
