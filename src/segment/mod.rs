//! The segment language: syntax (`ast`, `parser`), stored definitions (`catalog`), consent rules
//! (`consent`), schedules (`schedule`), and compilation to bitmap plans (`eval`). [`Segments`]
//! evaluates segments for the SQL functions and runs segment statements (`ddl`); it caches what
//! evaluations share — the catalog, the universe, the identity map, the event index, consent
//! holders, PROFILE leaves — each keyed by the table versions it was derived from, so a statement
//! that pinned newer versions never reads a stale cache, and readers never write.

pub mod ast;
pub mod catalog;
pub mod consent;
pub mod context;
pub mod ddl;
pub mod eval;
pub mod features;
pub mod functions;
pub mod interests;
pub mod lift;
pub mod lookalike;
pub mod options;
pub mod parser;
pub mod schedule;
pub mod snapshots;
mod sqlgen;
pub mod stitch;
pub mod table;
pub mod traits;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::index::EventIndex;
use crate::privacy::Keyring;
use crate::storage::{Database, Table};
use catalog::{Catalog, SegmentDef};
pub use context::EvalCtx;
pub use eval::{IdentityMap, Membership};

/// Bytes of event index kept in memory between statements (`SEGDB_INDEX_CACHE_MB`).
fn index_budget() -> usize {
    std::env::var("SEGDB_INDEX_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024)
        * 1_000_000
}

/// Segment state shared by every session of an engine.
pub struct Segments {
    db: Database,
    keyring: Arc<Keyring>,
    cache: Mutex<Cache>,
    traits: Mutex<traits::Cache>,
    pub(crate) interests: Mutex<interests::Cache>,
    pub(crate) lookalikes: Mutex<crate::lookalike::Cache>,
}

impl std::fmt::Debug for Segments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segments").finish()
    }
}

#[derive(Default)]
struct Cache {
    catalog: Option<(u64, Arc<Catalog>)>,
    /// By (identity version, suppression version).
    universe: Option<((u64, u64), Arc<RoaringBitmap>)>,
    identity: Option<(u64, Arc<IdentityMap>)>,
    /// The index caught up to an events version, by (index-table version, events version).
    index: Option<((u64, u64), Arc<EventIndex>)>,
    /// PROFILE leaf bitmaps by (predicate, (profiles, identity, links) versions).
    profile_leaves: HashMap<(String, ProfileVersions), RoaringBitmap>,
    /// Consent holders per purpose (see [`ConsentBitmap`]).
    consent: HashMap<String, ConsentBitmap>,
    /// How many times holders were derived from the consent table (tests read it).
    consent_derivations: u64,
    /// Snapshot rows by snapshots-table version.
    snapshots: Option<(u64, Arc<snapshots::History>)>,
    /// The rows of each snapshots-table file read so far, by path (files never change; a live
    /// segment appends one small file per version, so a new table version reads only those).
    snapshot_files: HashMap<String, Arc<Vec<arrow::array::RecordBatch>>>,
    /// The canonical map by links version.
    canon: Option<(u64, Arc<stitch::Canon>)>,
    /// The stitched universe by (identity, suppression, links) version.
    stitched_universe: Option<((u64, u64, u64), Arc<RoaringBitmap>)>,
    /// Day timelines of one events version.
    timelines: (u64, crate::index::timeline::Timelines),
}

/// The users holding consent for one purpose, derived from one version of the consent table.
/// The holder set only changes at a record time or an expiry time, so the bitmap answers every
/// `at` in `[from, until)` — between the nearest such times around the `at` it was derived for.
struct ConsentBitmap {
    version: u64,
    /// The links version it was stitched over (`None`: raw ids).
    links: Option<u64>,
    from: i64,
    until: i64,
    holders: Arc<RoaringBitmap>,
}

