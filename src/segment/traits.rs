//! Computed traits: per-profile facts over events (`CREATE TRAIT ltv_90d AS SUM(price) OF EVENT
//! 'purchase' IN THE LAST 90 DAYS`), kept in `_segdb/traits` as (name, definition, data type),
//! computed at the statement's `as_of` over the same profiles segments see (stitched when
//! segments are), read as the `traits` table and filtered by `TRAIT predicate` leaves.
//!
//! Rules: NULL values are ignored; `COUNT` and `COUNT DISTINCT` are Int64 and 0 for a profile
//! without matching events, every other aggregate is NULL then; ties — `MOST_FREQUENT` between
//! equally frequent values, `FIRST`/`LAST` between values at the same `ts` — go to the smallest
//! value.

use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use roaring::RoaringBitmap;

use super::ast::{CreateTrait, EventRef, EventSpec, Statement, TraitAgg};
use super::context::{EvalCtx, expression_only};
use super::eval::window_bounds;
use super::sqlgen::{event_cond, window_cond};
use super::stitch::Relations;
use super::{Segments, ddl};
use crate::error::{Error, Result};
use crate::result::QueryResult;
use crate::storage::commit::{self, Committed};
use crate::storage::{Database, Snapshot, Table, base_schema, snapshot_column};

/// One stored trait.
#[derive(Debug, Clone)]
pub struct TraitDef {
    pub name: String,
    /// The text after `AS`, as written.
    pub definition: String,
    /// The column's type in the `traits` table.
    pub data_type: DataType,
    pub created_at: i64,
    pub parsed: CreateTrait,
}

/// The traits of one version of `_segdb/traits`, in creation order.
#[derive(Debug, Default, Clone)]
pub struct TraitCatalog {
    pub defs: Vec<TraitDef>,
}

impl TraitCatalog {
    pub fn get(&self, name: &str) -> Option<&TraitDef> {
        self.defs.iter().find(|d| d.name == name)
    }
}

/// What the traits of a statement are cached by: the versions they read, the identity mode and
/// `as_of`.
type TableKey = (Vec<u64>, Option<u64>, i64);

/// Trait state shared by an engine's sessions.
#[derive(Default)]
pub struct Cache {
    catalog: Option<(u64, Arc<TraitCatalog>)>,
    table: Option<(TableKey, Arc<RecordBatch>)>,
}

/// Parse a stored definition.
fn parse_def(name: &str, definition: &str) -> Result<CreateTrait> {
    match super::parser::parse_statement(&format!("CREATE TRAIT {name} AS {definition}")) {
        Ok(Statement::CreateTrait(t)) => Ok(t),
        _ => Err(Error::storage(format!(
            "trait '{name}' has a damaged definition; CREATE OR REPLACE TRAIT it again"
        ))),
    }
}

fn from_batches(batches: &[RecordBatch]) -> Result<TraitCatalog> {
    let mut defs = Vec::new();
    for b in batches {
        let n = snapshot_column(b, "name", &DataType::Utf8)?;
        let d = snapshot_column(b, "definition", &DataType::Utf8)?;
        let t = snapshot_column(b, "data_type", &DataType::Utf8)?;
        let c = snapshot_column(b, "created_at", &DataType::Int64)?;
        let (n, d, t) = (
            n.as_string::<i32>(),
            d.as_string::<i32>(),
            t.as_string::<i32>(),
        );
        let c = c.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if n.is_null(i) {
                continue;
            }
            let name = n.value(i).to_string();
            let definition = d.value(i).to_string();
            let data_type = DataType::from_str(t.value(i)).map_err(|_| {
                Error::storage(format!(
                    "trait '{name}' has a damaged type; CREATE OR REPLACE TRAIT it again"
                ))
            })?;
            defs.push(TraitDef {
                parsed: parse_def(&name, &definition)?,
                name,
                definition,
                data_type,
                created_at: if c.is_valid(i) { c.value(i) } else { 0 },
            });
        }
    }
    defs.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    Ok(TraitCatalog { defs })
}

fn to_batch(defs: &[TraitDef]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        base_schema(Table::Traits),
        vec![
            Arc::new(StringArray::from_iter_values(defs.iter().map(|d| &d.name))),
            Arc::new(StringArray::from_iter_values(
                defs.iter().map(|d| &d.definition),
            )),
            Arc::new(StringArray::from_iter_values(
                defs.iter().map(|d| d.data_type.to_string()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(defs.iter().map(|d| d.created_at))
                    .with_timezone("UTC"),
            ),
        ],
    )?)
}

