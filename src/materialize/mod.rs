//! Materialised segments: refreshes, their history, schedules and exports.
//!
//! A refresh evaluates the definition at its `as_of` (dependencies read their own latest
//! snapshot at or before it), assigns holdout groups (a member keeps the group it got at its
//! first entry), and appends one row to `_segdb/snapshots` in one Delta commit at exactly the
//! next table version: the member bitmap over ordinals (before purposes are applied), the groups,
//! the counts, the source versions it read. A crash before the commit leaves nothing visible; if
//! another process committed a version of the same segment first, this refresh records nothing
//! and reports `skipped`. A refresh that fails is recorded with status `failed` and no version.
//! After a commit the segment's standing exports run (`export`).

pub mod deliver;
pub mod export;
pub mod lookup;
pub mod scheduler;

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use roaring::RoaringBitmap;

use crate::bitmap::codec::to_bytes;
use crate::error::{Error, Result};
use crate::result::QueryResult;
use crate::segment::catalog::SegmentDef;
use crate::segment::snapshots::{History, assign_holdout, encode_groups};
use crate::segment::{EvalCtx, Segments};
use crate::storage::commit::{self, Committed};
use crate::storage::{Table, base_schema, failpoint};

/// A full version every this many versions (`[live] full_every`, set by `segdb serve`); the
/// others are stored as their changes against the previous version.
static FULL_EVERY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(100);

/// Set `[live] full_every` for this process.
pub fn set_full_every(n: u64) {
    FULL_EVERY.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// What started a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Create,
    Schedule,
    Manual,
    /// A live segment's refresh after a commit to what it reads, or on its tick.
    Live,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Create => "create",
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Live => "live",
        }
    }
}

/// How a refresh ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Another process committed this segment's next version first; nothing was recorded.
    Skipped,
    /// A live refresh found the members, the groups and the target unchanged: nothing recorded.
    Unchanged,
    /// Recorded as a failed attempt.
    Failed(String),
}

/// The outcome of one refresh.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub segment: String,
    pub version: Option<u64>,
    pub size: u64,
    pub entered: u64,
    pub exited: u64,
    pub holdout: u64,
    pub took_ms: u64,
    pub status: Status,
    /// Standing exports that failed after this refresh: (export, reason).
    pub export_failures: Vec<(String, String)>,
}

impl Outcome {
    pub fn status_name(&self) -> &'static str {
        match self.status {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Unchanged => "unchanged",
            Status::Failed(_) => "failed",
        }
    }
}

/// A computed version, before it is committed.
struct Computed {
    pre: RoaringBitmap,
    holdout: RoaringBitmap,
    assigned: RoaringBitmap,
    target: RoaringBitmap,
    size: u64,
    /// Held-out members with the purposes' consent at refresh time (counted like `size`).
    holdout_size: u64,
    entered: u64,
    exited: u64,
    prev_max: u64,
    /// The previous version holds the same members, groups and target.
    unchanged: bool,
    /// The previous version as stored (not read through the current links): what a version
    /// stored as changes is stored against.
    prev_raw: Option<Arc<crate::segment::snapshots::Stored>>,
}

/// The target members of a stored or computed version: pre-purpose members with the purposes'
/// consent at `consent_at`, minus the holdout.
async fn target(
    segments: &Segments,
    ctx: &EvalCtx,
    def: &SegmentDef,
    pre: &RoaringBitmap,
    holdout: &RoaringBitmap,
    consent_at: i64,
) -> Result<RoaringBitmap> {
    let mut t = pre - holdout;
    for p in def.purposes()? {
        t &= &*segments.consent_holders(ctx, p, consent_at).await?;
    }
    Ok(t)
}