/// Bytes of day timelines kept in memory (`SEGDB_TIMELINE_CACHE_MB`).
fn timeline_budget() -> usize {
    std::env::var("SEGDB_TIMELINE_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(512)
        * 1_000_000
}

/// Versions of the tables a PROFILE leaf reads (profiles, identity, links when stitched).
pub(crate) type ProfileVersions = (u64, u64, Option<u64>);

impl Segments {
    pub fn new(db: Database, keyring: Arc<Keyring>) -> Self {
        Segments {
            db,
            keyring,
            cache: Mutex::new(Cache::default()),
            traits: Mutex::new(traits::Cache::default()),
            interests: Mutex::new(interests::Cache::default()),
            lookalikes: Mutex::new(crate::lookalike::Cache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().expect("not poisoned")
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The keyring.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// The segment catalog of the statement's snapshot.
    pub async fn catalog(&self, ctx: &EvalCtx) -> Result<Arc<Catalog>> {
        let v = ctx.snap.version(Table::Segments);
        if let Some((cv, c)) = &self.cache().catalog
            && *cv == v
        {
            return Ok(c.clone());
        }
        let c = Arc::new(catalog::load(&ctx.snap).await?);
        self.cache().catalog = Some((v, c.clone()));
        Ok(c)
    }

    /// The segments-table version of the catalog this process read last.
    pub fn catalog_version(&self) -> Option<u64> {
        self.cache().catalog.as_ref().map(|(v, _)| *v)
    }

    /// Segment names of the latest catalog this process has read (for listings that cannot
    /// wait for I/O).
    pub fn known_names(&self) -> Vec<String> {
        self.cache()
            .catalog
            .as_ref()
            .map(|(_, c)| c.segments.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A definition from the latest catalog this process read (for planning-time checks; the
    /// statement re-reads its own snapshot's catalog when it runs).
    pub fn cached_def(&self, name: &str) -> Result<SegmentDef> {
        match self.cache().catalog.as_ref() {
            Some((_, c)) => c.require(name).cloned(),
            None => Err(Error::NotFound(format!("segment '{name}' does not exist"))),
        }
    }

    /// The identity map of the statement's snapshot.
    pub async fn identity(&self, ctx: &EvalCtx) -> Result<Arc<IdentityMap>> {
        let v = ctx.snap.version(Table::Identity);
        if let Some((cv, m)) = &self.cache().identity
            && *cv == v
        {
            return Ok(m.clone());
        }
        let m = Arc::new(IdentityMap::from_rows(ctx.snap.identity_rows().await?));
        self.cache().identity = Some((v, m.clone()));
        Ok(m)
    }

    /// Every known, non-erased profile of the statement's snapshot: users, or the canonical
    /// ordinals of stitched profiles.
    pub async fn universe(&self, ctx: &EvalCtx) -> Result<Arc<RoaringBitmap>> {
        let raw = self.raw_universe(ctx).await?;
        let Some(canon) = self.canonical(ctx).await? else {
            return Ok(raw);
        };
        let key = (
            ctx.snap.version(Table::Identity),
            ctx.snap.version(Table::Suppression),
            canon.links_version,
        );
        if let Some((k, u)) = &self.cache().stitched_universe
            && *k == key
        {
            return Ok(u.clone());
        }
        let u = Arc::new(canon.image(&raw));
        self.cache().stitched_universe = Some((key, u.clone()));
        Ok(u)
    }

    /// Every known, non-erased id of the statement's snapshot (never stitched).
    pub async fn raw_universe(&self, ctx: &EvalCtx) -> Result<Arc<RoaringBitmap>> {
        let key = (
            ctx.snap.version(Table::Identity),
            ctx.snap.version(Table::Suppression),
        );
        if let Some((k, u)) = &self.cache().universe
            && *k == key
        {
            return Ok(u.clone());
        }
        // From the identity map when this process has it at this version; otherwise from the
        // uid column alone: building the pseudonym map was half of a cold `segment_size` at 10M
        // users, and a size never needs it.
        let cached = match &self.cache().identity {
            Some((v, m)) if *v == ctx.snap.version(Table::Identity) => Some(m.clone()),
            _ => None,
        };
        let mut u = match cached {
            Some(ids) => ids
                .by_uid
                .iter()
                .enumerate()
                .filter(|(_, p)| p.is_some())
                .map(|(i, _)| i as u32)
                .collect(),
            None => ctx.snap.identity_uids().await?,
        };
        // Forgotten users leave at once, even before their identity row is cleared.
        u -= &ctx.snap.suppression().uids;
        let u = Arc::new(u);
        self.cache().universe = Some((key, u.clone()));
        Ok(u)
    }

    /// The event index at the statement's events version. The persisted index is read at the
    /// pinned index version and, when it is behind, caught up in memory (never committed here:
    /// a reader never writes).
    /// The event index when `segdb.use_index` is on (`None`: every leaf scans).
    pub async fn index_if_used(&self, ctx: &EvalCtx) -> Result<Option<Arc<EventIndex>>> {
        if ctx.opts.use_index {
            Ok(Some(self.index(ctx).await?))
        } else {
            Ok(None)
        }
    }

    pub async fn index(&self, ctx: &EvalCtx) -> Result<Arc<EventIndex>> {
        let key = (
            ctx.snap.version(Table::EventIndex),
            ctx.snap.version(Table::Events),
        );
        let cached = self.cache().index.clone();
        if let Some((k, i)) = cached {
            if k == key {
                return Ok(i);
            }
            // A newer events version: extend the cached index by the appended commits (and keep
            // the timelines of the (event, day) pairs they did not touch), instead of reading the
            // persisted index and recomputing every sum and timeline after each small commit.
            if k.1 <= key.1
                && let Some((days, to)) =
                    crate::index::catchup::extension(&self.db, ctx.snap.delta(Table::Events), &i)
                        .await?
            {
                let idx = if days.is_empty() {
                    i.clone()
                } else {
                    Arc::new(i.extended(&days, to))
                };
                let mut c = self.cache();
                if c.timelines.0 == k.1 {
                    c.timelines.0 = key.1;
                    c.timelines.1.retain(|t, _| !days.contains_key(t));
                }
                c.index = Some((key, idx.clone()));
                return Ok(idx);
            }
        }
        let persisted =
            crate::index::store::load(&self.db, ctx.snap.delta(Table::EventIndex)).await?;
        let behind = persisted.events_version != key.1;
        if behind {
            tracing::debug!(
                index_version = persisted.events_version,
                events_version = key.1,
                "event index behind its data; catching up in memory"
            );
        }
        let idx = Arc::new(
            crate::index::catchup::catch_up(&self.db, ctx.snap.delta(Table::Events), persisted)
                .await?,
        );
        if idx.bytes() <= index_budget() {
            self.cache().index = Some((key, idx.clone()));
        } else {
            tracing::warn!(
                bytes = idx.bytes(),
                budget = index_budget(),
                "event index exceeds its cache budget (SEGDB_INDEX_CACHE_MB); it is read per statement"
            );
        }
        Ok(idx)
    }

    /// The day timelines of `keys` (event, day) at the statement's events version: cached ones,
    /// and the missing ones built by one scan. Returns `None` when they would not fit the budget
    /// (the caller scans instead).
    pub async fn timelines(
        &self,
        ctx: &EvalCtx,
        keys: &[(String, i32)],
        index: &EventIndex,
    ) -> Result<Option<crate::index::timeline::Timelines>> {
        use crate::index::timeline::Timeline;
        let version = ctx.snap.version(Table::Events);
        let mut out = crate::index::timeline::Timelines::new();
        let mut missing: Vec<(String, i32)> = Vec::new();
        {
            let c = self.cache();
            for k in keys {
                match (c.timelines.0 == version)
                    .then(|| c.timelines.1.get(k))
                    .flatten()
                {
                    Some(t) => {
                        out.insert(k.clone(), t.clone());
                    }
                    None => missing.push(k.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(Some(out));
        }
        // Keys without events are empty; the others are counted from the index first, to
        // refuse what would not fit.
        let mut wanted: Vec<(String, i32)> = Vec::new();
        let mut entries = 0u64;
        for k in missing {
            match index.days.get(&k) {
                Some(bsi) => {
                    entries += bsi.total();
                    wanted.push(k);
                }
                None => {
                    out.insert(k, Arc::new(Timeline::default()));
                }
            }
        }
        if entries as usize * 12 > timeline_budget() {
            return Ok(None);
        }
        if !wanted.is_empty() {
            let events: std::collections::BTreeSet<&str> =
                wanted.iter().map(|k| k.0.as_str()).collect();
            let (d0, d1) = (
                wanted.iter().map(|k| k.1).min().unwrap_or(0),
                wanted.iter().map(|k| k.1).max().unwrap_or(0),
            );
            let list: Vec<String> = events
                .iter()
                .map(|e| format!("'{}'", e.replace('\'', "''")))
                .collect();
            let q = format!(
                "SELECT uid, event, CAST(ts AS BIGINT) FROM events WHERE event IN ({}) AND {}",
                list.join(", "),
                sqlgen::window_cond(
                    Some(i64::from(d0) * crate::index::DAY_US),
                    (i64::from(d1) + 1) * crate::index::DAY_US
                )
            );
            let want: std::collections::HashSet<&(String, i32)> = wanted.iter().collect();
            let mut pairs: HashMap<(String, i32), Vec<(i64, u32)>> = HashMap::new();
            for b in ctx.query(&q).await? {
                use arrow::array::{Array, AsArray};
                let u = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)?;
                let u = u.as_primitive::<arrow::datatypes::Int64Type>();
                let e = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)?;
                let e = e.as_string::<i32>();
                let t = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
                for i in 0..b.num_rows() {
                    if u.is_null(i) || e.is_null(i) || t.is_null(i) {
                        continue;
                    }
                    let key = (
                        e.value(i).to_string(),
                        t.value(i).div_euclid(crate::index::DAY_US) as i32,
                    );
                    if want.contains(&key) {
                        pairs
                            .entry(key)
                            .or_default()
                            .push((t.value(i), u.value(i) as u32));
                    }
                }
            }
            for k in wanted {
                let t = Arc::new(Timeline::from_pairs(pairs.remove(&k).unwrap_or_default()));
                out.insert(k, t);
            }
        }
        // Remember them (this events version only, within the budget).
        let mut c = self.cache();
        if c.timelines.0 != version {
            c.timelines = (version, Default::default());
        }
        let mut bytes: usize = c.timelines.1.values().map(|t| t.bytes()).sum();
        for (k, t) in &out {
            if !c.timelines.1.contains_key(k) && bytes + t.bytes() <= timeline_budget() {
                bytes += t.bytes();
                c.timelines.1.insert(k.clone(), t.clone());
            }
        }
        Ok(Some(out))
    }

    /// Users holding consent for `purpose` at `at` (every consent record, not only known users'),
    /// from the per-purpose bitmap when it covers `at` for the snapshot's consent table.
    pub async fn consent_holders(
        &self,
        ctx: &EvalCtx,
        purpose: &str,
        at: i64,
    ) -> Result<Arc<RoaringBitmap>> {
        let canon = self.canonical(ctx).await?;
        let rel = stitch::Relations {
            stitched: canon.is_some(),
        };
        let links = canon.as_ref().map(|c| c.links_version);
        let q = consent::purpose_query_over(purpose, at, rel.consent()).map_err(Error::invalid)?;
        let version = ctx.snap.version(Table::Consent);
        if let Some(c) = self.cache().consent.get(purpose)
            && c.version == version
            && c.links == links
            && c.from <= at
            && at < c.until
        {
            return Ok(c.holders.clone());
        }
        let holders = Arc::new(eval::uid_bitmap(ctx, &q).await?);
        let (from, until) = consent::stable_window(ctx, at).await?;
        let mut c = self.cache();
        c.consent_derivations += 1;
        c.consent.insert(
            purpose.to_string(),
            ConsentBitmap {
                version,
                links,
                from,
                until,
                holders: holders.clone(),
            },
        );
        Ok(holders)
    }

    /// The purposes whose holders are cached (re-derived after a consent load).
    pub fn cached_purposes(&self) -> Vec<String> {
        self.cache().consent.keys().cloned().collect()
    }

    /// How many times consent holders were derived from the consent table.
    pub fn consent_derivations(&self) -> u64 {
        self.cache().consent_derivations
    }

    /// The versions PROFILE leaf results depend on.
    pub(crate) fn profile_versions(
        &self,
        ctx: &EvalCtx,
        canon: Option<&stitch::Canon>,
    ) -> ProfileVersions {
        (
            ctx.snap.version(Table::Profiles),
            ctx.snap.version(Table::Identity),
            canon.map(|c| c.links_version),
        )
    }

    /// A cached PROFILE leaf bitmap.
    pub(crate) fn cached_profile(&self, sql: &str, v: ProfileVersions) -> Option<RoaringBitmap> {
        self.cache()
            .profile_leaves
            .get(&(sql.to_string(), v))
            .cloned()
    }

    /// Remember a PROFILE leaf bitmap (older versions are dropped).
    pub(crate) fn store_profile(&self, sql: &str, v: ProfileVersions, bm: RoaringBitmap) {
        let mut c = self.cache();
        c.profile_leaves
            .retain(|(_, k), _| (k.0, k.1) == (v.0, v.1));
        if c.profile_leaves.len() < 256 {
            c.profile_leaves.insert((sql.to_string(), v), bm);
        }
    }

    /// The refresh history of the statement's snapshot.
    pub async fn history(&self, ctx: &EvalCtx) -> Result<Arc<snapshots::History>> {
        let v = ctx.snap.version(Table::Snapshots);
        if let Some((cv, h)) = &self.cache().snapshots
            && *cv == v
        {
            return Ok(h.clone());
        }
        let files = ctx.snap.files(Table::Snapshots)?;
        let h = Arc::new(self.history_of_files(&files).await?);
        self.cache().snapshots = Some((v, h.clone()));
        Ok(h)
    }

    /// The history held by a list of snapshots-table files (files read before come from memory).
    pub async fn history_of_files(
        &self,
        files: &[crate::storage::DataFile],
    ) -> Result<snapshots::History> {
        let schema = crate::storage::base_schema(Table::Snapshots);
        let mut batches = Vec::new();
        let mut fresh = HashMap::new();
        for f in files {
            let cached = self.cache().snapshot_files.get(&f.path).cloned();
            let rows = match cached {
                Some(r) => r,
                None => Arc::new(
                    crate::storage::read_files(
                        &self.db,
                        Table::Snapshots,
                        std::slice::from_ref(f),
                        &schema,
                    )
                    .await?,
                ),
            };
            batches.extend(rows.iter().cloned());
            fresh.insert(f.path.clone(), rows);
        }
        // Keep only the files of this version (compaction and VACUUM replace files).
        self.cache().snapshot_files = fresh;
        snapshots::History::from_batches(&batches)
    }

    /// The snapshot a read of materialised segment `def` uses (`None`: evaluate it live —
    /// a plain segment, `segdb.materialized = 'live'`, or no snapshot at or before `as_of`).
    pub async fn read_snapshot(
        &self,
        ctx: &EvalCtx,
        def: &SegmentDef,
    ) -> Result<Option<Arc<snapshots::Stored>>> {
        if !def.materialized || ctx.opts.materialized == options::Materialized::Live {
            return Ok(None);
        }
        let h = self.history(ctx).await?;
        let at = ctx.as_of_explicit.then_some(ctx.as_of);
        match h.latest(&def.name, &def.generation, at).await? {
            Some(s) => Ok(Some(self.through_canon(ctx, s).await?)),
            None => Ok(None),
        }
    }

    /// A stored snapshot read through the statement's canonical map (stitched profiles that
    /// merged since the refresh are one member).
    pub async fn through_canon(
        &self,
        ctx: &EvalCtx,
        s: Arc<snapshots::Stored>,
    ) -> Result<Arc<snapshots::Stored>> {
        Ok(match self.canonical(ctx).await? {
            Some(c) => Arc::new(c.stored(&s)),
            None => s,
        })
    }

    /// The holdout of a live evaluation of `def`: members whose keyed hash falls in the
    /// segment's share (materialised reads use the groups stored with their snapshot).
    pub async fn holdout_of(
        &self,
        ctx: &EvalCtx,
        def: &SegmentDef,
        members: &RoaringBitmap,
        pct: u8,
    ) -> Result<RoaringBitmap> {
        let ids = self.identity(ctx).await?;
        Ok(snapshots::assign_holdout(
            &self.keyring,
            &def.name,
            members,
            &ids,
            pct,
            None,
        ))
    }

    /// The canonical map of the statement's links, whatever the identity mode.
    pub async fn canon(&self, ctx: &EvalCtx) -> Result<Arc<stitch::Canon>> {
        let v = ctx.snap.version(Table::Links);
        if let Some((cv, c)) = &self.cache().canon
            && *cv == v
        {
            return Ok(c.clone());
        }
        let c = Arc::new(stitch::Canon::new(
            crate::links::components(&ctx.snap).await?,
            v,
        ));
        self.cache().canon = Some((v, c.clone()));
        Ok(c)
    }

    /// The canonical map when segments are evaluated over stitched profiles (`None`: every id
    /// is its own profile — `segdb.identity = 'raw'`, or `'auto'` without links). When stitched,
    /// the statement's embedded SQL can call `segdb_canonical(uid)`.
    pub async fn canonical(&self, ctx: &EvalCtx) -> Result<Option<Arc<stitch::Canon>>> {
        use options::IdentityMode;
        if ctx.opts.identity == IdentityMode::Raw {
            return Ok(None);
        }
        let c = self.canon(ctx).await?;
        if ctx.opts.identity == IdentityMode::Auto && c.is_trivial() {
            return Ok(None);
        }
        ctx.df.register_udf(c.udf());
        Ok(Some(c))
    }

    /// The known, non-erased users holding consent for `purpose` at `at`.
    pub async fn consent_of_profiles(
        &self,
        ctx: &EvalCtx,
        purpose: &str,
        at: i64,
    ) -> Result<Arc<RoaringBitmap>> {
        let holders = self.consent_holders(ctx, purpose, at).await?;
        let universe = self.universe(ctx).await?;
        Ok(Arc::new(&*holders & &*universe))
    }

    /// Adds the other ids of each ordinal's profile (identity links, whatever the identity
    /// mode: FORGET of any id forgets the whole profile) to a set of ordinals.
    pub async fn component_expander(
        &self,
        ctx: &EvalCtx,
    ) -> Result<Box<dyn Fn(&RoaringBitmap) -> RoaringBitmap + Send + Sync>> {
        let c = self.canon(ctx).await?;
        Ok(Box::new(move |b: &RoaringBitmap| c.expand(b)))
    }

    /// The membership of stored segment `name` at the context's `as_of`.
    pub async fn membership(&self, ctx: &EvalCtx, name: &str) -> Result<Membership> {
        let catalog = self.catalog(ctx).await?;
        let def = catalog.require(name)?;
        let universe = self.universe(ctx).await?;
        let index = self.index_if_used(ctx).await?;
        let canon = self.canonical(ctx).await?;
        let mut ev = eval::Evaluator::new(
            ctx.clone(),
            self,
            &catalog,
            &universe,
            index.as_deref(),
            canon,
        );
        ev.segment(&def.name.clone()).await
    }

    /// A segment evaluated from its definition (materialised or not), its dependencies read as
    /// usual: what a refresh stores.
    pub async fn live(&self, ctx: &EvalCtx, name: &str) -> Result<Membership> {
        let catalog = self.catalog(ctx).await?;
        let universe = self.universe(ctx).await?;
        let index = self.index_if_used(ctx).await?;
        let canon = self.canonical(ctx).await?;
        let mut ev = eval::Evaluator::new(
            ctx.clone(),
            self,
            &catalog,
            &universe,
            index.as_deref(),
            canon,
        );
        ev.live(name).await
    }

    /// What a segment means wherever it leaves the engine: its target members (consent,
    /// erasure and holdout applied).
    pub async fn members(&self, ctx: &EvalCtx, name: &str) -> Result<RoaringBitmap> {
        Ok(self.membership(ctx, name).await?.target())
    }
}
