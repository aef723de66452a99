//! The segment language: syntax (`ast`, `parser`), stored definitions (`catalog`), consent rules
//! (`consent`), and compilation to bitmap plans (`eval`). [`Segments`] runs segment statements and
//! evaluates segments for the SQL functions; it caches the universe of known users and the event
//! index, each tagged with the table version it reflects.

pub mod ast;
pub mod catalog;
pub mod consent;
pub mod eval;
pub mod parser;
mod sqlgen;
pub mod table;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::prelude::SessionContext;
use roaring::RoaringBitmap;
use tokio::sync::Mutex;

use crate::engine::QueryResult;
use crate::error::{Error, Result};
use crate::index::store::{self, EventIndex};
use crate::storage::{Database, Table};
use ast::{EventRef, Expr, Leaf, Statement};
use catalog::SegmentDef;
use eval::{Evaluator, suggest};

/// Bytes of event index kept in memory between statements (`SEGDB_INDEX_CACHE_MB`).
fn index_budget() -> usize {
    std::env::var("SEGDB_INDEX_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024)
        * 1_000_000
}

/// Segment state shared by an engine.
pub struct Segments {
    db: Database,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    universe: Option<(Option<u64>, Arc<RoaringBitmap>)>,
    index: Option<Arc<EventIndex>>,
    defs: Option<(Option<u64>, Arc<HashMap<String, SegmentDef>>)>,
    /// PROFILE leaf bitmaps by (predicate, profiles version, identity version): a profile
    /// attribute index that a new profiles or identity commit invalidates.
    profile_leaves: HashMap<(String, Option<u64>, Option<u64>), RoaringBitmap>,
    /// Consent holders per purpose (see [`ConsentBitmap`]).
    consent: HashMap<String, ConsentBitmap>,
    /// How many times holders were derived from the consent table (tests read it).
    consent_derivations: u64,
}

/// The users holding consent for one purpose, derived from one version of the consent table.
/// The holder set only changes at a record time or an expiry time, so the bitmap answers every
/// `at` in `[from, until)` — between the nearest such times around the `at` it was derived for.
/// Consent loads through the engine re-derive the cached purposes right after their commit.
struct ConsentBitmap {
    version: Option<u64>,
    from: i64,
    until: i64,
    holders: Arc<RoaringBitmap>,
}

/// Versions of the tables a PROFILE leaf reads.
pub(crate) type ProfileVersions = (Option<u64>, Option<u64>);

fn result(schema: SchemaRef, cols: Vec<ArrayRef>) -> Result<QueryResult> {
    let batch = RecordBatch::try_new(schema.clone(), cols)?;
    Ok(QueryResult {
        schema,
        batches: vec![batch],
    })
}

fn walk_leaves<'e>(e: &'e Expr, out: &mut Vec<&'e Leaf>) {
    match e {
        Expr::Leaf(l) => out.push(l),
        Expr::Not(x) => walk_leaves(x, out),
        Expr::And(a, b) | Expr::Or(a, b) => {
            walk_leaves(a, out);
            walk_leaves(b, out);
        }
    }
}

