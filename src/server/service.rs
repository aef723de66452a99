//! The Flight SQL service: every call is authenticated, every statement is classified and checked
//! against the caller's role, then run in its own fork of the engine (with the caller's session
//! settings). A query is planned at GetFlightInfo and streamed at DoGet without being collected.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
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
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, Caller};
use crate::engine::{Engine, Planned, QueryResult};
use crate::ingest::{IngestOptions, Kind};
use crate::statement::{StatementKind, classify};

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// Results planned at GetFlightInfo and not fetched yet are dropped after this long.
const RESULT_TTL: Duration = Duration::from_secs(600);

/// A statement's result waiting for its DoGet.
enum Ready {
    Plan {
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
    },
    Done(QueryResult),
}

struct Pending {
    owner: String,
    kind: StatementKind,
    created: Instant,
    ready: Ready,
}

struct Prepared {
    owner: String,
    sql: String,
    params: Option<ParamValues>,
    created: Instant,
}

/// segdb's Flight SQL service.
pub struct SegdbFlightSql {
    engine: Arc<Engine>,
    auth: Arc<Authenticator>,
    /// Session settings per bearer token.
    sessions: Mutex<HashMap<String, (Option<i64>, bool)>>,
    results: Mutex<HashMap<Vec<u8>, Pending>>,
    prepared: Mutex<HashMap<Vec<u8>, Prepared>>,
    info_rw: SqlInfoData,
    info_ro: SqlInfoData,
    xdbc: XdbcTypeInfoData,
}

