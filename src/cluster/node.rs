//! The server roles of a cluster: `segdb scheduler` and `segdb executor`. Both open the database
//! of their own `--data` with their own `--keyring` (the keyring's fingerprint is checked against
//! the database's marker, as every command does): the scheduler plans the Parquet scans, the
//! executors read the files and run segdb's functions — `pseudonymize` with the executor's own
//! keys, since keys never travel in a plan (Ballista's gRPC is plaintext).

use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::{
    SessionConfigExt, ballista_aggregate_functions, ballista_scalar_functions,
    ballista_window_functions,
};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::{ConfigProducer, RuntimeProducer};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::SessionBuilder;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use ballista_scheduler::scheduler_process::create_scheduler;
use datafusion::execution::context::SessionConfig;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer;
use ballista_executor::ArrowFlightServerProvider;
use ballista_executor::flight_service::BallistaFlightService;
use tonic::service::interceptor::InterceptedService;

use super::auth::ClusterSecret;
use crate::error::{Error, Result};
use crate::privacy::Keyring;
use crate::segment::options::SegdbOptions;
use crate::storage::Database;

/// gRPC message limit on every hop (plans carry file lists, suppression bitmaps and collected
/// rows; results carry view arrays).
pub const MAX_MESSAGE: usize = 256 << 20;

fn cluster_err(e: impl std::fmt::Display) -> Error {
    Error::Cluster(e.to_string())
}

/// The session config of the scheduler's and executors' sessions before the client's settings
/// are applied: Ballista's, with segdb's settings namespace known (so `segdb.*` keys arrive),
/// and the cluster secret on the clients its tasks make (shuffle fetches).
fn config_producer(secret: &ClusterSecret) -> ConfigProducer {
    let endpoint = secret.endpoint_override();
    Arc::new(move || {
        SessionConfig::new_with_ballista()
            .with_option_extension(SegdbOptions::default())
            .with_ballista_override_create_grpc_client_endpoint(endpoint.clone())
    })
}

/// A runtime that reads the database's object store (and spills under `temp`, if given).
fn runtime(db: &Database, temp: Option<PathBuf>) -> Result<Arc<RuntimeEnv>> {
    let mut b = RuntimeEnvBuilder::new();
    if let Some(t) = temp {
        b = b.with_temp_file_path(t);
    }
    let rt = b.build()?;
    crate::storage::provider::register_store(db, &rt);
    Ok(Arc::new(rt))
}

/// Run the scheduler on `listener` until the process ends. `cleanup_after` is how long after
/// a job ends its shuffle files are deleted from the executors (long enough for the client to
/// fetch the result).
pub async fn run_scheduler(
    db: Database,
    keyring: Arc<Keyring>,
    listener: tokio::net::TcpListener,
    cleanup_after: u64,
    secret: ClusterSecret,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let rt = runtime(&db, None)?;
    let builder: SessionBuilder = Arc::new(move |cfg: SessionConfig| {
        let mut scalars = ballista_scalar_functions();
        scalars.extend(
            crate::functions::scalar_functions(keyring.clone())
                .into_iter()
                .map(Arc::new),
        );
        let mut aggregates = ballista_aggregate_functions();
        aggregates.extend(
            crate::functions::aggregate_functions()
                .into_iter()
                .map(Arc::new),
        );
        Ok(SessionStateBuilder::new()
            .with_default_features()
            .with_config(cfg)
            .with_runtime_env(rt.clone())
            .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
            .with_scalar_functions(scalars)
            .with_aggregate_functions(aggregates)
            .with_window_functions(ballista_window_functions())
            .build())
    });
    let config = SchedulerConfig {
        external_host: addr.ip().to_string(),
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        scheduling_policy: TaskSchedulingPolicy::PullStaged,
        task_distribution: TaskDistributionPolicy::RoundRobin,
        finished_job_data_clean_up_interval_seconds: cleanup_after.max(1),
        grpc_server_max_decoding_message_size: MAX_MESSAGE as u32,
        grpc_server_max_encoding_message_size: MAX_MESSAGE as u32,
        grpc_client_max_message_size: MAX_MESSAGE as u32,
        override_session_builder: Some(builder),
        override_config_producer: Some(config_producer(&secret)),
        override_logical_codec: Some(Arc::new(super::codec::SegdbLogicalCodec::default())),
        override_create_grpc_client_endpoint: Some(secret.endpoint_override()),
        ..Default::default()
    };
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(cluster_err)?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(cluster_err)?;
    // Ballista's own server has no hook for a check on every call: segdb serves the scheduler's
    // gRPC service itself, behind the secret (Ballista's embedded flight proxy, REST and health
    // routes, all off or unused here, are not served).
    let service = SchedulerGrpcServer::new(scheduler)
        .max_encoding_message_size(MAX_MESSAGE)
        .max_decoding_message_size(MAX_MESSAGE);
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(service, secret.interceptor()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
        .map_err(cluster_err)
}

/// How to run one executor.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler_host: String,
    pub scheduler_port: u16,
    pub bind_host: String,
    /// Arrow Flight port (shuffle and results).
    pub port: u16,
    /// gRPC port (advertised; only used by push scheduling, which segdb does not use).
    pub grpc_port: u16,
    pub vcores: usize,
    /// Dedicated to this executor: shuffle files, spills. Job directories are deleted when the
    /// scheduler says the job is done, and swept after an hour if it never does.
    pub work_dir: PathBuf,
    /// Bytes of memory for the executor's tasks (None: 70 % of the machine's).
    pub memory_pool_size: Option<u64>,
    /// The cluster's shared secret: required on every call to this executor, sent on every
    /// call it makes.
    pub secret: ClusterSecret,
}

