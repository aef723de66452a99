//! A table whose rows are computed when it is scanned, by the scanning statement: what the
//! segment table functions return. The rows come from the statement's snapshot and settings.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;

use crate::segment::{EvalCtx, Segments};

/// Computes the rows of a lazy table in a statement's context.
pub type Producer = Arc<
    dyn Fn(Arc<Segments>, EvalCtx) -> BoxFuture<'static, crate::Result<Vec<RecordBatch>>>
        + Send
        + Sync,
>;

/// A table computed at scan time.
pub struct LazyTable {
    pub schema: SchemaRef,
    pub segments: Arc<Segments>,
    pub produce: Producer,
}

impl std::fmt::Debug for LazyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyTable").finish()
    }
}

#[async_trait]
impl TableProvider for LazyTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let ext = |e: crate::Error| DataFusionError::External(Box::new(e));
        let ctx = crate::segment::table::eval_ctx(state, &self.segments)
            .await
            .map_err(ext)?;
        let batches = (self.produce)(self.segments.clone(), ctx)
            .await
            .map_err(ext)?;
        Ok(
            datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[batches],
                self.schema.clone(),
                projection.cloned(),
            )?,
        )
    }
}
