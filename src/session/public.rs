//! The `public` schema of a session: the base tables (bound to the running statement's snapshot
//! at scan time, see `storage::provider`) and whatever the session registers — views, tables
//! made by CREATE TABLE / CTAS / SELECT INTO, external tables. Those live in the session only.
//! A registered table with a `uid` or `user_id` column is wrapped so that its scan filters the
//! forgotten users of the scanning statement's snapshot: a copy made before a FORGET never
//! serves a forgotten user (aggregates already computed in it are not recomputed).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, Volatility, col, not,
};
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;

use super::Shared;
use crate::privacy::pseudonym::Pseudonymizer;
use crate::storage::Table;
use crate::storage::provider::{BaseTable, statement_snapshot};

/// The name of the users' interests table (DESIGN §17).
pub const INTERESTS: &str = "interests";

/// The name of the IAB taxonomies' table (DESIGN §17).
pub const TAXONOMY: &str = "taxonomy";

/// `taxonomy`: `id, parent, name, path, tier, taxonomy` of both compiled-in IAB taxonomies.
fn taxonomy_table() -> Result<Arc<dyn TableProvider>> {
    static TABLE: std::sync::OnceLock<Arc<datafusion::datasource::MemTable>> =
        std::sync::OnceLock::new();
    if let Some(t) = TABLE.get() {
        return Ok(t.clone());
    }
    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    let t = crate::taxonomy::taxonomy();
    let c = &t.categories;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("parent", DataType::Utf8, true),
        Field::new("name", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("tier", DataType::Int32, false),
        Field::new("taxonomy", DataType::Utf8, false),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                c.iter().map(|x| x.id.as_str()),
            )) as ArrayRef,
            Arc::new(
                c.iter()
                    .map(|x| x.parent.as_deref())
                    .collect::<StringArray>(),
            ),
            Arc::new(StringArray::from_iter_values(
                c.iter().map(|x| x.name.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                c.iter().map(|x| x.path.as_str()),
            )),
            Arc::new(Int32Array::from_iter_values(
                c.iter().map(|x| i32::from(x.tier)),
            )),
            Arc::new(StringArray::from_iter_values(c.iter().map(|x| x.taxonomy))),
        ],
    )?;
    let table = Arc::new(datafusion::datasource::MemTable::try_new(
        schema,
        vec![vec![batch]],
    )?);
    Ok(TABLE.get_or_init(|| table).clone())
}

/// The `public` schema provider of one session.
pub struct PublicSchema {
    pub(super) shared: Arc<Shared>,
    pub(super) extra: MemorySchemaProvider,
}

impl std::fmt::Debug for PublicSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicSchema").finish()
    }
}

#[async_trait]
impl SchemaProvider for PublicSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Table::BASE.iter().map(|t| t.name().to_string()).collect();
        names.push(TRAITS.to_string());
        names.push(TAXONOMY.to_string());
        names.push(INTERESTS.to_string());
        names.extend(self.extra.table_names());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match Table::from_name(name) {
            Some(t) => {
                let snap = self.shared.last_snapshot();
                let p = BaseTable::new(&snap, t)
                    .map_err(|e| datafusion::common::DataFusionError::External(Box::new(e)))?;
                Ok(Some(Arc::new(p)))
            }
            None if name == TRAITS => {
                let snap = self.shared.last_snapshot();
                let catalog = self
                    .shared
                    .segments
                    .trait_catalog(&snap)
                    .await
                    .map_err(|e| datafusion::common::DataFusionError::External(Box::new(e)))?;
                Ok(Some(Arc::new(TraitsTable {
                    schema: crate::segment::traits::table_schema(&catalog, false),
                    segments: self.shared.segments.clone(),
                })))
            }
            None if name == TAXONOMY => Ok(Some(taxonomy_table()?)),
            None if name == INTERESTS => {
                Ok(Some(Arc::new(crate::segment::functions::lazy::LazyTable {
                    schema: crate::segment::interests::table_schema(),
                    segments: self.shared.segments.clone(),
                    produce: Arc::new(|segments, ctx| {
                        Box::pin(async move {
                            Ok(vec![
                                crate::segment::interests::table(&segments, &ctx).await?,
                            ])
                        })
                    }),
                })))
            }
            None => self.extra.table(name).await,
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if Table::from_name(&name).is_some()
            || name == TRAITS
            || name == TAXONOMY
            || name == INTERESTS
        {
            return datafusion::common::plan_err!("{name} is a segdb table; it cannot be replaced");
        }
        let schema = table.schema();
        let has_ids =
            schema.field_with_name("uid").is_ok() || schema.field_with_name("user_id").is_ok();
        let table: Arc<dyn TableProvider> = if has_ids && table.table_type() != TableType::View {
            Arc::new(Suppressed {
                inner: table,
                keyring: self.shared.keyring.clone(),
            })
        } else {
            table
        };
        self.extra.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if Table::from_name(name).is_some()
            || name == TRAITS
            || name == TAXONOMY
            || name == INTERESTS
        {
            return datafusion::common::plan_err!("{name} is a segdb table; it cannot be dropped");
        }
        self.extra.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        Table::from_name(name).is_some()
            || name == TRAITS
            || name == TAXONOMY
            || name == INTERESTS
            || self.extra.table_exist(name)
    }
}

/// Name of the computed-traits table.
pub const TRAITS: &str = "traits";

/// `traits`: one row per profile (`user_id` and one column per trait), computed by the scanning
/// statement at its `as_of` over its snapshot.
#[derive(Debug)]
struct TraitsTable {
    /// The columns when the statement was planned.
    schema: SchemaRef,
    segments: Arc<crate::segment::Segments>,
}

