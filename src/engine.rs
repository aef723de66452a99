//! The facade: an [`Engine`] owns the DataFusion session, the opened [`Database`] and the keyring.
//! SQL runs here; the base tables are served by a schema provider that hands out the latest
//! committed Delta snapshot each time a statement is planned, so a second process's commits are
//! seen by the next statement.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::common::DataFusionError;
use datafusion::execution::context::SessionConfig;
use datafusion::prelude::SessionContext;
use sqlparser::tokenizer::Token;

use crate::error::Result;
use crate::functions::segment::{IdentityMap, Prefetched};
use crate::ingest::{IngestOptions, IngestReport, Kind};
use crate::privacy::Keyring;
use crate::segment::Segments;
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
        Config {
            data: "./segdb-data".into(),
            keyring: PathBuf::from("./segdb.keyring"),
        }
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

    /// The batches as a record-batch stream.
    pub fn into_stream(self) -> datafusion::execution::SendableRecordBatchStream {
        let batches = futures::stream::iter(self.batches.into_iter().map(Ok));
        Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(self.schema, batches),
        )
    }
}

/// What every session of one database shares.
struct Shared<'a> {
    db: &'a Database,
    keyring: &'a Arc<Keyring>,
    suppressed: &'a Arc<std::sync::RwLock<roaring::RoaringBitmap>>,
    extra: &'a Arc<MemorySchemaProvider>,
    segments: &'a Arc<Segments>,
    segment_names: &'a Arc<std::sync::RwLock<Vec<String>>>,
}

/// A statement after [`Engine::plan`].
pub enum Planned {
    /// A query, planned and not yet run.
    Query(datafusion::dataframe::DataFrame),
    /// A statement that has already run, with its (small) result.
    Done(QueryResult),
}

impl Planned {
    /// The schema of the result.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Planned::Query(df) => Arc::new(df.schema().as_arrow().clone()),
            Planned::Done(r) => r.schema.clone(),
        }
    }
}

/// An open segdb database with a SQL session over it.
pub struct Engine {
    ctx: SessionContext,
    db: Database,
    keyring: Arc<Keyring>,
    segments: Arc<Segments>,
    prefetched: Arc<Prefetched>,
    /// `SET segdb.as_of`: the reference time of segment windows (None: now).
    as_of: Arc<std::sync::Mutex<Option<i64>>>,
    /// `SET segdb.use_index`: answer DID leaves from the event index when possible.
    use_index: Arc<std::sync::atomic::AtomicBool>,
    /// Segment names listed by the `segments` schema (shared by forks).
    segment_names: Arc<std::sync::RwLock<Vec<String>>>,
    /// Ordinals of forgotten users, filtered out of every base-table scan.
    suppressed: Arc<std::sync::RwLock<roaring::RoaringBitmap>>,
    /// Views and external tables registered in memory (shared by forks).
    extra: Arc<MemorySchemaProvider>,
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
        let suppressed = Arc::new(std::sync::RwLock::new(
            crate::erasure::load_suppression(&db).await?.uids,
        ));
        let extra = Arc::new(MemorySchemaProvider::new());
        let segments = Arc::new(Segments::new(db.clone()));
        let segment_names = Arc::new(std::sync::RwLock::new(segments.names().await?));
        let settings = crate::segment::table::SessionSettings {
            as_of: Arc::new(std::sync::Mutex::new(None)),
            use_index: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let shared = Shared {
            db: &db,
            keyring: &keyring,
            suppressed: &suppressed,
            extra: &extra,
            segments: &segments,
            segment_names: &segment_names,
        };
        let (ctx, prefetched) = Self::new_session(&shared, &settings, None)?;
        // Make the database's object store known to the session (needed for s3://).
        let probe = db.load(Table::Events).await?;
        probe.update_datafusion_session(&ctx.state())?;
        Ok(Engine {
            ctx,
            db,
            keyring,
            segments,
            prefetched,
            suppressed,
            extra,
            segment_names,
            as_of: settings.as_of,
            use_index: settings.use_index,
        })
    }