/// Change the stored traits at exactly the next version (re-applying `change` when another
/// process committed first).
async fn update<T>(
    db: &Database,
    mut change: impl FnMut(&mut Vec<TraitDef>) -> Result<T>,
) -> Result<T> {
    for _ in 0..50 {
        let table = db.load(Table::Traits).await?;
        let batches = crate::storage::read_pinned(db, Table::Traits, &table).await?;
        let mut defs = from_batches(&batches)?.defs;
        let out = change(&mut defs)?;
        match commit::overwrite_exact(&table, vec![to_batch(&defs)?], commit::op("traits")).await? {
            Committed::Version(_) => return Ok(out),
            Committed::Conflict => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    Err(Error::storage(
        "the traits kept changing underneath this statement; try again",
    ))
}

/// The query of one trait: `uid`, `v` per profile with matching events in the window ending at
/// `as_of` (every event before it without a window).
pub fn query(t: &CreateTrait, rel: Relations, as_of: i64) -> String {
    let spec = EventSpec {
        event: t.event.clone(),
        filter: t.filter.clone(),
    };
    let (lo, hi) = window_bounds(t.window.as_ref(), as_of);
    let cond = format!("({}) AND {}", event_cond(&spec), window_cond(lo, hi));
    let ev = rel.events();
    let simple = |agg: &str, x: &str| {
        format!("SELECT uid, {agg} AS v FROM {ev} WHERE {cond} AND ({x}) IS NOT NULL GROUP BY uid")
    };
    match &t.agg {
        TraitAgg::Count => format!("SELECT uid, count(*) AS v FROM {ev} WHERE {cond} GROUP BY uid"),
        TraitAgg::Sum(x) => simple(&format!("sum({})", x.text), &x.text),
        TraitAgg::Min(x) => simple(&format!("min({})", x.text), &x.text),
        TraitAgg::Max(x) => simple(&format!("max({})", x.text), &x.text),
        TraitAgg::CountDistinct(x) => simple(&format!("count(DISTINCT {})", x.text), &x.text),
        TraitAgg::First(x) => simple(
            &format!("first_value({x} ORDER BY ts ASC, {x} ASC)", x = x.text),
            &x.text,
        ),
        TraitAgg::Last(x) => simple(
            &format!("first_value({x} ORDER BY ts DESC, {x} ASC)", x = x.text),
            &x.text,
        ),
        TraitAgg::MostFrequent(x) => format!(
            "SELECT uid, v FROM (SELECT uid, v, row_number() OVER (PARTITION BY uid ORDER BY n DESC, v ASC) AS segdb_rn \
             FROM (SELECT uid, v, count(*) AS n FROM (SELECT uid, ({x}) AS v FROM {ev} WHERE {cond} AND ({x}) IS NOT NULL) e GROUP BY uid, v) g) r \
             WHERE segdb_rn = 1",
            x = x.text
        ),
    }
}

fn counts_zero(t: &CreateTrait) -> bool {
    matches!(t.agg, TraitAgg::Count | TraitAgg::CountDistinct(_))
}

/// The schema of the `traits` table for a catalog: `user_id`, then one column per trait.
pub fn table_schema(c: &TraitCatalog, with_uid: bool) -> SchemaRef {
    let mut fields = Vec::new();
    if with_uid {
        fields.push(Field::new("uid", DataType::Int64, false));
    }
    fields.push(Field::new("user_id", DataType::Utf8, true));
    for d in &c.defs {
        fields.push(Field::new(&d.name, d.data_type.clone(), true));
    }
    Arc::new(Schema::new(fields))
}

impl Segments {
    /// The traits of the statement's snapshot.
    pub async fn trait_catalog(&self, snap: &Snapshot) -> Result<Arc<TraitCatalog>> {
        let v = snap.version(Table::Traits);
        if let Some((cv, c)) = &self.traits_cache().catalog
            && *cv == v
        {
            return Ok(c.clone());
        }
        let c = Arc::new(from_batches(&snap.read(Table::Traits).await?)?);
        self.traits_cache().catalog = Some((v, c.clone()));
        Ok(c)
    }

    fn traits_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.traits.lock().expect("not poisoned")
    }

    /// The traits of every profile at the context's `as_of`: `uid`, `user_id`, one column per
    /// trait, one row per member of the universe (stitched profiles when segments are).
    pub async fn traits_table(&self, ctx: &EvalCtx) -> Result<Arc<RecordBatch>> {
        let catalog = self.trait_catalog(&ctx.snap).await?;
        let canon = self.canonical(ctx).await?;
        let key: TableKey = (
            [
                Table::Traits,
                Table::Events,
                Table::Identity,
                Table::Suppression,
            ]
            .iter()
            .map(|t| ctx.snap.version(*t))
            .collect(),
            canon.as_ref().map(|c| c.links_version),
            ctx.as_of,
        );
        if let Some((k, b)) = &self.traits_cache().table
            && *k == key
        {
            return Ok(b.clone());
        }
        let universe = self.universe(ctx).await?;
        let rel = Relations {
            stitched: canon.is_some(),
        };
        let b = Arc::new(compute(self, ctx, &catalog, &universe, rel).await?);
        self.traits_cache().table = Some((key, b.clone()));
        Ok(b)
    }

    /// The profiles matching a `TRAIT` predicate.
    pub async fn trait_leaf(&self, ctx: &EvalCtx, predicate: &str) -> Result<RoaringBitmap> {
        let catalog = self.trait_catalog(&ctx.snap).await?;
        if catalog.defs.is_empty() {
            return Err(Error::invalid(
                "no traits are defined (CREATE TRAIT name AS … OF EVENT '…')",
            ));
        }
        let table = self.traits_table(ctx).await?;
        crate::limits::check_sql_text(predicate)?;
        let df = datafusion::prelude::SessionContext::new();
        df.register_batch("traits", (*table).clone())?;
        let batches = df
            .sql_with_options(
                &format!("SELECT uid FROM traits WHERE ({predicate})"),
                expression_only(),
            )
            .await?
            .collect()
            .await?;
        let mut bm = RoaringBitmap::new();
        for b in batches {
            let u = b.column(0).as_primitive::<Int64Type>();
            bm.extend(u.iter().flatten().map(|v| v as u32));
        }
        Ok(bm)
    }
}

async fn compute(
    segments: &Segments,
    ctx: &EvalCtx,
    catalog: &TraitCatalog,
    universe: &RoaringBitmap,
    rel: Relations,
) -> Result<RecordBatch> {
    let ids = segments.identity(ctx).await?;
    let uids: Vec<u32> = universe.iter().collect();
    let max = uids.last().map_or(0, |u| *u as usize + 1);
    let mut pos = vec![u32::MAX; max];
    for (i, u) in uids.iter().enumerate() {
        pos[*u as usize] = i as u32;
    }
    let mut pseudo = StringBuilder::with_capacity(uids.len(), uids.len() * 25);
    for u in &uids {
        pseudo.append_option(ids.pseudonym(*u));
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            uids.iter().map(|u| i64::from(*u)),
        )),
        Arc::new(pseudo.finish()),
    ];
    for d in &catalog.defs {
        let q = query(&d.parsed, rel, ctx.as_of);
        let batches = ctx.query(&q).await.map_err(|e| {
            Error::invalid(format!(
                "trait '{}': {}",
                d.name,
                e.to_string().lines().next().unwrap_or("")
            ))
        })?;
        // Row of each universe member in the concatenated results.
        let mut take: Vec<Option<u32>> = vec![None; uids.len()];
        let mut values: Vec<ArrayRef> = Vec::new();
        let mut offset = 0u32;
        for b in &batches {
            let u = arrow::compute::cast(b.column(0), &DataType::Int64)?;
            let u = u.as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                if let Some(uv) = u.is_valid(r).then(|| u.value(r) as usize)
                    && uv < max
                    && pos[uv] != u32::MAX
                {
                    take[pos[uv] as usize] = Some(offset + r as u32);
                }
            }
            offset += b.num_rows() as u32;
            values.push(arrow::compute::cast(b.column(1), &d.data_type)?);
        }
        let all = if values.is_empty() {
            arrow::array::new_empty_array(&d.data_type)
        } else {
            arrow::compute::concat(&values.iter().map(|a| a.as_ref()).collect::<Vec<_>>())?
        };
        let col = arrow::compute::take(&all, &UInt32Array::from(take), None)?;
        let col = if counts_zero(&d.parsed) {
            let c = col.as_primitive::<Int64Type>();
            Arc::new(Int64Array::from_iter_values(
                c.iter().map(|v| v.unwrap_or(0)),
            )) as ArrayRef
        } else {
            col
        };
        cols.push(col);
    }
    Ok(RecordBatch::try_new(table_schema(catalog, true), cols)?)
}

