//! Erasure: `FORGET USER 'raw-id-or-pseudonym'`, `FORGET USERS IN (query)` and `VACUUM`.
//!
//! A forget runs in an order that makes it take effect at once and survive a crash:
//! 1. the users' ordinals and a keyed hash of each pseudonym go to `_segdb/suppression`, and one
//!    audit row (time, count, keyed hashes — never the pseudonym) to `_segdb/audit`, in that
//!    order; from here on every segment and every query over the base tables excludes them;
//! 2. their rows are deleted from `events`, `profiles` and `consent` (Delta deletes by `uid`);
//! 3. their `identity` row keeps its ordinal (never reused) but loses the pseudonym.
//! Re-running a forget finds the users through the suppression table and completes the missing
//! steps. A later load that brings a forgotten raw id back rejects those rows (the keyed hash
//! is checked at the door). `VACUUM` then removes superseded data files and old log entries, so
//! no byte of a forgotten pseudonym remains under the data URL.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use deltalake::protocol::SaveMode;
use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::privacy::Keyring;
use crate::privacy::pseudonym::{Pseudonymizer, is_pseudonym};
use crate::storage::{Database, Table, base_schema};

/// Domain of the keyed hash that stands in for a forgotten pseudonym.
pub const FORGET_DOMAIN: &str = "segdb/forget";

/// The keyed hash of a pseudonym kept after it is forgotten.
pub fn key_hash(keyring: &Keyring, pseudonym: &str) -> String {
    Pseudonymizer::new(keyring, FORGET_DOMAIN).pseudonymize(pseudonym)
}

/// What is suppressed: the ordinals, and each keyed hash with its ordinal.
#[derive(Debug, Default, Clone)]
pub struct Suppression {
    pub uids: RoaringBitmap,
    pub by_hash: std::collections::HashMap<String, u32>,
}

/// Read `_segdb/suppression`.
pub async fn load_suppression(db: &Database) -> Result<Suppression> {
    let (_, batches) = db.scan(Table::Suppression).await?;
    let mut s = Suppression::default();
    for b in batches {
        let u = arrow::compute::cast(b.column(0), &DataType::Int64)?;
        let u = u.as_primitive::<Int64Type>();
        let h = arrow::compute::cast(b.column(1), &DataType::Utf8)?;
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

/// Who a FORGET names.
pub enum Target {
    /// A raw id or a stored pseudonym.
    One(String),
    /// A query returning `user_id` (pseudonyms).
    Query(String),
}

/// Forget users; returns how many were forgotten (already-forgotten users count again: the
/// statement is idempotent and completes any step a crash interrupted).
pub async fn forget(
    db: &Database,
    ctx: &SessionContext,
    keyring: &Keyring,
    target: Target,
) -> Result<u64> {
    let now = chrono::Utc::now().timestamp_micros();
    // Resolve to (uid, keyed hash) pairs.
    let pseudonyms: Vec<String> = match &target {
        Target::One(v) => {
            let p = if is_pseudonym(v) {
                v.clone()
            } else {
                Pseudonymizer::new(keyring, crate::privacy::keyring::USER_DOMAIN).pseudonymize(v)
            };
            vec![p]
        }
        Target::Query(q) => {
            let df = ctx.sql(q).await?;
            if !df.schema().has_column_with_unqualified_name("user_id") {
                return Err(Error::invalid(
                    "FORGET USERS IN (…): the query must return a user_id column",
                ));
            }
            let batches = df.select_columns(&["user_id"])?.collect().await?;
            let mut v = Vec::new();
            for b in batches {
                let s = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
                let s = s.as_string::<i32>();
                v.extend(
                    (0..s.len())
                        .filter(|&i| s.is_valid(i))
                        .map(|i| s.value(i).to_string()),
                );
            }
            v
        }
    };
    let wanted: HashSet<String> = pseudonyms.iter().cloned().collect();
    let hashes: HashSet<String> = pseudonyms.iter().map(|p| key_hash(keyring, p)).collect();
    let mut pairs: Vec<(u32, String)> = Vec::new();
    // Known users, by pseudonym.
    let ids = crate::segment::eval::identity_rows(ctx).await?;
    for (uid, p) in &ids {
        if let Some(p) = p {
            if wanted.contains(p) {
                pairs.push((*uid, key_hash(keyring, p)));
            }
        }
    }
    // Users forgotten before (re-run after a crash), by keyed hash.
    let before = load_suppression(db).await?;
    for h in &hashes {
        if let Some(&u) = before.by_hash.get(h) {
            if !pairs.iter().any(|(x, _)| *x == u) {
                pairs.push((u, h.clone()));
            }
        }
    }
    if pairs.is_empty() {
        return Ok(0);
    }
    pairs.sort();
    pairs.dedup();

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
        db.load(Table::Suppression)
            .await?
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .await?;
    }
    let mut hs: Vec<&str> = pairs.iter().map(|(_, h)| h.as_str()).collect();
    hs.sort();
    let audit = RecordBatch::try_new(
        base_schema(Table::Audit),
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![now]).with_timezone("UTC")) as ArrayRef,
            Arc::new(StringArray::from(vec![match target {
                Target::One(_) => "FORGET USER",
                Target::Query(_) => "FORGET USERS IN",
            }])),
            Arc::new(Int64Array::from(vec![pairs.len() as i64])),
            Arc::new(StringArray::from(vec![
                serde_json::to_string(&hs).expect("strings serialise"),
            ])),
        ],
    )?;
    db.load(Table::Audit)
        .await?
        .write(vec![audit])
        .with_save_mode(SaveMode::Append)
        .await?;

    crate::ingest::failpoint("forget-after-suppression");
    // 2. Delete their rows (by ordinal: the log records the predicate, never a pseudonym).
    let uids: Vec<datafusion::logical_expr::Expr> = pairs
        .iter()
        .map(|(u, _)| lit(ScalarValue::Int64(Some(i64::from(*u)))))
        .collect();
    let pred = col("uid").in_list(uids, false);
    for t in [Table::Events, Table::Profiles, Table::Consent] {
        let table = db.load(t).await?;
        let (_t, metrics) = table.delete().with_predicate(pred.clone()).await?;
        tracing::debug!(
            table = t.name(),
            deleted = metrics.num_deleted_rows,
            "forget: rows deleted"
        );
    }
    // 3. Identity keeps the ordinal, loses the pseudonym.
    let table = db.load(Table::Identity).await?;
    table
        .update()
        .with_predicate(pred)
        .with_update("user_id", lit(ScalarValue::Utf8(None)))
        .await?;
    tracing::info!(users = pairs.len(), "forgot users");
    Ok(pairs.len() as u64)
}

