//! Commits. Derived state and catalogs commit at an *exact* version — the one after the version
//! they read — so that two writers never both apply a change computed from the same state: the
//! loser gets [`Committed::Conflict`], re-reads and retries or reports it. Blind appends (audit
//! rows) use delta-rs's own retries. Every commit may carry `segdb.*` metadata in its commit
//! info (e.g. `segdb.op = forget`), which readers of the log use to tell commits apart.

use arrow::array::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, MetadataExt, StructType};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};

use super::{Database, Table, base_schema};
use crate::error::{Error, Result};

/// The outcome of an exact-version commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Committed as this version.
    Version(u64),
    /// Another writer committed the version first; nothing of this commit is visible.
    Conflict,
}

impl Committed {
    pub fn version(self) -> Option<u64> {
        match self {
            Committed::Version(v) => Some(v),
            Committed::Conflict => None,
        }
    }
}

/// Is `e` a lost race for a version (as opposed to a real failure)?
pub fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    crate::error::delta_conflict(e)
}

/// Commit metadata: `segdb.op` and any other `segdb.*` keys.
pub type Meta = Vec<(String, serde_json::Value)>;

/// `segdb.op = op`.
pub fn op(op: &str) -> Meta {
    vec![("segdb.op".to_string(), serde_json::Value::from(op))]
}

async fn write_files(pinned: &DeltaTable, batches: Vec<RecordBatch>) -> Result<Vec<Action>> {
    let mut w = RecordBatchWriter::for_table(pinned)?;
    for b in batches {
        if b.num_rows() > 0 {
            w.write_with_mode(b, WriteMode::MergeSchema).await?;
        }
    }
    Ok(w.flush().await?.into_iter().map(Action::Add).collect())
}

async fn commit_exact(
    pinned: &DeltaTable,
    actions: Vec<Action>,
    mode: SaveMode,
    meta: Meta,
) -> Result<Committed> {
    let op = DeltaOperation::Write {
        mode,
        partition_by: None,
        predicate: None,
    };
    let props = CommitProperties::default()
        .with_max_retries(0)
        .with_metadata(meta);
    let r = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(pinned.snapshot()?), pinned.log_store(), op)
        .await;
    match r {
        Ok(done) => Ok(Committed::Version(done.version())),
        Err(e) if is_conflict(&e) => Ok(Committed::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// Append `batches` to `pinned` as exactly its next version.
pub async fn append_exact(
    pinned: &DeltaTable,
    batches: Vec<RecordBatch>,
    meta: Meta,
) -> Result<Committed> {
    let actions = write_files(pinned, batches).await?;
    commit_exact(pinned, actions, SaveMode::Append, meta).await
}

/// Replace the whole content of `pinned` with `batches`, as exactly its next version.
pub async fn overwrite_exact(
    pinned: &DeltaTable,
    batches: Vec<RecordBatch>,
    meta: Meta,
) -> Result<Committed> {
    let mut actions = write_files(pinned, batches).await?;
    let state = pinned.snapshot()?;
    actions.extend(
        state
            .log_data()
            .iter()
            .map(|f| Action::Remove(f.remove_action(true))),
    );
    commit_exact(pinned, actions, SaveMode::Overwrite, meta).await
}

/// Append `batches` to the latest version of `t` (blind append: retried on concurrent commits).
pub async fn append(db: &Database, t: Table, batches: Vec<RecordBatch>, meta: Meta) -> Result<u64> {
    for _ in 0..20 {
        let table = db.latest(t).await?;
        if let Committed::Version(v) = append_exact(&table, batches.clone(), meta.clone()).await? {
            return Ok(v);
        }
    }
    Err(Error::storage(format!(
        "could not append to {}: other writers kept committing first",
        t.name()
    )))
}

/// Commit `grown` (the table's columns, unchanged and in order, then new nullable ones) as the
/// schema of `table`, in a commit that changes no data, and return the table at that version.
/// A MERGE that adds columns would add them in an order of its own; a load adds them here
/// first, in the order they appeared, so every database loaded from the same files has the
/// same column order.
pub(crate) async fn grow_schema(
    mut table: DeltaTable,
    grown: &arrow::datatypes::Schema,
) -> Result<DeltaTable> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    let kernel: StructType = grown.try_into_kernel()?;
    let meta = MetadataExt::with_schema(table.snapshot()?.metadata().clone(), &kernel)
        .map_err(|e| Error::storage(format!("cannot grow the schema: {e}")))?;
    CommitBuilder::from(CommitProperties::default().with_metadata(op("ingest")))
        .with_actions(vec![Action::Metadata(meta)])
        .build(
            Some(table.snapshot()?),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await?;
    table.load().await?;
    Ok(table)
}

/// Add the columns of [`base_schema`] that an older database's engine table lacks (one metadata
/// commit; existing files read NULL for them). A database opened read-only keeps working: the
/// readers of engine tables look columns up by name.
pub(super) async fn migrate_columns(db: &Database, t: Table) -> Result<()> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    let table = db.latest(t).await?;
    let current = table.snapshot()?.snapshot().arrow_schema();
    let want = base_schema(t);
    let missing: Vec<_> = want
        .fields()
        .iter()
        .filter(|f| current.field_with_name(f.name()).is_err())
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut fields: Vec<_> = current.fields().iter().cloned().collect();
    fields.extend(missing.iter().cloned());
    let grown = arrow::datatypes::Schema::new(fields);
    let kernel: StructType = (&grown).try_into_kernel()?;
    let meta = MetadataExt::with_schema(table.snapshot()?.metadata().clone(), &kernel)
        .map_err(|e| Error::storage(format!("cannot add columns to {}: {e}", t.name())))?;
    match commit_exact(
        &table,
        vec![Action::Metadata(meta)],
        SaveMode::Append,
        op("migrate"),
    )
    .await
    {
        Ok(_) => {
            tracing::info!(
                table = t.name(),
                added = missing.len(),
                "added catalog columns"
            );
            Ok(())
        }
        Err(e) => {
            tracing::warn!(table = t.name(), error = %e, "could not add catalog columns (read-only?); reading without them");
            Ok(())
        }
    }
}
