//! Sessions: where statements run. A [`Session`] is one DataFusion session — its settings
//! (DataFusion's and segdb's), SQL-level prepared statements, views, schemas and functions last
//! for its lifetime and are seen by no other session. Every statement:
//!
//! 1. is parsed once by the front door (`statement`) into a statement and its kind;
//! 2. is checked against the caller's role (`EXECUTE` against the prepared statement's kind);
//! 3. pins one snapshot of every table (`storage::Snapshot`), which it alone reads;
//! 4. runs in a copy of the session state that carries the snapshot — except statements that
//!    change the session itself (SET, RESET, PREPARE, DEALLOCATE, functions), which run on it;
//! 5. is planned by DataFusion with DDL, DML and statements disallowed unless the role allows
//!    them, and never writes into the base tables or touches the keyring file;
//! 6. has its segment functions evaluated by segdb's planner (`planner`) when it is planned
//!    physically, with the same snapshot.

pub mod alter;
pub mod planner;
pub mod public;
pub mod rewrite;
mod segdb;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ParamValues;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::{SQLOptions, SessionConfig};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::error::{Error, Result};
use crate::privacy::Keyring;
use crate::result::QueryResult;
use crate::segment::Segments;
use crate::segment::options::SegdbOptions;
use crate::statement::{Kind, Parsed, Role, Statement};
use crate::storage::{Database, Snapshot, Table};

/// Default catalog and schema names users see.
pub const CATALOG: &str = "segdb";
pub const SCHEMA: &str = "public";

/// What every session of one engine shares.
pub struct Shared {
    pub db: Database,
    pub keyring: Arc<Keyring>,
    pub segments: Arc<Segments>,
    pub runtime: Arc<RuntimeEnv>,
    /// The latest snapshot any statement pinned (table schemas for planning).
    last: RwLock<Arc<Snapshot>>,
    /// `[export] allowed_urls` of the server's config: where non-admins may export (`None`:
    /// nothing configured, so only admins export).
    pub export_allowed: RwLock<Option<Vec<String>>>,
    /// `[identity] max_ids_per_profile` for loads through this state (Flight SQL bulk ingest).
    pub max_ids_per_profile: std::sync::atomic::AtomicUsize,
    /// The planner after segdb's (None: DataFusion's own; a cluster's when attached).
    pub(crate) inner_planner:
        RwLock<Option<Arc<dyn datafusion::execution::context::QueryPlanner + Send + Sync>>>,
    /// The Ballista scheduler queries run on (`http://host:port`), when attached.
    pub(crate) cluster: RwLock<Option<(String, crate::cluster::auth::ClusterSecret)>>,
    /// Plans submitted to the cluster so far.
    pub(crate) cluster_jobs: Arc<std::sync::atomic::AtomicU64>,
    /// What this process's collector counted (`SHOW SOURCES`, `collector_rejects()`).
    pub collector: Arc<crate::collector::stats::Stats>,
    /// `[collector]` of the server's config (key grace), `[storage] target_file_mb`.
    pub collector_settings: RwLock<crate::collector::Settings>,
    pub target_file_mb: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Open the shared state over `db`.
    pub async fn new(db: Database, keyring: Arc<Keyring>) -> Result<Arc<Shared>> {
        let runtime = Arc::new(RuntimeEnv::default());
        crate::storage::provider::register_store(&db, &runtime);
        let segments = Arc::new(Segments::new(db.clone(), keyring.clone()));
        let snap = db.pin().await?;
        // Segment names for listings (the `segments` schema cannot do I/O to list).
        let catalog = crate::segment::catalog::load(&snap).await?;
        segments.remember_catalog(snap.version(Table::Segments), catalog);
        Ok(Arc::new(Shared {
            db,
            keyring,
            segments,
            runtime,
            last: RwLock::new(snap),
            export_allowed: RwLock::new(None),
            max_ids_per_profile: std::sync::atomic::AtomicUsize::new(crate::links::DEFAULT_MAX_IDS),
            inner_planner: RwLock::new(None),
            cluster: RwLock::new(None),
            cluster_jobs: Default::default(),
            collector: Default::default(),
            collector_settings: RwLock::new(Default::default()),
            target_file_mb: std::sync::atomic::AtomicU64::new(
                crate::storage::optimize::DEFAULT_TARGET_FILE_MB,
            ),
        }))
    }

