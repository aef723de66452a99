//! One message → the rows it makes (DESIGN §14 "Mapping"): an `events` row (track, page,
//! screen, group), a `profiles` merge (identify), a link (alias, and identify with both ids),
//! consent rows (any type with `context.consent`). Keys become snake_case columns, nested keys
//! join with `_`, context becomes `context_*` columns, the IP becomes a country and the user
//! agent browser/os/device, and neither is kept. Undeclared personal keys are dropped here; the
//! types of values are checked against the table when the commit builds its batches.

use std::collections::{BTreeMap, HashSet};

use super::json::Json;

use super::stats::Reason;

/// A JSON value as a column value (`null` is an absent value).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// Columns in the order first seen, names unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub Vec<(String, Val)>, HashSet<String>);

impl Fields {
    fn has(&self, name: &str) -> bool {
        self.1.contains(name)
    }
    fn push(&mut self, name: String, v: Val) {
        self.1.insert(name.clone());
        self.0.push((name, v));
    }
}

/// What consent a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consent {
    Purpose(String, bool),
    Tc(String),
    Usp(String),
    Gpp(String),
}

impl Consent {
    /// What a later record must differ in to be written: the kind (and purpose).
    pub fn key(&self) -> String {
        match self {
            Consent::Purpose(p, _) => format!("purpose:{p}"),
            Consent::Tc(_) => "tc_string".into(),
            Consent::Usp(_) => "us_privacy".into(),
            Consent::Gpp(_) => "gpp".into(),
        }
    }
    /// The recorded value.
    pub fn value(&self) -> String {
        match self {
            Consent::Purpose(_, g) => g.to_string(),
            Consent::Tc(s) | Consent::Usp(s) | Consent::Gpp(s) => s.clone(),
        }
    }
}

/// The rows of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// track, page, screen, identify, group or alias.
    pub kind: &'static str,
    pub message_id: Option<String>,
    /// The usable ids (placeholders are no ids).
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// µs, corrected for the device clock.
    pub ts: i64,
    /// `events`: the event name and its columns.
    pub event: Option<(String, Fields)>,
    /// `profiles`: the traits to merge.
    pub profile: Option<Fields>,
    pub consent: Vec<Consent>,
    /// A link between the row's id and another (alias: previousId; identify: anonymousId).
    pub link: Option<(String, &'static str)>,
    /// Fields dropped from the message (pii, columns).
    pub dropped: Vec<(Reason, String)>,
}

impl Mapped {
    /// The id the rows belong to.
    pub fn owner(&self) -> &str {
        self.user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .expect("a mapped message has an id")
    }
}

/// A message not stored at all: why, and its type when it had a known one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: Reason,
    pub kind: Option<&'static str>,
    pub field: Option<String>,
}

/// Columns a collected event fills itself; a property with such a name is stored as
/// `property_<name>`.
pub const RESERVED: [&str; 9] = [
    "user_id",
    "uid",
    "event",
    "ts",
    "received_at",
    "message_id",
    "source",
    "anonymous_id",
    "updated_at",
];

/// The declared personal columns of `events` and `profiles` (their rules apply at the commit).
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub events: HashSet<String>,
    pub profiles: HashSet<String>,
}

/// snake_case as DESIGN §14 fixes it.
pub fn snake(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev: Option<char> = None;
    let mut gap = false;
    for c in key.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            } else if c.is_ascii_uppercase()
                && prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
            {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
            prev = Some(c);
        } else {
            gap = true;
            prev = None;
        }
    }
    out
}

fn id_of(v: Option<&Json>) -> Option<String> {
    let s = match v? {
        Json::String(s) => s.trim().to_string(),
        Json::Number(n) => n.to_string(),
        _ => return None,
    };
    (!s.is_empty() && !crate::links::is_junk(&s)).then_some(s)
}

fn time_of(v: Option<&Json>) -> Option<i64> {
    match v? {
        Json::String(s) => crate::time::parse_micros(s),
        _ => None,
    }
}

/// Strip the query string and fragment of a URL (they carry e-mails and tokens).
fn without_query(s: &str) -> String {
    let cut = s.find(['?', '#']).unwrap_or(s.len());
    s[..cut].to_string()
}

/// Is a key personal? Any segment of its path on the name list, or its column name.
fn personal(path: &[String], column: &str, traits: bool) -> bool {
    if !traits && path.len() == 1 && path[0] == "name" {
        // Product and page names: `name` alone is personal only in traits.
        return false;
    }
    path.iter().any(|s| crate::ingest::pii::looks_personal(s))
        || crate::ingest::pii::looks_personal(column)
}

