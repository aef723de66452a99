//! The Flight SQL service: every call is authenticated and logged; every statement goes through
//! the caller's session (`session::Session`), which parses it once, checks the caller's role and
//! pins the statement's snapshot. A query is planned at GetFlightInfo and streamed at DoGet
//! without being collected; other statements run at GetFlightInfo and park their small result.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, Caller};
use super::sessions::Sessions;
use super::wire::{
    DoGetStream, batch_stream, df_status, ipc_schema, number_placeholders, one_batch, to_status,
    to_wire, wire_schema,
};
use crate::result::QueryResult;
use crate::session::{Planned, Shared};
use crate::statement::{Kind, Role, Statement};

/// Results planned at GetFlightInfo and not fetched yet are dropped after this long.
const RESULT_TTL: Duration = Duration::from_secs(600);

/// A statement's result waiting for its DoGet.
enum Ready {
    Plan {
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
        /// The session's `segdb.statement_timeout`, for the execution.
        timeout: Option<std::time::Duration>,
    },
    Done(QueryResult),
}

struct Pending {
    owner: String,
    kind: &'static str,
    created: Instant,
    ready: Ready,
}

struct Prepared {
    owner: String,
    sql: String,
    params: Option<ParamValues>,
    created: Instant,
}

/// Counts calls in flight (streams until they end), for a prompt shutdown.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

/// One call in flight.
pub struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InFlight {
    fn enter(&self) -> CallGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.0.clone())
    }

    /// Calls in flight now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// segdb's Flight SQL service.
pub struct SegdbFlightSql {
    auth: Arc<Authenticator>,
    sessions: Sessions,
    results: Mutex<HashMap<Vec<u8>, Pending>>,
    prepared: Mutex<HashMap<Vec<u8>, Prepared>>,
    info_rw: SqlInfoData,
    info_ro: SqlInfoData,
    xdbc: XdbcTypeInfoData,
    inflight: InFlight,
}

/// One log line per call: who, what, how many rows, how long (never SQL text, ids or tokens).
fn log_call(user: &str, call: &str, kind: &str, rows: Option<u64>, started: Instant, ok: bool) {
    let took_ms = started.elapsed().as_millis() as u64;
    match rows {
        Some(rows) => {
            tracing::info!(target: "segdb::server", user = %user, call, kind, rows, took_ms, ok, "call")
        }
        None => {
            tracing::info!(target: "segdb::server", user = %user, call, kind, took_ms, ok, "call")
        }
    }
}

impl SegdbFlightSql {
    pub fn new(shared: Arc<Shared>, auth: Arc<Authenticator>) -> SegdbFlightSql {
        SegdbFlightSql {
            sessions: Sessions::new(shared, auth.clone()),
            auth,
            results: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            info_rw: super::metadata::sql_info(false),
            info_ro: super::metadata::sql_info(true),
            xdbc: super::metadata::xdbc_types(),
            inflight: InFlight::default(),
        }
    }

    /// The in-flight counter (the server waits on it at shutdown).
    pub fn inflight(&self) -> InFlight {
        self.inflight.clone()
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let caller = self.auth.check(header).map_err(|d| {
            tracing::info!(target: "segdb::server", denied = %d, "unauthenticated call");
            Status::unauthenticated(d.to_string())
        })?;
        if caller.role == Role::Lookup {
            tracing::info!(target: "segdb::server", user = %caller.user, "lookup role refused on Flight SQL");
            return Err(Status::permission_denied(
                "role lookup may use only the profile API of the HTTP listener (GET /v1/profiles/…)",
            ));
        }
        Ok(caller)
    }