    /// The latest snapshot a statement pinned.
    pub fn last_snapshot(&self) -> Arc<Snapshot> {
        self.last.read().expect("not poisoned").clone()
    }

    /// Run queries over the tables on the Ballista cluster whose scheduler is at `addr`
    /// (`df://HOST:PORT`); sessions made afterwards use it.
    /// Every call to the cluster carries `secret`.
    pub fn attach_cluster(
        &self,
        addr: &str,
        secret: crate::cluster::auth::ClusterSecret,
    ) -> Result<()> {
        let url = crate::cluster::scheduler_url(addr)?;
        let planner = crate::cluster::planner::ClusterPlanner::new(
            url.clone(),
            self.cluster_jobs.clone(),
            ballista_core::extension::SessionConfigExt::ballista_config(&cluster_config(
                session_config(),
                &secret,
            )),
        );
        *self.inner_planner.write().expect("not poisoned") = Some(Arc::new(planner));
        *self.cluster.write().expect("not poisoned") = Some((url, secret));
        Ok(())
    }

    /// How many plans this process submitted to the cluster.
    pub fn cluster_jobs(&self) -> u64 {
        self.cluster_jobs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The scheduler URL when attached to a cluster.
    pub fn cluster(&self) -> Option<String> {
        self.cluster
            .read()
            .expect("not poisoned")
            .as_ref()
            .map(|(u, _)| u.clone())
    }

    /// Pin a snapshot for a statement.
    pub async fn pin(&self) -> Result<Arc<Snapshot>> {
        let s = self.db.pin().await?;
        // Planning-time checks (table functions, `segments.*` listings) read the catalog this
        // process read last: bring it to the statement's version when another engine or
        // process changed it.
        if self.segments.catalog_version() != Some(s.version(Table::Segments)) {
            let catalog = crate::segment::catalog::load(&s).await?;
            self.segments
                .remember_catalog(s.version(Table::Segments), catalog);
        }
        *self.last.write().expect("not poisoned") = s.clone();
        Ok(s)
    }
}

/// A statement after planning.
pub enum Planned {
    /// A query, planned and not yet run (its state carries the statement's snapshot).
    Query(DataFrame),
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

    /// Run it and collect the result.
    pub async fn collect(self) -> Result<QueryResult> {
        match self {
            Planned::Query(df) => {
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let batches: Vec<RecordBatch> = df.collect().await?;
                Ok(QueryResult { schema, batches })
            }
            Planned::Done(r) => Ok(r),
        }
    }
}

/// One session.
pub struct Session {
    shared: Arc<Shared>,
    ctx: SessionContext,
    /// Kinds of this session's SQL-level prepared statements (checked at EXECUTE).
    prepared: Mutex<HashMap<String, Kind>>,
    /// Who runs this session's statements ("cli", "library", a Flight SQL user): recorded in the
    /// audit log by FORGET and VACUUM.
    who: String,
}

/// The session configuration of every segdb session, embedded or on a cluster: DataFusion's
/// defaults (view types included, so results have the same types in both modes), segdb's
/// catalog names and settings.
pub fn session_config() -> SessionConfig {
    SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true)
        .with_option_extension(SegdbOptions::default())
}

/// `config` for a session attached to a cluster: Ballista's settings namespace (so
/// `SET ballista.…` works and travels) with segdb's message limits, and the three execution
/// switches Ballista cannot distribute turned off — round-robin repartitioning, physical
/// uncorrelated scalar subqueries (planned as joins instead) and dynamic filters. None of them
/// changes a result or its types. Ballista's other defaults (Utf8 instead of view types,
/// sort-merge joins) are not taken: segdb keeps one configuration for both modes.
pub fn cluster_config(
    config: SessionConfig,
    secret: &crate::cluster::auth::ClusterSecret,
) -> SessionConfig {
    use ballista_core::extension::SessionConfigExt;
    config
        .with_ballista_override_create_grpc_client_endpoint(secret.endpoint_override())
        .with_option_extension(ballista_core::config::BallistaConfig::default())
        .with_ballista_grpc_client_max_message_size(crate::cluster::node::MAX_MESSAGE)
        .with_round_robin_repartition(false)
        .set_bool(
            "datafusion.optimizer.enable_physical_uncorrelated_scalar_subquery",
            false,
        )
        .set_bool("datafusion.optimizer.enable_dynamic_filter_pushdown", false)
}

