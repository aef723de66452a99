//! The profile API (DESIGN §15): `POST /v1/auth/token`, `GET /v1/profiles/{id}/segments`,
//! `POST /v1/profiles/segments` (one id or a batch) and `GET /v1/profiles/{id}/traits`.
//!
//! Every role may call it (`lookup` may call nothing else). Raw ids are pseudonymised in memory
//! and never logged; an unknown and a forgotten id both answer 404 `{"error":"unknown
//! profile"}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Peer, Refused, State};
use crate::materialize::lookup::View;

/// Ids one batch request may ask for at most.
const MAX_BATCH: usize = 1_000;

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    answer(status, json!({ "error": message }))
}

fn unknown() -> Response {
    error(StatusCode::NOT_FOUND, "unknown profile")
}

fn denied(d: Refused) -> Response {
    let mut r = error(
        if matches!(d, Refused::Throttled(_)) {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::UNAUTHORIZED
        },
        &match &d {
            Refused::Missing => {
                "no credentials: POST /v1/auth/token with Basic user:password, then send Authorization: Bearer <token>".to_string()
            }
            Refused::Bad(m) => m.clone(),
            Refused::Throttled(w) => format!(
                "too many failed logins for this user name from this address; try again in {} s",
                w.as_secs().max(1)
            ),
        },
    );
    if let Refused::Throttled(wait) = d
        && let Ok(v) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The bearer token of a call (every role may use the profile API).
fn check(state: &State, headers: &HeaderMap) -> Result<(), Response> {
    state.auth.check(authorization(headers)).map_err(denied)
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The `purpose` query parameter.
fn purpose_of(uri: &Uri) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(k, _)| k == "purpose")
        .map(|(_, v)| v.into_owned())
}

/// The current view, or 503 when it cannot be read.
async fn view(state: &State) -> Result<Arc<View>, Response> {
    state.lookup.view().await.map_err(|e| {
        tracing::warn!(target: "segdb::http", error = %e, "profile lookup failed");
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the segment versions could not be read; try again",
        )
    })
}

/// `POST /v1/auth/token`: Basic `user:password` → a bearer token.
pub(super) async fn token(
    Extract(state): Extract<Arc<State>>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let header = authorization(&headers).map(str::to_string);
    if header.is_none() {
        return denied(Refused::Missing);
    }
    let auth = state.auth.clone();
    // The password check is CPU work: off the async workers.
    let r = tokio::task::spawn_blocking(move || {
        auth.login(header.as_deref(), &peer.0.ip().to_string())
    })
    .await;
    match r {
        Ok(Ok((token, user, role))) => {
            tracing::info!(target: "segdb::http", user = %user, role, "token issued");
            answer(
                StatusCode::OK,
                json!({ "token": token, "expires_in": state.auth.ttl().as_secs() }),
            )
        }
        Ok(Err(d)) => denied(d),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the login could not run"),
    }
}

/// The answer for one id: `(user_id, segments)` or `None` for unknown/forgotten.
async fn segments_of(
    state: &State,
    view: &View,
    raw: &str,
    purpose: Option<&str>,
) -> Result<Option<(String, Vec<String>)>, Response> {
    let Some(p) = view.resolve(&state.lookup.pseudonym(raw)) else {
        return Ok(None);
    };
    let Some(user_id) = view.user_id(p) else {
        return Ok(None);
    };
    let segs = view
        .segments_of(state.lookup.segments(), p, purpose)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
    Ok(Some((
        user_id.to_string(),
        segs.into_iter().map(str::to_string).collect(),
    )))
}

async fn one(state: &State, raw: &str, purpose: Option<&str>) -> Response {
    let view = match view(state).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match segments_of(state, &view, raw, purpose).await {
        Ok(Some((user_id, segments))) => answer(
            StatusCode::OK,
            json!({ "user_id": user_id, "segments": segments, "as_of": rfc3339(view.as_of) }),
        ),
        Ok(None) => unknown(),
        Err(r) => r,
    }
}