async fn compute(segments: &Segments, ctx: &EvalCtx, def: &SegmentDef) -> Result<Computed> {
    let history = segments.history(ctx).await?;
    let prev_max = history.max_version(&def.name, &def.generation);
    let prev_raw = history.latest(&def.name, &def.generation, None).await?;
    let prev = match &prev_raw {
        Some(p) => Some(segments.through_canon(ctx, p.clone()).await?),
        None => None,
    };
    let m = segments.live(ctx, &def.name).await?;
    let pre = m.pre;
    let (holdout, assigned) = match def.holdout_percent {
        Some(pct) => {
            let ids = segments.identity(ctx).await?;
            let prior = prev.as_ref().map(|p| (&p.holdout, &p.assigned));
            let h = assign_holdout(segments.keyring(), &def.name, &pre, &ids, pct, prior);
            let mut a = prev
                .as_ref()
                .map(|p| p.assigned.clone())
                .unwrap_or_default();
            a |= &pre;
            (h, a)
        }
        None => (RoaringBitmap::new(), RoaringBitmap::new()),
    };
    let now_target = target(segments, ctx, def, &pre, &holdout, ctx.as_of).await?;
    // The holdout counted the way `size` is: members with the purposes' consent now (the stored
    // group keeps everyone assigned, so consent given later is applied at read).
    let mut consented_holdout = holdout.clone();
    for p in def.purposes()? {
        consented_holdout &= &*segments.consent_holders(ctx, p, ctx.as_of).await?;
    }
    // Against the previous version as it was activated at its own refresh.
    let prev_target = prev.as_ref().map(|p| p.target.clone()).unwrap_or_default();
    let unchanged = prev.as_ref().is_some_and(|p| {
        p.members == pre && p.holdout == holdout && p.assigned == assigned && p.target == now_target
    });
    Ok(Computed {
        unchanged,
        prev_raw,
        size: now_target.len(),
        entered: (&now_target - &prev_target).len(),
        exited: (&prev_target - &now_target).len(),
        target: now_target,
        holdout_size: consented_holdout.len(),
        pre,
        holdout,
        assigned,
        prev_max,
    })
}

#[allow(clippy::too_many_arguments)]
fn row(
    def: &SegmentDef,
    version: Option<u64>,
    as_of: i64,
    trigger: Trigger,
    c: Option<&Computed>,
    took_ms: u64,
    error: Option<&str>,
    sources: &str,
) -> Result<RecordBatch> {
    let now = chrono::Utc::now().timestamp_micros();
    let n = |v: Option<u64>| Arc::new(Int64Array::from(vec![v.map(|x| x as i64)])) as ArrayRef;
    // Stored as changes unless this version is due a full bitmap: version 1, every
    // `full_every`-th, or no previous version right before it.
    let every = FULL_EVERY.load(std::sync::atomic::Ordering::Relaxed).max(1);
    let delta = match (c, version) {
        (Some(c), Some(v)) if v > 1 && (v - 1) % every != 0 => {
            c.prev_raw.as_ref().filter(|p| p.version + 1 == v).map(|p| {
                (
                    p.version,
                    crate::segment::snapshots::Delta::between(
                        p,
                        &c.pre,
                        &c.holdout,
                        &c.assigned,
                        &c.target,
                    )
                    .encode(),
                )
            })
        }
        _ => None,
    };
    let full = c.filter(|_| delta.is_none());
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![def.name.clone()])),
        Arc::new(StringArray::from(vec![def.generation.clone()])),
        n(version),
        Arc::new(TimestampMicrosecondArray::from(vec![as_of]).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(vec![now]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec![trigger.name()])),
        Arc::new(StringArray::from(vec![if c.is_some() {
            "ok"
        } else {
            "failed"
        }])),
        n(c.map(|c| c.size)),
        n(c.map(|c| c.entered)),
        n(c.map(|c| c.exited)),
        n(c.and_then(|c| def.holdout_percent.map(|_| c.holdout_size))),
        n(Some(took_ms)),
        Arc::new(StringArray::from(vec![error.map(str::to_string)])),
        Arc::new(BinaryArray::from(vec![
            full.map(|c| to_bytes(&c.pre)).as_deref(),
        ])),
        Arc::new(BinaryArray::from(vec![
            full.filter(|_| def.holdout_percent.is_some())
                .map(|c| encode_groups(&c.holdout, &c.assigned))
                .as_deref(),
        ])),
        Arc::new(StringArray::from(vec![sources.to_string()])),
        Arc::new(BinaryArray::from(vec![
            full.map(|c| to_bytes(&c.target)).as_deref(),
        ])),
        n(delta.as_ref().map(|d| d.0)),
        Arc::new(BinaryArray::from(vec![
            delta.as_ref().map(|d| d.1.as_slice()),
        ])),
    ];
    Ok(RecordBatch::try_new(base_schema(Table::Snapshots), cols)?)
}

