//! `OPTIMIZE [table]` / `segdb optimize`: compact a table's small files into files of about
//! `[storage] target_file_mb` in one commit that changes no data (Delta's `dataChange: false`;
//! segdb marks it `segdb.op = optimize`, so the event index and snapshots carry over), then
//! write a checkpoint so opening the table reads one file instead of every commit since.

use deltalake::kernel::transaction::CommitProperties;

use super::commit::op;
use super::{Database, Table};
use crate::error::{Error, Result};

/// Default `[storage] target_file_mb`.
pub const DEFAULT_TARGET_FILE_MB: u64 = 128;

/// What compacting one table did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    pub table: Table,
    pub files_removed: u64,
    pub files_added: u64,
    /// The table's version after it (the same as before when there was nothing to compact).
    pub version: u64,
}

/// The tables `OPTIMIZE name` names (`None`: every table, the engine's own included).
pub fn tables_named(name: Option<&str>) -> Result<Vec<Table>> {
    let all: Vec<Table> = Table::BASE.into_iter().chain(Table::ENGINE).collect();
    match name {
        None => Ok(all),
        Some(n) => {
            let n = n.to_ascii_lowercase();
            let n = n.strip_prefix("_segdb.").unwrap_or(&n);
            all.into_iter()
                .find(|t| t.name() == n)
                .map(|t| vec![t])
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "no table {n:?} to optimize; the tables are {}",
                        Table::BASE
                            .into_iter()
                            .chain(Table::ENGINE)
                            .map(|t| t.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
        }
    }
}

/// Compact `table` and checkpoint it.
pub async fn optimize(db: &Database, table: Table, target_file_mb: u64) -> Result<Compacted> {
    let t = db.load(table).await?;
    let before = t.version().unwrap_or(0) as u64;
    let (mut t, metrics) = t
        .optimize()
        .with_target_size(
            std::num::NonZeroU64::new(target_file_mb.max(1) * 1024 * 1024).expect("positive"),
        )
        .with_commit_properties(CommitProperties::default().with_metadata(op("optimize")))
        .await?;
    t.update_state().await?;
    let version = t.version().unwrap_or(0) as u64;
    if version > 0 {
        deltalake::checkpoints::create_checkpoint(&t, None).await?;
    }
    if version != before {
        tracing::info!(
            table = table.name(),
            removed = metrics.num_files_removed,
            added = metrics.num_files_added,
            version,
            "optimized"
        );
    }
    Ok(Compacted {
        table,
        files_removed: metrics.num_files_removed,
        files_added: metrics.num_files_added,
        version,
    })
}
