//! The facade: an [`Engine`] owns the DataFusion session, the opened [`Database`] and the keyring.
//! SQL runs here; the base tables are served by a schema provider that hands out the latest
//! committed Delta snapshot each time a statement is planned, so a second process's commits are
//! seen by the next statement.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::execution::context::SessionConfig;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use tokio::sync::Mutex;

use crate::error::Result;
use crate::ingest::{IngestOptions, IngestReport, Kind};
use crate::privacy::Keyring;
use crate::storage::{Database, Location, Table};

/// Default catalog and schema names users see.
pub const CATALOG: &str = "segdb";
pub const SCHEMA: &str = "public";

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--data`: a path, `file:///…` or `s3://bucket/prefix`.
    pub data: String,
    /// `--keyring`: the keyring file (created on first use).
    pub keyring: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config { data: "./segdb-data".into(), keyring: PathBuf::from("./segdb.keyring") }
    }
}

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// An open segdb database with a SQL session over it.
pub struct Engine {
    ctx: SessionContext,
    db: Database,
    keyring: Arc<Keyring>,
}

impl Engine {
    /// Open (or create) the database of `config`.
    pub async fn open(config: &Config) -> Result<Engine> {
        let keyring = Keyring::open_or_create(&config.keyring)?;
        Self::open_with_keyring(Location::parse(&config.data)?, keyring).await
    }

    /// Open a database with a keyring the caller manages.
    pub async fn open_with_keyring(location: Location, keyring: Keyring) -> Result<Engine> {
        crate::storage::register_handlers();
        let db = Database::open(location, &keyring).await?;
        let keyring = Arc::new(keyring);
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true);
        let ctx = SessionContext::new_with_config(config);
        // Make the database's object store known to the session (needed for s3://).
        let probe = db.load(Table::Events).await?;
        probe.update_datafusion_session(&ctx.state())?;
        let schema = Arc::new(TablesSchema { db: db.clone(), cache: Mutex::new(HashMap::new()), extra: MemorySchemaProvider::new() });
        let catalog = ctx.catalog(CATALOG).expect("default catalog exists");
        catalog.register_schema(SCHEMA, schema)?;
        crate::functions::register_all(&ctx, keyring.clone());
        Ok(Engine { ctx, db, keyring })
    }

    /// The DataFusion session (for library users who want DataFrames).
    pub fn session(&self) -> &SessionContext {
        &self.ctx
    }

    /// The opened database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Run one SQL statement and collect its result.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        let df = self.ctx.sql(sql).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok(QueryResult { schema, batches })
    }

    /// Load files into `events`, `profiles` or `consent`.
    pub async fn ingest(&self, kind: Kind, files: &[PathBuf], opts: &IngestOptions) -> Result<IngestReport> {
        crate::ingest::ingest(&self.db, &self.keyring, kind, files, opts).await
    }
}

/// The `public` schema: the base Delta tables (latest snapshot per statement) plus whatever the
/// session registers (views, external tables) in memory.
struct TablesSchema {
    db: Database,
    cache: Mutex<HashMap<Table, DeltaTable>>,
    extra: MemorySchemaProvider,
}

impl std::fmt::Debug for TablesSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TablesSchema").field("location", &self.db.location().to_string()).finish()
    }
}

impl TablesSchema {
    async fn latest(&self, t: Table) -> Result<Arc<dyn TableProvider>> {
        let mut cache = self.cache.lock().await;
        let table = match cache.get_mut(&t) {
            Some(table) => {
                table.update_incremental(None).await?;
                table
            }
            None => {
                let table = self.db.load(t).await?;
                cache.entry(t).or_insert(table)
            }
        };
        Ok(table.table_provider().await?)
    }
}

#[async_trait]
impl SchemaProvider for TablesSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Table::BASE.iter().map(|t| t.name().to_string()).collect();
        names.extend(self.extra.table_names());
        names
    }

    async fn table(&self, name: &str) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        match Table::from_name(name) {
            Some(t) => self.latest(t).await.map(Some).map_err(|e| DataFusionError::External(Box::new(e))),
            None => self.extra.table(name).await,
        }
    }

    fn register_table(&self, name: String, table: Arc<dyn TableProvider>) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if Table::from_name(&name).is_some() {
            return datafusion::common::plan_err!("{name} is a segdb table; it cannot be replaced");
        }
        self.extra.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if Table::from_name(name).is_some() {
            return datafusion::common::plan_err!("{name} is a segdb table; it cannot be dropped");
        }
        self.extra.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        Table::from_name(name).is_some() || self.extra.table_exist(name)
    }
}