    /// Plan (or, for non-queries, run) `sql` for `caller`.
    async fn run(
        &self,
        caller: &Caller,
        call: &str,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<(&'static str, Ready, SchemaRef), Status> {
        let started = Instant::now();
        let session = self.sessions.of(caller).map_err(to_status)?;
        let parsed = session.parse_one(sql).map_err(|e| {
            log_call(&caller.user, call, "unparsed", None, started, false);
            to_status(e)
        })?;
        let kind = parsed.kind.name();
        let timeout = session.statement_timeout();
        let planned = match crate::session::within(
            timeout,
            session.plan(&parsed, caller.role, params),
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, crate::Error::Denied(_)) {
                    tracing::info!(target: "segdb::server", user = %caller.user, role = caller.role.name(), kind, "statement refused");
                }
                log_call(&caller.user, call, kind, None, started, false);
                return Err(to_status(e));
            }
        };
        match planned {
            Planned::Query(df) => {
                let task = Arc::new(df.task_ctx());
                let plan =
                    crate::session::within(timeout, async { Ok(df.create_physical_plan().await?) })
                        .await
                        .map_err(|e| {
                            log_call(&caller.user, call, kind, None, started, false);
                            to_status(e)
                        })?;
                let schema = wire_schema(&plan.schema());
                log_call(&caller.user, call, kind, None, started, true);
                Ok((
                    kind,
                    Ready::Plan {
                        plan,
                        task,
                        timeout,
                    },
                    schema,
                ))
            }
            Planned::Done(r) => {
                log_call(
                    &caller.user,
                    call,
                    kind,
                    Some(r.num_rows() as u64),
                    started,
                    true,
                );
                let schema = wire_schema(&r.schema);
                Ok((kind, Ready::Done(r), schema))
            }
        }
    }

    /// Park a result for its DoGet; returns the FlightInfo pointing at it.
    fn park(
        &self,
        caller: &Caller,
        kind: &'static str,
        ready: Ready,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let rows = match &ready {
            Ready::Done(r) => r.num_rows() as i64,
            Ready::Plan { .. } => -1,
        };
        let handle = uuid::Uuid::new_v4().as_bytes().to_vec();
        {
            let mut results = self.results.lock().expect("not poisoned");
            results.retain(|_, p| p.created.elapsed() < RESULT_TTL);
            results.insert(
                handle.clone(),
                Pending {
                    owner: caller.user.clone(),
                    kind,
                    created: Instant::now(),
                    ready,
                },
            );
        }
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor)
            .with_total_records(rows)
            .with_ordered(true);
        Ok(info)
    }

    /// FlightInfo for a metadata command: its ticket is the command itself.
    fn meta_info<M: ProstMessageExt>(
        &self,
        caller: &Caller,
        call: &str,
        cmd: &M,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = Instant::now();
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(cmd.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor);
        log_call(&caller.user, call, "metadata", None, started, true);
        Ok(Response::new(info))
    }

    /// A metadata result, logged.
    fn meta_batch(
        &self,
        caller: &Caller,
        call: &str,
        started: Instant,
        batch: Result<RecordBatch, impl std::fmt::Display>,
    ) -> Result<Response<DoGetStream>, Status> {
        let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
        log_call(
            &caller.user,
            call,
            "metadata",
            Some(batch.num_rows() as u64),
            started,
            true,
        );
        Ok(one_batch(batch))
    }

    fn stream_ready(
        &self,
        caller: &Caller,
        kind: &'static str,
        ready: Ready,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let guard = self.inflight.enter();
        let (schema, batches) = match ready {
            Ready::Plan {
                plan,
                task,
                timeout,
            } => {
                let schema = wire_schema(&plan.schema());
                let stream = datafusion::physical_plan::execute_stream(plan, task)
                    .map_err(|e| df_status(&e))?;
                (schema, crate::session::stream_within(stream, timeout))
            }
            Ready::Done(r) => (wire_schema(&r.schema), r.into_stream()),
        };
        let rows = Arc::new(AtomicU64::new(0));
        let counter = rows.clone();
        let user = caller.user.clone();
        let wire = schema.clone();
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failed_in = failed.clone();
        let counted = batches
            .map(move |r| {
                if let Ok(b) = &r {
                    counter.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                } else {
                    failed_in.store(true, Ordering::Relaxed);
                }
                r.map_err(|e| FlightError::Tonic(Box::new(df_status(&e))))
                    .and_then(|b| to_wire(b, &wire).map_err(FlightError::Arrow))
            })
            .chain(
                futures::stream::once(async move {
                    let _guard = guard;
                    log_call(
                        &user,
                        "do_get",
                        kind,
                        Some(rows.load(Ordering::Relaxed)),
                        started,
                        !failed.load(Ordering::Relaxed),
                    );
                })
                .filter_map(|()| futures::future::ready(None)),
            );
        Ok(batch_stream(schema, counted))
    }

    async fn read_params(
        &self,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<Option<ParamValues>, Status> {
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
        let Some(batch) = batches.into_iter().find(|b| b.num_rows() > 0) else {
            return Ok(None);
        };
        if batch.num_rows() > 1 {
            return Err(Status::invalid_argument(
                "bind one row of parameters per execution",
            ));
        }
        let mut values = Vec::new();
        for col in batch.columns() {
            values.push(ScalarValue::try_from_array(col, 0).map_err(|e| df_status(&e))?);
        }
        Ok(Some(ParamValues::from(values)))
    }

    fn prepared_sql(
        &self,
        caller: &Caller,
        handle: &[u8],
    ) -> Result<(String, Option<ParamValues>), Status> {
        let prepared = self.prepared.lock().expect("not poisoned");
        match prepared.get(handle) {
            Some(p) if p.owner == caller.user => Ok((p.sql.clone(), p.params.clone())),
            _ => Err(Status::not_found(
                "unknown prepared statement handle (closed, or made by another user)",
            )),
        }
    }

    async fn update_count(
        &self,
        caller: &Caller,
        call: &str,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<i64, Status> {
        let (kind, ready, _) = self.run(caller, call, sql, params).await?;
        Ok(match ready {
            Ready::Done(r) => affected(kind, &r),
            Ready::Plan {
                plan,
                task,
                timeout,
            } => {
                let started = Instant::now();
                let batches = crate::session::within(timeout, async {
                    Ok(datafusion::physical_plan::collect(plan, task).await?)
                })
                .await
                .map_err(to_status)?;
                let r = QueryResult {
                    schema: Arc::new(Schema::empty()),
                    batches,
                };
                log_call(
                    &caller.user,
                    call,
                    kind,
                    Some(r.num_rows() as u64),
                    started,
                    true,
                );
                affected(kind, &r)
            }
        })
    }
}

/// Rows a statement affected: the single count a statement returns (FORGET's `forgotten`,
/// DataFusion DML's `count`); a query's row count; 0 for other DDL and settings.
fn affected(kind: &str, r: &QueryResult) -> i64 {
    use arrow::array::{Array, AsArray};
    if let [b] = r.batches.as_slice()
        && b.num_columns() == 1
        && b.num_rows() == 1
    {
        let c = b.column(0);
        if let Some(a) = c.as_primitive_opt::<arrow::datatypes::UInt64Type>() {
            return a.value(0) as i64;
        }
        if let Some(a) = c.as_primitive_opt::<arrow::datatypes::Int64Type>()
            && !a.is_null(0)
        {
            return a.value(0);
        }
    }
    if kind == "query" {
        r.num_rows() as i64
    } else {
        0
    }
}

#[tonic::async_trait]
impl FlightSqlService for SegdbFlightSql {
    type FlightService = SegdbFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let _g = self.inflight.enter();
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let address = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        // A password check is tens of milliseconds of CPU: run it off the async workers.
        let auth = self.auth.clone();
        let checked = tokio::task::spawn_blocking(move || auth.login(header.as_deref(), &address))
            .await
            .map_err(|_| Status::internal("the password check failed"))?;
        let (token, caller) = checked.map_err(|d| {
            tracing::info!(target: "segdb::server", denied = %d, "handshake refused");
            Status::unauthenticated(d.to_string())
        })?;
        tracing::info!(target: "segdb::server", user = %caller.user, role = caller.role.name(), call = "handshake", "call");
        let resp = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::iter(vec![Ok(resp)]));
        let mut response = Response::new(stream);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a valid header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let _g = self.inflight.enter();
        let caller = self.caller(&request)?;
        let sql = number_placeholders(&query.query);
        let (kind, ready, schema) = self
            .run(&caller, "get_flight_info_statement", &sql, None)
            .await?;
        let info = self.park(&caller, kind, ready, &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let _g = self.inflight.enter();
        let caller = self.caller(&request)?;
        let (sql, params) = self.prepared_sql(&caller, &cmd.prepared_statement_handle)?;
        let (kind, ready, schema) = self
            .run(&caller, "get_flight_info_prepared_statement", &sql, params)
            .await?;
        let info = self.park(&caller, kind, ready, &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let pending = {
            let mut results = self.results.lock().expect("not poisoned");
            match results.get(ticket.statement_handle.as_ref()) {
                Some(p) if p.owner == caller.user => {
                    results.remove(ticket.statement_handle.as_ref())
                }
                _ => None,
            }
        };
        let Some(p) = pending else {
            return Err(Status::not_found(
                "unknown ticket: results are fetched once and kept 10 minutes; run the statement again",
            ));
        };
        self.stream_ready(&caller, p.kind, p.ready)
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let (sql, params) = self.prepared_sql(&caller, &cmd.prepared_statement_handle)?;
        let (kind, ready, _) = self
            .run(&caller, "do_get_prepared_statement", &sql, params)
            .await?;
        self.stream_ready(&caller, kind, ready)
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let _g = self.inflight.enter();
        let caller = self.caller(&request)?;
        let sql = number_placeholders(&cmd.query);
        self.update_count(&caller, "do_put_statement_update", &sql, None)
            .await
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let _g = self.inflight.enter();
        let caller = self.caller(&request)?;
        let handle = cmd.prepared_statement_handle.to_vec();
        self.prepared_sql(&caller, &handle)?;
        let params = self.read_params(request).await?;
        if let Some(p) = self.prepared.lock().expect("not poisoned").get_mut(&handle) {
            p.params = params;
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into()),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let _g = self.inflight.enter();
        let caller = self.caller(&request)?;
        let (sql, bound) = self.prepared_sql(&caller, &cmd.prepared_statement_handle)?;
        let params = self.read_params(request).await?.or(bound);
        self.update_count(&caller, "do_put_prepared_statement_update", &sql, params)
            .await
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let _g = self.inflight.enter();
        let caller = self.caller(&request)?;
        let started = Instant::now();
        let session = self.sessions.of(&caller).map_err(to_status)?;
        let r = super::ingest::run(&session, &caller, cmd, request).await;
        let rows = r.as_ref().ok().map(|n| *n as u64);
        log_call(
            &caller.user,
            "do_put_statement_ingest",
            "ingest",
            rows,
            started,
            r.is_ok(),
        );
        r
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let _g = self.inflight.enter();
        let started = Instant::now();
        let caller = self.caller(&request)?;
        let sql = number_placeholders(&query.query);
        let session = self.sessions.of(&caller).map_err(to_status)?;
        let parsed = session.parse_one(&sql).map_err(to_status)?;
        session
            .check_role(&parsed, caller.role)
            .map_err(to_status)?;
        // A query is planned now for its schemas; other statements run at execution only.
        let (dataset_schema, parameter_schema) = match (&parsed.kind, &parsed.statement) {
            (Kind::Query, Statement::Sql(_)) => {
                let plan = session.logical_plan(&parsed).await.map_err(to_status)?;
                let params = plan.get_parameter_types().map_err(|e| df_status(&e))?;
                let mut names: Vec<(usize, String, DataType)> = params
                    .into_iter()
                    .map(|(k, t)| {
                        let n = k.trim_start_matches('$').parse().unwrap_or(usize::MAX);
                        (n, k, t.unwrap_or(DataType::Null))
                    })
                    .collect();
                names.sort();
                let pschema = Schema::new(
                    names
                        .into_iter()
                        .map(|(_, k, t)| Field::new(k, t, true))
                        .collect::<Vec<_>>(),
                );
                let dschema = wire_schema(plan.schema().inner()).as_ref().clone();
                (ipc_schema(&dschema)?, ipc_schema(&pschema)?)
            }
            // SHOW SEGMENTS, DESCRIBE SEGMENT …: read-only segdb statements; run for the schema.
            (Kind::Query, Statement::Segdb(_)) => {
                let planned = session
                    .plan(&parsed, caller.role, None)
                    .await
                    .map_err(to_status)?;
                (
                    ipc_schema(&wire_schema(&planned.schema()))?,
                    bytes::Bytes::new(),
                )
            }
            _ => (bytes::Bytes::new(), bytes::Bytes::new()),
        };
        let handle = uuid::Uuid::new_v4().as_bytes().to_vec();
        let mut prepared = self.prepared.lock().expect("not poisoned");
        prepared.retain(|_, p| p.created.elapsed() < Duration::from_secs(24 * 3600));
        prepared.insert(
            handle.clone(),
            Prepared {
                owner: caller.user.clone(),
                sql,
                params: None,
                created: Instant::now(),
            },
        );
        log_call(
            &caller.user,
            "create_prepared_statement",
            parsed.kind.name(),
            None,
            started,
            true,
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let _g = self.inflight.enter();
        let caller = self.caller(&request)?;
        let mut prepared = self.prepared.lock().expect("not poisoned");
        if prepared
            .get(query.prepared_statement_handle.as_ref())
            .is_some_and(|p| p.owner == caller.user)
        {
            prepared.remove(query.prepared_statement_handle.as_ref());
        }
        Ok(())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let _g = self.inflight.enter();
        let caller = self.caller(&request)?;
        let info = FlightInfo::decode(query.info)
            .map_err(|e| Status::invalid_argument(format!("not a FlightInfo: {e}")))?;
        let mut cancelled = false;
        for ep in info.endpoint {
            let Some(t) = ep.ticket else { continue };
            let Ok(any) = Any::decode(t.ticket) else {
                continue;
            };
            let Ok(Some(tq)) = any.unpack::<TicketStatementQuery>() else {
                continue;
            };
            let mut results = self.results.lock().expect("not poisoned");
            if results
                .get(tq.statement_handle.as_ref())
                .is_some_and(|p| p.owner == caller.user)
            {
                results.remove(tq.statement_handle.as_ref());
                cancelled = true;
            }
        }
        // A result already streaming stops when its client drops the stream.
        // CancelResult (not re-exported by arrow-flight): 1 CANCELLED, 3 NOT_CANCELLABLE.
        Ok(ActionCancelQueryResult {
            result: if cancelled { 1 } else { 3 },
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.meta_info(
            &caller,
            "get_flight_info_catalogs",
            &query,
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let _g = self.inflight.enter();
        let started = Instant::now();
        let caller = self.caller(&request)?;
        let session = self.sessions.of(&caller).map_err(to_status)?;
        let mut b = query.into_builder();
        let mut names = session.context().catalog_names();
        names.sort();
        for c in names {
            b.append(c);
        }
        self.meta_batch(&caller, "do_get_catalogs", started, b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.meta_info(
            &caller,
            "get_flight_info_schemas",
            &query,
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let _g = self.inflight.enter();
        let started = Instant::now();
        let caller = self.caller(&request)?;
        let session = self.sessions.of(&caller).map_err(to_status)?;
        let mut b = query.into_builder();
        for (c, s) in super::metadata::schema_rows(&session) {
            b.append(c, s);
        }
        self.meta_batch(&caller, "do_get_schemas", started, b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.meta_info(
            &caller,
            "get_flight_info_tables",
            &query,
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let _g = self.inflight.enter();
        let started = Instant::now();
        let caller = self.caller(&request)?;
        let session = self.sessions.of(&caller).map_err(to_status)?;
        // Table schemas need a snapshot: the base tables' columns of the latest one.
        session.shared().pin().await.map_err(to_status)?;
        let mut b = query.into_builder();
        let rows = super::metadata::table_rows(&session)
            .await
            .map_err(to_status)?;
        for (schema, name, ty, table_schema) in rows {
            // The schema clients will receive (see `wire_schema`).
            b.append(
                crate::engine::CATALOG,
                schema,
                name,
                ty,
                &wire_schema(&table_schema),
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        }
        self.meta_batch(&caller, "do_get_tables", started, b.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.meta_info(
            &caller,
            "get_flight_info_table_types",
            &query,
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request)?;
        let mut b = query.into_builder();
        for t in ["LOCAL TEMPORARY", "SEGMENT", "TABLE", "VIEW"] {
            b.append(t);
        }
        self.meta_batch(&caller, "do_get_table_types", started, b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let schema = query.clone().into_builder(&self.info_rw).schema();
        self.meta_info(
            &caller,
            "get_flight_info_sql_info",
            &query,
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request)?;
        let data = if caller.role == Role::Reader {
            &self.info_ro
        } else {
            &self.info_rw
        };
        self.meta_batch(
            &caller,
            "do_get_sql_info",
            started,
            query.into_builder(data).build(),
        )
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let schema = query.clone().into_builder(&self.xdbc).schema();
        self.meta_info(
            &caller,
            "get_flight_info_xdbc_type_info",
            &query,
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request)?;
        self.meta_batch(
            &caller,
            "do_get_xdbc_type_info",
            started,
            query.into_builder(&self.xdbc).build(),
        )
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        self.meta_info(
            &caller,
            "get_flight_info_primary_keys",
            &query,
            &super::metadata::primary_keys_schema(),
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request)?;
        self.meta_batch(
            &caller,
            "do_get_primary_keys",
            started,
            Ok::<_, Status>(RecordBatch::new_empty(
                super::metadata::primary_keys_schema(),
            )),
        )
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        self.meta_info(
            &caller,
            "get_flight_info_exported_keys",
            &query,
            &super::metadata::foreign_keys_schema(),
            request.into_inner(),
        )
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request)?;
        self.meta_batch(
            &caller,
            "do_get_exported_keys",
            started,
            Ok::<_, Status>(RecordBatch::new_empty(
                super::metadata::foreign_keys_schema(),
            )),
        )
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        self.meta_info(
            &caller,
            "get_flight_info_imported_keys",
            &query,
            &super::metadata::foreign_keys_schema(),
            request.into_inner(),
        )
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request)?;
        self.meta_batch(
            &caller,
            "do_get_imported_keys",
            started,
            Ok::<_, Status>(RecordBatch::new_empty(
                super::metadata::foreign_keys_schema(),
            )),
        )
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        self.meta_info(
            &caller,
            "get_flight_info_cross_reference",
            &query,
            &super::metadata::foreign_keys_schema(),
            request.into_inner(),
        )
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request)?;
        self.meta_batch(
            &caller,
            "do_get_cross_reference",
            started,
            Ok::<_, Status>(RecordBatch::new_empty(
                super::metadata::foreign_keys_schema(),
            )),
        )
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