/// The source-table versions a refresh read, as JSON.
fn sources(ctx: &EvalCtx) -> String {
    let v: serde_json::Map<String, serde_json::Value> = Table::READ
        .iter()
        .map(|t| (t.name().to_string(), ctx.snap.version(*t).into()))
        .collect();
    serde_json::Value::Object(v).to_string()
}

/// Refresh materialised segment `name` at `as_of` (default: the statement's start).
pub async fn refresh(
    segments: &Arc<Segments>,
    ctx: &EvalCtx,
    name: &str,
    as_of: Option<i64>,
    trigger: Trigger,
) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let catalog = segments.catalog(ctx).await?;
    let def = catalog
        .get(name)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "segment '{name}' does not exist{}",
                crate::segment::eval::suggest(name, catalog.segments.keys())
            ))
        })?
        .clone();
    if !def.materialized {
        return Err(Error::invalid(format!(
            "segment '{}' is not materialised, so it has nothing to refresh (it is evaluated at every read; CREATE OR REPLACE MATERIALIZED SEGMENT to keep snapshots)",
            def.name
        )));
    }
    let at = as_of.unwrap_or(ctx.as_of);
    let rctx = ctx.at(Some(at));
    let computed = compute(segments, &rctx, &def).await;
    let took_ms = started.elapsed().as_millis() as u64;
    let db = segments.db();
    let src = sources(ctx);
    let c = match computed {
        Ok(c) => c,
        Err(e) => {
            // Recorded with its reason; definitions hold no ids, so neither does the reason.
            let reason = e.to_string();
            let first = reason.lines().next().unwrap_or("").trim().to_string();
            let r = row(&def, None, at, trigger, None, took_ms, Some(&first), &src)?;
            commit::append(db, Table::Snapshots, vec![r], commit::op("refresh")).await?;
            tracing::warn!(segment = %def.name, trigger = trigger.name(), took_ms, status = "failed", "refresh failed");
            return Ok(Outcome {
                segment: def.name.clone(),
                version: None,
                size: 0,
                entered: 0,
                exited: 0,
                holdout: 0,
                took_ms,
                status: Status::Failed(first),
                export_failures: Vec::new(),
            });
        }
    };
    if trigger == Trigger::Live && c.unchanged {
        return Ok(Outcome {
            segment: def.name.clone(),
            version: None,
            size: c.size,
            entered: 0,
            exited: 0,
            holdout: c.holdout_size,
            took_ms,
            status: Status::Unchanged,
            export_failures: Vec::new(),
        });
    }
    let version = c.prev_max + 1;
    let batch = row(
        &def,
        Some(version),
        at,
        trigger,
        Some(&c),
        took_ms,
        None,
        &src,
    )?;
    failpoint("refresh-before-commit");
    // Commit at exactly the next table version; if another commit came first, re-read: another
    // process may have committed this segment's version (then this refresh is skipped).
    let mut committed = false;
    let mut overtaken = false;
    for _ in 0..50 {
        // The open handle reads only the log entries since (a live segment commits often).
        let table = db.latest(Table::Snapshots).await?;
        let files = crate::storage::files_of(&table, Table::Snapshots)?;
        let h = segments.history_of_files(&files).await?;
        if h.max_version(&def.name, &def.generation) != c.prev_max {
            overtaken = true;
            break;
        }
        match commit::append_exact(&table, vec![batch.clone()], commit::op("refresh")).await? {
            Committed::Version(_) => {
                committed = true;
                break;
            }
            Committed::Conflict => continue,
        }
    }
    let mut outcome = Outcome {
        segment: def.name.clone(),
        version: committed.then_some(version),
        size: c.size,
        entered: c.entered,
        exited: c.exited,
        holdout: c.holdout_size,
        took_ms,
        // Skipped only when another process committed this segment's version; losing the
        // race to other segments' commits fifty times over is a failure, not a skip.
        status: if committed {
            Status::Ok
        } else if overtaken {
            Status::Skipped
        } else {
            Status::Failed(
                "could not commit the snapshot: other commits kept overtaking it (50 attempts)"
                    .into(),
            )
        },
        export_failures: Vec::new(),
    };
    tracing::info!(
        segment = %def.name,
        version = outcome.version,
        size = c.size,
        entered = c.entered,
        exited = c.exited,
        took_ms,
        trigger = trigger.name(),
        status = outcome.status_name(),
        "refresh"
    );
    if committed {
        failpoint("refresh-after-commit");
        outcome.export_failures = export::after_refresh(segments, ctx, &def.name).await;
    }
    Ok(outcome)
}