/// Options under which a role's statements are planned.
fn options_for(role: Role, kind: &Kind) -> SQLOptions {
    let none = crate::segment::context::expression_only();
    match (role, kind) {
        (Role::Admin, _) => SQLOptions::new(),
        (_, Kind::Setting | Kind::Prepare(_) | Kind::Execute(_)) => {
            none.with_allow_statements(true)
        }
        _ => none,
    }
}

impl Session {
    /// A new session over `shared`, run by `who`.
    pub fn new(shared: Arc<Shared>, who: &str) -> Result<Session> {
        let mut config = session_config();
        if let Some((_, secret)) = shared.cluster.read().expect("not poisoned").as_ref() {
            config = cluster_config(config, secret);
        }
        let planner = Arc::new(planner::SegdbPlanner {
            segments: shared.segments.clone(),
            inner: shared.inner_planner.read().expect("not poisoned").clone(),
        });
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(shared.runtime.clone())
            .with_default_features()
            .with_query_planner(planner)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let catalog = ctx.catalog(CATALOG).expect("default catalog exists");
        catalog.register_schema(
            SCHEMA,
            Arc::new(public::PublicSchema {
                shared: shared.clone(),
                extra: datafusion::catalog::MemorySchemaProvider::new(),
            }),
        )?;
        catalog.register_schema(
            crate::segment::table::SCHEMA,
            Arc::new(crate::segment::table::SegmentsSchema {
                segments: shared.segments.clone(),
            }),
        )?;
        crate::functions::register_all(&ctx, shared.keyring.clone());
        for f in crate::segment::functions::scalars() {
            ctx.register_udf(f);
        }
        for (name, f) in crate::segment::functions::table_functions(&shared.segments) {
            ctx.register_udtf(name, f);
        }
        ctx.register_udtf(
            "collector_rejects",
            crate::collector::stats::udtf(shared.collector.clone()),
        );
        Ok(Session {
            shared,
            ctx,
            prepared: Mutex::new(HashMap::new()),
            who: who.to_string(),
        })
    }

    /// The DataFusion session.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Who runs this session.
    pub fn who(&self) -> &str {
        &self.who
    }

    /// Parse the statements of `sql` with this session's SQL dialect.
    pub fn parse(&self, sql: &str) -> Result<Vec<Parsed>> {
        let state = self.ctx.state();
        let o = &state.config().options().sql_parser;
        crate::statement::parse(sql, o.dialect.as_ref(), o.recursion_limit.get())
    }

    /// Parse exactly one statement.
    pub fn parse_one(&self, sql: &str) -> Result<Parsed> {
        let state = self.ctx.state();
        let o = &state.config().options().sql_parser;
        crate::statement::parse_one(sql, o.dialect.as_ref(), o.recursion_limit.get())
    }

    /// May `role` run `p` (for EXECUTE: the prepared statement's kind)?
    pub fn check_role(&self, p: &Parsed, role: Role) -> Result<()> {
        let kind = match &p.kind {
            Kind::Execute(name) => self
                .prepared
                .lock()
                .expect("not poisoned")
                .get(name)
                .cloned()
                // An unknown name runs nothing: DataFusion refuses it with its own message
                // (which BI tools and the conformance corpus expect), whatever the role.
                .unwrap_or(Kind::Query),
            k => k.clone(),
        };
        if role.allows(&kind) {
            Ok(())
        } else {
            Err(Error::denied(format!(
                "role {} may not run {} statements",
                role.name(),
                kind.name().replace('_', " ")
            )))
        }
    }

    /// A copy of the session state carrying a freshly pinned snapshot.
    pub async fn statement_context(&self) -> Result<(SessionContext, Arc<Snapshot>)> {
        let snap = self.shared.pin().await?;
        let mut state = self.ctx.state();
        state.config_mut().set_extension(snap.clone());
        Ok((SessionContext::new_with_state(state), snap))
    }

