//! Erasure: `FORGET USER 'raw-id-or-pseudonym'`, `FORGET USERS IN (query)` and `VACUUM`.
//!
//! A forget runs in an order that makes it take effect at once and survive a crash:
//! 1. the users' ordinals and a keyed hash of each pseudonym go to `_segdb/suppression`, and one
//!    audit row (time, who asked, count, keyed hashes — never the pseudonym) to `_segdb/audit`;
//!    from here on every statement that starts excludes them (the suppression list is part of
//!    every snapshot and applied where rows are read);
//! 2. their rows are deleted from `events`, `profiles` and `consent` (Delta deletes by `uid`,
//!    tagged `segdb.op = forget`), and their identity links from `_segdb/links`;
//! 3. their `identity` row keeps its ordinal (never reused) but loses the pseudonym.
//! Re-running a forget finds the users through the suppression table and completes the missing
//! steps. A later load that brings a forgotten raw id back rejects those rows (the keyed hash is
//! checked at the door), and a load that overlaps a forget re-checks the list before and after
//! its commit. `VACUUM` deletes any remaining rows of suppressed users, then superseded data
//! files and old log entries, so no byte of a forgotten pseudonym remains under the data URL.
//! Zero-match forgets and VACUUM runs are audited too.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::logical_expr::{col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::kernel::transaction::CommitProperties;

use crate::error::Result;
use crate::privacy::Keyring;
use crate::privacy::pseudonym::{Pseudonymizer, is_pseudonym};
use crate::storage::commit;
use crate::storage::settings::Settings;
use crate::storage::{Database, Snapshot, Table, base_schema, failpoint};

/// Domain of the keyed hash that stands in for a forgotten pseudonym.
pub const FORGET_DOMAIN: &str = "segdb/forget";

/// The keyed hash of a pseudonym kept after it is forgotten.
pub fn key_hash(keyring: &Keyring, pseudonym: &str) -> String {
    Pseudonymizer::new(keyring, FORGET_DOMAIN).pseudonymize(pseudonym)
}

/// Who a FORGET names, resolved to stored pseudonyms (a raw id is pseudonymised first).
pub enum Target {
    /// A raw id or a stored pseudonym.
    One(String),
    /// The pseudonyms a `FORGET USERS IN (query)` returned.
    Pseudonyms(Vec<String>),
}

fn commit_props(op: &str) -> CommitProperties {
    CommitProperties::default().with_metadata(commit::op(op))
}

async fn audit(db: &Database, action: &str, users: i64, hashes: &[&str], who: &str) -> Result<()> {
    let now = chrono::Utc::now().timestamp_micros();
    let batch = RecordBatch::try_new(
        base_schema(Table::Audit),
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![now]).with_timezone("UTC")) as ArrayRef,
            Arc::new(StringArray::from(vec![action])),
            Arc::new(Int64Array::from(vec![users])),
            Arc::new(StringArray::from(vec![
                serde_json::to_string(hashes).expect("strings serialise"),
            ])),
            Arc::new(StringArray::from(vec![who])),
        ],
    )?;
    commit::append(db, Table::Audit, vec![batch], commit::op("audit")).await?;
    Ok(())
}

/// Record an administrative action (no identifiers) in the audit log.
pub async fn audit_action(db: &Database, action: &str, who: &str) -> Result<()> {
    audit(db, action, 0, &[], who).await
}

/// The ordinals in `extra` plus every ordinal linked to them (a profile is forgotten whole).
pub type Expand<'a> = &'a (dyn Fn(&roaring::RoaringBitmap) -> roaring::RoaringBitmap + Sync);