impl SegdbFlightSql {
    pub fn new(engine: Arc<Engine>, auth: Arc<Authenticator>) -> SegdbFlightSql {
        SegdbFlightSql {
            engine,
            auth,
            sessions: Mutex::new(HashMap::new()),
            results: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            info_rw: super::metadata::sql_info(false),
            info_ro: super::metadata::sql_info(true),
            xdbc: super::metadata::xdbc_types(),
        }
    }

    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.auth.check(header).map_err(|d| {
            tracing::info!(target: "segdb::server", denied = %d, "unauthenticated call");
            Status::unauthenticated(d.to_string())
        })
    }

    fn allow(&self, caller: &Caller, kind: StatementKind) -> Result<(), Status> {
        if caller.role.allows(kind) {
            return Ok(());
        }
        tracing::info!(target: "segdb::server", user = %caller.user, role = caller.role.name(), kind = kind.name(), "statement refused");
        Err(Status::permission_denied(format!(
            "role {} may not run {} statements",
            caller.role.name(),
            kind.name().replace('_', " ")
        )))
    }

    /// A fresh engine session carrying the caller's settings.
    fn fork(&self, caller: &Caller) -> Result<Engine, Status> {
        let fork = self.engine.fork().map_err(to_status)?;
        if let Some(s) = self
            .sessions
            .lock()
            .expect("not poisoned")
            .get(&caller.session)
        {
            fork.set_settings(*s);
        }
        Ok(fork)
    }

    /// Plan (or, for non-queries, run) `sql` for `caller`.
    async fn run(
        &self,
        caller: &Caller,
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<(StatementKind, Ready, SchemaRef), Status> {
        let kind = classify(sql);
        self.allow(caller, kind)?;
        let started = Instant::now();
        let fork = self.fork(caller)?;
        let planned = fork.plan(sql, params).await.map_err(|e| {
            tracing::info!(target: "segdb::server", user = %caller.user, kind = kind.name(), took_ms = started.elapsed().as_millis() as u64, "statement failed");
            to_status(e)
        })?;
        if kind == StatementKind::Setting {
            let mut sessions = self.sessions.lock().expect("not poisoned");
            // Settings of expired tokens go with them.
            sessions.retain(|token, _| self.auth.is_live(token));
            sessions.insert(caller.session.clone(), fork.settings());
        }
        match planned {
            Planned::Query(df) => {
                let task = Arc::new(df.task_ctx());
                let plan = df
                    .create_physical_plan()
                    .await
                    .map_err(|e| to_status(e.into()))?;
                let schema = wire_schema(&plan.schema());
                Ok((kind, Ready::Plan { plan, task }, schema))
            }
            Planned::Done(r) => {
                tracing::info!(target: "segdb::server", user = %caller.user, kind = kind.name(), rows = r.num_rows() as u64, took_ms = started.elapsed().as_millis() as u64, "statement");
                let schema = wire_schema(&r.schema);
                Ok((kind, Ready::Done(r), schema))
            }
        }
    }

    /// Park a result for its DoGet; returns the FlightInfo pointing at it.
    fn park(
        &self,
        caller: &Caller,
        kind: StatementKind,
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
        cmd: &M,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(cmd.as_any().encode_to_vec())),
            )
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    fn stream_ready(
        &self,
        caller: &Caller,
        kind: StatementKind,
        ready: Ready,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let (schema, batches) = match ready {
            Ready::Plan { plan, task } => {
                let schema = wire_schema(&plan.schema());
                let stream = datafusion::physical_plan::execute_stream(plan, task)
                    .map_err(|e| to_status(e.into()))?;
                (schema, stream)
            }
            Ready::Done(r) => (wire_schema(&r.schema), r.into_stream()),
        };
        let rows = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = rows.clone();
        let user = caller.user.clone();
        let wire = schema.clone();
        let counted = batches
            .map(move |r| {
                if let Ok(b) = &r {
                    counter.fetch_add(b.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                r.map_err(|e| FlightError::Tonic(Box::new(df_status(&e))))
                    .and_then(|b| to_wire(b, &wire).map_err(FlightError::Arrow))
            })
            .chain(
                futures::stream::once(async move {
                    tracing::info!(target: "segdb::server", user = %user, kind = kind.name(), rows = rows.load(std::sync::atomic::Ordering::Relaxed), took_ms = started.elapsed().as_millis() as u64, "statement");
                })
                .filter_map(|()| futures::future::ready(None)),
            );
        Ok(batch_stream(schema, counted))
    }

    fn one_batch(&self, batch: RecordBatch) -> Response<DoGetStream> {
        let schema = batch.schema();
        batch_stream(schema, futures::stream::iter(vec![Ok(batch)]))
    }

    async fn table_rows(&self) -> Result<Vec<(String, String, String, SchemaRef)>, Status> {
        self.engine
            .refresh_segment_names()
            .await
            .map_err(to_status)?;
        let ctx = self.engine.session();
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let mut names = schema.table_names();
                names.sort();
                for name in names {
                    let Some(t) = schema.table(&name).await.map_err(|e| to_status(e.into()))?
                    else {
                        continue;
                    };
                    let ty = match t.table_type() {
                        _ if schema_name == crate::segment::table::SCHEMA => "SEGMENT",
                        datafusion::datasource::TableType::Base => "TABLE",
                        datafusion::datasource::TableType::View => "VIEW",
                        datafusion::datasource::TableType::Temporary => "LOCAL TEMPORARY",
                    };
                    out.push((schema_name.clone(), name, ty.to_string(), t.schema()));
                }
            }
        }
        Ok(out)
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
            values.push(ScalarValue::try_from_array(col, 0).map_err(|e| to_status(e.into()))?);
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
        sql: &str,
        params: Option<ParamValues>,
    ) -> Result<i64, Status> {
        let (kind, ready, _) = self.run(caller, sql, params).await?;
        Ok(match ready {
            Ready::Done(r) => affected(kind, &r),
            Ready::Plan { plan, task } => {
                let started = Instant::now();
                let batches = datafusion::physical_plan::collect(plan, task)
                    .await
                    .map_err(|e| df_status(&e))?;
                let r = QueryResult {
                    schema: Arc::new(Schema::empty()),
                    batches,
                };
                tracing::info!(target: "segdb::server", user = %caller.user, kind = kind.name(), rows = r.num_rows() as u64, took_ms = started.elapsed().as_millis() as u64, "statement");
                affected(kind, &r)
            }
        })
    }
}

/// Rows a statement affected: the single count a statement returns (FORGET's `forgotten`,
/// DataFusion DML's `count`); a query's row count; 0 for other DDL and settings.
fn affected(kind: StatementKind, r: &QueryResult) -> i64 {
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
    if kind == StatementKind::Query {
        r.num_rows() as i64
    } else {
        0
    }
}