struct Flattener<'a> {
    declared: &'a HashSet<String>,
    traits: bool,
    out: Fields,
    dropped: Vec<(Reason, String)>,
}

impl Flattener<'_> {
    fn add(&mut self, path: &mut Vec<String>, v: &Json, depth: usize) {
        match v {
            Json::Null => {}
            Json::Object(o) if depth < 8 => {
                for (k, v) in o {
                    path.push(snake(k));
                    self.add(path, v, depth + 1);
                    path.pop();
                }
            }
            _ => {
                let mut name = path
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("_");
                if name.is_empty() {
                    self.dropped.push((Reason::Columns, String::new()));
                    return;
                }
                if RESERVED.contains(&name.as_str()) {
                    name = format!("property_{name}");
                }
                if !self.declared.contains(&name) && personal(path, &name, self.traits) {
                    self.dropped.push((Reason::Pii, name));
                    return;
                }
                // The columns the PII rules make from a declared column are theirs alone.
                if ["_e164_sha256", "_google_sha256", "_sha256"]
                    .iter()
                    .any(|suffix| {
                        name.strip_suffix(suffix)
                            .is_some_and(|p| self.declared.contains(p))
                    })
                {
                    self.dropped.push((Reason::Columns, name));
                    return;
                }
                // What the browser SDKs put in page properties: URLs lose their query string,
                // `search` is dropped (they carry e-mails and tokens), as in `context.page`.
                let top = !self.traits && path.len() == 1;
                if top && name == "search" {
                    self.dropped.push((Reason::Pii, name));
                    return;
                }
                let cut = top && (name == "url" || name == "referrer");
                if self.out.has(&name) {
                    self.dropped.push((Reason::Columns, name));
                    return;
                }
                let val = match v {
                    Json::Bool(b) => Val::Bool(*b),
                    Json::Number(n) => match n.as_i64() {
                        Some(i) if !n.to_string().contains(['.', 'e', 'E']) => Val::Int(i),
                        _ => match n.as_f64() {
                            Some(f) => Val::Float(f),
                            None => Val::Text(n.to_string()),
                        },
                    },
                    Json::String(s) if cut => Val::Text(without_query(s)),
                    Json::String(s) => Val::Text(s.clone()),
                    // Arrays (and objects nested deeper than 8) as JSON text.
                    other => Val::Text(other.to_text()),
                };
                // A declared personal column is read as text (its rule normalises it).
                let val = match (self.declared.contains(&name), val) {
                    (true, Val::Int(i)) => Val::Text(i.to_string()),
                    (true, Val::Float(f)) => Val::Text(f.to_string()),
                    (_, v) => v,
                };
                self.out.push(name, val);
            }
        }
    }
}

/// The `context_*` columns of a message; campaign keys that look personal go to `dropped`.
fn context_fields(ctx: Option<&Json>, out: &mut Fields, dropped: &mut Vec<(Reason, String)>) {
    let Some(ctx) = ctx.filter(|c| c.as_object().is_some()) else {
        return;
    };
    let mut put = |name: String, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty())
            && !out.has(&name)
        {
            out.push(name, Val::Text(v));
        }
    };
    let text = |v: Option<&Json>| match v {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        Some(Json::Bool(b)) => Some(b.to_string()),
        _ => None,
    };
    if let Some(p) = ctx.get("page").filter(|p| p.as_object().is_some()) {
        put(
            "context_page_url".into(),
            text(p.get("url")).map(|u| without_query(&u)),
        );
        put("context_page_path".into(), text(p.get("path")));
        put(
            "context_page_referrer".into(),
            text(p.get("referrer")).map(|u| without_query(&u)),
        );
        put("context_page_title".into(), text(p.get("title")));
    }
    if let Some(Json::Object(c)) = ctx.get("campaign") {
        for (k, v) in c {
            let k = snake(k);
            let name = format!("context_campaign_{k}");
            // `name` is the campaign's (utm_campaign), not a person's.
            if (k != "name" && crate::ingest::pii::looks_personal(&k))
                || crate::ingest::pii::looks_personal(&name)
            {
                dropped.push((Reason::Pii, name));
            } else if !k.is_empty() {
                put(name, text(Some(v)));
            }
        }
    }
    put("context_locale".into(), text(ctx.get("locale")));
    if let Some(l) = ctx.get("library").filter(|l| l.as_object().is_some()) {
        put("context_library_name".into(), text(l.get("name")));
        put("context_library_version".into(), text(l.get("version")));
    }
    put("context_channel".into(), text(ctx.get("channel")));
    if let Some(Json::String(ip)) = ctx.get("ip") {
        put(
            "context_country".into(),
            crate::privacy::enrich::ip_country(ip),
        );
    }
    if let Some(Json::String(ua)) = ctx.get("userAgent") {
        let a = crate::privacy::enrich::user_agent(ua);
        put("context_browser".into(), a.browser);
        put("context_os".into(), a.os);
        put("context_device".into(), a.device);
    }
}