impl Segments {
    pub fn new(db: Database) -> Self {
        Segments {
            db,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Every known, non-erased user.
    pub async fn universe(&self, ctx: &SessionContext) -> Result<Arc<RoaringBitmap>> {
        let version = self.db.latest(Table::Identity).await?.version();
        let mut c = self.cache.lock().await;
        if let Some((v, u)) = &c.universe {
            if *v == version {
                return Ok(u.clone());
            }
        }
        let mut u =
            eval::uid_bitmap(ctx, "SELECT uid FROM identity WHERE user_id IS NOT NULL").await?;
        // Forgotten users leave at once, even before their identity row is cleared.
        u -= crate::erasure::load_suppression(&self.db).await?.uids;
        let u = Arc::new(u);
        c.universe = Some((version, u.clone()));
        Ok(u)
    }

    /// The event index, caught up with the events table.
    pub async fn index(&self, ctx: &SessionContext) -> Result<Arc<EventIndex>> {
        let current = store::events_version(&self.db).await?;
        let mut c = self.cache.lock().await;
        if let Some(i) = &c.index {
            if i.events_version == current {
                return Ok(i.clone());
            }
        }
        let mut idx = store::load(&self.db).await?;
        if idx.events_version != current {
            tracing::info!(index_version = ?idx.events_version, events_version = ?current, "event index behind its data; rebuilding");
            idx = store::rebuild(&self.db, ctx).await?;
        }
        let idx = Arc::new(idx);
        // Keep it only within the memory budget (SEGDB_INDEX_CACHE_MB, default 1024).
        if idx.bytes() <= index_budget() {
            c.index = Some(idx.clone());
        } else {
            tracing::warn!(
                bytes = idx.bytes(),
                budget = index_budget(),
                "event index exceeds its cache budget; it is reloaded per statement"
            );
            c.index = None;
        }
        Ok(idx)
    }

    /// Users holding consent for `purpose` at `at` (known, non-erased users only).
    pub async fn consent_holders(
        &self,
        ctx: &SessionContext,
        purpose: &str,
        at: i64,
    ) -> Result<RoaringBitmap> {
        let holders = self.purpose_holders(ctx, purpose, at).await?;
        let universe = self.universe(ctx).await?;
        Ok(&*holders & &*universe)
    }

    /// The `uid`s whose latest consent record grants `purpose` at `at`, from the per-purpose
    /// bitmap when it covers `at` for the current consent table, else derived and cached.
    pub(crate) async fn purpose_holders(
        &self,
        ctx: &SessionContext,
        purpose: &str,
        at: i64,
    ) -> Result<Arc<RoaringBitmap>> {
        let q = consent::purpose_query(purpose, at).map_err(Error::invalid)?;
        let version = self.db.latest(Table::Consent).await?.version();
        if let Some(c) = self.cache.lock().await.consent.get(purpose)
            && c.version == version
            && c.from <= at
            && at < c.until
        {
            return Ok(c.holders.clone());
        }
        let holders = Arc::new(eval::uid_bitmap(ctx, &q).await?);
        let (from, until) = consent::stable_window(ctx, at).await?;
        let mut c = self.cache.lock().await;
        c.consent_derivations += 1;
        c.consent.insert(
            purpose.to_string(),
            ConsentBitmap {
                version,
                from,
                until,
                holders: holders.clone(),
            },
        );
        Ok(holders)
    }

    /// Re-derive every cached purpose's holders at `at` (after a consent load), so the next
    /// statement finds them current.
    pub async fn refresh_consent(&self, ctx: &SessionContext, at: i64) -> Result<()> {
        let purposes: Vec<String> = self.cache.lock().await.consent.keys().cloned().collect();
        for p in purposes {
            self.purpose_holders(ctx, &p, at).await?;
        }
        Ok(())
    }

    /// How many times consent holders were derived from the consent table.
    pub async fn consent_derivations(&self) -> u64 {
        self.cache.lock().await.consent_derivations
    }

    /// Rebuild the event index from `events`.
    pub async fn rebuild_index(&self, ctx: &SessionContext) -> Result<Arc<EventIndex>> {
        let idx = Arc::new(store::rebuild(&self.db, ctx).await?);
        self.cache.lock().await.index = Some(idx.clone());
        Ok(idx)
    }

    /// Forget cached derived state (after a load).
    pub async fn invalidate(&self) {
        let mut c = self.cache.lock().await;
        c.universe = None;
        c.index = None;
        c.profile_leaves.clear();
    }

    /// Append a load's index counts (called after the events commit at `events_version`). The
    /// append happens only when the persisted index reflects the version just before; otherwise
    /// the index is left behind and the next reader rebuilds it.
    pub async fn index_append(
        &self,
        days: &HashMap<(String, i32), crate::index::bsi::Bsi>,
        events_version: u64,
    ) -> Result<()> {
        let persisted = store::persisted_version(&self.db).await?;
        let mut c = self.cache.lock().await;
        c.universe = None;
        if persisted + 1 != events_version {
            tracing::info!(
                persisted,
                events_version,
                "event index is behind; it will be rebuilt on next use"
            );
            c.index = None;
            return Ok(());
        }
        store::append(&self.db, days, events_version).await?;
        match c.index.take() {
            Some(idx) if idx.events_version.unwrap_or(0) + 1 == events_version => {
                let mut next = (*idx).clone();
                for (k, bsi) in days {
                    next.days.entry(k.clone()).or_default().add(bsi);
                }
                next.events_version = Some(events_version);
                c.index = Some(Arc::new(next));
            }
            _ => c.index = None,
        }
        Ok(())
    }

    async fn defs(&self) -> Result<HashMap<String, SegmentDef>> {
        let version = self.db.latest(Table::Segments).await?.version();
        if let Some((v, d)) = &self.cache.lock().await.defs {
            if *v == version {
                return Ok((**d).clone());
            }
        }
        let d: HashMap<String, SegmentDef> = catalog::load(&self.db)
            .await?
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        self.cache.lock().await.defs = Some((version, Arc::new(d.clone())));
        Ok(d)
    }

    /// The versions PROFILE leaf results depend on.
    pub(crate) async fn profile_versions(&self) -> Result<ProfileVersions> {
        Ok((
            self.db.latest(Table::Profiles).await?.version(),
            self.db.latest(Table::Identity).await?.version(),
        ))
    }

    /// A cached PROFILE leaf bitmap.
    pub(crate) async fn cached_profile(
        &self,
        sql: &str,
        v: ProfileVersions,
    ) -> Option<RoaringBitmap> {
        self.cache
            .lock()
            .await
            .profile_leaves
            .get(&(sql.to_string(), v.0, v.1))
            .cloned()
    }

    /// Remember a PROFILE leaf bitmap (older versions are dropped).
    pub(crate) async fn store_profile(&self, sql: &str, v: ProfileVersions, bm: RoaringBitmap) {
        let mut c = self.cache.lock().await;
        c.profile_leaves
            .retain(|(_, a, b), _| *a == v.0 && *b == v.1);
        if c.profile_leaves.len() < 256 {
            c.profile_leaves.insert((sql.to_string(), v.0, v.1), bm);
        }
    }

    /// Find a stored segment by name (exact, then case-insensitive).
    fn resolve<'d>(defs: &'d HashMap<String, SegmentDef>, name: &str) -> Result<&'d SegmentDef> {
        defs.get(name)
            .or_else(|| defs.values().find(|d| d.name.eq_ignore_ascii_case(name)))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "segment '{name}' does not exist{}",
                    suggest(name, defs.keys())
                ))
            })
    }

    /// The names of the stored segments, sorted.
    pub async fn names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.defs().await?.into_keys().collect();
        names.sort();
        Ok(names)
    }

    /// The members of a stored segment at `as_of` (consent and erasure applied).
    pub async fn members(
        &self,
        ctx: &SessionContext,
        name: &str,
        as_of: i64,
        use_index: bool,
    ) -> Result<RoaringBitmap> {
        let defs = self.defs().await?;
        let name = Self::resolve(&defs, name)?.name.clone();
        let universe = self.universe(ctx).await?;
        let index = if use_index {
            Some(self.index(ctx).await?)
        } else {
            None
        };
        let mut ev = Evaluator::new(ctx, &universe, index.as_deref(), &defs, as_of);
        ev.service = Some(self);
        ev.segment(&name).await
    }

    /// Run a segment statement.
    pub async fn execute(
        &self,
        ctx: &SessionContext,
        stmt: Statement,
        as_of: i64,
        use_index: bool,
    ) -> Result<QueryResult> {
        match stmt {
            Statement::Create {
                name,
                or_replace,
                if_not_exists,
                materialized,
                refresh,
                purposes,
                comment,
                definition,
                expr,
            } => {
                let mut defs = self.defs().await?;
                let exists = defs.contains_key(&name);
                let schema = Arc::new(Schema::new(vec![
                    Field::new("segment", DataType::Utf8, false),
                    Field::new("size", DataType::UInt64, false),
                ]));
                if exists && if_not_exists {
                    let size = self.members(ctx, &name, as_of, use_index).await?.len();
                    return result(
                        schema,
                        vec![
                            Arc::new(StringArray::from(vec![name])),
                            Arc::new(UInt64Array::from(vec![size])),
                        ],
                    );
                }
                if exists && !or_replace {
                    return Err(Error::invalid(format!(
                        "segment '{name}' already exists; use CREATE OR REPLACE SEGMENT or DROP SEGMENT first"
                    )));
                }
                for p in &purposes {
                    consent::purpose_query(p, as_of).map_err(Error::invalid)?;
                }
                let universe = self.universe(ctx).await?;
                let index = self.index(ctx).await?;
                self.check_events(&expr, &index)?;
                let def = SegmentDef {
                    name: name.clone(),
                    definition,
                    purposes,
                    comment,
                    materialized,
                    refresh: refresh.map(|r| match r {
                        ast::Refresh::Every(s) => format!("EVERY '{s}'"),
                        ast::Refresh::Cron(s) => format!("CRON '{s}'"),
                    }),
                    created_at: chrono::Utc::now().timestamp_micros(),
                };
                defs.insert(name.clone(), def);
                // Compiling it once checks every embedded predicate and query and rejects cycles.
                let size = {
                    let mut ev =
                        Evaluator::new(ctx, &universe, use_index.then_some(&*index), &defs, as_of);
                    // First the statement's own expression, so errors point into the statement;
                    // then the stored segment (purposes, cycles), sharing the computed leaves.
                    ev.eval(&expr).await?;
                    ev.segment(&name).await?.len()
                };
                let mut all: Vec<SegmentDef> = defs.into_values().collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                catalog::save(&self.db, &all).await?;
                result(
                    schema,
                    vec![
                        Arc::new(StringArray::from(vec![name])),
                        Arc::new(UInt64Array::from(vec![size])),
                    ],
                )
            }
            Statement::Drop { name, if_exists } => {
                let mut defs = self.defs().await?;
                if defs.remove(&name).is_none() {
                    if if_exists {
                        return Ok(QueryResult {
                            schema: Arc::new(Schema::empty()),
                            batches: vec![],
                        });
                    }
                    return Err(Error::invalid(format!(
                        "segment '{name}' does not exist{}",
                        suggest(&name, defs.keys())
                    )));
                }
                for d in defs.values() {
                    if let Ok(e) = parser::parse_expr(&d.definition) {
                        let mut leaves = Vec::new();
                        walk_leaves(&e, &mut leaves);
                        if leaves
                            .iter()
                            .any(|l| matches!(l, Leaf::InSegment(n, _) if *n == name))
                        {
                            return Err(Error::invalid(format!(
                                "segment '{name}' is used by segment '{}' (IN SEGMENT); drop or replace that one first",
                                d.name
                            )));
                        }
                    }
                }
                let mut all: Vec<SegmentDef> = defs.into_values().collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                catalog::save(&self.db, &all).await?;
                Ok(QueryResult {
                    schema: Arc::new(Schema::empty()),
                    batches: vec![],
                })
            }
            Statement::Show => {
                let defs = self.defs().await?;
                let mut names: Vec<&String> = defs.keys().collect();
                names.sort();
                let mut sizes = Vec::new();
                for n in &names {
                    sizes.push(self.members(ctx, n, as_of, use_index).await?.len());
                }
                let d = |f: &dyn Fn(&SegmentDef) -> Option<String>| -> ArrayRef {
                    Arc::new(names.iter().map(|n| f(&defs[*n])).collect::<StringArray>())
                };
                let schema = Arc::new(Schema::new(vec![
                    Field::new("name", DataType::Utf8, false),
                    Field::new("purposes", DataType::Utf8, true),
                    Field::new("definition", DataType::Utf8, false),
                    Field::new("comment", DataType::Utf8, true),
                    Field::new("materialized", DataType::Boolean, false),
                    Field::new("size", DataType::UInt64, false),
                ]));
                let purposes = d(&|s| s.purposes_text());
                result(
                    schema,
                    vec![
                        d(&|s| Some(s.name.clone())),
                        purposes,
                        d(&|s| Some(s.definition.clone())),
                        d(&|s| s.comment.clone()),
                        Arc::new(
                            names
                                .iter()
                                .map(|n| Some(defs[*n].materialized))
                                .collect::<BooleanArray>(),
                        ),
                        Arc::new(UInt64Array::from(sizes)),
                    ],
                )
            }
            Statement::Describe(name) => {
                let defs = self.defs().await?;
                let def = Self::resolve(&defs, &name)?.clone();
                let size = self.members(ctx, &def.name, as_of, use_index).await?.len();
                let schema = Arc::new(Schema::new(vec![
                    Field::new("name", DataType::Utf8, false),
                    Field::new("purposes", DataType::Utf8, true),
                    Field::new("definition", DataType::Utf8, false),
                    Field::new("comment", DataType::Utf8, true),
                    Field::new("materialized", DataType::Boolean, false),
                    Field::new("refresh", DataType::Utf8, true),
                    Field::new(
                        "created_at",
                        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                        false,
                    ),
                    Field::new("size", DataType::UInt64, false),
                ]));
                let purposes = def.purposes_text();
                result(
                    schema,
                    vec![
                        Arc::new(StringArray::from(vec![def.name.clone()])),
                        Arc::new(StringArray::from(vec![purposes])),
                        Arc::new(StringArray::from(vec![def.definition.clone()])),
                        Arc::new(StringArray::from(vec![def.comment.clone()])),
                        Arc::new(BooleanArray::from(vec![def.materialized])),
                        Arc::new(StringArray::from(vec![def.refresh.clone()])),
                        Arc::new(
                            TimestampMicrosecondArray::from(vec![def.created_at])
                                .with_timezone("UTC"),
                        ),
                        Arc::new(UInt64Array::from(vec![size])),
                    ],
                )
            }
            Statement::Explain(name) => {
                let defs = self.defs().await?;
                let name = Self::resolve(&defs, &name)?.name.clone();
                let universe = self.universe(ctx).await?;
                let index = if use_index {
                    Some(self.index(ctx).await?)
                } else {
                    None
                };
                let mut ev = Evaluator::new(ctx, &universe, index.as_deref(), &defs, as_of);
                ev.explain = Some(Vec::new());
                let size = ev.segment(&name).await?.len();
                let mut lines = vec![format!(
                    "segment {name}: {size} members of {} known users, as of {}",
                    universe.len(),
                    sqlgen::ts_text(as_of)
                )];
                lines.extend(ev.explain.take().unwrap_or_default());
                let schema = Arc::new(Schema::new(vec![Field::new("plan", DataType::Utf8, false)]));
                result(schema, vec![Arc::new(StringArray::from(lines))])
            }
        }
    }

    /// Unknown event names are errors (with the closest known name) once events exist.
    fn check_events(&self, e: &Expr, index: &EventIndex) -> Result<()> {
        let known = index.event_names();
        if known.is_empty() {
            return Ok(());
        }
        let mut leaves = Vec::new();
        walk_leaves(e, &mut leaves);
        for l in leaves {
            let (specs, pos) = match l {
                Leaf::Did { what, pos, .. } => (vec![what], *pos),
                Leaf::Sequence {
                    first, then, pos, ..
                } => (vec![first, then], *pos),
                _ => continue,
            };
            for s in specs {
                if let EventRef::Named(n) = &s.event {
                    if !known.iter().any(|k| k == n) {
                        return Err(Error::invalid(format!(
                            "DID at {pos}: no event named '{n}' has been ingested{}",
                            suggest(n, known.iter())
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}