/// Run one executor until SIGINT/SIGTERM (or its services stop).
pub async fn run_executor(db: Database, keyring: Arc<Keyring>, o: ExecutorOptions) -> Result<()> {
    std::fs::create_dir_all(&o.work_dir)?;
    let mut st = SessionStateBuilder::new().with_default_features().build();
    for f in crate::functions::scalar_functions(keyring) {
        st.register_udf(Arc::new(f))?;
    }
    for a in crate::functions::aggregate_functions() {
        st.register_udaf(Arc::new(a))?;
    }
    let registry = BallistaFunctionRegistry::from(&st);
    let work = o.work_dir.clone();
    let runtime_producer: RuntimeProducer = Arc::new(move |_cfg: &SessionConfig| {
        runtime(&db, Some(work.clone()))
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
    });
    let config = ExecutorProcessConfig {
        bind_host: o.bind_host.clone(),
        external_host: Some(o.bind_host.clone()),
        port: o.port,
        grpc_port: o.grpc_port,
        scheduler_host: o.scheduler_host.clone(),
        scheduler_port: o.scheduler_port,
        scheduler_connect_timeout_seconds: 0,
        vcores: o.vcores,
        task_scheduling_policy: TaskSchedulingPolicy::PullStaged,
        work_dir: Some(o.work_dir.to_string_lossy().into_owned()),
        job_data_clean_up_interval_seconds: 600,
        job_data_ttl_seconds: 3600,
        grpc_max_decoding_message_size: MAX_MESSAGE as u32,
        grpc_max_encoding_message_size: MAX_MESSAGE as u32,
        memory_pool_size: o.memory_pool_size,
        override_function_registry: Some(Arc::new(registry)),
        override_runtime_producer: Some(runtime_producer),
        override_config_producer: Some(config_producer(&o.secret)),
        override_logical_codec: Some(Arc::new(super::codec::SegdbLogicalCodec::default())),
        override_create_grpc_client_endpoint: Some(o.secret.endpoint_override()),
        override_arrow_flight_service: Some(flight_service(o.secret.clone())),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(cluster_err)
}

/// The executor's Arrow Flight service (shuffle and result fetches), as Ballista's own but
/// behind the cluster secret.
fn flight_service(secret: ClusterSecret) -> Arc<ArrowFlightServerProvider> {
    Arc::new(
        move |work_dir: String,
              addr: std::net::SocketAddr,
              mut shutdown: ballista_executor::shutdown::Shutdown,
              grpc: ballista_core::utils::GrpcServerConfig| {
            let check = secret.interceptor();
            tokio::spawn(async move {
                let flight = FlightServiceServer::new(BallistaFlightService::new(work_dir))
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                ballista_core::utils::create_grpc_server(&grpc)
                    .add_service(InterceptedService::new(flight, check))
                    .serve_with_shutdown(addr, shutdown.recv())
                    .await
                    .map_err(ballista_core::error::BallistaError::TonicError)
            })
        },
    )
}