/// The consent a message's context carries.
fn consent_of(ctx: Option<&Json>) -> Vec<Consent> {
    let mut out = Vec::new();
    let Some(ctx) = ctx.filter(|c| c.as_object().is_some()) else {
        return out;
    };
    let text = |v: Option<&Json>| match v {
        Some(Json::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    };
    if let Some(c) = ctx.get("consent").filter(|c| c.as_object().is_some()) {
        if let Some(Json::Object(prefs)) = c.get("categoryPreferences") {
            // Sorted, so the rows of one message come in a fixed order.
            let sorted: BTreeMap<String, bool> = prefs
                .iter()
                .filter_map(|(k, v)| v.as_bool().map(|g| (k.trim().to_lowercase(), g)))
                .filter(|(k, _)| !k.is_empty())
                .collect();
            for (p, g) in sorted {
                out.push(Consent::Purpose(p, g));
            }
        }
        if let Some(s) = text(c.get("tcString")) {
            out.push(Consent::Tc(s));
        }
        if let Some(s) = text(c.get("usPrivacy")) {
            out.push(Consent::Usp(s));
        }
        if let Some(s) = text(c.get("gpp")) {
            out.push(Consent::Gpp(s));
        }
    }
    if !out.iter().any(|c| matches!(c, Consent::Tc(_)))
        && let Some(g) = ctx.get("gdpr").filter(|g| g.as_object().is_some())
        && let Some(s) = text(g.get("consentString"))
    {
        out.push(Consent::Tc(s));
    }
    out
}

fn known_kind(k: &str) -> Option<&'static str> {
    ["track", "page", "screen", "identify", "group", "alias"]
        .into_iter()
        .find(|t| *t == k)
}

