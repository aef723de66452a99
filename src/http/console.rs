//! The web console (DESIGN §16): the page at `/` with its assets (committed under `console/` and
//! compiled into the binary), and its JSON API. `POST /api/login` checks a user as Flight SQL's
//! handshake does and sets a session cookie (the bearer token: `HttpOnly`, `SameSite=Strict`,
//! `Secure` under TLS); every other `POST /api/…` carries the session's CSRF token in
//! `X-CSRF-Token`. `POST /api/sql` runs one statement through the same front door as Flight SQL:
//! the caller's role, one session per login, the statement timeout. There is no second
//! privilege path: the pages show only what SQL answers them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State as Extract};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Peer, Refused, State};
use crate::error::ErrorKind;
use crate::session::Session;
use crate::statement::Role;

/// The session cookie's name.
const COOKIE: &str = "segdb_session";
/// Rows one `/api/sql` answer carries at most, unless `[http] max_rows` says otherwise.
pub const DEFAULT_MAX_ROWS: usize = 10_000;
/// Logged-in consoles kept at most (the least recently used one goes first).
const MAX_SESSIONS: usize = 256;

const INDEX: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// The console's part of the HTTP state.
pub(crate) struct Console {
    shared: Arc<crate::session::Shared>,
    sessions: Mutex<HashMap<String, (Arc<Session>, std::time::Instant)>>,
    max_rows: usize,
    secure: bool,
}

impl Console {
    pub(crate) fn new(
        shared: Arc<crate::session::Shared>,
        max_rows: usize,
        secure: bool,
    ) -> Console {
        Console {
            shared,
            sessions: Mutex::new(HashMap::new()),
            max_rows: max_rows.max(1),
            secure,
        }
    }

    fn session(&self, token: &str, user: &str) -> crate::Result<Arc<Session>> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if let Some((s, used)) = map.get_mut(token) {
            *used = now;
            return Ok(s.clone());
        }
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        let s = Arc::new(Session::new(self.shared.clone(), user)?);
        map.insert(token.to_string(), (s.clone(), now));
        Ok(s)
    }
}

/// Headers of every console response: a strict CSP (no inline script, nothing from elsewhere),
/// no sniffing, no framing, no referrer.
fn guarded(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    guarded(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    json_answer(
        status,
        json!({"error": {"kind": kind, "message": message, "line": null, "column": null}}),
    )
}

/// `GET /`: the page.
pub(super) async fn index() -> Response {
    guarded(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response())
}

/// `GET /assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return api_error(StatusCode::NOT_FOUND, "not_found", "no such asset"),
    };
    guarded(([(header::CONTENT_TYPE, kind)], body).into_response())
}

/// The CSRF token of a session: a keyed hash of its (secret, HttpOnly) token, so a page of
/// another site can neither read nor compute it.
fn csrf_of(token: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("segdb console csrf\0{token}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..24])
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == COOKIE && !v.is_empty()).then(|| v.to_string())
        })
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A POST from a page of another site is refused: browsers send `Origin` with every POST, and
/// it must name this listener (the `Host` the request came to). Defence in depth beside the
/// `SameSite=Strict` cookie and the CSRF token; it also stops a login from another site.
fn same_origin(headers: &HeaderMap) -> Result<(), Response> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(api_error(
            StatusCode::FORBIDDEN,
            "denied",
            "a console request from a page of another site is refused",
        ))
    }
}

/// The caller of a console request: (token, user, role), or the refusal to answer.
fn caller(
    state: &State,
    headers: &HeaderMap,
    post: bool,
) -> Result<(String, String, Role), Response> {
    let Some(token) = cookie_token(headers) else {
        return Err(api_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "not logged in: POST /api/login",
        ));
    };
    let (user, role) = match state.auth.caller(&token) {
        Ok(c) => c,
        Err(_) => {
            return Err(api_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the session has expired or is unknown: log in again",
            ));
        }
    };
    if role == Role::Lookup {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            "denied",
            "role lookup may use the profile API only, not the console",
        ));
    }
    if post {
        same_origin(headers)?;
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same(sent, &csrf_of(&token)) {
            return Err(api_error(
                StatusCode::FORBIDDEN,
                "denied",
                "missing or wrong X-CSRF-Token",
            ));
        }
    }
    Ok((token, user, role))
}

fn session_cookie(console: &Console, token: &str, max_age: u64) -> HeaderValue {
    let v = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if console.secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v)
        .unwrap_or_else(|_| HeaderValue::from_static("segdb_session=; Max-Age=0"))
}