    /// A SQL session over the shared database state; `runtime` shares registered object stores.
    fn new_session(
        shared: &Shared<'_>,
        settings: &crate::segment::table::SessionSettings,
        runtime: Option<Arc<datafusion::execution::runtime_env::RuntimeEnv>>,
    ) -> Result<(SessionContext, Arc<Prefetched>)> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(true);
        let ctx = match runtime {
            Some(rt) => SessionContext::new_with_config_rt(config, rt),
            None => SessionContext::new_with_config(config),
        };
        let schema = Arc::new(TablesSchema {
            db: shared.db.clone(),
            extra: shared.extra.clone(),
            suppressed: shared.suppressed.clone(),
        });
        let catalog = ctx.catalog(CATALOG).expect("default catalog exists");
        catalog.register_schema(SCHEMA, schema)?;
        catalog.register_schema(
            crate::segment::table::SCHEMA,
            Arc::new(crate::segment::table::SegmentsSchema {
                segments: shared.segments.clone(),
                names: shared.segment_names.clone(),
                settings: settings.clone(),
            }),
        )?;
        crate::functions::register_all(&ctx, shared.keyring.clone());
        let prefetched = Arc::new(Prefetched::default());
        crate::functions::register_segment_functions(&ctx, prefetched.clone());
        Ok((ctx, prefetched))
    }

    /// A second session over the same database: it shares the tables, caches, keyring, the
    /// views and external tables registered in memory, and starts with this session's
    /// settings; its own settings and segment-function state are its own. The Flight SQL server
    /// runs every statement in a fork, so concurrent statements never see each other's state.
    pub fn fork(&self) -> Result<Engine> {
        let settings = crate::segment::table::SessionSettings {
            as_of: Arc::new(std::sync::Mutex::new(
                *self.as_of.lock().expect("not poisoned"),
            )),
            use_index: Arc::new(std::sync::atomic::AtomicBool::new(self.use_index())),
        };
        let shared = Shared {
            db: &self.db,
            keyring: &self.keyring,
            suppressed: &self.suppressed,
            extra: &self.extra,
            segments: &self.segments,
            segment_names: &self.segment_names,
        };
        let (ctx, prefetched) =
            Self::new_session(&shared, &settings, Some(self.ctx.runtime_env()))?;
        Ok(Engine {
            ctx,
            db: self.db.clone(),
            keyring: self.keyring.clone(),
            segments: self.segments.clone(),
            prefetched,
            suppressed: self.suppressed.clone(),
            extra: self.extra.clone(),
            segment_names: self.segment_names.clone(),
            as_of: settings.as_of,
            use_index: settings.use_index,
        })
    }

    /// Re-read the segment names the `segments` schema lists (after another process's DDL).
    pub async fn refresh_segment_names(&self) -> Result<()> {
        let names = self.segments.names().await?;
        *self.segment_names.write().expect("not poisoned") = names;
        Ok(())
    }

    /// The session settings (`segdb.as_of`, `segdb.use_index`), to carry them between forks.
    pub fn settings(&self) -> (Option<i64>, bool) {
        (*self.as_of.lock().expect("not poisoned"), self.use_index())
    }

    /// Replace the session settings (see [`Engine::settings`]).
    pub fn set_settings(&self, (as_of, use_index): (Option<i64>, bool)) {
        *self.as_of.lock().expect("not poisoned") = as_of;
        self.use_index
            .store(use_index, std::sync::atomic::Ordering::Relaxed);
    }

    /// The reference time of segment windows: `SET segdb.as_of`, else now.
    pub fn as_of(&self) -> i64 {
        self.as_of
            .lock()
            .expect("not poisoned")
            .unwrap_or_else(|| chrono::Utc::now().timestamp_micros())
    }

    fn use_index(&self) -> bool {
        self.use_index.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The segment service (library users: evaluate segments directly).
    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    /// The members of segment `name` at `as_of` (default: the session's) as a bitmap of ordinals.
    pub async fn segment_members(
        &self,
        name: &str,
        as_of: Option<i64>,
    ) -> Result<roaring::RoaringBitmap> {
        self.segments
            .members(
                &self.ctx,
                name,
                as_of.unwrap_or_else(|| self.as_of()),
                self.use_index(),
            )
            .await
    }

    /// Recreate the event index from `events`; returns (keys, bytes).
    pub async fn rebuild_index(&self) -> Result<(usize, usize)> {
        let idx = self.segments.rebuild_index(&self.ctx).await?;
        Ok((idx.days.len(), idx.bytes()))
    }

    /// `FORGET USER '…'`, `FORGET USERS IN (…)` and `VACUUM`; `None` when `sql` is none of them.
    async fn erasure_statement(&self, sql: &str) -> Option<Result<QueryResult>> {
        use arrow::array::UInt64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let t = sql.trim().trim_end_matches(';').trim();
        let upper = t.to_ascii_uppercase();
        let words: Vec<&str> = upper.split_whitespace().take(3).collect();
        let one = |name: &str, v: u64| -> Result<QueryResult> {
            let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::UInt64, false)]));
            let b =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt64Array::from(vec![v]))])?;
            Ok(QueryResult {
                schema,
                batches: vec![b],
            })
        };
        match words.as_slice() {
            ["FORGET", "USER", ..] => {
                let rest = t[t.to_ascii_uppercase().find("USER").expect("matched") + 4..].trim();
                let Some(id) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) else {
                    return Some(Err(crate::Error::invalid(
                        "FORGET USER takes one quoted id: FORGET USER 'raw-id-or-pseudonym'",
                    )));
                };
                let id = id.replace("''", "'");
                let r = crate::erasure::forget(
                    &self.db,
                    &self.ctx,
                    &self.keyring,
                    crate::erasure::Target::One(id),
                )
                .await;
                self.after_forget().await;
                Some(r.and_then(|n| one("forgotten", n)))
            }
            ["FORGET", "USERS", "IN", ..] | ["FORGET", "USERS", ..] => {
                let at = upper.find(" IN").map(|i| i + 3).unwrap_or(upper.len());
                let rest = t[at..].trim();
                let Some(q) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) else {
                    return Some(Err(crate::Error::invalid(
                        "FORGET USERS IN takes a parenthesised query returning user_id",
                    )));
                };
                let r = crate::erasure::forget(
                    &self.db,
                    &self.ctx,
                    &self.keyring,
                    crate::erasure::Target::Query(q.to_string()),
                )
                .await;
                self.after_forget().await;
                Some(r.and_then(|n| one("forgotten", n)))
            }
            ["ALTER", "TABLE", ..]
                if upper.contains(" SET RETENTION") || upper.contains(" RESET RETENTION") =>
            {
                let w: Vec<&str> = upper.split_whitespace().collect();
                if w.get(2) != Some(&"EVENTS") {
                    return Some(Err(crate::Error::invalid(
                        "retention applies to the events table: ALTER TABLE events SET RETENTION n DAYS",
                    )));
                }
                let days = if upper.contains(" RESET RETENTION") {
                    None
                } else {
                    match (w.get(5).and_then(|n| n.parse::<u32>().ok()), w.get(6)) {
                        (Some(n), Some(&"DAYS" | &"DAY")) if n > 0 => Some(n),
                        _ => {
                            return Some(Err(crate::Error::invalid(
                                "expected ALTER TABLE events SET RETENTION <n> DAYS (n ≥ 1) or RESET RETENTION",
                            )));
                        }
                    }
                };
                Some(
                    crate::erasure::set_retention_days(&self.db, days)
                        .await
                        .map(|_| QueryResult {
                            schema: Arc::new(Schema::empty()),
                            batches: vec![],
                        }),
                )
            }
            ["VACUUM", ..] => {
                let r = crate::erasure::vacuum(&self.db).await;
                Some(r.and_then(|(files, logs)| {
                    let schema = Arc::new(Schema::new(vec![
                        Field::new("files_removed", DataType::UInt64, false),
                        Field::new("log_entries_removed", DataType::UInt64, false),
                    ]));
                    let b = RecordBatch::try_new(
                        schema.clone(),
                        vec![
                            Arc::new(UInt64Array::from(vec![files as u64])),
                            Arc::new(UInt64Array::from(vec![logs as u64])),
                        ],
                    )?;
                    Ok(QueryResult {
                        schema,
                        batches: vec![b],
                    })
                }))
            }
            _ => None,
        }
    }

    async fn after_forget(&self) {
        self.segments.invalidate().await;
        if let Ok(s) = crate::erasure::load_suppression(&self.db).await {
            *self.suppressed.write().expect("not poisoned") = s.uids;
        }
    }

    /// `SET segdb.…` statements; `None` when `sql` is not one.
    fn set_option(&self, sql: &str) -> Option<Result<QueryResult>> {
        let t = sql.trim().trim_end_matches(';').trim();
        if !t.get(..4)?.eq_ignore_ascii_case("set ") {
            return None;
        }
        let rest = t[4..].trim_start();
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = rest[..key_end].to_ascii_lowercase();
        if !key.starts_with("segdb.") {
            return None;
        }
        let mut value = rest[key_end..].trim_start();
        if let Some(v) = value.strip_prefix('=') {
            value = v.trim_start();
        } else if value
            .get(..3)
            .is_some_and(|p| p.eq_ignore_ascii_case("to "))
        {
            value = value[3..].trim_start();
        }
        let unquoted = value.trim().trim_matches('\'');
        let key = key.as_str();
        let empty = || {
            Ok(QueryResult {
                schema: Arc::new(arrow::datatypes::Schema::empty()),
                batches: vec![],
            })
        };
        Some(match key {
            "segdb.as_of" => {
                if unquoted.eq_ignore_ascii_case("now")
                    || unquoted.eq_ignore_ascii_case("default")
                    || unquoted.is_empty()
                {
                    *self.as_of.lock().expect("not poisoned") = None;
                    empty()
                } else {
                    match crate::ingest::parse_micros(unquoted) {
                        Some(t) => {
                            *self.as_of.lock().expect("not poisoned") = Some(t);
                            empty()
                        }
                        None => Err(crate::Error::invalid(format!(
                            "segdb.as_of must be an ISO-8601 timestamp such as '2026-01-31T00:00:00Z' (or 'now'), got '{unquoted}'"
                        ))),
                    }
                }
            }
            "segdb.use_index" => match unquoted.to_ascii_lowercase().as_str() {
                "true" | "on" | "1" => {
                    self.use_index
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    empty()
                }
                "false" | "off" | "0" => {
                    self.use_index
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    empty()
                }
                _ => Err(crate::Error::invalid(
                    "segdb.use_index must be true or false",
                )),
            },
            other => Err(crate::Error::invalid(format!(
                "unknown setting {other}; segdb has segdb.as_of and segdb.use_index"
            ))),
        })
    }

    /// Evaluate the segments a SQL statement names in segment functions, before planning it.
    async fn prefetch(&self, sql: &str) -> Result<()> {
        self.prefetched.clear();
        let toks = significant_tokens(sql);
        let calls = scan_segment_calls(&toks);
        let consent = scan_consent_calls(&toks);
        if calls.is_empty() && consent.is_empty() {
            return Ok(());
        }
        let as_of = self.as_of();
        let mut needs_identity = !consent.is_empty();
        for (purpose, at) in consent {
            let key = crate::functions::segment::has_consent::cache_key(&purpose);
            if !self.prefetched.has(&key, at) {
                let bm = self
                    .segments
                    .consent_holders(&self.ctx, &purpose, at.unwrap_or(as_of))
                    .await?;
                self.prefetched.put(&key, at, bm);
            }
        }
        for (f, names, at) in calls {
            needs_identity |= f == "in_segment" || f == "segment_members";
            for n in names {
                if self.prefetched.has(&n, at) {
                    continue;
                }
                let bm = self
                    .segments
                    .members(&self.ctx, &n, at.unwrap_or(as_of), self.use_index())
                    .await?;
                self.prefetched.put(&n, at, bm);
            }
        }
        if needs_identity {
            self.prefetched.set_identity(self.identity_map().await?);
        }
        Ok(())
    }

    async fn identity_map(&self) -> Result<Arc<IdentityMap>> {
        let mut m = IdentityMap::default();
        for (uid, p) in crate::segment::eval::identity_rows(&self.ctx).await? {
            let Some(p) = p else { continue };
            let uid = uid as usize;
            if m.by_uid.len() <= uid {
                m.by_uid.resize(uid + 1, None);
            }
            let s: Arc<str> = p.into();
            m.by_uid[uid] = Some(s.clone());
            m.by_pseudonym.insert(s, uid as u32);
        }
        Ok(Arc::new(m))
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

    /// Run one statement (SQL, a segment statement, or `SET segdb.…`) and collect its result.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        match self.plan(sql, None).await? {
            Planned::Query(df) => {
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let batches = df.collect().await?;
                Ok(QueryResult { schema, batches })
            }
            Planned::Done(r) => Ok(r),
        }
    }

    /// Plan one statement without running a query: segment statements, settings, FORGET,
    /// VACUUM and DDL run here (their result is [`Planned::Done`]); a query is returned planned,
    /// with `params` bound to its `$n` placeholders, so that the caller can stream it.
    pub async fn plan(
        &self,
        sql: &str,
        params: Option<datafusion::common::ParamValues>,
    ) -> Result<Planned> {
        let sql = strip_leading_comments(sql);
        let done = |r: Result<QueryResult>| -> Result<Planned> {
            if params.is_some() {
                return Err(crate::Error::invalid(
                    "parameters can only be bound to queries, not to segdb statements",
                ));
            }
            r.map(Planned::Done)
        };
        if let Some(r) = self.set_option(sql) {
            return done(r);
        }
        if let Some(r) = self.erasure_statement(sql).await {
            return done(r);
        }
        if crate::segment::parser::is_segment_statement(sql) {
            let stmt = crate::segment::parser::parse_statement(sql)
                .map_err(|e| crate::Error::invalid(format!("segment statement: {e}")))?;
            let r = self
                .segments
                .execute(&self.ctx, stmt, self.as_of(), self.use_index())
                .await;
            if r.is_ok() {
                self.refresh_segment_names().await?;
            }
            return done(r);
        }
        self.prefetch(sql).await?;
        let df = self.ctx.sql(sql).await?;
        if let datafusion::logical_expr::LogicalPlan::Dml(dml) = df.logical_plan()
            && Table::from_name(dml.table_name.table()).is_some()
            && dml.table_name.schema().is_none_or(|s| s == SCHEMA)
        {
            return Err(crate::Error::invalid(format!(
                "{} is written only by ingest (segdb ingest or Flight SQL bulk ingest), which pseudonymises user ids, and by FORGET; {} is refused",
                dml.table_name.table(),
                dml.op
            )));
        }
        Ok(Planned::Query(match params {
            Some(p) => {
                let p = coerce_params(df.logical_plan(), p)?;
                df.with_param_values(p)?
            }
            None => df,
        }))
    }

    /// Load files into `events`, `profiles` or `consent`. An events load also appends its counts
    /// to the event index.
    pub async fn ingest(
        &self,
        kind: Kind,
        files: &[PathBuf],
        opts: &IngestOptions,
    ) -> Result<IngestReport> {
        let loaded =
            crate::ingest::ingest_collecting(&self.db, &self.keyring, kind, files, opts).await?;
        self.after_load(loaded).await
    }

    /// Load the Arrow batches `batches` yields (Flight SQL bulk ingest) like files: same
    /// validation, pseudonymisation, one commit. `name` names the input in rejected-row reports.
    pub async fn ingest_batches(
        &self,
        kind: Kind,
        name: &str,
        batches: impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
        opts: &IngestOptions,
    ) -> Result<IngestReport> {
        let loaded =
            crate::ingest::ingest_batches(&self.db, &self.keyring, kind, name, batches, opts)
                .await?;
        self.after_load(loaded).await
    }

    async fn after_load(
        &self,
        (report, days): (IngestReport, Option<crate::ingest::IndexDays>),
    ) -> Result<IngestReport> {
        match (days, report.version) {
            (Some(days), Some(v)) => self.segments.index_append(&days, v).await?,
            _ => self.segments.invalidate().await,
        }
        if report.kind == Kind::Consent && report.version.is_some() {
            // Keep the per-purpose consent bitmaps current: derive them from the new version now.
            self.segments
                .refresh_consent(&self.ctx, chrono::Utc::now().timestamp_micros())
                .await?;
        }
        Ok(report)
    }
}

