//! The `segments` schema: every stored segment is a read-only table of its members' pseudonyms,
//! `SELECT user_id FROM segments.cart_abandoners`, so BI tools can browse segments next to the
//! base tables and read them with plain SQL. Members are evaluated when the table is scanned, at
//! the session's `segdb.as_of`, with consent (`FOR PURPOSE`) and erasure applied as everywhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::{RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::datasource::TableType;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::Segments;

/// Name of the schema that lists segments.
pub const SCHEMA: &str = "segments";

/// Session settings a segment table reads when it is scanned.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub as_of: Arc<Mutex<Option<i64>>>,
    pub use_index: Arc<AtomicBool>,
}

/// The `segments` schema provider.
pub struct SegmentsSchema {
    pub(crate) segments: Arc<Segments>,
    /// Names known to this process: refreshed at open, after segment statements, before
    /// metadata listings (`table_names` cannot do I/O) and when a lookup misses.
    pub(crate) names: Arc<RwLock<Vec<String>>>,
    pub(crate) settings: SessionSettings,
}

impl std::fmt::Debug for SegmentsSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentsSchema").finish()
    }
}

fn members_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "user_id",
        DataType::Utf8,
        false,
    )]))
}

#[async_trait]
impl SchemaProvider for SegmentsSchema {
    fn table_names(&self) -> Vec<String> {
        self.names.read().expect("not poisoned").clone()
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        // Known names need no catalog read (listing N segments must not read it N times); an
        // unknown one may come from another process: re-read. A segment dropped since the
        // snapshot fails when scanned, with the "does not exist" error.
        let found = self.table_exist(name) || {
            let names = self
                .segments
                .names()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let found = names.iter().any(|n| n == name);
            *self.names.write().expect("not poisoned") = names;
            found
        };
        Ok(found.then(|| {
            Arc::new(SegmentTable {
                segments: self.segments.clone(),
                name: name.to_string(),
                settings: self.settings.clone(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.names
            .read()
            .expect("not poisoned")
            .iter()
            .any(|n| n == name)
    }
}

/// One segment as a table of `user_id`s.
struct SegmentTable {
    segments: Arc<Segments>,
    name: String,
    settings: SessionSettings,
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
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("not a SessionState".into()))?;
        let ctx = SessionContext::new_with_state(state.clone());
        let ext = |e: crate::Error| DataFusionError::External(Box::new(e));
        let as_of = self
            .settings
            .as_of
            .lock()
            .expect("not poisoned")
            .unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
        let members = self
            .segments
            .members(
                &ctx,
                &self.name,
                as_of,
                self.settings.use_index.load(Ordering::Relaxed),
            )
            .await
            .map_err(ext)?;
        let mut ids = StringBuilder::new();
        for (uid, pseudonym) in super::eval::identity_rows(&ctx).await.map_err(ext)? {
            if let Some(p) = pseudonym
                && members.contains(uid)
            {
                ids.append_value(p);
            }
        }
        let schema = members_schema();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids.finish())])?;
        Ok(
            datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
                &[vec![batch]],
                schema,
                projection.cloned(),
            )?,
        )
    }
}
