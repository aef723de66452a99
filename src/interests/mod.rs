//! Interests (DESIGN §17): category maps from event properties to IAB taxonomy nodes
//! ([`maps`]), the decayed per-(category, day) index that answers them ([`index`]), and what
//! reads it: the `INTERESTED IN` leaf, `interests(user_id [, n])` and the `interests` table.
//! A user's score for a category is Σ 0.5^(age / half_life) over their mapped events in the
//! window (age = as_of − ts in fractional days); the half-life is the database setting
//! `ALTER DATABASE SET INTERESTS HALF LIFE '…'` (default 7 days).

pub mod functions;
pub mod index;
pub mod maps;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::segment::{EvalCtx, Segments};
use crate::storage::Table;
use crate::taxonomy::taxonomy;
use index::InterestIndex;
use maps::Maps;

/// The default window of an interest: the 30 days before `as_of`.
pub const DEFAULT_DAYS: i64 = 30;

/// The cached state: the maps of one table version, the index of the last (events, maps,
/// half-life) asked for.
#[derive(Default)]
pub struct Cache {
    maps: Option<(u64, Arc<Maps>)>,
    index: Option<Arc<InterestIndex>>,
}

/// A duration in the largest whole unit: `7 days`, `36 hours`, `90 minutes`.
pub fn duration_text(us: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let (day, hour, minute) = (86_400_000_000, 3_600_000_000, 60_000_000);
    if us % day == 0 {
        plural(us / day, "day")
    } else if us % hour == 0 {
        plural(us / hour, "hour")
    } else if us % minute == 0 {
        plural(us / minute, "minute")
    } else {
        format!("{:.3} seconds", us as f64 / 1e6)
    }
}

/// A category as a user names it (id, path or name) → its taxonomy position.
pub fn resolve(s: &str) -> Result<u32> {
    let t = taxonomy();
    let c = t.resolve(s).map_err(Error::NotFound)?;
    Ok(t.position(&c.id).expect("resolved ids exist") as u32)
}

impl Segments {
    fn interests_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.interests.lock().expect("not poisoned")
    }

    /// The category maps of the statement's snapshot.
    pub async fn category_maps(&self, ctx: &EvalCtx) -> Result<Arc<Maps>> {
        let v = ctx.snap.version(Table::CategoryMaps);
        if let Some((cv, m)) = &self.interests_cache().maps
            && *cv == v
        {
            return Ok(m.clone());
        }
        let m = Arc::new(maps::from_batches(
            &ctx.snap.read(Table::CategoryMaps).await?,
        )?);
        self.interests_cache().maps = Some((v, m.clone()));
        Ok(m)
    }

    /// The interest index of the statement's snapshot: the cached one when it is current,
    /// caught up by the commits since when they only appended, else built by one scan.
    pub async fn interest_index(&self, ctx: &EvalCtx) -> Result<Arc<InterestIndex>> {
        let maps = self.category_maps(ctx).await?;
        let maps_version = ctx.snap.version(Table::CategoryMaps);
        let events_version = ctx.snap.version(Table::Events);
        let half_life = crate::storage::settings::Settings::read(self.db())
            .await?
            .half_life_us();
        let cached = self.interests_cache().index.clone();
        if let Some(i) = cached
            && i.maps_version == maps_version
            && i.half_life_us == half_life
        {
            if i.events_version == events_version {
                return Ok(i);
            }
            if i.events_version < events_version
                && let Some(next) =
                    index::extend(self.db(), ctx.snap.delta(Table::Events), &i).await?
            {
                let next = Arc::new(next);
                self.interests_cache().index = Some(next.clone());
                return Ok(next);
            }
        }
        let started = std::time::Instant::now();
        let idx = Arc::new(
            index::build(
                self.db(),
                ctx.snap.delta(Table::Events),
                &maps,
                maps_version,
                half_life,
            )
            .await?,
        );
        tracing::debug!(
            days = idx.days.len(),
            bytes = idx.bytes(),
            took_ms = started.elapsed().as_millis() as u64,
            "interest index built"
        );
        let mut c = self.interests_cache();
        // Keep the newest: a statement on an older snapshot does not evict a newer index.
        if c.index
            .as_ref()
            .is_none_or(|old| old.events_version <= idx.events_version)
        {
            c.index = Some(idx.clone());
        }
        Ok(idx)
    }
}

