//! The web console (DESIGN §16): in real headless Chromium (tests/collector/js/console.mjs: log
//! in by keyboard, editor, segment page, SQL and CSV, axe-core on every page), and its API's
//! promises tested around the browser: no session → 401, no or a wrong CSRF token → 403, a
//! reader's DDL refused, `lookup` kept out, JSON values as DESIGN §16 says, `max_rows`, and a raw
//! id typed into "why" in no log line.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{self, TestDb};
use crate::server::{self, ANALYST_PW, READER_PW, Server};

const LOOKUP_PW: &str = "lookup-pw-88aa";
const CANARY: &str = "console.canary.4417@example.com";

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// Log in; returns (cookie header, csrf token).
    async fn login(&self, user: &str, pw: &str) -> (reqwest::StatusCode, Option<(String, String)>) {
        let r = self
            .http
            .post(format!("{}/api/login", self.base))
            .header("content-type", "application/json")
            .body(json!({"user": user, "password": pw}).to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let cookie = r
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        match (status.is_success(), cookie) {
            (true, Some(c)) => {
                assert!(
                    c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/"),
                    "{c}"
                );
                let pair = c.split(';').next().unwrap().to_string();
                (
                    status,
                    Some((pair, body["csrf"].as_str().unwrap().to_string())),
                )
            }
            _ => (status, None),
        }
    }

    async fn sql(
        &self,
        cookie: Option<&str>,
        csrf: Option<&str>,
        origin: Option<&str>,
        sql: &str,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/api/sql", self.base))
            .header("content-type", "application/json")
            .body(json!({ "sql": sql }).to_string());
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        )
    }
}

