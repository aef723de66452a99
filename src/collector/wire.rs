//! A collector request as the SDKs send it: the write key (Basic auth, the body's `writeKey` or
//! the `writeKey` query parameter), the body (JSON, maybe gzip, maybe labelled `text/plain`) and
//! its messages (one call, or a batch whose `context` and `integrations` merge into each).
//! Every failure is a [`WireError`] with the status and code DESIGN §14 fixes.

use std::io::Read;

use super::json::Json;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Bytes a request may have after decompression.
pub const MAX_REQUEST_BYTES: usize = 500 * 1024;
/// Bytes one message may have.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Messages one batch may have.
pub const MAX_BATCH_MESSAGES: usize = 2_500;

/// An answer other than 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl WireError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        WireError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn invalid_json(message: impl Into<String>) -> Self {
        WireError::new(400, "invalid_json", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        WireError::new(413, "too_large", message)
    }
    pub fn unauthorized() -> Self {
        WireError::new(
            401,
            "unauthorized",
            "no valid write key: send it as the Basic auth user name, as writeKey in the body or as the writeKey query parameter",
        )
    }
    /// The JSON body of the answer.
    pub fn body(&self) -> String {
        serde_json::json!({"success": false, "code": self.code, "message": self.message})
            .to_string()
    }
}

/// What a path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// One message of this type (`/v1/track`, `/v1/t`, …).
    Single(&'static str),
    /// `{"batch": [...]}` (`/v1/batch`, `/v1/b`, `/v1/import`, `/beacon/v1/batch`).
    Batch,
}

/// The call of a collector path (`None`: not a collector path).
pub fn call_of(path: &str) -> Option<Call> {
    let p = path.trim_end_matches('/');
    let p = p.strip_prefix("/beacon").unwrap_or(p);
    let kind = p.strip_prefix("/v1/")?;
    Some(match kind {
        "track" | "t" => Call::Single("track"),
        "identify" | "i" => Call::Single("identify"),
        "page" | "p" => Call::Single("page"),
        "screen" | "s" => Call::Single("screen"),
        "group" | "g" => Call::Single("group"),
        "alias" | "a" => Call::Single("alias"),
        "batch" | "b" | "import" => Call::Batch,
        _ => return None,
    })
}

/// A decoded request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The write key, from wherever it came.
    pub key: Option<String>,
    /// The messages, each an object (anything else is left for the mapper to reject).
    pub messages: Vec<Json>,
    /// The batch's `sentAt`, for messages without their own.
    pub sent_at: Option<Json>,
}

/// The write key of a Basic `authorization` header (user name = key, empty password).
pub fn basic_key(header: Option<&str>) -> Option<String> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map(|(u, _)| u).unwrap_or(&text);
    (!user.is_empty()).then(|| user.to_string())
}

/// The `writeKey` query parameter.
pub fn query_key(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "writeKey")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// The body after `Content-Encoding`, at most [`MAX_REQUEST_BYTES`] (decompression stops there).
pub fn decode_body(encoding: Option<&str>, body: &[u8]) -> Result<Vec<u8>, WireError> {
    let over = || {
        WireError::too_large(format!(
            "the request is larger than {} KB after decompression",
            MAX_REQUEST_BYTES / 1024
        ))
    };
    match encoding.map(|e| e.trim().to_ascii_lowercase()) {
        None => {}
        Some(e) if e.is_empty() || e == "identity" => {}
        Some(e) if e == "gzip" || e == "x-gzip" => {
            let mut out = Vec::new();
            let mut r = flate2::read::MultiGzDecoder::new(body).take(MAX_REQUEST_BYTES as u64 + 1);
            r.read_to_end(&mut out).map_err(|e| {
                WireError::invalid_json(format!("the gzip body cannot be decompressed: {e}"))
            })?;
            if out.len() > MAX_REQUEST_BYTES {
                return Err(over());
            }
            return Ok(out);
        }
        Some(e) => {
            return Err(WireError::invalid_json(format!(
                "Content-Encoding {e:?} is not supported; send gzip or nothing"
            )));
        }
    }
    if body.len() > MAX_REQUEST_BYTES {
        return Err(over());
    }
    Ok(body.to_vec())
}

