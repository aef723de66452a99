//! The `segments` schema: every stored segment is a read-only table of its members' pseudonyms,
//! `SELECT user_id FROM segments.cart_abandoners`, so BI tools can browse segments next to the
//! base tables and read them with plain SQL. Members are evaluated when the table is scanned —
//! by the statement that scans it, at its `segdb.as_of`, with its snapshot's consent and erasure
//! — so a view or prepared statement over a segment table never serves a forgotten user.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::TableType;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use roaring::RoaringBitmap;

use super::{EvalCtx, Segments};
use crate::error::Result;

/// Name of the schema that lists segments.
pub const SCHEMA: &str = "segments";

/// The `segments` schema provider.
pub struct SegmentsSchema {
    pub(crate) segments: Arc<Segments>,
}

impl std::fmt::Debug for SegmentsSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentsSchema").finish()
    }
}

/// The schema of a table of members.
pub fn members_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "user_id",
        DataType::Utf8,
        false,
    )]))
}

/// The statement's evaluation context for a scan running in `state`.
pub async fn eval_ctx(state: &dyn Session, segments: &Segments) -> Result<EvalCtx> {
    let state = state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| crate::Error::invalid("segments are read in a segdb session"))?;
    EvalCtx::from_state(state, segments.db()).await
}

/// The pseudonyms of `members` as one batch (ordinal order).
pub async fn pseudonyms(
    segments: &Segments,
    ctx: &EvalCtx,
    members: &RoaringBitmap,
) -> Result<RecordBatch> {
    let ids = segments.identity(ctx).await?;
    let mut b = StringBuilder::with_capacity(members.len() as usize, members.len() as usize * 25);
    for u in members.iter() {
        if let Some(p) = ids.pseudonym(u) {
            b.append_value(p);
        }
    }
    Ok(RecordBatch::try_new(
        members_schema(),
        vec![Arc::new(b.finish())],
    )?)
}

#[async_trait]
impl SchemaProvider for SegmentsSchema {
    fn table_names(&self) -> Vec<String> {
        self.segments.known_names()
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        // A name this process has not seen may come from another process: read the catalog.
        let known = self.table_exist(name)
            || self
                .segments
                .latest_names()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?
                .iter()
                .any(|n| n == name);
        Ok(known.then(|| {
            Arc::new(SegmentTable {
                segments: self.segments.clone(),
                name: name.to_string(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.segments.known_names().iter().any(|n| n == name)
    }
}

/// One segment as a table of `user_id`s.
struct SegmentTable {
    segments: Arc<Segments>,
    name: String,
}

impl std::fmt::Debug for SegmentTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentTable")
            .field("name", &self.name)
            .finish()
    }
}

#[async_trait]
impl TableProvider for SegmentTable {
    fn schema(&self) -> SchemaRef {
        members_schema()
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
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let ext = |e: crate::Error| DataFusionError::External(Box::new(e));
        let ctx = eval_ctx(state, &self.segments).await.map_err(ext)?;
        let members = self.segments.members(&ctx, &self.name).await.map_err(ext)?;
        let batch = pseudonyms(&self.segments, &ctx, &members)
            .await
            .map_err(ext)?;
        Ok(
            datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[vec![batch]],
                members_schema(),
                projection.cloned(),
            )?,
        )
    }
}

impl Segments {
    /// The segment names of the latest committed catalog.
    pub async fn latest_names(&self) -> Result<Vec<String>> {
        let snap = self.db().pin().await?;
        let c = super::catalog::load(&snap).await?;
        let names: Vec<String> = c.segments.keys().cloned().collect();
        self.remember_catalog(snap.version(crate::storage::Table::Segments), c);
        Ok(names)
    }

    pub(crate) fn remember_catalog(&self, version: u64, c: super::catalog::Catalog) {
        self.cache.lock().expect("not poisoned").catalog = Some((version, Arc::new(c)));
    }
}
