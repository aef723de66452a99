//! The collector's routes: decode, authenticate, map, then wait for the commit (DESIGN §14).
//! A request is answered `{"success":true}` only after every message in it is committed.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::State;
use crate::collector::commit::Refusal;
use crate::collector::map;
use crate::collector::stats::Reject;
use crate::collector::wire::{self, Call, WireError};

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn failure(e: WireError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = json(status, e.body());
    if e.status == 429 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}

fn ok() -> Response {
    json(StatusCode::OK, r#"{"success":true}"#.into())
}

/// `POST /v1/{call}`.
pub(super) async fn collect(
    Extract(state): Extract<Arc<State>>,
    Path(call): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(call) = wire::call_of(&format!("/v1/{call}")) else {
        return failure(WireError::new(
            404,
            "not_found",
            "no such collector path; use /v1/track, identify, page, screen, group, alias or batch",
        ));
    };
    handle(&state, call, &uri, &headers, body).await
}

/// `POST /beacon/v1/batch?writeKey=…` (RudderStack's beacon: `text/plain`, no auth header).
pub(super) async fn collect_beacon(
    Extract(state): Extract<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&state, Call::Batch, &uri, &headers, body).await
}

/// Any other path.
pub(super) async fn not_found() -> Response {
    failure(WireError::new(
        404,
        "not_found",
        "no such path; the collector takes POST /v1/track|identify|page|screen|group|alias|batch|import",
    ))
}

/// A known path with another method.
pub(super) async fn method_not_allowed() -> Response {
    failure(WireError::new(
        405,
        "method_not_allowed",
        "this path takes POST (GET for /sourceConfig/, /healthz and /metrics)",
    ))
}

/// `POST /v1/m`: the browser SDK's own metrics, accepted and ignored.
pub(super) async fn metrics_beacon() -> Response {
    ok()
}

/// `GET /metrics` (Prometheus text format).
pub(super) async fn metrics(Extract(state): Extract<Arc<State>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.collector.stats().prometheus(),
    )
        .into_response()
}

/// `GET /sourceConfig/`: what RudderStack's browser SDK asks first.
pub(super) async fn source_config(
    Extract(state): Extract<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let key = header_key(&uri, &headers);
    let source = match key {
        Some(k) => state.keys.source_of(&k).await,
        None => Ok(None),
    };
    match source {
        Ok(Some(name)) => json(
            StatusCode::OK,
            serde_json::json!({"source": {"id": name, "config": {}, "enabled": true, "destinations": []}})
                .to_string(),
        ),
        Ok(None) => failure(WireError::unauthorized()),
        Err(e) => unavailable(&e.to_string()),
    }
}

fn header_key(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    wire::basic_key(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
    .or_else(|| wire::query_key(uri.query()))
}

fn unavailable(why: &str) -> Response {
    tracing::warn!(target: "segdb::http", error = why, "collector request answered 503");
    failure(WireError::new(
        503,
        "unavailable",
        "the events could not be stored; nothing was acknowledged, retry later",
    ))
}

async fn handle(state: &State, call: Call, uri: &Uri, headers: &HeaderMap, body: Body) -> Response {
    let read = axum::body::to_bytes(body, wire::MAX_REQUEST_BYTES + 1);
    let bytes: Bytes = match tokio::time::timeout(super::BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => b,
        Err(_) => {
            return failure(WireError::invalid_json(format!(
                "the body did not arrive within {} s",
                super::BODY_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(_)) => {
            return failure(WireError::too_large(format!(
                "the request is larger than {} KB",
                wire::MAX_REQUEST_BYTES / 1024
            )));
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let decoded = match wire::decode_body(encoding, &bytes) {
        Ok(d) => d,
        Err(e) => return failure(e),
    };
    let req = match wire::parse(call, &decoded, header_key(uri, headers)) {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let source = match &req.key {
        Some(k) => match state.keys.source_of(k).await {
            Ok(Some(s)) => s,
            Ok(None) => return failure(WireError::unauthorized()),
            Err(e) => return unavailable(&e.to_string()),
        },
        None => return failure(WireError::unauthorized()),
    };
    let received_at = chrono::Utc::now().timestamp_micros();
    let stats = state.collector.stats();
    stats.seen(&source, received_at);
    let declared = state.collector.declared();
    let mut mapped = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        match map::map(m, received_at, req.sent_at.as_ref(), &declared) {
            Ok(x) => mapped.push(x),
            Err(r) => stats.reject(Reject {
                at: received_at,
                source: source.clone(),
                reason: r.reason,
                kind: r.kind.map(str::to_string),
                field: r.field,
            }),
        }
    }
    match state.collector.submit(&source, received_at, mapped).await {
        Ok(()) => ok(),
        Err(Refusal::Busy) => failure(WireError::new(
            429,
            "rate_limited",
            "too many events are waiting to be stored; retry after a second",
        )),
        Err(Refusal::Unavailable(why)) => unavailable(&why),
    }
}
