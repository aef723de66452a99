//! The HTTP listener of `segdb serve` (`--http`, DESIGN §14): the collector (`/v1/…`,
//! `/beacon/v1/batch`, `/sourceConfig/`), the profile API (`/v1/auth/token`, `/v1/profiles/…`,
//! DESIGN §15), the web console (`/`, `/assets/…`, `/api/…`, DESIGN §16), `/healthz` and
//! `/metrics`. One accept loop serves plain
//! HTTP/1.1 or, with the server's `--tls-cert/--tls-key`, HTTPS.

mod collect;
pub mod console;
mod profiles;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::collector::commit::Collector;
use crate::collector::sources::Keys;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// `[http]` of the config file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on (`--http` and `SEGDB_HTTP` win).
    pub listen: Option<String>,
    /// Rows one console `/api/sql` answer carries at most (default 10,000; `truncated` says
    /// when there were more).
    pub max_rows: Option<usize>,
    /// Serve the web console (`/`, `/assets/…`, `/api/…`); default true. `false` leaves this
    /// listener to the collector and the profile API (a public collector endpoint, say).
    pub console: Option<bool>,
}

/// Open connections at most.
const MAX_CONNECTIONS: usize = 10_000;
/// How long a client has for its TLS handshake and for each request head.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a client has to send a request body.
pub(crate) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the routes share.
pub(crate) struct State {
    pub(crate) collector: Arc<Collector>,
    pub(crate) keys: Keys,
    /// Users and tokens, shared with Flight SQL (the profile API's bearer tokens).
    pub(crate) auth: Arc<dyn Tokens>,
    /// The profile API's in-memory membership.
    pub(crate) lookup: Arc<crate::materialize::lookup::Lookup>,
    /// The web console's sessions.
    pub(crate) console: console::Console,
}

/// Why a login or a token was refused.
#[derive(Debug)]
pub enum Refused {
    /// No credentials at all.
    Missing,
    /// Wrong, unknown or expired credentials (the message says which, naming no secret).
    Bad(String),
    /// Too many failed logins: try again after this long.
    Throttled(std::time::Duration),
}

