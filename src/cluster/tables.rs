//! The tables a cluster plan carries. A plan leaves the client with every table scan replaced
//! by one of two providers that need nothing but their own bytes on the scheduler:
//!
//! - [`FrozenTable`]: a base table at the statement's pinned version — its active Parquet files
//!   (paths relative to the database's object store, with sizes), its schema and the
//!   statement's suppression bitmap. Its scan is the same plain Parquet scan plus
//!   `NOT rb_contains(<suppressed>, uid)` filter the embedded engine runs, so erasure applies on
//!   the executors exactly as embedded.
//! - [`Collected`]: the rows of any other table (`segments.*`, table functions, session tables,
//!   `traits`), computed on the client before submission and carried in the plan as Arrow IPC.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use roaring::RoaringBitmap;

use crate::storage::{DataFile, Table};

/// A base table frozen at one version for a cluster.
#[derive(Debug)]
pub struct FrozenTable {
    pub table: Table,
    /// The object-store URL the files are read through (`segdb://db-…/`), registered on every
    /// node from its own `--data`.
    pub store: String,
    pub files: Vec<DataFile>,
    pub schema: SchemaRef,
    /// User ordinals whose rows the scan drops (the statement's suppression list).
    pub suppressed: RoaringBitmap,
}

#[async_trait]
impl TableProvider for FrozenTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let store = ObjectStoreUrl::parse(&self.store)?;
        crate::storage::provider::scan_table(
            state,
            &store,
            self.table,
            &self.files,
            &self.schema,
            &self.suppressed,
            projection,
            limit,
        )
        .await
    }
}

/// Rows computed on the client, shipped with the plan.
#[derive(Debug)]
pub struct Collected {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

#[async_trait]
impl TableProvider for Collected {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let exec: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
            &[self.batches.clone()],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// Magic prefixes that tell segdb's table bytes from Ballista's (which are protobuf).
const FROZEN: &[u8] = b"segdb.frozen.v1\0";
const COLLECTED: &[u8] = b"segdb.collected.v1\0";

fn err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Internal(format!("segdb cluster plan: {}", msg.into()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FrozenHeader {
    table: String,
    store: String,
    files: Vec<(String, u64)>,
}

fn put_block(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    buf.extend_from_slice(bytes);
}

fn take_block<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8]> {
    if buf.len() < 8 {
        return Err(err("truncated"));
    }
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
    if buf.len() < 8 + n {
        return Err(err("truncated"));
    }
    let out = &buf[8..8 + n];
    *buf = &buf[8 + n..];
    Ok(out)
}

/// Encode a segdb table provider; `None` if `node` is not one.
pub fn encode(node: &dyn TableProvider, buf: &mut Vec<u8>) -> Result<Option<()>> {
    if let Some(f) = node.downcast_ref::<FrozenTable>() {
        buf.extend_from_slice(FROZEN);
        let header = FrozenHeader {
            table: f.table.name().to_string(),
            store: f.store.clone(),
            files: f.files.iter().map(|d| (d.path.clone(), d.size)).collect(),
        };
        put_block(
            buf,
            &serde_json::to_vec(&header).map_err(|e| err(e.to_string()))?,
        );
        put_block(buf, &crate::bitmap::codec::to_bytes(&f.suppressed));
        return Ok(Some(()));
    }
    if let Some(c) = node.downcast_ref::<Collected>() {
        buf.extend_from_slice(COLLECTED);
        let mut ipc = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &c.schema)?;
            for b in &c.batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        put_block(buf, &ipc);
        return Ok(Some(()));
    }
    Ok(None)
}

/// Decode a segdb table provider; `None` if the bytes are not segdb's.
pub fn decode(buf: &[u8], schema: SchemaRef) -> Result<Option<Arc<dyn TableProvider>>> {
    if let Some(mut rest) = buf.strip_prefix(FROZEN) {
        let header: FrozenHeader =
            serde_json::from_slice(take_block(&mut rest)?).map_err(|e| err(e.to_string()))?;
        let bitmap = take_block(&mut rest)?;
        let suppressed =
            crate::bitmap::codec::from_bytes(bitmap).ok_or_else(|| err("bad bitmap"))?;
        let table = Table::from_name(&header.table)
            .ok_or_else(|| err(format!("unknown table {}", header.table)))?;
        return Ok(Some(Arc::new(FrozenTable {
            table,
            store: header.store,
            files: header
                .files
                .into_iter()
                .map(|(path, size)| DataFile { path, size })
                .collect(),
            schema,
            suppressed,
        })));
    }
    if let Some(mut rest) = buf.strip_prefix(COLLECTED) {
        let ipc = take_block(&mut rest)?;
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        return Ok(Some(Arc::new(Collected { schema, batches })));
    }
    Ok(None)
}