/// Forget users; returns how many ordinals were forgotten (already-forgotten users count again:
/// the statement is idempotent and completes any step a crash interrupted). `expand` adds the
/// other ids of each user's profile (identity links).
pub async fn forget(
    snap: &Snapshot,
    keyring: &Keyring,
    target: Target,
    who: &str,
    expand: Expand<'_>,
) -> Result<u64> {
    let db = snap.db();
    let now = chrono::Utc::now().timestamp_micros();
    let action = match &target {
        Target::One(_) => "FORGET USER",
        Target::Pseudonyms(_) => "FORGET USERS IN",
    };
    let pseudonyms: Vec<String> = match target {
        Target::One(v) => vec![if is_pseudonym(&v) {
            v
        } else {
            Pseudonymizer::new(keyring, crate::privacy::keyring::USER_DOMAIN).pseudonymize(&v)
        }],
        Target::Pseudonyms(v) => v,
    };
    let wanted: HashSet<&str> = pseudonyms.iter().map(String::as_str).collect();
    let hashes: HashSet<String> = pseudonyms.iter().map(|p| key_hash(keyring, p)).collect();
    let before = snap.suppression().clone();
    let ids = snap.identity_rows().await?;
    let mut named = roaring::RoaringBitmap::new();
    for (uid, p) in &ids {
        if let Some(p) = p
            && wanted.contains(p.as_str())
        {
            named.insert(*uid);
        }
    }
    // Users forgotten before (a re-run after a crash), by keyed hash.
    for h in &hashes {
        if let Some(&u) = before.by_hash.get(h) {
            named.insert(u);
        }
    }
    let all = &named | &expand(&named);
    if all.is_empty() {
        audit(db, action, 0, &[], who).await?;
        tracing::info!(users = 0, "forget matched no user");
        return Ok(0);
    }
    let by_uid: std::collections::HashMap<u32, &str> = ids
        .iter()
        .filter_map(|(u, p)| p.as_deref().map(|p| (*u, p)))
        .collect();
    let mut pairs: Vec<(u32, String)> = Vec::new();
    for u in all.iter() {
        let h = match by_uid.get(&u) {
            Some(p) => key_hash(keyring, p),
            None => match before.by_hash.iter().find(|(_, x)| **x == u) {
                Some((h, _)) => h.clone(),
                None => continue,
            },
        };
        pairs.push((u, h));
    }

    // 1. Suppression (new users only) and the audit row.
    let fresh: Vec<&(u32, String)> = pairs
        .iter()
        .filter(|(u, _)| !before.uids.contains(*u))
        .collect();
    if !fresh.is_empty() {
        let batch = RecordBatch::try_new(
            base_schema(Table::Suppression),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    fresh.iter().map(|(u, _)| i64::from(*u)),
                )) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    fresh.iter().map(|(_, h)| h.as_str()),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![now; fresh.len()]).with_timezone("UTC"),
                ),
            ],
        )?;
        commit::append(db, Table::Suppression, vec![batch], commit::op("forget")).await?;
    }
    let mut hs: Vec<&str> = pairs.iter().map(|(_, h)| h.as_str()).collect();
    hs.sort();
    audit(db, action, pairs.len() as i64, &hs, who).await?;

    failpoint("forget-after-suppression");
    let uids: Vec<u32> = pairs.iter().map(|(u, _)| *u).collect();
    delete_rows(db, &uids).await?;
    tracing::info!(users = pairs.len(), "forgot users");
    Ok(pairs.len() as u64)
}

/// Complete the erasure of `uids` (already suppressed): delete their rows again.
pub async fn complete(db: &Database, uids: &[u32]) -> Result<()> {
    delete_rows(db, uids).await
}

/// Delete every row of `uids` from the base tables and links, and clear their pseudonyms.
async fn delete_rows(db: &Database, uids: &[u32]) -> Result<()> {
    if uids.is_empty() {
        return Ok(());
    }
    let list: Vec<datafusion::logical_expr::Expr> = uids
        .iter()
        .map(|u| lit(ScalarValue::Int64(Some(i64::from(*u)))))
        .collect();
    // 2. Rows, by ordinal: the log records the predicate, never a pseudonym.
    let pred = col("uid").in_list(list.clone(), false);
    for t in [Table::Events, Table::Profiles, Table::Consent] {
        let table = db.load(t).await?;
        let (_t, metrics) = table
            .delete()
            .with_predicate(pred.clone())
            .with_commit_properties(commit_props("forget"))
            .await?;
        tracing::debug!(
            table = t.name(),
            deleted = metrics.num_deleted_rows,
            "forget: rows deleted"
        );
    }
    let links = col("a")
        .in_list(list.clone(), false)
        .or(col("b").in_list(list, false));
    let table = db.load(Table::Links).await?;
    let _ = table
        .delete()
        .with_predicate(links)
        .with_commit_properties(commit_props("forget"))
        .await?;
    // 3. Identity keeps the ordinal, loses the pseudonym.
    let table = db.load(Table::Identity).await?;
    table
        .update()
        .with_predicate(pred)
        .with_update("user_id", lit(ScalarValue::Utf8(None)))
        .with_commit_properties(commit_props("forget"))
        .await?;
    // The event index reflects the delete without recounting (it masks forgotten users).
    crate::index::catchup::persist(db).await?;
    Ok(())
}