/// The `public` schema: the base Delta tables (latest snapshot per statement) plus whatever the
/// session registers (views, external tables) in memory.
struct TablesSchema {
    db: Database,
    extra: Arc<MemorySchemaProvider>,
    suppressed: Arc<std::sync::RwLock<roaring::RoaringBitmap>>,
}

impl std::fmt::Debug for TablesSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TablesSchema")
            .field("location", &self.db.location().to_string())
            .finish()
    }
}

impl TablesSchema {
    async fn latest(&self, t: Table) -> Result<Arc<dyn TableProvider>> {
        let table = self.db.latest(t).await?;
        let provider = table.table_provider().await?;
        let suppressed = self.suppressed.read().expect("not poisoned").clone();
        if suppressed.is_empty() {
            return Ok(provider);
        }
        // Forgotten users are filtered out of every scan until their rows are gone.
        use datafusion::logical_expr::{LogicalPlanBuilder, ScalarUDF, col, lit, not};
        let contains = Arc::new(ScalarUDF::from(
            crate::functions::bitmap::rb_contains::RbContains::new(),
        ));
        let bytes = lit(datafusion::scalar::ScalarValue::Binary(Some(
            crate::index::codec::to_bytes(&suppressed),
        )));
        let keep = not(contains.call(vec![bytes, col("uid")]));
        let plan = LogicalPlanBuilder::scan(
            t.name(),
            datafusion::datasource::provider_as_source(provider),
            None,
        )?
        .filter(keep)?
        .build()?;
        Ok(Arc::new(datafusion::datasource::ViewTable::new(plan, None)))
    }
}

