//! The interest index: per (category, UTC day) the users with a mapped event that day and, per
//! user, the day's decay weight Σ 2^((ts − day start) / half_life). A score at `as_of` over whole
//! days is then Σ_day 0.5^((as_of − day start) / half_life) · weight — exactly
//! Σ 0.5^((as_of − ts) / half_life) per event, as DESIGN §17 defines it, without visiting events.
//! Each day also keeps its mapped occurrences (ts, uid, category set) in time order, for the
//! partial days at a window's edges.
//!
//! It is derived from one events version, one category-maps version and one half-life, and kept
//! in memory; a newer events version that only appended is caught up by reading the added files
//! (the same plan the event index follows), so a stream of small commits costs a small scan each.
//! Days are shared between versions: a commit rebuilds only the days it touched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use futures::StreamExt;
use roaring::RoaringBitmap;

use super::maps::{Maps, Matcher};
use crate::error::Result;
use crate::index::DAY_US;
use crate::storage::{DataFile, Database, Table};
use crate::taxonomy::taxonomy;

/// One category's users on one day.
#[derive(Debug, Default)]
pub struct Agg {
    pub present: RoaringBitmap,
    /// Sorted users and their decay weight that day.
    pub uids: Vec<u32>,
    pub weights: Vec<f64>,
}

/// One day: its mapped occurrences in time order and the per-category aggregates.
#[derive(Debug, Default)]
pub struct Day {
    ts: Vec<i64>,
    uid: Vec<u32>,
    set: Vec<u32>,
    pub aggs: HashMap<u32, Agg>,
}

/// The compiled maps: per map, its property column and matcher.
#[derive(Debug, Default)]
struct Compiled {
    maps: Vec<(String, Matcher)>,
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct InterestIndex {
    pub events_version: u64,
    pub maps_version: u64,
    pub half_life_us: i64,
    compiled: Arc<Compiled>,
    /// Interned category sets (a category and its ancestors, over every map): an occurrence
    /// stores the id of its set.
    sets: Vec<Arc<[u32]>>,
    set_ids: HashMap<Vec<u32>, u32>,
    pub days: BTreeMap<i32, Arc<Day>>,
    /// Unions of whole days already computed, by (category, first day, end day): a window's
    /// whole days stay the same from one midnight to the next while `as_of` moves.
    unions: Unions,
}

/// Bounded by entries; a clone starts empty (clones are made to be changed).
#[derive(Debug, Default)]
struct Unions(std::sync::Mutex<HashMap<(u32, i32, i32), Arc<RoaringBitmap>>>);

impl Clone for Unions {
    fn clone(&self) -> Unions {
        Unions::default()
    }
}

/// Cached unions kept per index before the cache starts over.
const UNIONS_KEPT: usize = 4096;

impl InterestIndex {
    /// An empty index for these maps.
    pub fn new(maps: &Maps, maps_version: u64, half_life_us: i64) -> InterestIndex {
        InterestIndex {
            events_version: 0,
            maps_version,
            half_life_us,
            compiled: Arc::new(Compiled {
                maps: maps
                    .maps
                    .values()
                    .map(|m| (m.property.clone(), Matcher::new(m)))
                    .collect(),
            }),
            sets: Vec::new(),
            set_ids: HashMap::new(),
            days: BTreeMap::new(),
            unions: Unions::default(),
        }
    }

    /// Whether any map has rows.
    pub fn has_maps(&self) -> bool {
        !self.compiled.maps.is_empty()
    }

