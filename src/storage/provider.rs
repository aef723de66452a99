//! The base tables as DataFusion tables. [`BaseTable`] is bound to a table, not to a version: it
//! scans the version pinned by the snapshot of the statement that *runs* the scan (found in the
//! session's config), and filters out the forgotten users of that snapshot. So a view, a prepared
//! statement or a plan built before a FORGET never serves a forgotten user, and every statement
//! reads what was committed when it started.
//!
//! A scan is a plain Parquet `DataSourceExec` over the pinned version's active files (segdb
//! writes no deletion vectors or partitions; a table with either is refused), with the
//! suppression filter as `NOT rb_contains(<bitmap>, uid)` above it — both are physical nodes
//! DataFusion serialises natively, so a cluster can run them.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, ScalarUDF, TableProviderFilterPushDown, col, lit, not};
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;

use super::{DataFile, Database, Snapshot, Table};
use crate::error::Result;

/// The object-store URL under which a database's files are registered with DataFusion: a
/// name derived from the location, so every process (and every cluster node) given the same
/// `--data` resolves it to the same store.
pub fn store_url(db: &Database) -> ObjectStoreUrl {
    use sha2::Digest;
    let h = sha2::Sha256::digest(db.location().root().as_str().as_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    ObjectStoreUrl::parse(format!("segdb://db-{hex}/")).expect("valid object store url")
}

/// Make the database's files readable by sessions on `runtime`.
pub fn register_store(db: &Database, runtime: &datafusion::execution::runtime_env::RuntimeEnv) {
    let url = store_url(db);
    runtime.register_object_store(url.as_ref(), db.store().clone());
}

/// String and binary columns as the view types DataFusion reads Parquet into.
pub fn with_view_types(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
                DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
                other => other.clone(),
            };
            f.as_ref().clone().with_data_type(t).with_nullable(true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The snapshot of the statement running in `state`, if it pinned one.
pub fn statement_snapshot(state: &dyn Session) -> Option<Arc<Snapshot>> {
    state.config().get_extension::<Snapshot>()
}

/// A base table, scanned at the version the running statement pinned.
#[derive(Debug)]
pub struct BaseTable {
    table: Table,
    db: Database,
    /// The columns known when the provider was made (a view keeps the ones it was made with;
    /// files read NULL for columns they lack, extra columns are not read).
    schema: SchemaRef,
}

impl BaseTable {
    /// The provider for `t` with the schema of `snapshot`'s version.
    pub fn new(snapshot: &Snapshot, t: Table) -> Result<BaseTable> {
        let schema = snapshot.schema(t)?;
        Ok(BaseTable {
            table: t,
            db: snapshot.db().clone(),
            schema: with_view_types(schema.as_ref()),
        })
    }

    /// Which table this is.
    pub fn table(&self) -> Table {
        self.table
    }

    /// The database it reads.
    pub fn db(&self) -> &Database {
        &self.db
    }
}

#[async_trait]
impl TableProvider for BaseTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Parquet prunes with them; DataFusion still applies every filter above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let ext = |e: crate::Error| DataFusionError::External(Box::new(e));
        let snapshot = match statement_snapshot(state) {
            Some(s) if s.db().location().root() == self.db.location().root() => s,
            // Outside a segdb statement (a library caller planning by hand): pin now.
            _ => self.db.pin().await.map_err(ext)?,
        };
        let files = snapshot.files(self.table).map_err(ext)?;
        scan_table(
            state,
            &store_url(&self.db),
            self.table,
            &files,
            &self.schema,
            &snapshot.suppression().uids,
            projection,
            limit,
        )
        .await
    }
}

/// The scan of table `t`'s `files` (read as `schema`) with the rows of the `suppressed` user
/// ordinals filtered out — for the embedded engine (from the statement's snapshot) and for a
/// cluster (from the file list and bitmap frozen into the plan).
#[allow(clippy::too_many_arguments)]
pub async fn scan_table(
    state: &dyn Session,
    store: &ObjectStoreUrl,
    table: Table,
    files: &[DataFile],
    schema: &SchemaRef,
    suppressed: &roaring::RoaringBitmap,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let filter = table.has_uid() && !suppressed.is_empty();
    let uid = schema.index_of("uid").ok();
    // The suppression filter needs `uid` even when the query does not.
    let mut proj: Option<Vec<usize>> = projection.cloned();
    let mut added_uid = false;
    if filter && let (Some(p), Some(u)) = (proj.as_mut(), uid) {
        if !p.contains(&u) {
            p.push(u);
            added_uid = true;
        }
    }
    let exec = scan_files(
        state,
        store,
        table,
        files,
        schema,
        proj.clone(),
        if filter { None } else { limit },
    )
    .await?;
    if !filter {
        return Ok(exec);
    }
    let contains = Arc::new(ScalarUDF::from(
        crate::functions::bitmap::rb_contains::RbContains::new(),
    ));
    let bytes = lit(datafusion::scalar::ScalarValue::Binary(Some(
        crate::bitmap::codec::to_bytes(suppressed),
    )));
    let keep = not(contains.call(vec![bytes, col("uid")]));
    let df_schema = DFSchema::try_from(exec.schema().as_ref().clone())?;
    let predicate = state.create_physical_expr(keep, &df_schema)?;
    let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, exec)?);
    if !added_uid {
        return Ok(filtered);
    }
    let schema = filtered.schema();
    let exprs: Vec<ProjectionExpr> = (0..schema.fields().len() - 1)
        .map(|i| ProjectionExpr {
            expr: Arc::new(datafusion::physical_expr::expressions::Column::new(
                schema.field(i).name(),
                i,
            )),
            alias: schema.field(i).name().clone(),
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(exprs, filtered)?))
}

/// A Parquet scan of `files` (of table `t`) read as `schema`.
pub async fn scan_files(
    state: &dyn Session,
    store: &ObjectStoreUrl,
    t: Table,
    files: &[DataFile],
    schema: &SchemaRef,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if files.is_empty() {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema.clone(),
        };
        return Ok(Arc::new(EmptyExec::new(projected)));
    }
    let groups_n = state.config().target_partitions().max(1).min(files.len());
    let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups_n];
    let mut sizes = vec![0u64; groups_n];
    let mut sorted: Vec<&DataFile> = files.iter().collect();
    sorted.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    for f in sorted {
        // Largest first into the lightest group.
        let (i, _) = sizes
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| **s)
            .expect("at least one group");
        sizes[i] += f.size;
        groups[i].push(PartitionedFile::new(
            format!("{}/{}", t.path(), f.path),
            f.size,
        ));
    }
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let source = format.file_source(schema.clone().into());
    let config = FileScanConfigBuilder::new(store.clone(), source)
        .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
        .with_projection_indices(projection)?
        .with_limit(limit)
        .build();
    format.create_physical_plan(state, config).await
}