#[async_trait]
impl SchemaProvider for TablesSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Table::BASE.iter().map(|t| t.name().to_string()).collect();
        names.extend(self.extra.table_names());
        names
    }

    async fn table(
        &self,
        name: &str,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        match Table::from_name(name) {
            Some(t) => self
                .latest(t)
                .await
                .map(Some)
                .map_err(|e| DataFusionError::External(Box::new(e))),
            None => self.extra.table(name).await,
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if Table::from_name(&name).is_some() {
            return datafusion::common::plan_err!("{name} is a segdb table; it cannot be replaced");
        }
        self.extra.register_table(name, table)
    }

    fn deregister_table(
        &self,
        name: &str,
    ) -> datafusion::common::Result<Option<Arc<dyn TableProvider>>> {
        if Table::from_name(name).is_some() {
            return datafusion::common::plan_err!("{name} is a segdb table; it cannot be dropped");
        }
        self.extra.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        Table::from_name(name).is_some() || self.extra.table_exist(name)
    }
}

/// Cast positional parameters to the types the planner inferred for `$n` (clients bind what
/// their language has: Python ints are int64 where the column is int32). A value that does not
/// cast is an error naming the parameter, never the value (it may be a raw id).
fn coerce_params(
    plan: &datafusion::logical_expr::LogicalPlan,
    p: datafusion::common::ParamValues,
) -> Result<datafusion::common::ParamValues> {
    use datafusion::common::{ParamValues, ScalarValue};
    let ParamValues::List(values) = p else {
        return Ok(p);
    };
    let types = plan.get_parameter_types()?;
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let v = v.value;
        let cast = match types.get(&format!("${}", i + 1)) {
            Some(Some(t)) if v.is_null() => ScalarValue::try_from(t).unwrap_or(v),
            Some(Some(t)) if &v.data_type() != t => v.cast_to(t).map_err(|_| {
                crate::Error::invalid(format!(
                    "parameter ${} ({}) cannot be used as {t}",
                    i + 1,
                    v.data_type()
                ))
            })?,
            _ => v,
        };
        out.push(cast);
    }
    Ok(ParamValues::from(out))
}

