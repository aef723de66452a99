//! One version of every table, pinned at the start of a statement. Everything the statement
//! reads — base-table scans, the suppression list, the segment catalog, the event index,
//! materialised snapshots — comes from these versions, so a statement never mixes versions and
//! the next statement sees whatever another process committed in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use deltalake::DeltaTable;
use futures::TryStreamExt;
use roaring::RoaringBitmap;

use super::{Database, Table};
use crate::error::{Error, Result};

/// An active data file of a pinned table version.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Path relative to the table directory.
    pub path: String,
    pub size: u64,
}

/// The forgotten users of one suppression-table version.
#[derive(Debug, Default, Clone)]
pub struct Suppression {
    pub uids: RoaringBitmap,
    /// Keyed hash of each forgotten pseudonym → its ordinal.
    pub by_hash: std::collections::HashMap<String, u32>,
}

impl Suppression {
    pub(crate) fn from_batches(batches: &[RecordBatch]) -> Result<Suppression> {
        let mut s = Suppression::default();
        for b in batches {
            let (Some(u), Some(h)) = (b.column_by_name("uid"), b.column_by_name("key_hash")) else {
                continue;
            };
            let u = arrow::compute::cast(u, &DataType::Int64)?;
            let u = u.as_primitive::<Int64Type>();
            let h = arrow::compute::cast(h, &DataType::Utf8)?;
            let h = h.as_string::<i32>();
            for i in 0..b.num_rows() {
                if u.is_valid(i) {
                    let uid = u.value(i) as u32;
                    s.uids.insert(uid);
                    if h.is_valid(i) {
                        s.by_hash.insert(h.value(i).to_string(), uid);
                    }
                }
            }
        }
        Ok(s)
    }
}

/// Pinned versions of every table a statement may read.
#[derive(Debug)]
pub struct Snapshot {
    db: Database,
    tables: BTreeMap<Table, DeltaTable>,
    suppression: Arc<Suppression>,
    /// When the snapshot was pinned (epoch microseconds): "now" for the statement.
    pub pinned_at: i64,
}