#[async_trait]
impl TableProvider for TraitsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let ext = |e: crate::Error| datafusion::common::DataFusionError::External(Box::new(e));
        let ctx = crate::segment::table::eval_ctx(state, &self.segments)
            .await
            .map_err(ext)?;
        let table = self.segments.traits_table(&ctx).await.map_err(ext)?;
        // The statement's traits, shaped as planned (a trait created or dropped in between
        // reads NULL / is left out).
        let cols: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .map(|f| match table.column_by_name(f.name()) {
                Some(c) => arrow::compute::cast(c, f.data_type()),
                None => Ok(arrow::array::new_null_array(
                    f.data_type(),
                    table.num_rows(),
                )),
            })
            .collect::<std::result::Result<_, _>>()?;
        let schema = self.schema.clone();
        let batch = arrow::array::RecordBatch::try_new(schema.clone(), cols)?;
        Ok(
            datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[vec![batch]],
                schema,
                projection.cloned(),
            )?,
        )
    }
}

/// A session table with user ids, filtered by the scanning statement's suppression list.
#[derive(Debug)]
struct Suppressed {
    inner: Arc<dyn TableProvider>,
    keyring: Arc<crate::privacy::Keyring>,
}

#[async_trait]
impl TableProvider for Suppressed {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn constraints(&self) -> Option<&datafusion::common::Constraints> {
        self.inner.constraints()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters are applied above the scan either way; pushing them down only prunes.
        Ok(self
            .inner
            .supports_filters_pushdown(filters)?
            .into_iter()
            .map(|p| match p {
                TableProviderFilterPushDown::Exact => TableProviderFilterPushDown::Inexact,
                other => other,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(snap) = statement_snapshot(state) else {
            return self.inner.scan(state, projection, filters, limit).await;
        };
        let supp = snap.suppression().clone();
        if supp.uids.is_empty() {
            return self.inner.scan(state, projection, filters, limit).await;
        }
        let schema = self.inner.schema();
        let (key, by_uid) = match schema.index_of("uid") {
            Ok(i) => (i, true),
            Err(_) => (schema.index_of("user_id")?, false),
        };
        let mut proj = projection.cloned();
        let mut added = false;
        if let Some(p) = proj.as_mut()
            && !p.contains(&key)
        {
            p.push(key);
            added = true;
        }
        let exec = self.inner.scan(state, proj.as_ref(), filters, None).await?;
        let key_name = schema.field(key).name().clone();
        let forgotten = ScalarUDF::from(Forgotten {
            signature: Signature::any(1, Volatility::Immutable),
            uids: Arc::new(supp.uids.clone()),
            hashes: Arc::new(supp.by_hash.keys().cloned().collect()),
            by_uid,
            hasher: Pseudonymizer::new(&self.keyring, crate::erasure::FORGET_DOMAIN),
        });
        let keep = not(forgotten.call(vec![col(key_name)]));
        let df_schema = DFSchema::try_from(exec.schema().as_ref().clone())?;
        let predicate = state.create_physical_expr(keep, &df_schema)?;
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, exec)?);
        let out: Arc<dyn ExecutionPlan> = if added {
            let s = filtered.schema();
            let exprs: Vec<ProjectionExpr> = (0..s.fields().len() - 1)
                .map(|i| ProjectionExpr {
                    expr: Arc::new(datafusion::physical_expr::expressions::Column::new(
                        s.field(i).name(),
                        i,
                    )),
                    alias: s.field(i).name().clone(),
                })
                .collect();
            Arc::new(ProjectionExec::try_new(exprs, filtered)?)
        } else {
            filtered
        };
        Ok(match limit {
            Some(n) => Arc::new(datafusion::physical_plan::limit::GlobalLimitExec::new(
                out,
                0,
                Some(n),
            )),
            None => out,
        })
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.insert_into(state, input, insert_op).await
    }
}

/// Is this user forgotten? By ordinal, or by the keyed hash of a pseudonym.
#[derive(Debug)]
struct Forgotten {
    signature: Signature,
    uids: Arc<roaring::RoaringBitmap>,
    hashes: Arc<HashSet<String>>,
    by_uid: bool,
    hasher: Pseudonymizer,
}

impl PartialEq for Forgotten {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.uids, &o.uids)
    }
}
impl Eq for Forgotten {}
impl std::hash::Hash for Forgotten {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "segdb_forgotten".hash(state);
    }
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer")
    }
}

impl Forgotten {
    fn check(&self, a: &ArrayRef) -> Result<ArrayRef> {
        let mut out = BooleanBuilder::with_capacity(a.len());
        if self.by_uid {
            let u = arrow::compute::cast(a, &DataType::Int64)?;
            let u = u.as_primitive::<Int64Type>();
            for i in 0..u.len() {
                out.append_value(
                    u.is_valid(i) && u32::try_from(u.value(i)).is_ok_and(|v| self.uids.contains(v)),
                );
            }
        } else {
            let s = arrow::compute::cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            for i in 0..s.len() {
                out.append_value(
                    s.is_valid(i) && self.hashes.contains(&self.hasher.pseudonymize(s.value(i))),
                );
            }
        }
        Ok(Arc::new(out.finish()))
    }
}

impl ScalarUDFImpl for Forgotten {
    fn name(&self) -> &str {
        "segdb_forgotten"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        crate::functions::map_unary(&args.args[0], |a| self.check(a))
    }
}