/// The schema a result is sent with: view types become their plain equivalents. DataFusion
/// reads Parquet strings as views whose buffers are shared across batches, and IPC would send
/// the whole shared buffers with every batch (a 20M-row result grew ~5×); many clients
/// (JDBC among them) also do not read view types.
fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView))
    {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let t = match f.data_type() {
                DataType::Utf8View => DataType::Utf8,
                DataType::BinaryView => DataType::Binary,
                other => other.clone(),
            };
            f.as_ref().clone().with_data_type(t)
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Cast a batch to its wire schema (see [`wire_schema`]).
fn to_wire(batch: RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema_ref().fields() == wire.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(wire.clone(), columns)
}

fn batch_stream(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> Response<DoGetStream> {
    let s = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(Box::pin(s))
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(b) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(b)
}

/// `?` placeholders (ODBC/JDBC style) become DataFusion's `$1, $2, …`.
pub(crate) fn number_placeholders(sql: &str) -> String {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = sqlparser::dialect::GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return sql.to_string();
    };
    if !tokens
        .iter()
        .any(|t| matches!(t, Token::Placeholder(p) if p == "?"))
    {
        return sql.to_string();
    }
    let mut n = 0;
    tokens
        .into_iter()
        .map(|t| match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                format!("${n}")
            }
            other => other.to_string(),
        })
        .collect()
}

/// Map a segdb error to a gRPC status: bad input is InvalidArgument, the rest Internal.
pub(crate) fn to_status(e: crate::Error) -> Status {
    match &e {
        crate::Error::Invalid(_) | crate::Error::Ingest(_) => {
            Status::invalid_argument(one_line(&e.to_string()))
        }
        crate::Error::DataFusion(df) => df_status(df),
        _ => Status::internal(one_line(&e.to_string())),
    }
}

