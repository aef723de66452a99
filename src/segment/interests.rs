//! What reads interests (DESIGN §17): the cached category maps and interest index of a
//! statement's snapshot, `interests(user_id [, n])` and the `interests` table. The `INTERESTED
//! IN` leaf is evaluated in [`super::eval`].

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use roaring::RoaringBitmap;

use super::{EvalCtx, Segments};
use crate::error::Result;
use crate::interests::index::{self, InterestIndex};
use crate::interests::maps::{self, Maps};
use crate::interests::{DEFAULT_DAYS, scores};
use crate::storage::Table;
use crate::taxonomy::taxonomy;

/// The cached state: the maps of one table version, the index of the last (events, maps,
/// half-life) asked for.
#[derive(Default)]
pub struct Cache {
    maps: Option<(u64, Arc<Maps>)>,
    index: Option<Arc<InterestIndex>>,
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
            let of = canon.clone().map(|c| move |u: u32| c.of(u));
            let of = of.as_ref().map(|f| f as &dyn Fn(u32) -> u32);
            for ((_, c), s) in scores(&idx, None, Some(&who), lo, hi, ctx.as_of, of) {
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
    let of = canon.clone().map(|c| move |u: u32| c.of(u));
    let of = of.as_ref().map(|f| f as &dyn Fn(u32) -> u32);
    let mut rows: Vec<((u32, u32), f64)> = scores(&idx, None, None, lo, hi, ctx.as_of, of)
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