const SETTINGS: &str = "_segdb/settings.json";

/// Event retention in days (`ALTER TABLE events SET RETENTION n DAYS`), if set.
pub async fn retention_days(db: &Database) -> Result<Option<u32>> {
    use object_store::ObjectStoreExt;
    match db
        .store()
        .get(&object_store::path::Path::from(SETTINGS))
        .await
    {
        Ok(r) => {
            let bytes = r
                .bytes()
                .await
                .map_err(|e| Error::storage(format!("cannot read {SETTINGS}: {e}")))?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|_| Error::storage(format!("{SETTINGS} is damaged")))?;
            Ok(v["events_retention_days"].as_u64().map(|d| d as u32))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::storage(format!(
            "cannot read {SETTINGS}: {}",
            e.to_string().lines().next().unwrap_or("")
        ))),
    }
}

/// Set (or with `None`, clear) the event retention.
pub async fn set_retention_days(db: &Database, days: Option<u32>) -> Result<()> {
    use object_store::ObjectStoreExt;
    let body = serde_json::json!({ "events_retention_days": days });
    db.store()
        .put(
            &object_store::path::Path::from(SETTINGS),
            object_store::PutPayload::from(serde_json::to_vec_pretty(&body).expect("json")),
        )
        .await
        .map_err(|e| {
            Error::storage(format!(
                "cannot write {SETTINGS}: {}",
                e.to_string().lines().next().unwrap_or("")
            ))
        })?;
    Ok(())
}

/// `VACUUM`: drop events older than the retention (if set), then per table delete data files no
/// longer referenced, write a checkpoint, and remove the log entries before it. Returns (files
/// removed, log entries removed).
pub async fn vacuum(db: &Database) -> Result<(usize, usize)> {
    let (mut files, mut logs) = (0usize, 0usize);
    if let Some(days) = retention_days(db).await? {
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
            .await?;
        tracing::info!(
            days,
            deleted = m.num_deleted_rows,
            "retention: dropped old events"
        );
    }
    for t in Table::BASE.into_iter().chain(Table::ENGINE) {
        let table = db.load(t).await?;
        let (table, metrics) = table
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .await?;
        files += metrics.files_deleted.len();
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
    Ok((files, logs))
}