    /// The property columns the maps read.
    pub fn properties(&self) -> Vec<String> {
        let mut v: Vec<String> = self.compiled.maps.iter().map(|m| m.0.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    fn intern(&mut self, mut cats: Vec<u32>) -> u32 {
        cats.sort_unstable();
        cats.dedup();
        if let Some(id) = self.set_ids.get(&cats) {
            return *id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(cats.clone().into());
        self.set_ids.insert(cats, id);
        id
    }

    /// Add the mapped rows of events batches (`uid`, `ts` as Int64, then the property columns
    /// named in `props`, any type) and rebuild the days they touch.
    pub fn add_batches(&mut self, batches: &[RecordBatch], props: &[String]) -> Result<()> {
        // Days change: unions over them are stale.
        self.unions = Unions::default();
        let t = taxonomy();
        let compiled = self.compiled.clone();
        // Per map, the column index in `props`.
        let cols: Vec<Option<usize>> = compiled
            .maps
            .iter()
            .map(|(p, _)| props.iter().position(|x| x == p))
            .collect();
        // (map, value) → its category chain; (chains) → set id.
        let mut memo: HashMap<(usize, String), Option<Vec<u32>>> = HashMap::new();
        let mut by_day: BTreeMap<i32, Vec<(i64, u32, u32)>> = BTreeMap::new();
        for b in batches {
            let uid = arrow::compute::cast(b.column(0), &DataType::Int64)?;
            let uid = uid.as_primitive::<Int64Type>();
            let ts = arrow::compute::cast(b.column(1), &DataType::Int64)?;
            let ts = ts.as_primitive::<Int64Type>();
            let values: Vec<arrow::array::ArrayRef> = (0..props.len())
                .map(|i| arrow::compute::cast(b.column(2 + i), &DataType::Utf8))
                .collect::<std::result::Result<_, _>>()?;
            let values: Vec<&arrow::array::StringArray> =
                values.iter().map(|a| a.as_string::<i32>()).collect();
            for i in 0..b.num_rows() {
                if uid.is_null(i) || ts.is_null(i) {
                    continue;
                }
                let Ok(u) = u32::try_from(uid.value(i)) else {
                    continue;
                };
                let mut cats: Vec<u32> = Vec::new();
                for (m, col) in cols.iter().enumerate() {
                    let Some(col) = col else { continue };
                    let v = values[*col];
                    if v.is_null(i) {
                        continue;
                    }
                    let key = (m, v.value(i).to_string());
                    let chain = match memo.get(&key) {
                        Some(c) => c,
                        None => {
                            let c = compiled.maps[m]
                                .1
                                .category(&key.1)
                                .map(|pos| t.chain(pos as usize));
                            memo.entry(key).or_insert(c)
                        }
                    };
                    if let Some(c) = chain {
                        cats.extend_from_slice(c);
                    }
                }
                if cats.is_empty() {
                    continue;
                }
                let set = self.intern(cats);
                let t = ts.value(i);
                by_day
                    .entry(t.div_euclid(DAY_US) as i32)
                    .or_default()
                    .push((t, u, set));
            }
        }
        for (d, mut rows) in by_day {
            if let Some(old) = self.days.get(&d) {
                rows.extend((0..old.ts.len()).map(|i| (old.ts[i], old.uid[i], old.set[i])));
            }
            rows.sort_unstable();
            let day = self.build_day(d, rows);
            self.days.insert(d, Arc::new(day));
        }
        Ok(())
    }

    fn build_day(&self, d: i32, rows: Vec<(i64, u32, u32)>) -> Day {
        let start = i64::from(d) * DAY_US;
        let h = self.half_life_us as f64;
        let mut per: HashMap<u32, Vec<(u32, f64)>> = HashMap::new();
        for &(ts, u, set) in &rows {
            let w = ((ts - start) as f64 / h).exp2();
            for &c in self.sets[set as usize].iter() {
                per.entry(c).or_default().push((u, w));
            }
        }
        let aggs = per
            .into_iter()
            .map(|(c, mut v)| {
                // Stable: a user's weights add in time order for every category, so a category and
                // its parent reached by the same events get the very same sum (and tie).
                v.sort_by_key(|x| x.0);
                let mut agg = Agg::default();
                for (u, w) in v {
                    match agg.uids.last() {
                        Some(&last) if last == u => *agg.weights.last_mut().expect("same") += w,
                        _ => {
                            agg.uids.push(u);
                            agg.weights.push(w);
                        }
                    }
                }
                agg.present =
                    RoaringBitmap::from_sorted_iter(agg.uids.iter().copied()).expect("sorted");
                (c, agg)
            })
            .collect();
        Day {
            ts: rows.iter().map(|r| r.0).collect(),
            uid: rows.iter().map(|r| r.1).collect(),
            set: rows.iter().map(|r| r.2).collect(),
            aggs,
        }
    }

    /// The day holding `[a, b)` (both inside one day) and the positions of its occurrences there.
    fn occurrences(&self, a: i64, b: i64) -> Option<(&Day, std::ops::Range<usize>)> {
        let day = self.days.get(&(a.div_euclid(DAY_US) as i32))?;
        let from = day.ts.partition_point(|t| *t < a);
        let to = day.ts.partition_point(|t| *t < b);
        Some((day, from..to.max(from)))
    }

    /// The decay factor of an event at `ts` seen from `as_of`.
    fn decay(&self, as_of: i64, ts: i64) -> f64 {
        (-((as_of - ts) as f64) / self.half_life_us as f64).exp2()
    }

    /// Visit every (uid, category, score contribution) in `[lo, hi)` at `as_of`; `cat` limits it
    /// to one category, `who` to some users.
    pub fn visit(
        &self,
        cat: Option<u32>,
        who: Option<&RoaringBitmap>,
        lo: i64,
        hi: i64,
        as_of: i64,
        mut f: impl FnMut(u32, u32, f64),
    ) {
        if lo >= hi {
            return;
        }
        let sp = crate::index::timeline::split(Some(lo), hi);
        if let Some((a, b)) = sp.whole {
            for (&d, day) in self.days.range(a..b) {
                let factor = self.decay(as_of, i64::from(d) * DAY_US);
                let mut one = |c: u32, agg: &Agg| match who {
                    Some(w) => {
                        for u in w.iter() {
                            if let Ok(i) = agg.uids.binary_search(&u) {
                                f(u, c, agg.weights[i] * factor);
                            }
                        }
                    }
                    None => {
                        for (u, w) in agg.uids.iter().zip(&agg.weights) {
                            f(*u, c, w * factor);
                        }
                    }
                };
                match cat {
                    Some(c) => {
                        if let Some(agg) = day.aggs.get(&c) {
                            one(c, agg);
                        }
                    }
                    None => {
                        for (c, agg) in &day.aggs {
                            one(*c, agg);
                        }
                    }
                }
            }
        }
        for (a, b) in sp.partial {
            let Some((day, range)) = self.occurrences(a, b) else {
                continue;
            };
            for i in range {
                let u = day.uid[i];
                if who.is_some_and(|w| !w.contains(u)) {
                    continue;
                }
                let set = &self.sets[day.set[i] as usize];
                let s = self.decay(as_of, day.ts[i]);
                match cat {
                    Some(c) => {
                        if set.binary_search(&c).is_ok() {
                            f(u, c, s);
                        }
                    }
                    None => {
                        for &c in set.iter() {
                            f(u, c, s);
                        }
                    }
                }
            }
        }
    }

    /// The users with a mapped event of `cat` in `[lo, hi)`.
    pub fn present(&self, cat: u32, lo: i64, hi: i64) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        if lo >= hi {
            return out;
        }
        let sp = crate::index::timeline::split(Some(lo), hi);
        if let Some((a, b)) = sp.whole {
            let cached = self
                .unions
                .0
                .lock()
                .expect("not poisoned")
                .get(&(cat, a, b))
                .cloned();
            match cached {
                Some(u) => out |= &*u,
                None => {
                    let mut u = RoaringBitmap::new();
                    for (_, day) in self.days.range(a..b) {
                        if let Some(agg) = day.aggs.get(&cat) {
                            u |= &agg.present;
                        }
                    }
                    out |= &u;
                    let mut g = self.unions.0.lock().expect("not poisoned");
                    if g.len() >= UNIONS_KEPT {
                        g.clear();
                    }
                    g.insert((cat, a, b), Arc::new(u));
                }
            }
        }
        for (a, b) in sp.partial {
            let Some((day, range)) = self.occurrences(a, b) else {
                continue;
            };
            for i in range {
                if self.sets[day.set[i] as usize].binary_search(&cat).is_ok() {
                    out.insert(day.uid[i]);
                }
            }
        }
        out
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.days
            .values()
            .map(|d| {
                d.ts.len() * 16
                    + d.aggs
                        .values()
                        .map(|a| a.uids.len() * 12 + a.present.serialized_size())
                        .sum::<usize>()
            })
            .sum()
    }
}

/// The rows of `files` (of the pinned `events`) as batches of `uid`, `ts` (Int64) and the
/// properties of `props` that the table has (the others are left out of `props`).
pub async fn scan(
    db: &Database,
    events: &deltalake::DeltaTable,
    files: &[DataFile],
    props: &mut Vec<String>,
) -> Result<Vec<RecordBatch>> {
    let schema =
        crate::storage::provider::with_view_types(&events.snapshot()?.snapshot().arrow_schema());
    props.retain(|p| schema.index_of(p).is_ok());
    if files.is_empty() || props.is_empty() {
        return Ok(Vec::new());
    }
    let mut columns: Vec<&str> = vec!["uid", "ts"];
    columns.extend(props.iter().map(String::as_str));
    let mut stream = crate::index::catchup::scan_columns(db, events, files, &columns).await?;
    let mut out = Vec::new();
    while let Some(b) = stream.next().await {
        let b = b?;
        // Timestamps as microseconds.
        let mut cols = b.columns().to_vec();
        cols[1] = arrow::compute::cast(&cols[1], &DataType::Int64)?;
        let fields: Vec<arrow::datatypes::Field> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                arrow::datatypes::Field::new(format!("c{i}"), c.data_type().clone(), true)
            })
            .collect();
        out.push(RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(fields)),
            cols,
        )?);
    }
    Ok(out)
}