/// The result of `REFRESH SEGMENT`: version, size, entered, exited, status.
pub fn outcome_result(o: &Outcome) -> Result<QueryResult> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, true),
        Field::new("size", DataType::UInt64, false),
        Field::new("entered", DataType::UInt64, false),
        Field::new("exited", DataType::UInt64, false),
        Field::new("status", DataType::Utf8, false),
    ]));
    crate::segment::ddl::result(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![o.version.map(|v| v as i64)])),
            Arc::new(UInt64Array::from(vec![o.size])),
            Arc::new(UInt64Array::from(vec![o.entered])),
            Arc::new(UInt64Array::from(vec![o.exited])),
            Arc::new(StringArray::from(vec![o.status_name()])),
        ],
    )
}

/// `REFRESH SEGMENT name [AS OF 'ts']`: a failed refresh is an error of the statement (and a
/// `failed` row of the history).
pub async fn refresh_statement(
    segments: &Arc<Segments>,
    ctx: &EvalCtx,
    name: &str,
    as_of: Option<i64>,
) -> Result<QueryResult> {
    let o = refresh(segments, ctx, name, as_of, Trigger::Manual).await?;
    if let Status::Failed(why) = &o.status {
        return Err(Error::invalid(format!(
            "refresh of segment '{name}' failed (recorded in segment_history): {why}"
        )));
    }
    outcome_result(&o)
}

/// Whether a segment keeps holdout groups.
fn has_holdout(catalog: &crate::segment::catalog::Catalog, name: &str) -> bool {
    catalog
        .get(name)
        .is_some_and(|d| d.holdout_percent.is_some())
}