/// `POST /api/login`: JSON or form `user`, `password`.
pub(super) async fn login(
    Extract(state): Extract<Arc<State>>,
    axum::Extension(peer): axum::Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = same_origin(&headers) {
        return r;
    }
    // Without authentication (--insecure-no-auth) anyone is an admin: the console answers only
    // on loopback then, since this listener is the collector's, often public.
    if state.auth.is_open() && !peer.0.ip().is_loopback() {
        return api_error(
            StatusCode::FORBIDDEN,
            "denied",
            "the server runs without authentication (--insecure-no-auth): the console is served to loopback only",
        );
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let (user, password) = if form {
        let mut user = None;
        let mut password = None;
        for (k, v) in url::form_urlencoded::parse(&body) {
            match k.as_ref() {
                "user" => user = Some(v.into_owned()),
                "password" => password = Some(v.into_owned()),
                _ => {}
            }
        }
        (user, password)
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => (
                v.get("user").and_then(Value::as_str).map(str::to_string),
                v.get("password")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            ),
            Err(_) => (None, None),
        }
    };
    let (Some(user), Some(password)) = (user, password) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "send user and password (JSON or a form)",
        );
    };
    if user.contains(':') {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "wrong user or password",
        );
    }
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let auth = state.auth.clone();
    let address = peer.0.ip().to_string();
    // The password check is CPU work: off the async workers.
    let r = tokio::task::spawn_blocking(move || auth.login(Some(&basic), &address)).await;
    match r {
        Ok(Ok((token, user, role))) => {
            if role == Role::Lookup.name() {
                state.auth.revoke(&token);
                return api_error(
                    StatusCode::FORBIDDEN,
                    "denied",
                    "role lookup may use the profile API only, not the console",
                );
            }
            tracing::info!(target: "segdb::http", user = %user, role, "console login");
            let mut r = json_answer(
                StatusCode::OK,
                json!({"csrf": csrf_of(&token), "user": user, "role": role}),
            );
            r.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&state.console, &token, state.auth.ttl().as_secs()),
            );
            r
        }
        Ok(Err(Refused::Throttled(wait))) => {
            let mut r = api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                &format!(
                    "too many failed logins for this user name from this address; try again in {} s",
                    wait.as_secs().max(1)
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Ok(Err(_)) => api_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "wrong user or password",
        ),
        Err(_) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the login could not run",
        ),
    }
}

/// `GET /api/me`: who is logged in, and the session's CSRF token (for a reloaded page).
pub(super) async fn me(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Response {
    match caller(&state, &headers, false) {
        Ok((token, user, role)) => json_answer(
            StatusCode::OK,
            json!({"user": user, "role": role.name(), "csrf": csrf_of(&token)}),
        ),
        Err(r) => r,
    }
}

/// `POST /api/logout`: ends the session and its token.
pub(super) async fn logout(Extract(state): Extract<Arc<State>>, headers: HeaderMap) -> Response {
    match caller(&state, &headers, true) {
        Ok((token, _, _)) => {
            state.auth.revoke(&token);
            state
                .console
                .sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&token);
            let mut r = json_answer(StatusCode::OK, json!({"ok": true}));
            r.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&state.console, "", 0));
            r
        }
        Err(r) => r,
    }
}

fn kind_status(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::Denied => (StatusCode::FORBIDDEN, "denied"),
        ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// "… (at line L, column C)" or DataFusion's "Line: L, Column: C" in a message.
fn position(message: &str) -> (Option<u64>, Option<u64>) {
    let lower = message.to_ascii_lowercase();
    for (l, c) in [("line ", ", column "), ("line: ", ", column: ")] {
        if let Some(i) = lower.rfind(l) {
            let rest = &lower[i + l.len()..];
            let line: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Some(rest) = rest[line.len()..].strip_prefix(c) {
                let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let (Ok(a), Ok(b)) = (line.parse(), col.parse()) {
                    return (Some(a), Some(b));
                }
            }
        }
    }
    (None, None)
}

/// A column's cells as JSON: integers beyond 2^53 as strings, timestamps ISO-8601 UTC, binary
/// base64.
fn column_values(a: &dyn arrow::array::Array) -> Vec<Value> {
    use arrow::array::AsArray;
    use arrow::datatypes::{
        DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType, UInt64Type,
    };
    use base64::Engine as _;
    const SAFE: u64 = 1 << 53;
    let nulls = a.logical_nulls();
    let null = |i: usize| nulls.as_ref().is_some_and(|n| n.is_null(i));
    let n = a.len();
    // Each column is cast once to the type its JSON form is read from.
    let cast = |t: &DataType| arrow::compute::cast(a, t).ok();
    let each = |f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..n)
            .map(|i| if null(i) { Value::Null } else { f(i) })
            .collect()
    };
    match a.data_type() {
        DataType::Boolean => each(&|i| Value::Bool(a.as_boolean().value(i))),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let Some(c) = cast(&DataType::Int64) else {
                return vec![Value::Null; n];
            };
            let c = c.as_primitive::<Int64Type>();
            each(&|i| {
                let v = c.value(i);
                if v.unsigned_abs() > SAFE {
                    Value::String(v.to_string())
                } else {
                    json!(v)
                }
            })
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            let Some(c) = cast(&DataType::UInt64) else {
                return vec![Value::Null; n];
            };
            let c = c.as_primitive::<UInt64Type>();
            each(&|i| {
                let v = c.value(i);
                if v > SAFE {
                    Value::String(v.to_string())
                } else {
                    json!(v)
                }
            })
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let Some(c) = cast(&DataType::Float64) else {
                return vec![Value::Null; n];
            };
            let c = c.as_primitive::<Float64Type>();
            each(&|i| {
                let v = c.value(i);
                serde_json::Number::from_f64(v)
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::String(v.to_string()))
            })
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let Some(c) = cast(&DataType::Binary) else {
                return vec![Value::Null; n];
            };
            let c = c.as_binary::<i32>();
            each(&|i| Value::String(base64::engine::general_purpose::STANDARD.encode(c.value(i))))
        }
        DataType::Timestamp(..) => {
            let Some(c) = cast(&DataType::Timestamp(TimeUnit::Microsecond, None)) else {
                return vec![Value::Null; n];
            };
            let c = c.as_primitive::<TimestampMicrosecondType>();
            each(
                &|i| match chrono::DateTime::from_timestamp_micros(c.value(i)) {
                    Some(t) => {
                        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                    }
                    None => Value::Null,
                },
            )
        }
        _ => each(&|i| {
            Value::String(arrow::util::display::array_value_to_string(a, i).unwrap_or_default())
        }),
    }
}