/// Users and bearer tokens, as the server's authenticator keeps them (the same tokens as Flight
/// SQL's handshake).
pub trait Tokens: Send + Sync {
    /// Check `authorization: Basic …` from `address` and issue a token: (token, user, role).
    fn login(
        &self,
        header: Option<&str>,
        address: &str,
    ) -> std::result::Result<(String, String, &'static str), Refused>;
    /// Check `authorization: Bearer …`.
    fn check(&self, header: Option<&str>) -> std::result::Result<(), Refused>;
    /// The user and role of a live token (the console's session cookie).
    fn caller(&self, token: &str)
    -> std::result::Result<(String, crate::statement::Role), Refused>;
    /// End a token before it expires (a console logout).
    fn revoke(&self, token: &str);
    /// Whether authentication is off (`--insecure-no-auth`).
    fn is_open(&self) -> bool;
    /// How long a token lives.
    fn ttl(&self) -> std::time::Duration;
}

/// The client address of a connection (for login throttling).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// A bound HTTP listener, ready to serve.
pub struct Http {
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    lookup: Arc<crate::materialize::lookup::Lookup>,
}

impl Http {
    /// Bind `addr`, read the TLS files, start the collector's committer.
    pub async fn bind(
        engine: &Engine,
        addr: SocketAddr,
        tls: Option<&(PathBuf, PathBuf)>,
        settings: crate::collector::Settings,
        auth: Arc<dyn Tokens>,
        console: &HttpConfig,
    ) -> Result<Http> {
        let max_rows = console.max_rows.unwrap_or(console::DEFAULT_MAX_ROWS);
        let with_console = console.console.unwrap_or(true);
        let tls = match tls {
            Some((cert, key)) => Some(acceptor(cert, key)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::invalid(format!("cannot listen for HTTP on {addr}: {e}")))?;
        let shared = engine.shared();
        let log = crate::collector::commit::logged(&shared.db).await?;
        let recent = recent_event_ids(engine, log.last().map(|(_, at)| *at)).await?;
        let collector = Collector::start(
            shared.db.clone(),
            shared.keyring.clone(),
            settings.clone(),
            shared.collector.clone(),
            log,
            recent,
            shared
                .max_ids_per_profile
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .await?;
        let lookup = crate::materialize::lookup::Lookup::new(
            shared.segments.clone(),
            Arc::new(engine.new_session("lookup")?).contexts(),
        );
        let state = Arc::new(State {
            collector,
            keys: Keys::new(shared.db.clone(), &shared.keyring),
            auth,
            lookup: lookup.clone(),
            console: console::Console::new(shared.clone(), max_rows, tls.is_some()),
        });
        Ok(Http {
            listener,
            router: router(state, &settings, with_console),
            tls,
            lookup,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `stop` turns true.
    pub async fn serve(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Http {
            listener,
            router,
            tls,
            lookup,
        } = self;
        // The profile API's membership follows new versions in the background.
        tokio::spawn(lookup.follow(stop.clone()));
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let (stream, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(target: "segdb::http", error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => return,
            };
            // Beyond MAX_CONNECTIONS open connections a new one is closed at once.
            let Ok(permit) = open.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone().layer(axum::Extension(Peer(peer)));
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let service = hyper_util::service::TowerToHyperService::new(router);
                let mut http = hyper::server::conn::http1::Builder::new();
                // A client must send its request head within HEADER_TIMEOUT (slow clients do
                // not hold connections open forever).
                http.timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                let r = match tls {
                    Some(acceptor) => {
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                http.serve_connection(hyper_util::rt::TokioIo::new(s), service)
                                    .await
                            }
                            _ => return,
                        }
                    }
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await
                    }
                };
                if let Err(e) = r {
                    tracing::debug!(target: "segdb::http", error = %e, "connection ended with an error");
                }
            });
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn acceptor(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<std::result::Result<_, _>>())
        .map_err(|e| Error::invalid(format!("cannot read {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::invalid(format!("cannot read {}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::invalid(format!("TLS setup failed: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn router(state: Arc<State>, settings: &crate::collector::Settings, with_console: bool) -> Router {
    use axum::http::{HeaderName, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = if settings.cors_origins.iter().any(|o| o == "*") {
        // Any origin, echoed back (no cookies are accepted either way).
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            settings
                .cors_origins
                .iter()
                .filter_map(|o| o.parse().ok())
                .collect::<Vec<_>>(),
        )
    };
    let cors = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            HeaderName::from_static("x-retry-count"),
            HeaderName::from_static("anonymousid"),
            HeaderName::from_static("sentat"),
            HeaderName::from_static("rsa-request-id"),
            HeaderName::from_static("rsa-api-key"),
            HeaderName::from_static("rsa-sdk-version"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(std::time::Duration::from_secs(600));
    // CORS outermost, so a preflight is answered before routing (and on every path).
    let routes = if with_console {
        Router::new()
            .route("/", get(console::index))
            .route("/assets/{name}", get(console::asset))
            .route("/api/login", post(console::login))
            .route("/api/logout", post(console::logout))
            .route("/api/me", get(console::me))
            .route("/api/sql", post(console::sql))
    } else {
        Router::new()
    };
    routes
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(collect::metrics))
        .route("/v1/m", post(collect::metrics_beacon))
        .route("/v1/auth/token", post(profiles::token))
        .route("/v1/profiles/segments", post(profiles::segments_post))
        .route("/v1/profiles/{id}/segments", get(profiles::segments_get))
        .route("/v1/profiles/{id}/traits", get(profiles::traits))
        .route("/v1/{call}", post(collect::collect))
        .route("/v1/{call}/", post(collect::collect))
        .route("/beacon/v1/batch", post(collect::collect_beacon))
        .route("/sourceConfig", get(collect::source_config))
        .route("/sourceConfig/", get(collect::source_config))
        .fallback(collect::not_found)
        .method_not_allowed_fallback(collect::method_not_allowed)
        .with_state(state)
        .layer(cors)
}

/// The `(source, message_id, received_at)` of collected events newer than the last entry of
/// `_segdb/collected` (less ten minutes): a crash between the events commit and the log's commit
/// leaves them only there.
async fn recent_event_ids(
    engine: &Engine,
    last_logged: Option<i64>,
) -> Result<Vec<(String, String, i64)>> {
    use arrow::array::{Array, AsArray};
    let db = &engine.shared().db;
    let events = db.load(crate::storage::Table::Events).await?;
    let schema = events.snapshot()?.snapshot().arrow_schema();
    if ["source", "message_id", "received_at"]
        .iter()
        .any(|c| schema.field_with_name(c).is_err())
    {
        return Ok(Vec::new());
    }
    let since = match last_logged {
        Some(at) => at - 600_000_000,
        None => i64::MIN / 2,
    };
    let session = engine.new_session("collector")?;
    let sql = format!(
        "SELECT source, message_id, CAST(received_at AS BIGINT) AS at FROM events \
         WHERE message_id IS NOT NULL AND source IS NOT NULL \
         AND received_at >= to_timestamp_micros({since})"
    );
    let r = session.sql(&sql).await?;
    let mut out = Vec::new();
    for b in &r.batches {
        let s = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let m = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)?;
        let at = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Int64)?;
        let (s, m, at) = (
            s.as_string::<i32>(),
            m.as_string::<i32>(),
            at.as_primitive::<arrow::datatypes::Int64Type>(),
        );
        for i in 0..b.num_rows() {
            if s.is_valid(i) && m.is_valid(i) {
                out.push((s.value(i).to_string(), m.value(i).to_string(), at.value(i)));
            }
        }
    }
    Ok(out)
}