/// Parse a (decoded) body for `call`. `header_key` is the key of the Basic header or the query.
pub fn parse(call: Call, body: &[u8], header_key: Option<String>) -> Result<Request, WireError> {
    let mut top = Json::parse(body)
        .map_err(|e| WireError::invalid_json(format!("the body is not valid JSON: {e}")))?;
    if top.as_object().is_none() {
        return Err(WireError::invalid_json("the body is not a JSON object"));
    }
    let body_key = match top.get("writeKey") {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let key = header_key.or(body_key);
    let big = body.len() > MAX_MESSAGE_BYTES;
    let check_size = |m: &Json| -> Result<(), WireError> {
        if big && serde_json::to_vec(m).map(|b| b.len()).unwrap_or(0) > MAX_MESSAGE_BYTES {
            return Err(WireError::too_large(format!(
                "a message is larger than {} KB",
                MAX_MESSAGE_BYTES / 1024
            )));
        }
        Ok(())
    };
    match call {
        Call::Single(kind) => {
            top.remove("writeKey");
            // The path decides the type (the browser SDK also sends it in the body).
            top.insert("type", Json::String(kind.into()));
            let m = top;
            check_size(&m)?;
            Ok(Request {
                key,
                messages: vec![m],
                sent_at: None,
            })
        }
        Call::Batch => {
            let Some(Json::Array(batch)) = top.remove("batch") else {
                return Err(WireError::invalid_json(
                    "a batch body needs \"batch\": [messages]",
                ));
            };
            if batch.len() > MAX_BATCH_MESSAGES {
                return Err(WireError::too_large(format!(
                    "a batch holds at most {MAX_BATCH_MESSAGES} messages; this one has {}",
                    batch.len()
                )));
            }
            let context = top.remove("context");
            let integrations = top.remove("integrations");
            let mut messages = Vec::with_capacity(batch.len());
            for mut m in batch {
                check_size(&m)?;
                merge_into(&mut m, "context", &context);
                merge_into(&mut m, "integrations", &integrations);
                messages.push(m);
            }
            Ok(Request {
                key,
                messages,
                sent_at: top.remove("sentAt"),
            })
        }
    }
}

/// Merge a batch-level object into a message's (the message's own keys win).
fn merge_into(m: &mut Json, field: &str, top: &Option<Json>) {
    let (Json::Object(m), Some(Json::Object(top))) = (m, top) else {
        return;
    };
    match m.iter_mut().find(|(k, _)| k == field) {
        Some((_, Json::Object(own))) => {
            for (k, v) in top {
                if !own.iter().any(|(o, _)| o == k) {
                    own.push((k.clone(), v.clone()));
                }
            }
        }
        Some(_) => {}
        None => m.push((field.to_string(), Json::Object(top.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn paths_keys_and_batches() {
        assert_eq!(call_of("/v1/t"), Some(Call::Single("track")));
        assert_eq!(call_of("/v1/batch"), Some(Call::Batch));
        assert_eq!(call_of("/beacon/v1/batch"), Some(Call::Batch));
        assert_eq!(call_of("/v1/m"), None);
        assert_eq!(call_of("/v2/track"), None);
        let h = format!("Basic {}", STANDARD.encode("KEY123:"));
        assert_eq!(basic_key(Some(&h)).as_deref(), Some("KEY123"));
        assert_eq!(basic_key(Some("Bearer x")), None);
        assert_eq!(
            query_key(Some("a=1&writeKey=K%2F1")).as_deref(),
            Some("K/1")
        );
        let body =
            br#"{"batch":[{"type":"track","event":"a","context":{"ip":"1"}},{"type":"page"}],
            "context":{"ip":"2","locale":"de"},"sentAt":"2026-01-01T00:00:00Z","writeKey":"B"}"#;
        let r = parse(Call::Batch, body, None).unwrap();
        assert_eq!(r.key.as_deref(), Some("B"));
        assert_eq!(r.messages.len(), 2);
        let ctx = |i: usize, k: &str| r.messages[i].get("context").and_then(|c| c.get(k)).cloned();
        assert_eq!(ctx(0, "ip"), Some(Json::String("1".into())));
        assert_eq!(ctx(0, "locale"), Some(Json::String("de".into())));
        assert_eq!(ctx(1, "ip"), Some(Json::String("2".into())));
        assert!(r.sent_at.is_some());
        // The header's key wins over the body's.
        let r = parse(
            Call::Single("track"),
            br#"{"writeKey":"B","event":"x"}"#,
            Some("H".into()),
        )
        .unwrap();
        assert_eq!(r.key.as_deref(), Some("H"));
        assert_eq!(
            r.messages[0].get("type"),
            Some(&Json::String("track".into()))
        );
    }

    #[test]
    fn limits_and_bad_bodies() {
        assert_eq!(
            parse(Call::Batch, b"{", None).unwrap_err().code,
            "invalid_json"
        );
        assert_eq!(parse(Call::Batch, b"[1]", None).unwrap_err().status, 400);
        assert_eq!(
            parse(Call::Batch, b"{\"a\":1}", None).unwrap_err().status,
            400
        );
        let many = format!("{{\"batch\":[{}]}}", vec!["{}"; 2_501].join(","));
        assert_eq!(
            parse(Call::Batch, many.as_bytes(), None)
                .unwrap_err()
                .status,
            413
        );
        let fat = format!("{{\"batch\":[{{\"event\":\"{}\"}}]}}", "x".repeat(40_000));
        assert_eq!(
            parse(Call::Batch, fat.as_bytes(), None).unwrap_err().status,
            413
        );
        // Deeply nested JSON is refused by the parser's own depth limit, not by a crash.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse(Call::Batch, deep.as_bytes(), None)
                .unwrap_err()
                .status,
            400
        );
        // A gzip bomb stops at the limit.
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![b' '; 50 << 20]).unwrap();
        let bomb = z.finish().unwrap();
        assert!(bomb.len() < 200_000);
        assert_eq!(decode_body(Some("gzip"), &bomb).unwrap_err().status, 413);
        assert_eq!(decode_body(Some("br"), b"x").unwrap_err().status, 400);
        assert_eq!(
            decode_body(Some("gzip"), b"not gzip").unwrap_err().status,
            400
        );
    }
}