/// A one-row history batch rewritten with `stored`'s full bitmaps (no longer as changes).
fn as_full(
    row: &RecordBatch,
    stored: &crate::segment::snapshots::Stored,
    holdout: bool,
) -> Result<RecordBatch> {
    let schema = base_schema(Table::Snapshots);
    let row = crate::storage::conform(row, &schema)?;
    let mut cols = row.columns().to_vec();
    let set = |cols: &mut Vec<ArrayRef>, name: &str, a: ArrayRef| -> Result<()> {
        let i = schema.index_of(name)?;
        cols[i] = a;
        Ok(())
    };
    set(
        &mut cols,
        "members",
        Arc::new(BinaryArray::from(vec![Some(
            to_bytes(&stored.members).as_slice(),
        )])),
    )?;
    let groups = holdout.then(|| encode_groups(&stored.holdout, &stored.assigned));
    set(
        &mut cols,
        "holdout_members",
        Arc::new(BinaryArray::from(vec![groups.as_deref()])),
    )?;
    set(
        &mut cols,
        "target_members",
        Arc::new(BinaryArray::from(vec![Some(
            to_bytes(&stored.target).as_slice(),
        )])),
    )?;
    set(
        &mut cols,
        "base_version",
        Arc::new(Int64Array::from(vec![None::<i64>])),
    )?;
    set(
        &mut cols,
        "delta",
        Arc::new(BinaryArray::from(vec![None::<&[u8]>])),
    )?;
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// VACUUM of the history: rows of dropped segments and replaced generations, and versions
/// beyond each segment's `KEEP n VERSIONS` (with the failed attempts older than the oldest kept
/// version), are removed in one commit. Returns how many rows went.
pub async fn prune(segments: &Segments, ctx: &EvalCtx) -> Result<usize> {
    use arrow::array::{Array, AsArray};
    let catalog = segments.catalog(ctx).await?;
    let db = segments.db();
    // Versions a webhook or segment export has yet to deliver stay.
    let pending = deliver::floors(segments, ctx).await?;
    for _ in 0..20 {
        let table = db.load(Table::Snapshots).await?;
        let batches = crate::storage::read_pinned(db, Table::Snapshots, &table).await?;
        let all = History::from_batches(&batches)?;
        // Per kept generation: the lowest version kept and the time of its refresh.
        let mut floors = std::collections::HashMap::new();
        for def in catalog.segments.values() {
            let max = all.max_version(&def.name, &def.generation);
            let mut floor = max.saturating_sub(def.keep_versions) + 1;
            if let Some(p) = pending.get(&def.name) {
                floor = floor.min(*p);
            }
            let oldest = all
                .of(&def.name, &def.generation)
                .filter(|r| r.version.is_some_and(|v| v >= floor))
                .map(|r| r.refreshed_at)
                .min()
                .unwrap_or(i64::MIN);
            floors.insert((def.name.clone(), def.generation.clone()), (floor, oldest));
        }
        let mut kept = Vec::new();
        let mut dropped = 0usize;
        let mut converted = 0usize;
        for b in &batches {
            let col = |n: &str, t: &DataType| crate::storage::snapshot_column(b, n, t);
            let seg = col("segment", &DataType::Utf8)?;
            let seg = seg.as_string::<i32>();
            let generation = col("generation", &DataType::Utf8)?;
            let generation = generation.as_string::<i32>();
            let ver = col("version", &DataType::Int64)?;
            let ver = ver.as_primitive::<arrow::datatypes::Int64Type>();
            let at = col("refreshed_at", &DataType::Int64)?;
            let at = at.as_primitive::<arrow::datatypes::Int64Type>();
            let base = col("base_version", &DataType::Int64)?;
            let base = base.as_primitive::<arrow::datatypes::Int64Type>();
            let mut mask: Vec<bool> = (0..b.num_rows())
                .map(|i| {
                    let key = (seg.value(i).to_string(), generation.value(i).to_string());
                    match floors.get(&key) {
                        Some((floor, _)) if ver.is_valid(i) => ver.value(i) as u64 >= *floor,
                        Some((_, oldest)) => at.value(i) >= *oldest,
                        None => false,
                    }
                })
                .collect();
            dropped += mask.iter().filter(|k| !**k).count();
            // The oldest kept version is stored in full (the versions its changes apply to go).
            for (i, keep) in mask.iter_mut().enumerate() {
                let key = (seg.value(i).to_string(), generation.value(i).to_string());
                let at_floor = matches!(floors.get(&key), Some((floor, _)) if ver.is_valid(i) && ver.value(i) as u64 == *floor);
                if *keep && at_floor && base.is_valid(i) {
                    let stored = all
                        .version(&key.0, &key.1, ver.value(i) as u64)?
                        .ok_or_else(|| {
                            Error::storage("a kept version could not be read during VACUUM")
                        })?;
                    kept.push(as_full(
                        &b.slice(i, 1),
                        &stored,
                        has_holdout(&catalog, &key.0),
                    )?);
                    *keep = false;
                    converted += 1;
                }
            }
            let f =
                arrow::compute::filter_record_batch(b, &arrow::array::BooleanArray::from(mask))?;
            if f.num_rows() > 0 {
                kept.push(crate::storage::conform(&f, &base_schema(Table::Snapshots))?);
            }
        }
        if dropped == 0 && converted == 0 {
            return Ok(0);
        }
        if let Committed::Version(_) =
            commit::overwrite_exact(&table, kept, commit::op("prune")).await?
        {
            return Ok(dropped);
        }
    }
    Err(Error::storage(
        "the refresh history kept changing during VACUUM; run VACUUM again",
    ))
}