fn node_console(modules: &str, http: &str, shots: &Path) -> Value {
    let out = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/collector/js/console.mjs"))
        .args([
            "--http",
            http,
            "--user",
            "analyst",
            "--password",
            ANALYST_PW,
        ])
        .args(["--raw-id", CANARY, "--shots"])
        .arg(shots)
        .args(["--modules", modules])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "console.mjs failed: {}\n{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    serde_json::from_str(common::stdout(&out).lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser_and_its_api() {
    let db = TestDb::new();
    {
        let e = db.engine().await;
        segdb::cli::demo::load(&e, 1500, false).await.unwrap();
        // A known person (the canary) who bought recently in Germany.
        let today = chrono::Utc::now().date_naive();
        let f = db.input(
            "canary.csv",
            &format!(
                "user_id,event,ts\n{CANARY},purchase,{}T10:00:00Z\n{CANARY},purchase,{}T11:00:00Z\n",
                today - chrono::Days::new(3),
                today - chrono::Days::new(2)
            ),
        );
        e.ingest(segdb::ingest::Kind::Events, &[f], &Default::default())
            .await
            .unwrap();
        let p = db.input("canary-p.csv", &format!("user_id,country\n{CANARY},DE\n"));
        let opts = segdb::ingest::IngestOptions {
            merge: true,
            ..Default::default()
        };
        e.ingest(segdb::ingest::Kind::Profiles, &[p], &opts)
            .await
            .unwrap();
        // A segment with a holdout, measured ten days after its snapshot.
        e.sql("CREATE MATERIALIZED SEGMENT promo HOLDOUT 20 PERCENT AS DID 'view_item' IN THE LAST 14 DAYS")
            .await
            .unwrap();
        e.sql("REFRESH SEGMENT promo AS OF '-10 days'")
            .await
            .unwrap();
    }
    let config = server::users(&db);
    server::add_user(&config, "lookup", "lookup", LOOKUP_PW);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .unwrap();
        writeln!(f, "\n[http]\nmax_rows = 20").unwrap();
    }
    let s = Server::start(&db, &config, &["--http", "127.0.0.1:0"]);
    let base = s.http.clone().unwrap();
    let c = Client {
        http: reqwest::Client::new(),
        base: base.clone(),
    };

    // The page: strict CSP, no inline script.
    let r = c.http.get(format!("{base}/")).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    assert!(
        !html.contains("<script>") && html.contains("src=\"/assets/app.js\""),
        "{html}"
    );

    // No session, a wrong password, the lookup role: kept out.
    let (status, body) = c.sql(None, None, None, "SELECT 1").await;
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (401, Some("unauthenticated"))
    );
    assert_eq!(c.login("analyst", "wrong").await.0, 401);
    assert_eq!(c.login("lookup", LOOKUP_PW).await.0, 403);

    // A session without its CSRF token (or with another), or from another site: 403.
    let (_, analyst) = c.login("analyst", ANALYST_PW).await;
    let (cookie, csrf) = analyst.unwrap();
    assert_eq!(c.sql(Some(&cookie), None, None, "SELECT 1").await.0, 403);
    assert_eq!(
        c.sql(Some(&cookie), Some("forged"), None, "SELECT 1")
            .await
            .0,
        403
    );
    // Another site's page, even holding the token: its Origin is not this listener.
    assert_eq!(
        c.sql(
            Some(&cookie),
            Some(&csrf),
            Some("http://evil.example"),
            "SELECT 1"
        )
        .await
        .0,
        403
    );
    assert_eq!(
        c.sql(Some(&cookie), Some(&csrf), Some(&base), "SELECT 1")
            .await
            .0,
        200
    );
    let r = c
        .http
        .post(format!("{base}/api/login"))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("user=analyst&password={ANALYST_PW}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a login from another site's form");
    // A profile-API token of the lookup role used as the console's cookie: still refused.
    use base64::Engine as _;
    let r = c
        .http
        .post(format!("{base}/v1/auth/token"))
        .header(
            "authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("lookup:{LOOKUP_PW}"))
            ),
        )
        .send()
        .await
        .unwrap();
    let tok: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let r = c
        .http
        .get(format!("{base}/api/me"))
        .header(
            "cookie",
            format!("segdb_session={}", tok["token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Bad requests get their answers and the server stays up.
    let raw = |path: &str, body: &'static str, with_session: bool| {
        let mut r = c
            .http
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body);
        if with_session {
            r = r.header("cookie", &cookie).header("x-csrf-token", &csrf);
        }
        r.send()
    };
    assert_eq!(
        raw("/api/sql", "not json", true).await.unwrap().status(),
        400
    );
    assert_eq!(
        raw("/api/sql", "{\"query\": 1}", true)
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(raw("/api/login", "[[[", false).await.unwrap().status(), 400);
    assert_eq!(
        c.sql(Some(&cookie), Some(&csrf), None, "SELECT 1; SELECT 2")
            .await
            .0,
        400
    );
    let r = c
        .http
        .get(format!("{base}/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        c.sql(Some(&cookie), Some(&csrf), None, "SELECT 1").await.0,
        200
    );

    // Values: integers past 2^53 as strings, timestamps ISO-8601 UTC, binary base64.
    let (status, body) = c
        .sql(
            Some(&cookie),
            Some(&csrf),
            None,
            "SELECT 9007199254740993 AS big, 7 AS small, TIMESTAMP '2026-01-02T03:04:05Z' AS t, X'0102' AS b, NULL AS n",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rows"],
        json!([["9007199254740993", 7, "2026-01-02T03:04:05Z", "AQI=", null]])
    );
    assert_eq!(body["columns"][0], json!({"name": "big", "type": "Int64"}));
    assert_eq!(body["truncated"], json!(false));
    // [http] max_rows = 20: the answer says it was cut.
    let (_, body) = c
        .sql(
            Some(&cookie),
            Some(&csrf),
            None,
            "SELECT user_id FROM profiles",
        )
        .await;
    assert_eq!(
        (body["rows"].as_array().unwrap().len(), &body["truncated"]),
        (20, &json!(true))
    );
    // An editor error: its position in the expression.
    let (status, body) = c
        .sql(
            Some(&cookie),
            Some(&csrf),
            None,
            "SELECT segment_size_of('DID ''purchase''\n IN THE LAST 3 DAYZ')",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        (
            &body["error"]["kind"],
            &body["error"]["line"],
            &body["error"]["column"]
        ),
        (&json!("invalid"), &json!(2), &json!(16)),
        "{body}"
    );
    // segment_size_of agrees with a saved segment.
    let def = "DID 'purchase' IN THE LAST 14 DAYS AND PROFILE country = 'DE'";
    let (_, sized) = c
        .sql(
            Some(&cookie),
            Some(&csrf),
            None,
            &format!("SELECT segment_size_of('{}')", def.replace('\'', "''")),
        )
        .await;
    let (_, saved) = c
        .sql(
            Some(&cookie),
            Some(&csrf),
            None,
            &format!("CREATE OR REPLACE SEGMENT api_de AS {def}"),
        )
        .await;
    assert_eq!(sized["rows"][0][0], saved["rows"][0][1], "{sized} {saved}");
    // Unknown things are 404s, a reader's DDL a 403.
    let (status, body) = c
        .sql(
            Some(&cookie),
            Some(&csrf),
            None,
            "EXPLAIN SEGMENT api_de FOR USER 'nobody@example.com'",
        )
        .await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (404, Some("unknown user"))
    );
    let (status, body) = c
        .sql(
            Some(&cookie),
            Some(&csrf),
            None,
            "SELECT segment_size('api_dee')",
        )
        .await;
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean 'api_de'"),
        "{body}"
    );
    let (_, reader) = c.login("reader", READER_PW).await;
    let (rcookie, rcsrf) = reader.unwrap();
    let (status, body) = c
        .sql(
            Some(&rcookie),
            Some(&rcsrf),
            None,
            "CREATE SEGMENT nope AS ALL USERS",
        )
        .await;
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (403, Some("denied")),
        "{body}"
    );
    let (status, _) = c
        .sql(
            Some(&rcookie),
            Some(&rcsrf),
            None,
            "SELECT segment_size('api_de')",
        )
        .await;
    assert_eq!(status, 200);

    // A source and one collected event, for the Sources page's tail.
    let (_, admin) = c.login("admin", server::ADMIN_PW).await;
    let (acookie, acsrf) = admin.unwrap();
    let (status, body) = c
        .sql(Some(&acookie), Some(&acsrf), None, "CREATE SOURCE web")
        .await;
    assert_eq!(status, 200, "{body}");
    let key = body["rows"][0][1].as_str().unwrap().to_string();
    let r = c
        .http
        .post(format!("{base}/v1/track"))
        .header(
            "authorization",
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))),
        )
        .header("content-type", "application/json")
        .body(json!({"userId": "tail.canary@example.com", "event": "Console Tail", "messageId": "console-m1"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The browser.
    let Some(modules) = crate::collector::node_modules() else {
        s.stop();
        return;
    };
    let shots = std::env::var("SEGDB_CONSOLE_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| db.dir.path().join("shots"));
    let summary = node_console(&modules, &base, &shots);
    eprintln!("console: {summary}");
    assert_eq!(summary["ok"], json!(true), "{summary}");
    for page in [
        "login", "segments", "editor", "segment", "lift", "sql", "sources",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
    // The saved segment is there, with the editor's size.
    let (_, body) = c
        .sql(
            Some(&cookie),
            Some(&csrf),
            None,
            "SELECT segment_size('console_de_buyers')",
        )
        .await;
    assert!(body["rows"][0][0].as_u64().unwrap() > 0, "{body}");
    let log = s.stop();
    assert!(log.contains("console login"), "the server logs logins");
    assert!(
        !log.contains(CANARY),
        "the raw id typed into 'why' reached the log"
    );
    assert!(common::files_containing(&db.data, CANARY).is_empty());
}

/// `[http] console = false` leaves the listener to the collector and the profile API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_can_be_turned_off() {
    let db = TestDb::with_one_event();
    let config = server::users(&db);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .unwrap();
        writeln!(f, "\n[http]\nconsole = false").unwrap();
    }
    let s = Server::start(&db, &config, &["--http", "127.0.0.1:0"]);
    let base = s.http.clone().unwrap();
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/")).send().await.unwrap().status(),
        404
    );
    let r = http
        .post(format!("{base}/api/login"))
        .header("content-type", "application/json")
        .body(json!({"user": "analyst", "password": ANALYST_PW}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.stop();
}