/// `GET /v1/profiles/{id}/segments[?purpose=p]`.
pub(super) async fn segments_get(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&state, &headers) {
        return r;
    }
    one(&state, &id, purpose_of(&uri).as_deref()).await
}

/// `POST /v1/profiles/segments` with `{"id": …}` or `{"ids": […]}` (and an optional
/// `"purpose"`, or `?purpose=`).
pub(super) async fn segments_post(
    Extract(state): Extract<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = check(&state, &headers) {
        return r;
    }
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, m);
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return bad(r#"the body must be a JSON object: {"id": "…"} or {"ids": ["…", …]}"#);
    };
    let purpose = match req.get("purpose") {
        None | Some(Value::Null) => purpose_of(&uri),
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => return bad("\"purpose\" must be a string"),
    };
    let id_text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match (req.get("id"), req.get("ids")) {
        (Some(id), None) => match id_text(id) {
            Some(id) => one(&state, &id, purpose.as_deref()).await,
            None => bad("\"id\" must be a non-empty string or a number"),
        },
        (None, Some(Value::Array(ids))) => {
            if ids.len() > MAX_BATCH {
                return bad(&format!(
                    "at most {MAX_BATCH} ids per request; this one has {}",
                    ids.len()
                ));
            }
            let mut raw = Vec::with_capacity(ids.len());
            for (i, v) in ids.iter().enumerate() {
                match id_text(v) {
                    Some(s) => raw.push(s),
                    None => {
                        return bad(&format!("ids[{i}] must be a non-empty string or a number"));
                    }
                }
            }
            let view = match view(&state).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let mut out = Vec::with_capacity(raw.len());
            for (v, id) in ids.iter().zip(&raw) {
                match segments_of(&state, &view, id, purpose.as_deref()).await {
                    Ok(Some((user_id, segments))) => {
                        out.push(json!({ "id": v, "user_id": user_id, "segments": segments }))
                    }
                    Ok(None) => out.push(json!({ "id": v, "user_id": null, "segments": [] })),
                    Err(r) => return r,
                }
            }
            answer(
                StatusCode::OK,
                json!({ "profiles": out, "as_of": rfc3339(view.as_of) }),
            )
        }
        (None, Some(_)) => bad("\"ids\" must be an array"),
        (Some(_), Some(_)) => bad("send either \"id\" or \"ids\", not both"),
        (None, None) => bad(r#"the body needs "id" (one profile) or "ids" (up to 1,000)"#),
    }
}

/// `GET /v1/profiles/{id}/traits`.
pub(super) async fn traits(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = check(&state, &headers) {
        return r;
    }
    let view = match view(&state).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(p) = view.resolve(&state.lookup.pseudonym(&id)) else {
        return unknown();
    };
    let Some(user_id) = view.user_id(p).map(str::to_string) else {
        return unknown();
    };
    let t = match view.traits(state.lookup.segments()).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(target: "segdb::http", error = %e, "traits could not be computed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the computed traits could not be read; try again",
            );
        }
    };
    let mut traits = serde_json::Map::new();
    if let Some(&row) = t.rows.get(&p.uid) {
        let one = t.batch.slice(row, 1);
        let mut w = arrow::json::ArrayWriter::new(Vec::new());
        if w.write(&one).is_ok()
            && w.finish().is_ok()
            && let Ok(Value::Array(mut rows)) = serde_json::from_slice::<Value>(&w.into_inner())
            && let Some(Value::Object(m)) = rows.pop()
        {
            // Absent keys are NULL traits: every trait is named.
            for f in t.batch.schema().fields() {
                if f.name() == "uid" || f.name() == "user_id" {
                    continue;
                }
                traits.insert(
                    f.name().clone(),
                    m.get(f.name()).cloned().unwrap_or(Value::Null),
                );
            }
        }
    }
    answer(
        StatusCode::OK,
        json!({ "user_id": user_id, "traits": traits, "as_of": rfc3339(view.as_of) }),
    )
}
