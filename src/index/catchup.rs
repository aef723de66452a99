//! Catching the event index up with the events table. Between the version an index reflects and
//! the events version a statement pinned, each commit is one of: an append (its added files are
//! counted and added), a FORGET's delete (it only removes rows of forgotten users, whom every
//! evaluation masks anyway: nothing to do), a compaction or a widened column (no row changes),
//! or anything else — a retention delete, a rewrite, a
//! commit whose log entry was cleaned up — which needs a full recount of the pinned version.
//! Readers do this in memory and never commit; writers persist it ([`persist`]).

use futures::StreamExt;

use super::{Collector, Days, EventIndex, store};
use crate::error::Result;
use crate::storage::commit::Committed;
use crate::storage::{DataFile, Database, Table};

/// What bringing an index from one events version to another takes.
#[derive(Debug)]
pub enum Plan {
    /// Nothing: it is current.
    Current,
    /// Count these added files.
    Incremental(Vec<DataFile>),
    /// Recount the whole table.
    Rebuild,
}

/// Plan the catch-up from events version `from` to `to`.
pub async fn plan(db: &Database, from: u64, to: u64) -> Result<Plan> {
    if from == to {
        return Ok(Plan::Current);
    }
    if from > to {
        // The index claims a newer version than the table has: never trust it.
        return Ok(Plan::Rebuild);
    }
    let mut files = Vec::new();
    for v in from + 1..=to {
        let Some(c) = crate::storage::log::commit(db, Table::Events, v).await? else {
            return Ok(Plan::Rebuild);
        };
        if matches!(c.op.as_deref(), Some("optimize" | "alter_column")) {
            // Compaction rewrites files without changing a row; a widened column changes no
            // user, event or time.
            continue;
        }
        if c.removed > 0 {
            if c.op.as_deref() == Some("forget") {
                continue;
            }
            return Ok(Plan::Rebuild);
        }
        files.extend(c.added);
    }
    Ok(Plan::Incremental(files))
}

/// The per-(event, day) counts of the rows of `files` (of `events`).
pub async fn count_files(
    db: &Database,
    events: &deltalake::DeltaTable,
    files: &[DataFile],
) -> Result<Days> {
    let mut stream = scan_columns(db, events, files, &["uid", "event", "ts"]).await?;
    let mut c = Collector::default();
    while let Some(b) = stream.next().await {
        c.add_batch(&b?)?;
    }
    Ok(c.finish())
}

/// The rows of `files` (of the pinned `events`), only `columns` (which must exist), as a stream.
pub async fn scan_columns(
    db: &Database,
    events: &deltalake::DeltaTable,
    files: &[DataFile],
    columns: &[&str],
) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
    let ctx = datafusion::prelude::SessionContext::new();
    crate::storage::provider::register_store(db, ctx.runtime_env().as_ref());
    let schema =
        crate::storage::provider::with_view_types(&events.snapshot()?.snapshot().arrow_schema());
    let projection: Vec<usize> = columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<_, _>>()?;
    let state = ctx.state();
    let exec = crate::storage::provider::scan_files(
        &state,
        &crate::storage::provider::store_url(db),
        Table::Events,
        files,
        &schema,
        Some(projection),
        None,
    )
    .await?;
    Ok(datafusion::physical_plan::execute_stream(
        exec,
        ctx.task_ctx(),
    )?)
}

/// Recount a whole pinned events version.
pub async fn rebuild(db: &Database, events: &deltalake::DeltaTable) -> Result<EventIndex> {
    let files = crate::storage::files_of(events, Table::Events)?;
    Ok(EventIndex {
        days: count_files(db, events, &files).await?,
        events_version: events.version().unwrap_or(0),
        ..EventIndex::default()
    })
}

/// `idx` brought up to the pinned `events` version, in memory.
pub async fn catch_up(
    db: &Database,
    events: &deltalake::DeltaTable,
    mut idx: EventIndex,
) -> Result<EventIndex> {
    let to = events.version().unwrap_or(0);
    match plan(db, idx.events_version, to).await? {
        Plan::Current => Ok(idx),
        Plan::Incremental(files) => {
            let days = count_files(db, events, &files).await?;
            idx.add(&days);
            idx.events_version = to;
            Ok(idx)
        }
        Plan::Rebuild => rebuild(db, events).await,
    }
}

/// What bringing an in-memory index up to the pinned `events` version adds: the per-(event,
/// day) counts of the commits since (empty when it is current), or `None` when only a recount
/// will do. Readers extend a cached index with it instead of reloading the persisted one.
pub async fn extension(
    db: &Database,
    events: &deltalake::DeltaTable,
    idx: &EventIndex,
) -> Result<Option<(Days, u64)>> {
    let to = events.version().unwrap_or(0);
    match plan(db, idx.events_version, to).await? {
        Plan::Current => Ok(Some((Days::default(), to))),
        Plan::Incremental(files) => Ok(Some((count_files(db, events, &files).await?, to))),
        Plan::Rebuild => Ok(None),
    }
}

/// Writers: bring the persisted index up to the latest events version (appending the counts
/// of the commits it misses, or overwriting it with a recount), committed at an exact index
/// version; returns the events version it reflects afterwards.
pub async fn persist(db: &Database) -> Result<u64> {
    for _ in 0..20 {
        let events = db.latest(Table::Events).await?;
        let index = db.latest(Table::EventIndex).await?;
        let to = events.version().unwrap_or(0);
        let from = match store::recorded_version(db, &index).await? {
            Some(v) => v,
            None => store::load(db, &index).await?.events_version,
        };
        let committed = match plan(db, from, to).await? {
            Plan::Current => return Ok(to),
            Plan::Incremental(files) => {
                let days = count_files(db, &events, &files).await?;
                store::append(&index, &days, to).await?
            }
            Plan::Rebuild => {
                let idx = rebuild(db, &events).await?;
                store::overwrite(&index, &idx).await?
            }
        };
        if let Committed::Version(_) = committed {
            tracing::info!(events_version = to, "event index brought up to date");
            return Ok(to);
        }
    }
    Err(crate::Error::storage(
        "the event index kept changing underneath; run `segdb index rebuild` again",
    ))
}

/// After a load committed events version `v` with counts `days`: append them when the persisted
/// index reflects exactly `v - 1` (the common case, no scan), else catch up by scanning.
pub async fn after_load(db: &Database, days: &Days, v: u64) -> Result<()> {
    let index = db.latest(Table::EventIndex).await?;
    if store::recorded_version(db, &index).await? == Some(v - 1)
        && let Committed::Version(_) = store::append(&index, days, v).await?
    {
        return Ok(());
    }
    persist(db).await.map(|_| ())
}

/// Recount and overwrite the persisted index from the latest events version.
pub async fn rebuild_persisted(db: &Database) -> Result<EventIndex> {
    for _ in 0..20 {
        let events = db.latest(Table::Events).await?;
        let index = db.latest(Table::EventIndex).await?;
        let idx = rebuild(db, &events).await?;
        if let Committed::Version(_) = store::overwrite(&index, &idx).await? {
            return Ok(idx);
        }
    }
    Err(crate::Error::storage(
        "the event index kept changing underneath; run `segdb index rebuild` again",
    ))
}