/// `sql` without the comments and blank space before its first token.
pub(crate) fn strip_leading_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim_start();
        if let Some(rest) = sql.strip_prefix("--") {
            sql = rest.find('\n').map_or("", |i| &rest[i + 1..]);
        } else if let Some(rest) = sql.strip_prefix("/*") {
            sql = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            return sql;
        }
    }
}

/// The tokens of `sql` without whitespace and comments (empty if it does not tokenize: then the
/// planner reports the error).
fn significant_tokens(sql: &str) -> Vec<sqlparser::tokenizer::Token> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = sqlparser::dialect::GenericDialect {};
    Tokenizer::new(&dialect, sql)
        .tokenize()
        .map(|t| {
            t.into_iter()
                .filter(|t| !matches!(t, Token::Whitespace(_)))
                .collect()
        })
        .unwrap_or_default()
}

/// Find `has_consent(user, 'purpose' [, at])` calls with a literal purpose (and `at`).
fn scan_consent_calls(toks: &[Token]) -> Vec<(String, Option<i64>)> {
    let mut out = Vec::new();
    for i in 0..toks.len() {
        match &toks[i] {
            Token::Word(w)
                if w.value.eq_ignore_ascii_case("has_consent")
                    && toks.get(i + 1) == Some(&Token::LParen) => {}
            _ => continue,
        }
        // Skip the user argument up to the first top-level comma.
        let (mut j, mut depth) = (i + 2, 0usize);
        while let Some(t) = toks.get(j) {
            match t {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => break,
                _ => {}
            }
            j += 1;
        }
        let Some(Token::SingleQuotedString(purpose)) = toks.get(j + 1) else {
            continue;
        };
        let mut at = None;
        if toks.get(j + 2) == Some(&Token::Comma) {
            match toks.get(j + 3) {
                Some(Token::SingleQuotedString(s)) => at = crate::ingest::parse_micros(s),
                Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("TIMESTAMP") => {
                    if let Some(Token::SingleQuotedString(s)) = toks.get(j + 4) {
                        at = crate::ingest::parse_micros(s);
                    }
                }
                _ => {}
            }
        }
        out.push((purpose.clone(), at));
    }
    out
}