/// Per-user scores of every category for `who` (`None`: everyone) in `[lo, hi)` at `as_of`,
/// summed per profile through `canon` when segments are stitched.
pub fn scores(
    idx: &InterestIndex,
    cat: Option<u32>,
    who: Option<&RoaringBitmap>,
    lo: i64,
    hi: i64,
    as_of: i64,
    canon: Option<&crate::segment::stitch::Canon>,
) -> HashMap<(u32, u32), f64> {
    let mut out: HashMap<(u32, u32), f64> = HashMap::new();
    idx.visit(cat, who, lo, hi, as_of, |u, c, s| {
        let u = canon.map_or(u, |k| k.of(u));
        *out.entry((u, c)).or_insert(0.0) += s;
    });
    out
}

/// The columns of `interests(user_id [, n])`.
pub fn user_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("category", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ]))
}

/// The columns of the `interests` table.
pub fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("score", DataType::Float64, false),
    ]))
}

/// The default window `[as_of − 30 days, as_of)`.
fn default_window(as_of: i64) -> (i64, i64) {
    (as_of - DEFAULT_DAYS * crate::index::DAY_US, as_of)
}

/// `interests(user_id [, n])`: the top `n` categories of one user (a stored pseudonym) by score,
/// then category id as a string. An unknown or forgotten user has none.
pub async fn of_user(
    segments: &Segments,
    ctx: &EvalCtx,
    pseudonym: &str,
    n: usize,
) -> Result<RecordBatch> {
    let ids = segments.identity(ctx).await?;
    let universe = segments.universe(ctx).await?;
    let canon = segments.canonical(ctx).await?;
    let mut rows: Vec<(String, f64)> = Vec::new();
    if let Some(&u) = ids.by_pseudonym.get(pseudonym) {
        let profile = canon.as_ref().map_or(u, |c| c.of(u));
        if universe.contains(profile) {
            let mut who = RoaringBitmap::new();
            who.insert(profile);
            let who = match &canon {
                Some(c) => c.expand(&who),
                None => who,
            };
            let idx = segments.interest_index(ctx).await?;
            let (lo, hi) = default_window(ctx.as_of);
            let t = taxonomy();
            for ((_, c), s) in scores(&idx, None, Some(&who), lo, hi, ctx.as_of, canon.as_deref()) {
                if s > 0.0 {
                    rows.push((t.categories[c as usize].id.clone(), s));
                }
            }
        }
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(n);
    let t = taxonomy();
    Ok(RecordBatch::try_new(
        user_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &t.get(&r.0).expect("known").name),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )?)
}

/// The `interests` table: every (user, category) with a score above 0 over the last 30 days
/// at the statement's `as_of`, by user ordinal then score.
pub async fn table(segments: &Segments, ctx: &EvalCtx) -> Result<RecordBatch> {
    let ids = segments.identity(ctx).await?;
    let universe = segments.universe(ctx).await?;
    let canon = segments.canonical(ctx).await?;
    let idx = segments.interest_index(ctx).await?;
    let (lo, hi) = default_window(ctx.as_of);
    let mut rows: Vec<((u32, u32), f64)> =
        scores(&idx, None, None, lo, hi, ctx.as_of, canon.as_deref())
            .into_iter()
            .filter(|((u, _), s)| *s > 0.0 && universe.contains(*u))
            .collect();
    let t = taxonomy();
    rows.sort_by(|a, b| {
        a.0.0.cmp(&b.0.0).then(b.1.total_cmp(&a.1)).then_with(|| {
            t.categories[a.0.1 as usize]
                .id
                .cmp(&t.categories[b.0.1 as usize].id)
        })
    });
    let pseudo = |u: u32| ids.by_uid.get(u as usize).cloned().flatten();
    Ok(RecordBatch::try_new(
        table_schema(),
        vec![
            Arc::new(
                rows.iter()
                    .map(|((u, _), _)| pseudo(*u))
                    .map(|p| p.map(|s| s.to_string()))
                    .collect::<StringArray>(),
            ) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|((_, c), _)| &t.categories[*c as usize].id),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|((_, c), _)| &t.categories[*c as usize].name),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )?)
}