/// The type of a trait's column, by planning its query, the same sandboxed planning as every
/// later use: a definition that does not plan is refused here rather than stored, where it
/// would break the `traits` table for everyone.
async fn data_type(ctx: &EvalCtx, t: &CreateTrait) -> Result<DataType> {
    let q = query(t, Relations { stitched: false }, ctx.as_of);
    let df = ctx.plan(&q).await.map_err(|e| {
        Error::invalid(format!(
            "CREATE TRAIT {}: {}",
            t.name,
            e.to_string().lines().next().unwrap_or("")
        ))
    })?;
    if counts_zero(t) {
        return Ok(DataType::Int64);
    }
    // Plain strings and binaries on the wire, whatever the scan's view types.
    Ok(match df.schema().field(1).data_type() {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    })
}

/// Is `name` mentioned (as a word) in `text`?
fn mentions(text: &str, name: &str) -> bool {
    use datafusion::sql::sqlparser::{
        dialect::GenericDialect, tokenizer::Token, tokenizer::Tokenizer,
    };
    match Tokenizer::new(&GenericDialect {}, text).tokenize() {
        Ok(toks) => toks
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case(name))),
        Err(_) => text.contains(name),
    }
}

/// `CREATE [OR REPLACE] TRAIT [IF NOT EXISTS] name AS agg OF EVENT 'e' [WHERE …] [window]`.
pub async fn create(
    segments: &Arc<Segments>,
    ctx: &EvalCtx,
    t: &CreateTrait,
) -> Result<QueryResult> {
    let name = t.name.clone();
    if ["uid", "user_id"].contains(&name.to_ascii_lowercase().as_str()) {
        return Err(Error::invalid(format!(
            "a trait cannot be called {name}: the traits table has a user_id column"
        )));
    }
    if let EventRef::Named(e) = &t.event {
        let index = segments.index(ctx).await?;
        let known = index.event_names();
        if !known.is_empty() && !known.iter().any(|k| k == e) {
            return Err(Error::invalid(format!(
                "CREATE TRAIT {name}: no event named '{e}' has been ingested{}",
                super::eval::suggest(e, known.iter())
            )));
        }
    }
    let data_type = data_type(ctx, t).await?;
    let def = TraitDef {
        name: name.clone(),
        definition: t.definition.clone(),
        data_type: data_type.clone(),
        created_at: ctx.now(),
        parsed: t.clone(),
    };
    let (or_replace, if_not_exists) = (t.or_replace, t.if_not_exists);
    let created = update(segments.db(), |defs| {
        match defs.iter().position(|d| d.name == def.name) {
            Some(_) if if_not_exists => Ok(false),
            Some(i) if or_replace => {
                // A replaced trait keeps its place among the columns.
                let at = defs[i].created_at;
                defs[i] = TraitDef {
                    created_at: at,
                    ..def.clone()
                };
                Ok(true)
            }
            Some(_) => Err(Error::invalid(format!(
                "trait '{}' already exists; use CREATE OR REPLACE TRAIT or DROP TRAIT first",
                def.name
            ))),
            None => {
                defs.push(def.clone());
                Ok(true)
            }
        }
    })
    .await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("trait", DataType::Utf8, false),
        Field::new("data_type", DataType::Utf8, false),
        Field::new("created", arrow::datatypes::DataType::Boolean, false),
    ]));
    ddl::result(
        schema,
        vec![
            Arc::new(StringArray::from(vec![name])),
            Arc::new(StringArray::from(vec![data_type.to_string()])),
            Arc::new(arrow::array::BooleanArray::from(vec![created])),
        ],
    )
}