/// `POST /api/sql` `{"sql": …}` → `{"columns", "rows", "truncated"}` or `{"error": …}`.
pub(super) async fn sql(
    Extract(state): Extract<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (token, user, role) = match caller(&state, &headers, true) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(text) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("sql").and_then(Value::as_str).map(str::to_string))
    else {
        return api_error(StatusCode::BAD_REQUEST, "invalid", "send {\"sql\": \"…\"}");
    };
    let session = match state.console.session(&token, &user) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    // Planned through the same front door as Flight SQL, then read only up to max_rows + 1
    // rows: a large result is cut, never held whole in memory.
    let limit = state.console.max_rows;
    let run = async {
        let p = session.parse_one(&text)?;
        crate::session::within(session.statement_timeout(), async {
            match session.plan(&p, role, None).await? {
                crate::session::Planned::Done(r) => Ok(r),
                crate::session::Planned::Query(df) => {
                    use futures::StreamExt;
                    let schema: arrow::datatypes::SchemaRef =
                        Arc::new(df.schema().as_arrow().clone());
                    let mut stream = df.execute_stream().await?;
                    let (mut batches, mut rows) = (Vec::new(), 0usize);
                    while let Some(b) = stream.next().await {
                        let b = b?;
                        rows += b.num_rows();
                        batches.push(b);
                        if rows > limit {
                            break;
                        }
                    }
                    Ok(crate::result::QueryResult { schema, batches })
                }
            }
        })
        .await
    };
    let result = match run.await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e.kind(), ErrorKind::Denied) {
                tracing::info!(target: "segdb::http", user = %user, role = role.name(), "console statement refused");
            }
            return error_response(&e);
        }
    };
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut rows = Vec::new();
    let mut truncated = false;
    for b in &result.batches {
        let room = state.console.max_rows - rows.len();
        if b.num_rows() > room {
            truncated = true;
        }
        let take = b.num_rows().min(room);
        let mut cols: Vec<std::vec::IntoIter<Value>> = b
            .columns()
            .iter()
            .map(|c| column_values(c.slice(0, take).as_ref()).into_iter())
            .collect();
        for _ in 0..take {
            rows.push(Value::Array(
                cols.iter_mut()
                    .map(|c| c.next().unwrap_or(Value::Null))
                    .collect(),
            ));
        }
        if truncated {
            break;
        }
    }
    json_answer(
        StatusCode::OK,
        json!({"columns": columns, "rows": rows, "truncated": truncated}),
    )
}

fn error_response(e: &crate::Error) -> Response {
    let (status, kind) = kind_status(e.kind());
    let message = e.to_string().trim().to_string();
    let (line, column) = position(&message);
    json_answer(
        status,
        json!({"error": {"kind": kind, "message": message, "line": line, "column": column}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_from_both_message_styles() {
        assert_eq!(
            position("expected a leaf, found 'DIDD' (at line 2, column 7)"),
            (Some(2), Some(7))
        );
        assert_eq!(
            position(
                "SQL error: ParserError(\"Expected: an SQL statement, found: SELEC at Line: 1, Column: 1\")"
            ),
            (Some(1), Some(1))
        );
        assert_eq!(position("no position here"), (None, None));
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let a = csrf_of("token-a");
        assert_ne!(a, csrf_of("token-b"));
        assert!(same(&a, &csrf_of("token-a")));
        assert!(!same(&a, ""));
    }
}
