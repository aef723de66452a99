//! `segdb serve`: an Arrow Flight SQL server over one engine.
//!
//! [`auth`] holds users, roles and tokens; [`sessions`] one DataFusion session per token;
//! [`service`] implements `arrow_flight::sql::server::FlightSqlService` over them; [`wire`] is
//! how results are encoded; [`ingest`] is bulk ingest; [`metadata`] the catalog listings and
//! the static GetSqlInfo and GetXdbcTypeInfo answers.

pub mod auth;
pub mod ingest;
pub mod metadata;
pub mod service;
pub mod sessions;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;

use crate::engine::Engine;
use crate::error::{Error, Result};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0 picks a free port).
    pub addr: SocketAddr,
    /// Users, roles and token lifetime.
    pub config: PathBuf,
    /// Accept every call as an admin, without credentials.
    pub insecure_no_auth: bool,
    /// PEM certificate chain and key: serve TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where to listen for HTTP (the collector), if at all.
    pub http: Option<SocketAddr>,
}

/// Serve until SIGINT or SIGTERM. `on_listen` is called with the bound address once the server
/// accepts connections.
pub async fn serve(
    engine: Engine,
    opts: &ServeOptions,
    on_listen: impl FnOnce(SocketAddr, Option<SocketAddr>),
) -> Result<()> {
    let config = auth::ServerConfig::load(&opts.config)?;
    let authenticator = Arc::new(auth::Authenticator::new(&config, opts.insecure_no_auth));
    if opts.insecure_no_auth {
        tracing::warn!(target: "segdb::server", "AUTHENTICATION IS OFF (--insecure-no-auth): every caller is an admin");
        eprintln!(
            "WARNING: --insecure-no-auth: authentication is off, every caller is an admin. Do not expose this server."
        );
    } else if authenticator.user_count() == 0 {
        return Err(Error::invalid(format!(
            "no users in {}: add one with `segdb user add NAME --role admin --config {}` (or pass --insecure-no-auth on a trusted machine)",
            opts.config.display(),
            opts.config.display()
        )));
    }
    *engine
        .shared()
        .export_allowed
        .write()
        .expect("not poisoned") = Some(config.export.allowed_urls.clone());
    engine.shared().max_ids_per_profile.store(
        config.identity.max_ids_per_profile,
        std::sync::atomic::Ordering::Relaxed,
    );
    let collector_settings = config.apply_to(engine.shared())?;
    let service = service::SegdbFlightSql::new(engine.shared().clone(), authenticator.clone());
    let inflight = service.inflight();
    // Materialised segments refresh on their schedules while the server runs.
    let scheduler_session = Arc::new(engine.new_session("scheduler")?);
    let (sched_tx, sched_rx) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(crate::materialize::scheduler::run(
        engine.shared().segments.clone(),
        scheduler_session.contexts(),
        config.scheduler.max_concurrent,
        config.live.settings()?,
        sched_rx.clone(),
    ));
    // Webhook and segment exports deliver while the server runs.
    let deliveries = tokio::spawn(crate::materialize::deliver::run(
        engine.shared().segments.clone(),
        Arc::new(engine.new_session("deliveries")?).contexts(),
        config.export.delivery()?,
        sched_rx,
    ));
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", opts.addr)))?;
    let local = listener.local_addr()?;
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &opts.tls {
        // Several crypto providers are linked in; pick one for the whole process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| Error::invalid(format!("cannot read {}: {e}", p.display())))
        };
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::invalid(format!("TLS setup failed: {e}")))?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let server = builder
        .add_service(
            FlightServiceServer::new(service)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .serve_with_incoming_shutdown(
            // No Nagle: small replies (handshakes, FlightInfo) must not wait for delayed ACKs.
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            shutdown,
        );
    tracing::info!(target: "segdb::server", addr = %local, tls = opts.tls.is_some(), "listening");
    let (http_stop_tx, http_stop_rx) = tokio::sync::watch::channel(false);
    let mut http_addr = None;
    let mut background = Vec::new();
    if let Some(addr) = opts.http {
        let http = crate::http::Http::bind(
            &engine,
            addr,
            opts.tls.as_ref(),
            collector_settings.clone(),
            authenticator.clone(),
            &config.http,
        )
        .await?;
        http_addr = Some(http.local_addr()?);
        tracing::info!(target: "segdb::http", addr = %http_addr.expect("bound"), "listening");
        background.push(tokio::spawn(http.serve(http_stop_rx.clone())));
        background.push(tokio::spawn(compact_on_schedule(
            engine.shared().clone(),
            collector_settings.clone(),
            http_stop_rx,
        )));
    }
    on_listen(local, http_addr);
    let signals = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(|e| Error::invalid(format!("server failed: {e}"))),
        _ = signals => {}
    }
    // Stop accepting; calls in flight get a grace period, then their streams are dropped
    // (which cancels the queries behind them). Idle connections do not hold the shutdown up.
    tracing::info!(target: "segdb::server", calls = inflight.count(), "shutting down: waiting up to 10 s for calls in flight");
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if inflight.count() == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(target: "segdb::server", calls = inflight.count(), "calls still running after 10 s were cancelled");
            break;
        }
        tokio::select! {
            r = &mut server => {
                r.map_err(|e| Error::invalid(format!("server failed: {e}")))?;
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let _ = http_stop_tx.send(true);
    for b in background {
        let _ = tokio::time::timeout(Duration::from_secs(10), b).await;
    }
    let _ = sched_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), scheduler).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), deliveries).await;
    tracing::info!(target: "segdb::server", "stopped");
    Ok(())
}

/// `[collector] compact_every`: compact every table while the collector has committed since the
/// last run (OPTIMIZE without a table).
async fn compact_on_schedule(
    shared: Arc<crate::session::Shared>,
    settings: crate::collector::Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    let every = settings.compact_every;
    let mut done_at = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = crate::http::stopped(&mut stop) => return,
        }
        let commits = shared.collector.commits.load(Ordering::Relaxed);
        if commits == done_at {
            continue;
        }
        done_at = commits;
        let mb = shared.target_file_mb.load(Ordering::Relaxed);
        if let Err(e) =
            crate::collector::commit::prune_log(&shared.db, settings.dedup_window_micros).await
        {
            tracing::warn!(target: "segdb::server", error = %e, "could not prune the collector's dedup log; it runs again at the next interval");
        }
        for t in crate::storage::Table::BASE
            .into_iter()
            .chain(crate::storage::Table::ENGINE)
        {
            if let Err(e) = crate::storage::optimize::optimize(&shared.db, t, mb).await {
                tracing::warn!(target: "segdb::server", table = t.name(), error = %e, "scheduled compaction failed; it runs again at the next interval");
            }
        }
        shared.db.forget_handles().await;
    }
}