fn df_status(e: &DataFusionError) -> Status {
    let msg = one_line(&e.to_string());
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Status::invalid_argument(msg),
        DataFusionError::External(inner) => match inner.downcast_ref::<crate::Error>() {
            Some(crate::Error::Invalid(_)) => Status::invalid_argument(msg),
            _ => Status::internal(msg),
        },
        _ => Status::internal(msg),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
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
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let (token, caller) = self.auth.login(header).map_err(|d| {
            tracing::info!(target: "segdb::server", denied = %d, "handshake refused");
            Status::unauthenticated(d.to_string())
        })?;
        tracing::info!(target: "segdb::server", user = %caller.user, role = caller.role.name(), "handshake");
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
        let caller = self.caller(&request)?;
        let sql = number_placeholders(&query.query);
        let (kind, ready, schema) = self.run(&caller, &sql, None).await?;
        let info = self.park(&caller, kind, ready, &schema, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let (sql, params) = self.prepared_sql(&caller, &cmd.prepared_statement_handle)?;
        let (kind, ready, schema) = self.run(&caller, &sql, params).await?;
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
        let (kind, ready, _) = self.run(&caller, &sql, params).await?;
        self.stream_ready(&caller, kind, ready)
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request)?;
        let sql = number_placeholders(&cmd.query);
        self.update_count(&caller, &sql, None).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
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
        let caller = self.caller(&request)?;
        let (sql, bound) = self.prepared_sql(&caller, &cmd.prepared_statement_handle)?;
        let params = self.read_params(request).await?.or(bound);
        self.update_count(&caller, &sql, params).await
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        use arrow_flight::sql::TableExistsOption;
        let caller = self.caller(&request)?;
        if !caller.role.may_ingest() {
            return Err(Status::permission_denied(format!(
                "role {} may not ingest",
                caller.role.name()
            )));
        }
        let kind = match cmd.table.to_ascii_lowercase().as_str() {
            "events" => Kind::Events,
            "profiles" => Kind::Profiles,
            "consent" => Kind::Consent,
            other => {
                return Err(Status::invalid_argument(format!(
                    "bulk ingest loads events, profiles or consent, not {other:?}"
                )));
            }
        };
        if cmd.temporary {
            return Err(Status::invalid_argument(
                "segdb has no temporary tables; ingest into events, profiles or consent",
            ));
        }
        if cmd
            .schema
            .as_deref()
            .is_some_and(|s| !s.is_empty() && s != crate::engine::SCHEMA)
            || cmd
                .catalog
                .as_deref()
                .is_some_and(|c| !c.is_empty() && c != crate::engine::CATALOG)
        {
            return Err(Status::invalid_argument(format!(
                "segdb's tables live in {}.{}",
                crate::engine::CATALOG,
                crate::engine::SCHEMA
            )));
        }
        if cmd
            .table_definition_options
            .as_ref()
            .is_some_and(|o| o.if_exists == TableExistsOption::Replace as i32)
        {
            return Err(Status::invalid_argument(
                "bulk ingest appends (profiles are upserted); replacing a table is not supported",
            ));
        }
        let started = Instant::now();
        let batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        )
        .map_err(|e| crate::Error::ingest(format!("cannot read the batches: {e}")));
        let opts = IngestOptions {
            strict: true,
            ..Default::default()
        };
        let report = self
            .engine
            .ingest_batches(kind, "the ingested batches", batches, &opts)
            .await;
        let report = report.map_err(to_status)?;
        tracing::info!(target: "segdb::server", user = %caller.user, kind = "ingest", table = kind.name(), rows = report.rows_loaded, took_ms = started.elapsed().as_millis() as u64, "statement");
        Ok(report.rows_loaded as i64)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        let sql = number_placeholders(&query.query);
        let kind = classify(&sql);
        self.allow(&caller, kind)?;
        // A query is planned now for its schemas; other statements run at execution only.
        let (dataset_schema, parameter_schema) = if kind == StatementKind::Query {
            let fork = self.fork(&caller)?;
            let plan = fork
                .session()
                .state()
                .create_logical_plan(crate::engine::strip_leading_comments(&sql))
                .await;
            match plan {
                Ok(plan) => {
                    let params = plan
                        .get_parameter_types()
                        .map_err(|e| to_status(e.into()))?;
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
                // SHOW SEGMENTS, DESCRIBE SEGMENT …: not DataFusion SQL; read-only, run it.
                Err(_) => {
                    let planned = fork.plan(&sql, None).await.map_err(to_status)?;
                    (ipc_schema(&planned.schema())?, bytes::Bytes::new())
                }
            }
        } else {
            (bytes::Bytes::new(), bytes::Bytes::new())
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
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.meta_info(&query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut b = query.into_builder();
        for c in self.engine.session().catalog_names() {
            b.append(c);
        }
        Ok(self.one_batch(b.build().map_err(|e| Status::internal(e.to_string()))?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.meta_info(&query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut b = query.into_builder();
        let ctx = self.engine.session();
        for c in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&c) {
                let mut names = catalog.schema_names();
                names.sort();
                for s in names {
                    b.append(&c, s);
                }
            }
        }
        Ok(self.one_batch(b.build().map_err(|e| Status::internal(e.to_string()))?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.meta_info(&query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut b = query.into_builder();
        for (schema, name, ty, table_schema) in self.table_rows().await? {
            // The schema clients will receive: strings as Utf8 (see `wire_schema`).
            b.append(
                crate::engine::CATALOG,
                schema,
                name,
                ty,
                &wire_schema(&table_schema),
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        }
        Ok(self.one_batch(b.build().map_err(|e| Status::internal(e.to_string()))?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder().schema();
        self.meta_info(&query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let mut b = query.into_builder();
        for t in ["LOCAL TEMPORARY", "SEGMENT", "TABLE", "VIEW"] {
            b.append(t);
        }
        Ok(self.one_batch(b.build().map_err(|e| Status::internal(e.to_string()))?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder(&self.info_rw).schema();
        self.meta_info(&query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let data = if caller.role == super::auth::Role::Reader {
            &self.info_ro
        } else {
            &self.info_rw
        };
        let batch = query
            .into_builder(data)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(self.one_batch(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        let schema = query.clone().into_builder(&self.xdbc).schema();
        self.meta_info(&query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request)?;
        let batch = query
            .into_builder(&self.xdbc)
            .build()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(self.one_batch(batch))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        self.meta_info(
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
        self.caller(&request)?;
        Ok(self.one_batch(RecordBatch::new_empty(
            super::metadata::primary_keys_schema(),
        )))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        self.meta_info(
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
        self.caller(&request)?;
        Ok(self.one_batch(RecordBatch::new_empty(
            super::metadata::foreign_keys_schema(),
        )))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        self.meta_info(
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
        self.caller(&request)?;
        Ok(self.one_batch(RecordBatch::new_empty(
            super::metadata::foreign_keys_schema(),
        )))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        self.meta_info(
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
        self.caller(&request)?;
        Ok(self.one_batch(RecordBatch::new_empty(
            super::metadata::foreign_keys_schema(),
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            number_placeholders("SELECT ? + 1, '?' FROM t WHERE a = ?"),
            "SELECT $1 + 1, '?' FROM t WHERE a = $2"
        );
        assert_eq!(number_placeholders("SELECT $1"), "SELECT $1");
    }

    #[test]
    fn errors_map_to_status_codes() {
        let e = crate::Error::invalid("bad");
        assert_eq!(to_status(e).code(), tonic::Code::InvalidArgument);
        let e = crate::Error::DataFusion(DataFusionError::Plan("no such table".into()));
        assert_eq!(to_status(e).code(), tonic::Code::InvalidArgument);
        let e = crate::Error::storage("disk gone");
        assert_eq!(to_status(e).code(), tonic::Code::Internal);
    }
}