/// Find `segment_*` / `in_segment` calls with literal segment names (and `as_of`) in SQL text.
fn scan_segment_calls(toks: &[Token]) -> Vec<(String, Vec<String>, Option<i64>)> {
    let mut out = Vec::new();
    for i in 0..toks.len() {
        let Token::Word(w) = &toks[i] else { continue };
        let f = w.value.to_ascii_lowercase();
        if !crate::functions::segment::FUNCTIONS.contains(&f.as_str())
            || toks.get(i + 1) != Some(&Token::LParen)
        {
            continue;
        }
        let mut j = i + 2;
        let mut strings = Vec::new();
        let mut at = None;
        // Read the literal arguments: names, then (for size/bitmap/members) an optional as_of.
        loop {
            match toks.get(j) {
                Some(Token::SingleQuotedString(s)) => strings.push(s.clone()),
                Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("TIMESTAMP") => {
                    if let Some(Token::SingleQuotedString(s)) = toks.get(j + 1) {
                        at = crate::ingest::parse_micros(s);
                        j += 1;
                    }
                }
                _ => break,
            }
            j += 1;
            if toks.get(j) != Some(&Token::Comma) {
                break;
            }
            j += 1;
        }
        if strings.is_empty() {
            continue;
        }
        let names = match f.as_str() {
            "segment_overlap" => strings,
            "in_segment" => vec![strings[0].clone()],
            _ => {
                if strings.len() > 1 {
                    at = crate::ingest::parse_micros(&strings[1]);
                }
                vec![strings[0].clone()]
            }
        };
        out.push((f, names, at));
    }
    out
}