    /// An evaluation context over a freshly pinned snapshot, with this session's settings.
    pub async fn eval_context(&self) -> Result<crate::segment::EvalCtx> {
        let (ctx, _) = self.statement_context().await?;
        crate::segment::EvalCtx::from_state(&ctx.state(), &self.shared.db).await
    }

    /// Contexts for scheduled work (each call pins a new snapshot).
    pub fn contexts(self: &Arc<Self>) -> crate::materialize::scheduler::Contexts {
        let s = self.clone();
        Arc::new(move || {
            let s = s.clone();
            Box::pin(async move { s.eval_context().await })
        })
    }

    /// Plan one statement for `role`: segdb statements, settings and DDL run here (their
    /// result is [`Planned::Done`] or an empty query); a query is returned planned, with
    /// `params` bound to its `$n` placeholders, for the caller to run or stream.
    pub async fn plan(
        &self,
        p: &Parsed,
        role: Role,
        params: Option<ParamValues>,
    ) -> Result<Planned> {
        self.check_role(p, role)?;
        if let (Kind::Setting, Statement::Sql(ast)) = (&p.kind, &p.statement) {
            crate::statement::setting::check(ast, role)?;
            // DataFusion cannot RESET an extension's setting: `RESET segdb.x` sets its default.
            if let Some(set) = crate::statement::setting::reset_to_default(ast) {
                let p = self.parse_one(&set)?;
                return Box::pin(self.plan(&p, role, params)).await;
            }
        }
        let (stmt_ctx, _snap) = self.statement_context().await?;
        match &p.statement {
            Statement::Segdb(s) => {
                if params.is_some() {
                    return Err(Error::invalid(
                        "parameters can only be bound to queries, not to segdb statements",
                    ));
                }
                segdb::execute(self, &stmt_ctx, s, role)
                    .await
                    .map(Planned::Done)
            }
            Statement::Sql(ast) => {
                let mut ast = (**ast).clone();
                rewrite::private_literals(&mut ast, &self.shared.keyring);
                let values: Option<Vec<datafusion::common::ScalarValue>> = match &params {
                    Some(ParamValues::List(v)) => Some(v.iter().map(|x| x.value.clone()).collect()),
                    _ => None,
                };
                rewrite::table_functions(&mut ast, values.as_deref(), false);
                let plan = stmt_ctx.state().statement_to_plan(ast).await?;
                options_for(role, &p.kind).verify_plan(&plan).map_err(|e| {
                    Error::denied(format!(
                        "role {} may not run this statement ({})",
                        role.name(),
                        e.message()
                    ))
                })?;
                self.refuse_forbidden(&plan)?;
                let on_session = matches!(
                    &plan,
                    LogicalPlan::Statement(
                        datafusion::logical_expr::Statement::SetVariable(_)
                            | datafusion::logical_expr::Statement::ResetVariable(_)
                            | datafusion::logical_expr::Statement::Prepare(_)
                            | datafusion::logical_expr::Statement::Deallocate(_)
                    ) | LogicalPlan::Ddl(
                        DdlStatement::CreateFunction(_) | DdlStatement::DropFunction(_)
                    )
                );
                if let LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(prep)) =
                    &plan
                    && let Kind::Prepare(inner) = &p.kind
                {
                    self.prepared
                        .lock()
                        .expect("not poisoned")
                        .insert(prep.name.to_ascii_lowercase(), (**inner).clone());
                }
                let df = if on_session {
                    self.ctx.execute_logical_plan(plan).await?
                } else {
                    stmt_ctx.execute_logical_plan(plan).await?
                };
                Ok(Planned::Query(match params {
                    Some(values) => {
                        let values = coerce_params(df.logical_plan(), values)?;
                        df.with_param_values(values)?
                    }
                    None => df,
                }))
            }
        }
    }

    /// The logical plan of a DataFusion statement, without running anything (for the schemas
    /// of a prepared statement).
    pub async fn logical_plan(&self, p: &Parsed) -> Result<LogicalPlan> {
        let Statement::Sql(ast) = &p.statement else {
            return Err(Error::invalid("not a SQL query"));
        };
        let mut ast = (**ast).clone();
        rewrite::private_literals(&mut ast, &self.shared.keyring);
        rewrite::table_functions(&mut ast, None, true);
        let (stmt_ctx, _) = self.statement_context().await?;
        Ok(stmt_ctx.state().statement_to_plan(ast).await?)
    }

    /// Plan and run one statement, collecting its result, within the session's
    /// `segdb.statement_timeout`.
    pub async fn execute(&self, p: &Parsed, role: Role) -> Result<QueryResult> {
        within(self.statement_timeout(), async {
            self.plan(p, role, None).await?.collect().await
        })
        .await
    }

    /// The session's `segdb.statement_timeout` (`None`: no limit).
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        crate::segment::options::of(self.ctx.state().config().options()).statement_timeout
    }

    /// Run every statement of `sql` as an admin; returns the last result.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        let parsed = self.parse(sql)?;
        if parsed.is_empty() {
            return Err(Error::invalid("no statement was given"));
        }
        let mut last = None;
        for p in &parsed {
            last = Some(self.execute(p, Role::Admin).await?);
        }
        Ok(last.expect("at least one statement"))
    }

    /// Run one query with `params` bound to its `?` (or `$n`) placeholders, as an admin (the
    /// library's and the Python package's parameterised statements).
    pub async fn sql_with_params(
        &self,
        sql: &str,
        params: Vec<datafusion::common::ScalarValue>,
    ) -> Result<QueryResult> {
        if params.is_empty() {
            return self.sql(sql).await;
        }
        let numbered = crate::statement::number_placeholders(sql);
        let parsed = self.parse(&numbered)?;
        let [p] = parsed.as_slice() else {
            return Err(Error::invalid(format!(
                "parameters are bound to one statement; this text has {}",
                parsed.len()
            )));
        };
        within(self.statement_timeout(), async {
            self.plan(p, Role::Admin, Some(ParamValues::from(params)))
                .await?
                .collect()
                .await
        })
        .await
    }

    /// Writes into the base tables (they skip pseudonymisation) and SQL that reads or writes
    /// the keyring file are refused for every role.
    fn refuse_forbidden(&self, plan: &LogicalPlan) -> Result<()> {
        let mut err = None;
        let _ = plan.apply_with_subqueries(|node| {
            use datafusion::common::tree_node::TreeNodeRecursion;
            match node {
                LogicalPlan::Dml(dml)
                    if Table::from_name(dml.table_name.table()).is_some()
                        && dml.table_name.schema().is_none_or(|s| s == SCHEMA)
                        && dml.table_name.catalog().is_none_or(|c| c == CATALOG) =>
                {
                    err = Some(Error::invalid(format!(
                        "{} is written only by ingest (segdb ingest or Flight SQL bulk ingest), which pseudonymises user ids, and by FORGET; {} is refused",
                        dml.table_name.table(),
                        dml.op
                    )));
                    return Ok(TreeNodeRecursion::Stop);
                }
                LogicalPlan::Ddl(DdlStatement::CreateExternalTable(t)) => {
                    if let Some(e) = t.locations.iter().find_map(|l| self.guarded(l)) {
                        err = Some(e);
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                LogicalPlan::Copy(c) => {
                    if let Some(e) = self.guarded(&c.output_url) {
                        err = Some(e);
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The refusal for a location given to SQL that names the keyring file, the database's own
    /// files, or a directory holding either (`None`: neither).
    fn guarded(&self, location: &str) -> Option<Error> {
        if let Some(k) = self.shared.keyring.path()
            && touches(location, k)
        {
            return Some(keyring_refusal());
        }
        if let Some(root) = self.shared.db.location().local_path()
            && touches(location, root)
        {
            return Some(Error::denied(
                "the database's own files cannot be read or written from SQL: its tables are read through the catalog (with erasure applied) and written only by segdb",
            ));
        }
        None
    }
}

/// Run `work` within `limit` (`None`: no limit). The limit is checked whenever `work` waits, so
/// it cancels planning between its steps and execution between batches; dropping `work`
/// cancels what it started.
pub async fn within<T>(
    limit: Option<std::time::Duration>,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match limit {
        None => work.await,
        Some(t) => tokio::time::timeout(t, work)
            .await
            .unwrap_or_else(|_| Err(Error::timed_out(t))),
    }
}

/// `stream` ended with a timeout error once `limit` has passed (`None`: unchanged).
pub fn stream_within(
    stream: datafusion::physical_plan::SendableRecordBatchStream,
    limit: Option<std::time::Duration>,
) -> datafusion::physical_plan::SendableRecordBatchStream {
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::StreamExt;
    let Some(t) = limit else {
        return stream;
    };
    let schema = stream.schema();
    let sleep = Box::pin(tokio::time::sleep(t));
    let timed = futures::stream::unfold(Some((stream, sleep)), move |state| async move {
        let (mut s, mut sleep) = state?;
        tokio::select! {
            item = s.next() => item.map(|i| (i, Some((s, sleep)))),
            () = &mut sleep => Some((
                Err(datafusion::error::DataFusionError::External(Box::new(Error::timed_out(t)))),
                None,
            )),
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, timed))
}

fn keyring_refusal() -> Error {
    Error::denied(
        "the keyring file (pseudonymisation keys) cannot be read or written from SQL; keys never leave the keyring",
    )
}

/// Whether `location` as DataFusion reads it (a path, a `file:` URL in any spelling, possibly
/// with a glob) is `guarded` or a directory above it, or lies inside `guarded` when that is a
/// directory. The location goes through DataFusion's own URL parsing (which resolves `..` and
/// percent escapes the way a scan or COPY will), then through the file system (symbolic
/// links); files are compared by device and inode, so no spelling of a path gets past it.
pub(crate) fn touches(location: &str, guarded: &std::path::Path) -> bool {
    let Some(path) = local_path_of(location) else {
        return false;
    };
    use crate::storage::location::{lexical, resolved};
    let guard = resolved(&lexical(guarded));
    // `..` read as text (as a URL resolves it) and as the file system would (after links).
    [resolved(&lexical(&path)), resolved(&path)]
        .iter()
        .any(|loc| {
            if guard.starts_with(loc) || loc.starts_with(&guard) {
                return true;
            }
            use std::os::unix::fs::MetadataExt;
            match (std::fs::metadata(loc), std::fs::metadata(&guard)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            }
        })
}

/// The local file-system path DataFusion would read or write for `location`, up to its first
/// glob character (`None`: not on the local file system).
fn local_path_of(location: &str) -> Option<std::path::PathBuf> {
    let loc = location.trim();
    let cut = loc.find(['*', '?', '[', '{']).unwrap_or(loc.len());
    let base = &loc[..cut];
    let url = datafusion::datasource::listing::ListingTableUrl::parse(if base.is_empty() {
        "."
    } else {
        base
    })
    .ok()?;
    let url = url.get_url();
    if !url.scheme().eq_ignore_ascii_case("file") {
        return None;
    }
    url.to_file_path().ok()
}

/// Cast positional parameters to the types the planner inferred for `$n` (clients bind what
/// their language has: Python ints are int64 where the column is int32). A value that does not
/// cast is an error naming the parameter, never the value (it may be a raw id).
fn coerce_params(plan: &LogicalPlan, p: ParamValues) -> Result<ParamValues> {
    use datafusion::common::ScalarValue;
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
                Error::invalid(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_locations_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("segdb.keyring");
        std::fs::write(&key, "{}").unwrap();
        let link = dir.path().join("innocent.csv");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let other = tempfile::tempdir().unwrap();
        let hard = other.path().join("copy.csv");
        std::fs::hard_link(&key, &hard).unwrap();
        for loc in [
            key.to_str().unwrap().to_string(),
            format!("file://{}", key.display()),
            dir.path().to_str().unwrap().to_string(),
            format!("{}/*.keyring", dir.path().display()),
            link.to_str().unwrap().to_string(),
            // Spellings that once got past a comparison of strings.
            format!("{}/no_such/../segdb.keyring", dir.path().display()),
            format!("file:{}", key.display()),
            format!("file://{}/segdb%2Ekeyring", dir.path().display()),
            format!("FILE://{}", key.display()),
            format!("{}/./segdb.keyring", dir.path().display()),
            hard.to_str().unwrap().to_string(),
        ] {
            assert!(touches(&loc, &key), "{loc}");
        }
        assert!(!touches("/tmp/other-dir-xyz/data.csv", &key));
        assert!(!touches("s3://bucket/x", &key));
    }
}