impl Snapshot {
    /// Pin the latest committed version of every table in [`Table::READ`].
    pub async fn pin(db: &Database) -> Result<Arc<Snapshot>> {
        let pinned_at = chrono::Utc::now().timestamp_micros();
        let loads = Table::READ.into_iter().map(|t| async move {
            let d = db.latest(t).await?;
            Ok::<_, Error>((t, d))
        });
        let tables: BTreeMap<Table, DeltaTable> = futures::future::try_join_all(loads)
            .await?
            .into_iter()
            .collect();
        let suppression = db.suppression_at(&tables[&Table::Suppression]).await?;
        Ok(Arc::new(Snapshot {
            db: db.clone(),
            tables,
            suppression,
            pinned_at,
        }))
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The pinned Delta version of `t` (0: created, no data yet).
    pub fn version(&self, t: Table) -> u64 {
        self.delta(t).version().unwrap_or(0)
    }

    /// The pinned Delta table of `t`.
    pub fn delta(&self, t: Table) -> &DeltaTable {
        self.tables
            .get(&t)
            .unwrap_or_else(|| panic!("table {} is not pinned", t.name()))
    }

    /// The suppression list of this snapshot.
    pub fn suppression(&self) -> &Arc<Suppression> {
        &self.suppression
    }

    /// The Arrow schema of the pinned version of `t`.
    pub fn schema(&self, t: Table) -> Result<SchemaRef> {
        Ok(self.delta(t).snapshot()?.snapshot().arrow_schema())
    }

    /// The active data files of the pinned version of `t`. Refuses features segdb never writes
    /// (deletion vectors, partitions), which a plain Parquet scan would read wrongly.
    pub fn files(&self, t: Table) -> Result<Vec<DataFile>> {
        files_of(self.delta(t), t)
    }

    /// Every row of the pinned version of `t`, with the table's current columns (older files
    /// read NULL for columns added since). For small tables and one-off reads.
    pub async fn read(&self, t: Table) -> Result<Vec<RecordBatch>> {
        read_table(&self.db, t, self.delta(t)).await
    }

    /// Every identity row: (uid, pseudonym, or None once forgotten).
    pub async fn identity_rows(&self) -> Result<Vec<(u32, Option<String>)>> {
        let mut out = Vec::new();
        for b in self.read(Table::Identity).await? {
            let u = column(&b, "uid", &DataType::Int64)?;
            let u = u.as_primitive::<Int64Type>();
            let p = column(&b, "user_id", &DataType::Utf8)?;
            let p = p.as_string::<i32>();
            for i in 0..b.num_rows() {
                if u.is_valid(i) {
                    out.push((
                        u.value(i) as u32,
                        p.is_valid(i).then(|| p.value(i).to_string()),
                    ));
                }
            }
        }
        Ok(out)
    }
}

impl Snapshot {
    /// The ordinals that have a pseudonym in the identity table — what [`Self::identity_rows`]
    /// gives, without materialising the pseudonyms (the universe of a statement needs only
    /// these).
    pub async fn identity_uids(&self) -> Result<roaring::RoaringBitmap> {
        let mut out = roaring::RoaringBitmap::new();
        for b in self.read(Table::Identity).await? {
            let u = column(&b, "uid", &DataType::Int64)?;
            let u = u.as_primitive::<Int64Type>();
            let p = b.column_by_name("user_id");
            for i in 0..b.num_rows() {
                if u.is_valid(i) && p.is_some_and(|p| p.is_valid(i)) {
                    out.insert(u.value(i) as u32);
                }
            }
        }
        Ok(out)
    }
}

/// A column of `b` cast to `ty` (all NULL when the batch lacks it).
pub fn column(b: &RecordBatch, name: &str, ty: &DataType) -> Result<arrow::array::ArrayRef> {
    match b.column_by_name(name) {
        Some(c) if c.data_type() == ty => Ok(c.clone()),
        Some(c) => Ok(arrow::compute::cast(c, ty)?),
        None => Ok(arrow::array::new_null_array(ty, b.num_rows())),
    }
}

pub fn files_of(d: &DeltaTable, t: Table) -> Result<Vec<DataFile>> {
    let state = d.snapshot()?;
    if !state.metadata().partition_columns().is_empty() {
        return Err(Error::storage(format!(
            "table {} is partitioned; segdb reads only the unpartitioned tables it writes",
            t.name()
        )));
    }
    let mut out = Vec::new();
    for f in state.log_data().iter() {
        if f.deletion_vector_descriptor().is_some() {
            return Err(Error::storage(format!(
                "table {} has deletion vectors; segdb reads only tables without them (rewrite it with delta-rs or Spark)",
                t.name()
            )));
        }
        out.push(DataFile {
            path: f.path().to_string(),
            size: f.size().max(0) as u64,
        });
    }
    Ok(out)
}

/// Read every active file of `d` (a pinned version of `t`) into batches with `d`'s schema.
#[allow(deprecated)]
pub(super) async fn read_table(
    db: &Database,
    t: Table,
    d: &DeltaTable,
) -> Result<Vec<RecordBatch>> {
    let schema = d.snapshot()?.snapshot().arrow_schema();
    read_files(db, t, &files_of(d, t)?, &schema).await
}

/// The rows of some data files of `t`, conformed to `schema`.
#[allow(deprecated)]
pub async fn read_files(
    db: &Database,
    t: Table,
    files: &[DataFile],
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    use parquet::arrow::ParquetRecordBatchStreamBuilder;
    use parquet::arrow::async_reader::ParquetObjectReader;
    let mut out = Vec::new();
    for f in files.iter().cloned() {
        let path = object_store::path::Path::from(format!("{}/{}", t.path(), f.path));
        let reader = ParquetObjectReader::new(db.store().clone(), path).with_file_size(f.size);
        let stream = ParquetRecordBatchStreamBuilder::new(reader)
            .await?
            .build()?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        for b in batches {
            out.push(conform(&b, schema)?);
        }
    }
    Ok(out)
}

/// `b` with exactly `schema`'s columns, by name (missing ones NULL, types cast).
pub fn conform(b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| column(b, f.name(), f.data_type()))
        .collect::<Result<Vec<_>>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
    let relaxed = Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    Ok(RecordBatch::try_new_with_options(relaxed, cols, &options)?)
}