/// `DROP TRAIT [IF EXISTS] name`: refused while a segment's TRAIT leaf names it.
pub async fn drop(
    segments: &Arc<Segments>,
    ctx: &EvalCtx,
    name: &str,
    if_exists: bool,
) -> Result<QueryResult> {
    let catalog = segments.catalog(ctx).await?;
    for d in catalog.segments.values() {
        if let Ok(e) = super::parser::parse_expr(&d.definition) {
            let mut leaves = Vec::new();
            super::eval::walk_leaves(&e, &mut leaves);
            if leaves
                .iter()
                .any(|l| matches!(l, super::ast::Leaf::Trait(s) if mentions(&s.text, name)))
            {
                return Err(Error::invalid(format!(
                    "trait '{name}' is used by segment '{}'; drop or replace that segment first",
                    d.name
                )));
            }
        }
    }
    let name_owned = name.to_string();
    update(segments.db(), |defs| {
        let before = defs.len();
        defs.retain(|d| d.name != name_owned);
        if defs.len() == before && !if_exists {
            return Err(Error::NotFound(format!(
                "trait '{name_owned}' does not exist"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(ddl::empty())
}

/// `SHOW TRAITS`: name, definition, data_type, created_at.
pub async fn show(segments: &Arc<Segments>, ctx: &EvalCtx) -> Result<QueryResult> {
    let c = segments.trait_catalog(&ctx.snap).await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("definition", DataType::Utf8, false),
        Field::new("data_type", DataType::Utf8, false),
        Field::new("created_at", crate::storage::ts_type(), false),
    ]));
    ddl::result(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(
                c.defs.iter().map(|d| &d.name),
            )),
            Arc::new(StringArray::from_iter_values(
                c.defs.iter().map(|d| &d.definition),
            )),
            Arc::new(StringArray::from_iter_values(
                c.defs.iter().map(|d| d.data_type.to_string()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(c.defs.iter().map(|d| d.created_at))
                    .with_timezone("UTC"),
            ),
        ],
    )
}
