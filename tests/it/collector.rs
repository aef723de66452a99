//! The collector (DESIGN §14) end to end: `segdb serve --http` as a child process, driven over
//! HTTP by reqwest for the wire contract, by the real Python SDKs (tests/collector/sdks.py), and
//! by the real Node and browser SDKs (tests/collector/js). What landed is read back with the CLI
//! and, for what only the server process knows (SHOW SOURCES counts, rejects), over Flight SQL.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{self, TestDb};
use crate::server::{self, Server};

/// `segdb sql --format csv -c SQL` → the data lines.
pub(crate) fn sql(db: &TestDb, sql: &str) -> Vec<String> {
    let o = db.cli(&["sql", "--format", "csv", "-c", sql]);
    assert!(o.status.success(), "{sql}: {}", common::stderr(&o));
    common::stdout(&o)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// `CREATE SOURCE name` → its write key.
pub(crate) fn create_source(db: &TestDb, name: &str) -> String {
    let rows = sql(db, &format!("CREATE SOURCE {name}"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    let cols: Vec<&str> = rows[0].split(',').collect();
    assert_eq!(cols[0], name);
    assert_eq!(cols[1].len(), 43, "a 43-character key: {rows:?}");
    assert_eq!(cols[2], &cols[1][..8]);
    cols[1].to_string()
}

/// A server with the collector on, on a fresh database with source `web`.
pub(crate) fn start(db: &TestDb, extra_config: &str) -> (Server, String) {
    let init = db.cli(&["init"]);
    assert!(init.status.success(), "{}", common::stderr(&init));
    let key = create_source(db, "web");
    let config = server::users(db);
    if !extra_config.is_empty() {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .unwrap();
        writeln!(f, "\n{extra_config}").unwrap();
    }
    let s = Server::start(db, &config, &["--http", "127.0.0.1:0"]);
    (s, key)
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: Vec<u8>,
    gzip: bool,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = http.post(url).header("content-type", "application/json");
    if let Some(k) = key {
        r = r.header("authorization", basic(k));
    }
    if gzip {
        r = r.header("content-encoding", "gzip");
    }
    let resp = r.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v, headers)
}

/// POST one message to `/v1/track` with Basic auth.
async fn post_track(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    message: Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let url = format!("{base}/v1/track");
    post(
        http,
        &url,
        Some(key),
        message.to_string().into_bytes(),
        false,
    )
    .await
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fn track(user: &str, event: &str, mid: &str, props: Value) -> Value {
    json!({"type": "track", "userId": user, "event": event, "messageId": mid, "properties": props})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_speaks_the_wire_contract() {
    let db = TestDb::new();
    let (s, key) = start(&db, "");
    let base = s.http.clone().unwrap();
    let http = reqwest::Client::new();
    let batch = |msgs: Vec<Value>| serde_json::to_vec(&json!({"batch": msgs})).unwrap();

    // Health and metrics.
    let h = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(h.status().as_u16(), 200);

    // No key, a wrong key: 401 and nothing stored.
    let body = batch(vec![track("u-nokey", "e", "m-nokey", json!({}))]);
    let (st, v, _) = post(
        &http,
        &format!("{base}/v1/batch"),
        None,
        body.clone(),
        false,
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    assert_eq!(v["success"], false);
    let (st, _, _) = post(
        &http,
        &format!("{base}/v1/batch"),
        Some("wrong"),
        body,
        false,
    )
    .await;
    assert_eq!(st, 401);

    // Malformed, non-UTF-8, deeply nested, out-of-range numbers: 400 invalid_json.
    for bad in [
        b"{\"batch\": [".to_vec(),
        b"{\"batch\": [{\"type\":\"track\",\"event\":\"\xff\xfe\"}]}".to_vec(),
        format!(
            "{{\"batch\":[{}{}]}}",
            "{\"a\":".repeat(5_000),
            "1".to_string() + &"}".repeat(5_000)
        )
        .into_bytes(),
        b"{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\",\"properties\":{\"n\":1e400}}"
            .to_vec(),
    ] {
        let (st, v, _) = post(&http, &format!("{base}/v1/batch"), Some(&key), bad, false).await;
        assert_eq!((st, v["code"].as_str()), (400, Some("invalid_json")), "{v}");
    }
    // Too large: the request, a batch of 2,501, one 40 KB message, a gzip bomb.
    let big = vec![b' '; 600 * 1024];
    let (st, v, _) = post(&http, &format!("{base}/v1/batch"), Some(&key), big, false).await;
    assert_eq!((st, v["code"].as_str()), (413, Some("too_large")), "{v}");
    let many: Vec<Value> = (0..2_501)
        .map(|i| track("u", "e", &format!("many-{i}"), json!({})))
        .collect();
    let (st, _, _) = post(
        &http,
        &format!("{base}/v1/batch"),
        Some(&key),
        batch(many),
        false,
    )
    .await;
    assert_eq!(st, 413);
    let fat = batch(vec![track(
        "u",
        "e",
        "fat",
        json!({"blob": "x".repeat(40_000)}),
    )]);
    let (st, _, _) = post(&http, &format!("{base}/v1/batch"), Some(&key), fat, false).await;
    assert_eq!(st, 413);
    let bomb = gz(&vec![b' '; 64 << 20]);
    let (st, _, _) = post(&http, &format!("{base}/v1/batch"), Some(&key), bomb, true).await;
    assert_eq!(st, 413);
    let none = sql(&db, "SELECT count(*) FROM events");
    assert_eq!(none, ["0"], "nothing of a refused request is stored");

    // A gzip batch, acknowledged after its commit: the next statement sees it, typed.
    let ok = serde_json::to_vec(&json!({
        "batch": [
            track("u-1", "Order Completed", "m-1", json!({"productID": 7, "price": 9.5, "tags": ["a", "b"]})),
            {"type": "page", "anonymousId": "anon-1", "name": "Home", "messageId": "m-2",
             "properties": {"path": "/"}},
            {"type": "identify", "userId": "u-1", "anonymousId": "anon-1", "messageId": "m-3",
             "traits": {"plan": "pro", "age": 41}},
        ],
        "context": {"ip": "81.2.69.142", "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15"},
        "sentAt": "2026-12-01T10:00:05Z"
    }))
    .unwrap();
    let (st, v, _) = post(
        &http,
        &format!("{base}/v1/batch"),
        Some(&key),
        gz(&ok),
        true,
    )
    .await;
    assert_eq!((st, &v), (200, &json!({"success": true})));
    let rows = sql(
        &db,
        "SELECT event, user_id = pseudonymize('u-1'), product_id, price, tags, context_country, context_browser, source, message_id, arrow_typeof(product_id), arrow_typeof(price) FROM events ORDER BY message_id",
    );
    assert_eq!(
        rows,
        [
            "Order Completed,true,7,9.5,\"[\"\"a\"\",\"\"b\"\"]\",GB,Safari,web,m-1,Int64,Float64",
            "page,false,,,,GB,Safari,web,m-2,Int64,Float64",
        ]
    );
    // New columns come in the order the message named them (raw text: json! would sort keys).
    let ordered = br#"{"type":"track","userId":"u-9","event":"Ordered","messageId":"ord-1",
        "properties":{"zeta":1,"alpha":"x","Zeta":2}}"#;
    let (st, _, _) = post(
        &http,
        &format!("{base}/v1/track"),
        Some(&key),
        ordered.to_vec(),
        false,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        sql(
            &db,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'events' \
             AND column_name IN ('zeta', 'alpha') ORDER BY ordinal_position"
        ),
        ["zeta", "alpha"]
    );
    // The first of two keys with one column name is kept.
    assert_eq!(
        sql(&db, "SELECT zeta FROM events WHERE message_id = 'ord-1'"),
        ["1"]
    );
    let prof = sql(
        &db,
        "SELECT plan, age FROM profiles WHERE user_id = pseudonymize('u-1')",
    );
    assert_eq!(prof, ["pro,41"]);
    // identify with both ids linked them: one profile.
    let linked = sql(
        &db,
        "SELECT identity_of(pseudonymize('anon-1')) = identity_of(pseudonymize('u-1'))",
    );
    assert_eq!(linked, ["true"]);

    // The same messageIds again (an SDK retrying): acknowledged, not stored again.
    let (st, _, _) = post(
        &http,
        &format!("{base}/v1/batch"),
        Some(&key),
        gz(&ok),
        true,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(sql(&db, "SELECT count(*) FROM events"), ["3"]);

    // The browser SDK's one-letter text/plain path with the key in the body; the beacon with the
    // key in the query; /v1/m ignored; sourceConfig.
    let t = json!({"writeKey": key, "event": "Clicked", "userId": "u-2", "messageId": "m-4"});
    let resp = http
        .post(format!("{base}/v1/t"))
        .header("content-type", "text/plain")
        .body(t.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let beacon = json!({"batch": [track("u-3", "Beacon", "m-5", json!({}))]});
    let resp = http
        .post(format!("{base}/beacon/v1/batch?writeKey={key}"))
        .header("content-type", "text/plain")
        .body(beacon.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = http
        .post(format!("{base}/v1/m"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cfg = http
        .get(format!("{base}/sourceConfig/?p=web"))
        .header("authorization", basic(&key))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cfg: Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(
        cfg,
        json!({"source": {"id": "web", "config": {}, "enabled": true, "destinations": []}})
    );
    let unauth = http
        .get(format!("{base}/sourceConfig/"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status().as_u16(), 401);
    assert_eq!(
        sql(
            &db,
            "SELECT event FROM events WHERE message_id IN ('m-4','m-5') ORDER BY 1"
        ),
        ["Beacon", "Clicked"]
    );

    // CORS: a preflight from another origin is answered, and Retry-After is exposed.
    let pre = http
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/t"))
        .header("origin", "http://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-retry-count",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "http://shop.example");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("x-retry-count"),
        "{allowed}"
    );
    assert!(
        h.get("access-control-allow-credentials").is_none(),
        "no cookies"
    );
    let resp = http
        .post(format!("{base}/v1/track"))
        .header("origin", "http://shop.example")
        .header("authorization", basic(&key))
        .body(track("u-2", "Again", "m-6", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_lowercase(),
        "retry-after"
    );

    // Rejects inside an accepted request: dropped or nulled, counted, never failing it.
    let mixed = batch(vec![
        json!({"type": "track", "event": "No Id", "messageId": "r-1"}),
        json!({"type": "track", "userId": "u-4", "messageId": "r-2"}),
        json!({"type": "launch", "userId": "u-4", "messageId": "r-3"}),
        track(
            "u-4",
            "Typed",
            "r-4",
            json!({"productID": "not a number", "email": "canary.9c2@example.com"}),
        ),
    ]);
    let (st, _, _) = post(&http, &format!("{base}/v1/batch"), Some(&key), mixed, false).await;
    assert_eq!(st, 200);
    assert_eq!(
        sql(
            &db,
            "SELECT event, product_id IS NULL FROM events WHERE message_id LIKE 'r-%'"
        ),
        ["Typed,true"]
    );
    // What only the server knows: rejects and counts, over Flight SQL.
    let mut admin = server::login(&s.addr, "admin", server::ADMIN_PW).await;
    let rejects = server::query(
        &mut admin,
        "SELECT reason, type, field, count(*) FROM collector_rejects('web') GROUP BY 1, 2, 3 ORDER BY 1, 3",
    )
    .await;
    let text = arrow::util::pretty::pretty_format_batches(&rejects)
        .unwrap()
        .to_string();
    for want in [
        "| invalid | track   | event    | 1 ",
        "| invalid |         | type     | 1 ",
        "| no_id   | track   |          | 1 ",
        "| pii     | track   | email    | 1 ",
        "| type    | track   | product_id | 1 ",
    ]
    .map(String::from)
    {
        let squeezed = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            squeezed(&text).contains(&squeezed(&want)),
            "{want} in\n{text}"
        );
    }
    // 10,000 distinct property names: capped at max_columns (500 for the table).
    let count_cols = "SELECT count(*) FROM information_schema.columns WHERE table_name = 'events'";
    let before: usize = sql(&db, count_cols)[0].parse().unwrap();
    let over = 10_000 - (500 - before);
    // 50 messages of 200 names each (each message under the 32 KB limit).
    let wide: Vec<Value> = (0..50)
        .map(|m| {
            let props: serde_json::Map<String, Value> = (0..200)
                .map(|i| (format!("p{}", m * 200 + i), json!(i)))
                .collect();
            track("u-5", "Wide", &format!("w-{m}"), Value::Object(props))
        })
        .collect();
    let (st, _, _) = post(
        &http,
        &format!("{base}/v1/batch"),
        Some(&key),
        batch(wide),
        false,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(sql(&db, count_cols), ["500"]);
    // The last 1,000 rejects are kept: all of them are the column rejects now.
    let kept = server::query(
        &mut admin,
        "SELECT reason, field IS NOT NULL, count(*) FROM collector_rejects('web') GROUP BY 1, 2",
    )
    .await;
    let kept = arrow::util::pretty::pretty_format_batches(&kept)
        .unwrap()
        .to_string();
    assert!(
        kept.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains("| columns | true | 1000 |"),
        "{kept}"
    );
    assert_eq!(
        sql(&db, "SELECT count(*) FROM events WHERE event = 'Wide'"),
        ["50"]
    );

    let shown = server::query(&mut admin, "SHOW SOURCES").await;
    let shown = arrow::util::pretty::pretty_format_batches(&shown)
        .unwrap()
        .to_string();
    // accepted: 3 + 1 (Ordered) + 1 + 1 + 1 + 1 (Typed) + 50 (Wide); deduplicated: 3;
    // rejected: no_id, 2 invalid, pii, type, the second zeta and the columns over the cap.
    let line = shown
        .lines()
        .find(|l| l.contains("| web"))
        .unwrap()
        .to_string();
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    let rejected = (over + 6).to_string();
    assert_eq!(&cells[5..8], ["58", "3", rejected.as_str()], "{shown}");
    // A reader may not see them; an analyst may.
    let mut reader = server::login(&s.addr, "reader", server::READER_PW).await;
    assert!(reader.execute("SHOW SOURCES".into(), None).await.is_err());
    assert!(
        reader
            .execute("SELECT * FROM collector_rejects()".into(), None)
            .await
            .is_err()
    );
    let mut analyst = server::login(&s.addr, "analyst", server::ANALYST_PW).await;
    assert_eq!(
        server::rows(&server::query(&mut analyst, "SELECT * FROM collector_rejects()").await),
        1_000
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("segdb_collector_accepted_total{source=\"web\"} 58"),
        "{metrics}"
    );
    assert!(metrics.contains("segdb_collector_deduplicated_total{source=\"web\"} 3"));

    // Privacy: the IP, the user agent, a raw id and an undeclared e-mail are nowhere on disk or
    // in the log.
    let log = s.stop();
    for canary in [
        "81.2.69.142",
        "Macintosh; Intel",
        "u-1",
        "anon-1",
        "canary.9c2@example.com",
    ] {
        let hits = common::files_containing(&db.data, canary);
        assert!(hits.is_empty(), "{canary} stored in {hits:?}");
        assert!(!log.contains(canary), "{canary} in the server log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collected_messages_follow_consent_erasure_merges_and_segments() {
    let db = TestDb::new();
    let (s, key) = start(&db, "");
    let base = s.http.clone().unwrap();
    let http = reqwest::Client::new();
    let send = |msgs: Vec<Value>| {
        let http = http.clone();
        let url = format!("{base}/v1/batch");
        let key = key.clone();
        async move {
            let (st, v, _) = post(
                &http,
                &url,
                Some(&key),
                serde_json::to_vec(&json!({"batch": msgs})).unwrap(),
                false,
            )
            .await;
            assert_eq!(st, 200, "{v}");
        }
    };
    // A segment defined before the events: each 200 counts at the next statement.
    let o = db.cli(&[
        "sql",
        "-c",
        "CREATE SEGMENT buyers AS DID 'Order Completed' IN THE LAST 7 DAYS",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    for i in 0..3 {
        send(vec![track(
            &format!("b-{i}"),
            "Order Completed",
            &format!("o-{i}"),
            json!({}),
        )])
        .await;
        assert_eq!(
            sql(&db, "SELECT segment_size('buyers')"),
            [(i + 1).to_string()]
        );
    }

    // Profiles merge: traits not sent keep their values.
    send(vec![
        json!({"type": "identify", "userId": "b-0", "traits": {"plan": "pro", "age": 41}}),
    ])
    .await;
    send(vec![
        json!({"type": "identify", "userId": "b-0", "traits": {"plan": "gold"}}),
    ])
    .await;
    assert_eq!(
        sql(
            &db,
            "SELECT plan, age FROM profiles WHERE user_id = pseudonymize('b-0')"
        ),
        ["gold,41"]
    );

    // Consent: a row when it changes, nothing when it repeats.
    let consent = |adv: bool, mid: &str| {
        json!({"type": "track", "userId": "b-1", "event": "Consented", "messageId": mid,
               "context": {"consent": {"categoryPreferences": {"Advertising": adv}, "tcString": "CPtest"}}})
    };
    send(vec![consent(true, "c-1")]).await;
    send(vec![consent(true, "c-2")]).await;
    send(vec![consent(false, "c-3")]).await;
    assert_eq!(
        sql(
            &db,
            "SELECT purpose, granted, tc_string FROM consent WHERE user_id = pseudonymize('b-1') ORDER BY recorded_at, purpose NULLS LAST"
        ),
        ["advertising,true,", ",,CPtest", "advertising,false,"]
    );
    assert_eq!(
        sql(
            &db,
            "SELECT has_consent(pseudonymize('b-1'), 'advertising')"
        ),
        ["false"]
    );

    // Alias ties two ids into one profile.
    send(vec![
        json!({"type": "alias", "previousId": "old-b2", "userId": "b-2"}),
    ])
    .await;
    assert_eq!(
        sql(
            &db,
            "SELECT identity_of(pseudonymize('old-b2')) = identity_of(pseudonymize('b-2'))"
        ),
        ["true"]
    );

    // Erasure: a forgotten user's messages are acknowledged and dropped.
    let o = db.cli(&["sql", "-c", "FORGET USER 'b-2'"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    send(vec![track("b-2", "Order Completed", "f-1", json!({}))]).await;
    assert_eq!(
        sql(&db, "SELECT count(*) FROM events WHERE message_id = 'f-1'"),
        ["0"]
    );
    let mut admin = server::login(&s.addr, "admin", server::ADMIN_PW).await;
    let forgotten = server::query(
        &mut admin,
        "SELECT count(*) FROM collector_rejects() WHERE reason = 'forgotten'",
    )
    .await;
    assert_eq!(server::first_i64(&forgotten), 1);

    // Key rotation: the old key keeps working within its grace, a dropped source's does not.
    let rotated = server::query(&mut admin, "ALTER SOURCE web ROTATE KEY").await;
    let new_key = rotated[0]
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    assert_ne!(new_key, key);
    for k in [&key, &new_key] {
        let (st, _, _) = post_track(
            &http,
            &base,
            k,
            track("b-3", "Rotated", &format!("k-{}", &k[..4]), json!({})),
        )
        .await;
        assert_eq!(st, 200);
    }
    server::query(&mut admin, "DROP SOURCE web").await;
    // Known keys are checked against the catalog at most once a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (st, _, _) = post_track(
        &http,
        &base,
        &new_key,
        track("b-3", "Dropped", "k-x", json!({})),
    )
    .await;
    assert_eq!(st, 401, "a dropped source's key stops working");
    // Nothing of the key is stored but its keyed hash and its first 8 characters.
    s.stop();
    assert!(common::files_containing(&db.data, &new_key).is_empty());
    assert!(common::files_containing(&db.data, &key[8..]).is_empty());

    // OPTIMIZE compacts without changing data or the segment.
    let before = sql(&db, "SELECT count(*), segment_size('buyers') FROM events");
    let o = db.cli(&["optimize", "events"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    assert!(out.contains("events"), "{out}");
    assert_eq!(
        sql(&db, "SELECT count(*), segment_size('buyers') FROM events"),
        before
    );
    let o = db.cli(&["optimize", "nope"]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("no table \"nope\""),
        "{}",
        common::stderr(&o)
    );
}

/// Run a script of tests/collector with the test venv's Python.
fn python_sdks(http: &str, key: &str, prefix: &str) -> bool {
    let Some(py) = crate::segments::python() else {
        return false;
    };
    let out = Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/collector/sdks.py"))
        // `--key=…`: a key may start with '-'.
        .args(["--http", http, &format!("--key={key}"), "--prefix", prefix])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdks.py failed: {}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdks_land_events() {
    let db = TestDb::new();
    let (s, key) = start(&db, "");
    let o = db.cli(&[
        "sql",
        "-c",
        "CREATE SEGMENT py_buyers AS DID 'Order Completed'",
    ]);
    assert!(o.status.success());
    if !python_sdks(s.http.as_deref().unwrap(), &key, "py") {
        return;
    }
    // flush() returned: everything is committed and counts.
    assert_eq!(sql(&db, "SELECT segment_size('py_buyers')"), ["1"]);
    let rows = sql(
        &db,
        "SELECT event, CASE WHEN user_id = pseudonymize('py-seg-1') THEN 'seg' WHEN user_id = pseudonymize('py-rud-1') THEN 'rud' ELSE 'anon' END, product_id, price, plan_name, product_sku, group_id, name, amount, context_library_name FROM events ORDER BY event",
    );
    assert_eq!(
        rows,
        [
            "Order Completed,seg,7,9.5,gold,s-1,,,,analytics-python",
            "Signed Up,rud,,,,,,,12,analytics-python",
            "Viewed,anon,,,,,,,,analytics-python",
            "group,seg,,,,,acme,,,analytics-python",
            "page,seg,,,,,,Pricing,,analytics-python",
            "screen,rud,,,,,,Home,,analytics-python",
        ]
    );
    assert_eq!(
        sql(
            &db,
            "SELECT arrow_typeof(product_id), arrow_typeof(price), arrow_typeof(amount) FROM events LIMIT 1"
        ),
        ["Int64,Float64,Int64"]
    );
    // Segment's traits and RudderStack's context.traits; the undeclared e-mail dropped.
    assert_eq!(
        sql(&db, "SELECT plan, age FROM profiles ORDER BY plan"),
        ["basic,", "pro,41"]
    );
    assert_eq!(
        sql(
            &db,
            "SELECT identity_of(pseudonymize('py-anon-1')) = identity_of(pseudonymize('py-seg-1'))"
        ),
        ["true"]
    );
    s.stop();
    assert!(common::files_containing(&db.data, "canary.seg@example.com").is_empty());
}

/// Send batches until the server dies; the ids of each acknowledged batch go to `acked`.
async fn send_until_dead(
    base: String,
    key: String,
    tag: String,
    acked: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    sent: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for n in 0.. {
        let msgs: Vec<Value> = (0..20)
            .map(|i| {
                let id = format!("{tag}-{n}-{i}");
                match i % 10 {
                    // An identify and an alias in each batch: every type is deduplicated.
                    3 => json!({"type": "identify", "userId": format!("k-{}", i % 7), "messageId": id,
                                "traits": {"n": n}}),
                    7 => json!({"type": "alias", "previousId": format!("ka-{tag}-{n}-{i}"),
                                "userId": format!("k-{}", i % 7), "messageId": id}),
                    _ => track(&format!("k-{}", i % 7), "Crash", &id, json!({"n": n})),
                }
            })
            .collect();
        let body = json!({"batch": msgs});
        sent.lock().unwrap().push(body.clone());
        let r = http
            .post(format!("{base}/v1/batch"))
            .header("authorization", basic(&key))
            .body(body.to_string())
            .send()
            .await;
        match r {
            Ok(resp) if resp.status().as_u16() == 200 => acked.lock().unwrap().push(body),
            Ok(_) => {}
            Err(_) => return, // the server is gone
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_exactly_once() {
    let db = TestDb::new();
    let (mut s, key) = start(&db, "");
    let config = db.dir.path().join("segdb.toml");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill schedule seed: {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rng >> 33
    };
    for round in 0..20 {
        // Every fifth round dies exactly between the data commits and the dedup log's commit.
        if round > 0 {
            let env: &[(&str, &str)] = if round % 5 == 0 {
                &[("SEGDB_FAILPOINT", "collector-before-log")]
            } else {
                &[]
            };
            s = Server::start_env(&db, &config, &["--http", "127.0.0.1:0"], env);
        }
        let base = s.http.clone().unwrap();
        let tasks: Vec<_> = (0..3)
            .map(|t| {
                tokio::spawn(send_until_dead(
                    base.clone(),
                    key.clone(),
                    format!("r{round}t{t}"),
                    acked.clone(),
                    sent.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150 + next() % 1_200)).await;
        s.child.kill().unwrap(); // SIGKILL
        s.child.wait().unwrap();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
    }
    let acked: Vec<Value> = acked.lock().unwrap().clone();
    let sent: Vec<Value> = sent.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "too few batches were acknowledged to mean anything: {}",
        acked.len()
    );
    let ids = |batches: &[Value], kind: &str| -> std::collections::BTreeSet<String> {
        batches
            .iter()
            .flat_map(|b| b["batch"].as_array().unwrap().clone())
            .filter(|m| m["type"] == kind)
            .map(|m| m["messageId"].as_str().unwrap().to_string())
            .collect()
    };
    // The database opens clean, and every acknowledged track is stored exactly once.
    let stored: Vec<String> = sql(&db, "SELECT message_id FROM events WHERE event = 'Crash'");
    let unique: std::collections::BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), unique.len(), "a message was stored twice");
    let acked_tracks = ids(&acked, "track");
    let missing: Vec<&String> = acked_tracks.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );

    // The SDKs retry everything they sent: nothing is stored twice, everything once.
    let s = Server::start(&db, &config, &["--http", "127.0.0.1:0"]);
    let base = s.http.clone().unwrap();
    let http = reqwest::Client::new();
    for b in &sent {
        let (st, v, _) = post(
            &http,
            &format!("{base}/v1/batch"),
            Some(&key),
            b.to_string().into_bytes(),
            false,
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    let stored: Vec<String> = sql(&db, "SELECT message_id FROM events WHERE event = 'Crash'");
    let unique: std::collections::BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(
        stored.len(),
        unique.len(),
        "a resent message was stored twice"
    );
    assert_eq!(unique, ids(&sent, "track"));
    // The event index agrees with the table after all that.
    let o = db.cli(&["sql", "-c", "CREATE SEGMENT crashers AS DID 'Crash'"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    // (stitched and raw agree: each alias ties a fresh id to one user.)
    for identity in ["stitched", "raw"] {
        assert_eq!(
            sql(
                &db,
                &format!("SET segdb.identity = '{identity}'; SELECT segment_size('crashers')")
            ),
            sql(
                &db,
                "SELECT count(DISTINCT user_id) FROM events WHERE event = 'Crash'"
            ),
            "{identity}"
        );
    }
    s.stop();
}

/// `tests/collector/js/setup.sh` → the cached node_modules (`None`: no Node here and
/// SEGDB_REQUIRE_JS unset).
pub(crate) fn node_modules() -> Option<String> {
    let have_node = Command::new("node").arg("--version").output().is_ok();
    if !have_node {
        assert!(
            std::env::var("SEGDB_REQUIRE_JS").is_err(),
            "SEGDB_REQUIRE_JS is set but there is no node"
        );
        return None;
    }
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/collector/js/setup.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup.sh failed: {}",
        common::stderr(&out)
    );
    common::stdout(&out).lines().last().map(str::to_string)
}

fn node(script: &str, http: &str, key: &str, prefix: &str, modules: &str) {
    let out = Command::new("node")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/collector/js")
                .join(script),
        )
        .args([
            "--http",
            http,
            "--key",
            key,
            "--prefix",
            prefix,
            "--modules",
            modules,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_browser_sdks_land_events() {
    let Some(modules) = node_modules() else {
        return;
    };
    let db = TestDb::new();
    let (s, key) = start(&db, "");
    let http = s.http.clone().unwrap();
    let o = db.cli(&[
        "sql",
        "-c",
        "CREATE SEGMENT js_buyers AS DID 'Order Completed'",
    ]);
    assert!(o.status.success());
    // @segment/analytics-node: closeAndFlush() returned, so the event counts.
    node("node_sdk.mjs", &http, &key, "js", &modules);
    assert_eq!(sql(&db, "SELECT segment_size('js_buyers')"), ["1"]);
    // @segment/analytics-next and @rudderstack/analytics-js in headless Chromium, on a page of
    // another origin (real CORS preflights), nothing sent anywhere but the collector.
    node("browser.mjs", &http, &key, "js", &modules);
    let who = "CASE user_id WHEN pseudonymize('js-node-1') THEN 'node' \
               WHEN pseudonymize('js-anon-node') THEN 'node-anon' \
               WHEN pseudonymize('js-web-seg-1') THEN 'seg' \
               WHEN pseudonymize('js-web-rud-1') THEN 'rud' ELSE user_id END";
    let rows = sql(
        &db,
        &format!(
            "SELECT event, {who}, product_id, price, amount, name, context_library_name IS NOT NULL \
             FROM events ORDER BY 2, 1"
        ),
    );
    assert_eq!(
        rows,
        [
            "Order Completed,node,7,9.5,,,true",
            "page,node-anon,,,,Home,true",
            "Signed Up,rud,,,3,,true",
            "page,rud,,,,,true",
            "Product Viewed,seg,,12.5,,,true",
            "page,seg,,,,Docs,true",
        ]
    );
    assert_eq!(
        sql(&db, &format!("SELECT {who}, plan FROM profiles ORDER BY 1")),
        ["node,pro", "rud,basic", "seg,pro"]
    );
    // The browser's IP and user agent became a browser name and were not kept.
    assert_eq!(
        sql(
            &db,
            "SELECT DISTINCT context_browser FROM events WHERE source = 'web' AND context_browser IS NOT NULL"
        ),
        ["Chrome"]
    );
    s.stop();
    assert!(common::files_containing(&db.data, "HeadlessChrome").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_failed_commits_and_scheduled_compaction() {
    // 429 with Retry-After while more than max_pending_events wait; compaction every second.
    let db = TestDb::new();
    let (s, key) = start(
        &db,
        "[collector]\nmax_pending_events = 1\ncommit_interval = '1500 milliseconds'\ncompact_every = '1 second'\nkey_grace = '1 second'",
    );
    let base = s.http.clone().unwrap();
    let http = reqwest::Client::new();
    let first = {
        let (http, base, key) = (http.clone(), base.clone(), key.clone());
        tokio::spawn(async move {
            post_track(
                &http,
                &base,
                &key,
                track("bp-1", "Waited", "bp-1", json!({})),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (st, v, headers) = post_track(
        &http,
        &base,
        &key,
        track("bp-2", "Refused", "bp-2", json!({})),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (429, Some("rate_limited")), "{v}");
    assert_eq!(headers["retry-after"], "1");
    let (st, _, _) = first.await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sql(&db, "SELECT event FROM events"), ["Waited"]);
    // The scheduled compaction ran after that commit: events has a checkpoint.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = db.data.join("events/_delta_log");
        let checkpoint = std::fs::read_dir(&log).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains("checkpoint")
        });
        if checkpoint {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no compaction ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sql(&db, "SELECT event FROM events"), ["Waited"]);
    // `segdb sql --config` rotates with the file's key_grace: the old key ends after a second.
    let config = db.dir.path().join("segdb.toml");
    let o = db.cli(&[
        "sql",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "csv",
        "-c",
        "ALTER SOURCE web ROTATE KEY",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    let new_key = out
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(1)
        .unwrap()
        .to_string();
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    for (k, want) in [(&key, 401), (&new_key, 200)] {
        let (st, _, _) = post_track(
            &http,
            &base,
            k,
            track("bp-k", "Keyed", &format!("bp-k-{want}"), json!({})),
        )
        .await;
        assert_eq!(st, want);
    }
    s.stop();
    let key = new_key;

    // A commit that fails is answered 503 and stores nothing.
    let s = Server::start_env(
        &db,
        &config,
        &["--http", "127.0.0.1:0"],
        &[("SEGDB_FAILPOINT", "collector-commit-fails")],
    );
    let base = s.http.clone().unwrap();
    let (st, v, _) = post_track(
        &http,
        &base,
        &key,
        track("bp-3", "Failed", "bp-3", json!({})),
    )
    .await;
    assert_eq!((st, v["code"].as_str()), (503, Some("unavailable")), "{v}");
    assert_eq!(sql(&db, "SELECT count(*) FROM events"), ["2"]);
    drop(s);
}

/// A long-running process extends its cached index and timelines by the appended commits
/// (what the collector's stream of commits needs); the answers equal a fresh process's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_index_is_extended_by_appends_and_answers_the_same() {
    let db = TestDb::new();
    let load = |name: &str, rows: &str| {
        let f = db.input(name, &format!("user_id,event,ts\n{rows}"));
        db.ingest_cli("events", &f);
    };
    load(
        "a.csv",
        "u1,buy,2026-03-01T10:00:00Z\nu2,buy,2026-03-02T10:00:00Z\nu3,view,2026-03-02T11:00:00Z\n",
    );
    let q = "SELECT segment_size('s')";
    let e = db.engine().await;
    e.sql("SET segdb.as_of = '2026-03-03T12:00:00Z'")
        .await
        .unwrap();
    // The window's edge days are partial (as_of at noon): timelines are built for them.
    e.sql("CREATE SEGMENT s AS DID 'buy' AT LEAST 2 TIMES IN THE LAST 2 DAYS")
        .await
        .unwrap();
    assert_eq!(common::count(&e, q).await, 0);
    let answers = |e: segdb::Engine| async move {
        let mut out = Vec::new();
        for sql in [
            q,
            "SELECT segment_size('t')",
            "SELECT count(*) FROM segment_members('s')",
        ] {
            out.push(common::count(&e, sql).await);
        }
        out
    };
    // Appends: to an edge day, to the middle, and an event the segment does not use.
    load(
        "b.csv",
        "u1,buy,2026-03-01T13:00:00Z\nu2,buy,2026-03-02T12:00:00Z\nu3,view,2026-03-03T09:00:00Z\n",
    );
    e.sql("CREATE SEGMENT t AS DID 'view' IN THE LAST 2 DAYS")
        .await
        .unwrap();
    load(
        "c.csv",
        "u1,buy,2026-03-03T11:00:00Z\nu4,view,2026-03-01T12:30:00Z\n",
    );
    let cached = answers(e).await;
    let fresh = db.engine().await;
    fresh
        .sql("SET segdb.as_of = '2026-03-03T12:00:00Z'")
        .await
        .unwrap();
    assert_eq!(cached, answers(fresh).await);
    assert_eq!(cached, vec![2, 2, 2]);
}