/// Build the index of the pinned `events` version from scratch.
pub async fn build(
    db: &Database,
    events: &deltalake::DeltaTable,
    maps: &Maps,
    maps_version: u64,
    half_life_us: i64,
) -> Result<InterestIndex> {
    let mut idx = InterestIndex::new(maps, maps_version, half_life_us);
    let mut props = idx.properties();
    let files = crate::storage::files_of(events, Table::Events)?;
    let batches = scan(db, events, &files, &mut props).await?;
    idx.add_batches(&batches, &props)?;
    idx.events_version = events.version().unwrap_or(0);
    Ok(idx)
}

/// `idx` brought up to the pinned `events` version by reading only the commits since, or
/// `None` when one of them needs a rebuild (a retention delete, a rewrite).
pub async fn extend(
    db: &Database,
    events: &deltalake::DeltaTable,
    idx: &InterestIndex,
) -> Result<Option<InterestIndex>> {
    use crate::index::catchup::{Plan, plan};
    let to = events.version().unwrap_or(0);
    match plan(db, idx.events_version, to).await? {
        Plan::Current => Ok(Some(idx.clone())),
        Plan::Rebuild => Ok(None),
        Plan::Incremental(files) => {
            let mut next = idx.clone();
            let mut props = next.properties();
            let batches = scan(db, events, &files, &mut props).await?;
            next.add_batches(&batches, &props)?;
            next.events_version = to;
            Ok(Some(next))
        }
    }
}