/// How old a file no commit references must be before VACUUM deletes it.
pub const ORPHAN_AGE_HOURS: i64 = 1;

/// `VACUUM`: drop events older than the retention (if set) and any remaining rows of forgotten
/// users, then per table delete data files no longer referenced, write a checkpoint, and remove
/// the log entries before it. Returns (files removed, log entries removed).
pub async fn vacuum(db: &Database, who: &str) -> Result<(usize, usize)> {
    let (mut files, mut logs) = (0usize, 0usize);
    if let Some(days) = Settings::read(db).await?.events_retention_days {
        let cutoff = chrono::Utc::now().timestamp_micros() - i64::from(days) * 86_400_000_000;
        let pred = col("ts").lt(lit(ScalarValue::TimestampMicrosecond(
            Some(cutoff),
            Some("UTC".into()),
        )));
        let (_t, m) = db
            .load(Table::Events)
            .await?
            .delete()
            .with_predicate(pred)
            .with_commit_properties(commit_props("retention"))
            .await?;
        tracing::info!(
            days,
            deleted = m.num_deleted_rows,
            "retention: dropped old events"
        );
    }
    // Rows of forgotten users a concurrent load may have brought back in.
    let snap = db.pin().await?;
    let supp: Vec<u32> = snap.suppression().uids.iter().collect();
    if !supp.is_empty() {
        let list: Vec<datafusion::logical_expr::Expr> = supp
            .iter()
            .map(|u| lit(ScalarValue::Int64(Some(i64::from(*u)))))
            .collect();
        let pred = col("uid").in_list(list, false);
        for t in [Table::Events, Table::Profiles, Table::Consent] {
            let table = db.load(t).await?;
            let _ = table
                .delete()
                .with_predicate(pred.clone())
                .with_commit_properties(commit_props("forget"))
                .await?;
        }
        let table = db.load(Table::Identity).await?;
        table
            .update()
            .with_predicate(pred)
            .with_update("user_id", lit(ScalarValue::Utf8(None)))
            .with_commit_properties(commit_props("forget"))
            .await?;
    }
    crate::index::catchup::persist(db).await?;
    for t in Table::BASE.into_iter().chain(Table::ENGINE) {
        let table = db.load(t).await?;
        let (table, metrics) = table
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .await?;
        files += metrics.files_deleted.len();
        // Files no commit references (a load killed between writing and committing; its rows
        // may be of users forgotten since): removed once they are an hour old, so a concurrent
        // load's files, not yet committed, are never touched.
        let (table, orphans) = table
            .vacuum()
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .with_retention_period(chrono::Duration::hours(ORPHAN_AGE_HOURS))
            .with_enforce_retention_duration(false)
            .await?;
        files += orphans.files_deleted.len();
        // A checkpoint at the current version makes the older log entries unnecessary.
        let mut table = table;
        table.update_state().await?;
        if table.version().unwrap_or(0) > 0 {
            deltalake::checkpoints::create_checkpoint(&table, None).await?;
            let version = table.version().unwrap_or(0);
            let cutoff = chrono::Utc::now().timestamp_millis() + 60_000;
            logs += deltalake::checkpoints::cleanup_expired_logs_for(
                version,
                table.log_store().as_ref(),
                cutoff,
                None,
            )
            .await?;
        }
    }
    db.forget_handles().await;
    audit(db, "VACUUM", 0, &[], who).await?;
    Ok((files, logs))
}

/// Set (or with `None`, clear) the event retention.
pub async fn set_retention_days(db: &Database, days: Option<u32>) -> Result<()> {
    let mut s = Settings::read(db).await?;
    s.events_retention_days = days;
    s.write(db).await
}