/// Map one message. `received_at` is when its request arrived (µs); `batch_sent_at` the batch's
/// `sentAt`.
pub fn map(
    msg: &Json,
    received_at: i64,
    batch_sent_at: Option<&Json>,
    declared: &Declared,
) -> Result<Mapped, Refused> {
    let refuse = |reason, kind, field: Option<&str>| Refused {
        reason,
        kind,
        field: field.map(str::to_string),
    };
    if msg.as_object().is_none() {
        return Err(refuse(Reason::Invalid, None, None));
    }
    let m = msg;
    let kind = match m.get("type") {
        Some(Json::String(t)) => known_kind(t),
        _ => None,
    }
    .ok_or_else(|| refuse(Reason::Invalid, None, Some("type")))?;
    let message_id = match m.get("messageId") {
        Some(Json::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut user_id = id_of(m.get("userId"));
    let anonymous_id = id_of(m.get("anonymousId"));
    let mut link = None;
    if kind == "alias" {
        // alias: previousId becomes one profile with userId.
        let prev = id_of(m.get("previousId"));
        match (user_id.as_ref(), prev) {
            (Some(u), Some(p)) if *u != p => link = Some((p, "alias")),
            (Some(_), Some(_)) => {}
            _ => return Err(refuse(Reason::NoId, Some(kind), None)),
        }
    } else if user_id.is_none() && anonymous_id.is_none() {
        return Err(refuse(Reason::NoId, Some(kind), None));
    }
    // Device clock: ts = received_at − (sentAt − timestamp).
    let stamp = time_of(m.get("timestamp")).or_else(|| time_of(m.get("originalTimestamp")));
    let sent = time_of(m.get("sentAt")).or_else(|| time_of(batch_sent_at));
    let ts = match (stamp, sent) {
        (Some(t), Some(s)) => received_at.saturating_sub(s.saturating_sub(t)),
        (Some(t), None) => t,
        (None, _) => received_at,
    };
    let ctx = m.get("context");
    let consent = consent_of(ctx);
    let mut out = Mapped {
        kind,
        message_id,
        user_id: None,
        anonymous_id: None,
        ts,
        event: None,
        profile: None,
        consent,
        link: None,
        dropped: Vec::new(),
    };
    match kind {
        "track" | "page" | "screen" | "group" => {
            let name = match kind {
                "track" => match m.get("event") {
                    Some(Json::String(e)) if !e.trim().is_empty() => e.clone(),
                    _ => return Err(refuse(Reason::Invalid, Some(kind), Some("event"))),
                },
                other => other.to_string(),
            };
            let mut fields = Fields::default();
            let mut dropped = Vec::new();
            context_fields(ctx, &mut fields, &mut dropped);
            if kind == "group"
                && let Some(g) = id_of(m.get("groupId"))
            {
                fields.push("group_id".into(), Val::Text(g));
            }
            let mut f = Flattener {
                declared: &declared.events,
                traits: false,
                out: fields,
                dropped,
            };
            if matches!(kind, "track" | "page" | "screen") {
                if let Some(p) = m.get("properties") {
                    f.add(&mut Vec::new(), p, 0);
                }
                // The page or screen name, when the properties do not carry one.
                if kind != "track"
                    && let Some(Json::String(n)) = m.get("name")
                    && !f.out.has("name")
                {
                    f.out.push("name".into(), Val::Text(n.clone()));
                }
            }
            out.dropped = f.dropped;
            out.event = Some((name, f.out));
        }
        "identify" => {
            let mut f = Flattener {
                declared: &declared.profiles,
                traits: true,
                out: Fields::default(),
                dropped: Vec::new(),
            };
            // Segment sends `traits`; RudderStack's SDKs send `context.traits`. Both count, the
            // top-level ones first.
            if let Some(t) = m.get("traits") {
                f.add(&mut Vec::new(), t, 0);
            }
            if let Some(c) = ctx
                && let Some(Json::Object(t)) = c.get("traits")
            {
                for (k, v) in t {
                    let name = snake(k);
                    if !f.out.has(&name) && !m.get("traits").is_some_and(|x| x.get(k).is_some()) {
                        f.add(&mut vec![name], v, 1);
                    }
                }
            }
            out.dropped = f.dropped;
            out.profile = Some(f.out);
            if let (Some(u), Some(a)) = (&user_id, &anonymous_id)
                && u != a
            {
                link = Some((a.clone(), "anonymous_id"));
            }
        }
        _ => {}
    }
    if kind == "identify" && user_id.is_none() {
        // A profile of an anonymous visitor belongs to the anonymous id.
        user_id = anonymous_id.clone();
    }
    out.user_id = user_id;
    out.anonymous_id = anonymous_id;
    out.link = link;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    macro_rules! json {
        ($($t:tt)*) => { Json::from(serde_json::json!($($t)*)) };
    }

    fn none() -> Declared {
        Declared::default()
    }

    #[test]
    fn snake_case_names() {
        for (k, want) in [
            ("productID", "product_id"),
            ("Plan Name", "plan_name"),
            ("plan-name", "plan_name"),
            ("__x__", "x"),
            ("already_snake", "already_snake"),
            ("v2Price", "v2_price"),
            ("HTTPStatus", "httpstatus"),
            ("a  b!!c", "a_b_c"),
            ("!!!", ""),
        ] {
            assert_eq!(snake(k), want, "{k}");
        }
    }

    #[test]
    fn track_with_properties_context_and_clock() {
        let m = json!({
            "type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1",
            "messageId": "m-1",
            "timestamp": "2026-01-01T00:00:00Z", "sentAt": "2026-01-01T00:00:10Z",
            "properties": {"productID": 7, "price": 9.5, "product": {"price": 3, "tags": ["a"]},
                           "user_id": "x", "email": "a@b.c", "name": "Shoe", "address": {"street": "s"},
                           "Plan Name": "pro", "plan_name": "second"},
            "context": {"ip": "8.8.8.8", "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
                        "page": {"url": "https://s.example/p?email=a@b.c", "search": "?email=a@b.c", "path": "/p"},
                        "campaign": {"name": "spring", "utmSource": "news"}, "locale": "de-DE",
                        "library": {"name": "analytics.js", "version": "1.0"}}
        });
        let received = crate::time::parse_micros("2026-01-01T00:01:00Z").unwrap();
        let r = map(&m, received, None, &none()).unwrap();
        assert_eq!(r.ts, received - 10_000_000);
        assert_eq!(r.user_id.as_deref(), Some("u1"));
        let (name, f) = r.event.unwrap();
        assert_eq!(name, "Order Completed");
        let get = |n: &str| f.0.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("product_id"), Some(Val::Int(7)));
        assert_eq!(get("price"), Some(Val::Float(9.5)));
        assert_eq!(get("product_price"), Some(Val::Int(3)));
        assert_eq!(get("product_tags"), Some(Val::Text("[\"a\"]".into())));
        assert_eq!(get("property_user_id"), Some(Val::Text("x".into())));
        assert_eq!(get("name"), Some(Val::Text("Shoe".into())));
        assert_eq!(get("email"), None);
        assert_eq!(get("address_street"), None);
        assert_eq!(get("plan_name"), Some(Val::Text("pro".into())));
        assert_eq!(
            get("context_page_url"),
            Some(Val::Text("https://s.example/p".into()))
        );
        assert_eq!(
            get("context_campaign_utm_source"),
            Some(Val::Text("news".into()))
        );
        assert_eq!(get("context_country"), Some(Val::Text("US".into())));
        assert_eq!(get("context_browser"), Some(Val::Text("Chrome".into())));
        assert_eq!(get("context_os"), Some(Val::Text("Windows 10".into())));
        assert_eq!(get("context_device"), Some(Val::Text("desktop".into())));
        assert!(
            f.0.iter()
                .all(|(k, _)| !k.contains("search") && !k.contains("ip"))
        );
        let mut dropped = r.dropped.clone();
        dropped.sort();
        assert_eq!(
            dropped,
            vec![
                (Reason::Pii, "address_street".into()),
                (Reason::Pii, "email".into()),
                (Reason::Columns, "plan_name".into()),
            ]
        );
    }

    #[test]
    fn keys_keep_the_order_they_were_sent_in() {
        let m = Json::parse(
            br#"{"type":"track","userId":"u","event":"e","properties":{"plan_name":"a","zeta":1,"Plan Name":"b","alpha":2}}"#,
        )
        .unwrap();
        let r = map(&m, 0, None, &none()).unwrap();
        let f = r.event.unwrap().1;
        let names: Vec<&str> = f.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["plan_name", "zeta", "alpha"]);
        assert_eq!(f.0[0].1, Val::Text("a".into()));
        assert_eq!(r.dropped, vec![(Reason::Columns, "plan_name".into())]);
    }

    #[test]
    fn identify_alias_consent_and_refusals() {
        let d = Declared {
            profiles: ["email".to_string()].into(),
            ..Default::default()
        };
        let m = json!({"type": "identify", "userId": "u1", "anonymousId": "a1",
            "traits": {"email": "A@B.c", "name": "Ann", "plan": "pro", "age": 41},
            "context": {"consent": {"categoryPreferences": {"Advertising": true, "Analytics": false},
                                     "tcString": "CP1"}}});
        let r = map(&m, 0, None, &d).unwrap();
        let f = r.profile.clone().unwrap();
        // RudderStack's traits sit in context.traits.
        let rud = json!({"type": "identify", "userId": "u2",
            "context": {"traits": {"plan": "basic", "seatCount": 3}}});
        let rf = map(&rud, 0, None, &d).unwrap().profile.unwrap();
        assert_eq!(
            rf.0,
            vec![
                ("plan".into(), Val::Text("basic".into())),
                ("seat_count".into(), Val::Int(3))
            ]
        );
        assert!(f.0.contains(&("email".into(), Val::Text("A@B.c".into()))));
        assert!(f.has("plan") && f.has("age") && !f.has("name"));
        assert_eq!(r.dropped, vec![(Reason::Pii, "name".into())]);
        assert_eq!(r.link, Some(("a1".into(), "anonymous_id")));
        assert_eq!(
            r.consent,
            vec![
                Consent::Purpose("advertising".into(), true),
                Consent::Purpose("analytics".into(), false),
                Consent::Tc("CP1".into())
            ]
        );
        let a = map(
            &json!({"type": "alias", "userId": "u1", "previousId": "a9"}),
            0,
            None,
            &none(),
        )
        .unwrap();
        assert_eq!(a.link, Some(("a9".into(), "alias")));
        let no_id = map(
            &json!({"type": "track", "event": "e", "userId": "undefined"}),
            0,
            None,
            &none(),
        )
        .unwrap_err();
        assert_eq!(no_id.reason, Reason::NoId);
        let no_name = map(&json!({"type": "track", "userId": "u"}), 0, None, &none()).unwrap_err();
        assert_eq!(
            (no_name.reason, no_name.field.as_deref()),
            (Reason::Invalid, Some("event"))
        );
        assert_eq!(
            map(&json!(5), 0, None, &none()).unwrap_err().reason,
            Reason::Invalid
        );
        assert_eq!(
            map(&json!({"type": "boom", "userId": "u"}), 0, None, &none())
                .unwrap_err()
                .reason,
            Reason::Invalid
        );
        // A page of an anonymous visitor: the row belongs to the anonymous id.
        let p = map(
            &json!({"type": "page", "anonymousId": "a2", "name": "Home"}),
            5,
            None,
            &none(),
        )
        .unwrap();
        assert_eq!(p.owner(), "a2");
        assert_eq!(p.ts, 5);
        assert_eq!(p.event.unwrap().0, "page");
    }
}
