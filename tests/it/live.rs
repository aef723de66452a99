//! Live audiences (DESIGN §15) end to end: events through the collector make a visitor enter a
//! `REFRESH LIVE` segment; the change reaches a webhook receiver that verifies signatures with
//! the reference library (PyPI `standardwebhooks`, tests/live/receiver.py) and a Segment-spec
//! export lands in segdb's own collector; the profile API answers per role, consent and
//! identity link.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::collector::{create_source, sql, start};
use crate::common::{self, TestDb};
use crate::server::{self, Server};

const LOOKUP_PW: &str = "lookup-pw-0c1d";

/// The receiver: a child Python process; killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    record: PathBuf,
    control: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, name: &str, extra: &[&str]) -> Option<Receiver> {
        let py = crate::segments::python()?;
        let record = dir.join(format!("{name}.jsonl"));
        let control = dir.join(format!("{name}.control"));
        let mut child = Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/live/receiver.py"))
            .args(["--record", record.to_str().unwrap()])
            .args(["--control", control.to_str().unwrap()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .unwrap_or_else(|| panic!("receiver said {line:?}"))
            .parse()
            .unwrap();
        Some(Receiver {
            child,
            port,
            record,
            control,
        })
    }

    fn set(&self, mode: &str) {
        std::fs::write(&self.control, mode).unwrap();
    }

    /// Every recorded line.
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The accepted (verified, first-seen) deliveries.
    fn delivered(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l.get("payload").is_some())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn track(http: &reqwest::Client, base: &str, key: &str, user: &str, event: &str) {
    let body = json!({"type": "track", "userId": user, "event": event,
        "messageId": format!("{user}-{event}-{}", rand_suffix())});
    let r = http
        .post(format!("{base}/v1/track"))
        .basic_auth(key, Some(""))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The (user_id, change) pairs a receiver accepted, over every delivery.
fn changes(r: &Receiver) -> Vec<(String, String)> {
    r.delivered()
        .iter()
        .flat_map(|d| d["payload"]["changes"].as_array().unwrap().clone())
        .map(|c| {
            (
                c["user_id"].as_str().unwrap().to_string(),
                c["change"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn token(http: &reqwest::Client, base: &str, user: &str, pw: &str) -> String {
    let r = http
        .post(format!("{base}/v1/auth/token"))
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    v["token"].as_str().unwrap().to_string()
}

async fn segments_of(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    id: &str,
    purpose: Option<&str>,
) -> (u16, Value) {
    let mut url = format!("{base}/v1/profiles/{}/segments", urlencode(id));
    if let Some(p) = purpose {
        url.push_str(&format!("?purpose={p}"));
    }
    let mut r = http.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_segment_webhook_and_profile_api() {
    let db = TestDb::new();
    let Some(recv) = Receiver::start(
        db.dir.path(),
        "hook",
        &[
            "--secret-file",
            db.dir.path().join("secret").to_str().unwrap(),
        ],
    ) else {
        return;
    };
    // Consent for 'ads' for three visitors, and a link: anonymous visitor a-9 is u1.
    db.ingest_cli(
        "consent",
        &db.input(
            "consent.csv",
            "user_id,purpose,granted\nu1,ads,true\nu2,ads,true\nu3,ads,true\nu4,ads,false\n",
        ),
    );
    let (s, key) = start(
        &db,
        "[live]\nmin_interval = '200 milliseconds'\ntick = '5 seconds'\n[export]\nwebhook_retry_for = '1 minute'\n",
    );
    let config = db.dir.path().join("segdb.toml");
    server::add_user(&config, "site", "lookup", LOOKUP_PW);
    // The server read its users at start; restart it to know `site`.
    drop(s);
    let s = Server::start(&db, &config, &["--http", "127.0.0.1:0"]);
    let base = s.http.clone().unwrap();
    let http = reqwest::Client::new();

    sql(
        &db,
        "CREATE MATERIALIZED SEGMENT buyers FOR PURPOSE 'ads' REFRESH LIVE AS DID 'purchase' IN THE LAST 7 DAYS",
    );
    let shown = sql(&db, "SHOW SEGMENTS");
    assert!(shown[0].contains("LIVE"), "{shown:?}");
    let created = sql(
        &db,
        &format!(
            "CREATE EXPORT hook FOR SEGMENT buyers TO 'http://127.0.0.1:{}/in' FORMAT webhook ON REFRESH",
            recv.port
        ),
    );
    assert_eq!(created.len(), 1);
    let (name, secret) = created[0].split_once(',').unwrap();
    assert_eq!(name, "hook");
    assert!(secret.starts_with("whsec_"), "{secret}");
    std::fs::write(db.dir.path().join("secret"), secret).unwrap();
    // The secret never lies under the data URL.
    assert!(
        common::files_containing(&db.data, &secret[6..]).is_empty(),
        "the webhook secret is stored in clear"
    );

    // An event through the collector: u1 enters within seconds.
    track(&http, &base, &key, "u1", "purchase").await;
    track(&http, &base, &key, "u4", "purchase").await;
    let pseudo = |raw: &str| common::expected_pseudonym(raw);
    wait_for("u1 at the receiver", Duration::from_secs(30), || {
        changes(&recv).contains(&(pseudo("u1"), "entered".into()))
    });
    // u4 bought but did not consent: never sent.
    assert!(!changes(&recv).iter().any(|(u, _)| *u == pseudo("u4")));
    // Both events are committed; once the live refreshes have caught up, the history stays
    // put: a live refresh with nothing new records nothing.
    let count = || sql(&db, "SELECT count(*) FROM segment_history('buyers')");
    let mut last = count();
    wait_for("the history to settle", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_secs(1));
        let now = count();
        std::mem::replace(&mut last, now.clone()) == now
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count(),
        last,
        "a live refresh with no change recorded a version"
    );
    let hist = sql(
        &db,
        "SELECT trigger, status FROM segment_history('buyers') WHERE version IS NOT NULL ORDER BY version",
    );
    assert!(
        hist.iter().all(|h| h == "create,ok" || h == "live,ok"),
        "{hist:?}"
    );
    assert!(hist.iter().any(|h| h == "live,ok"), "{hist:?}");
    let v = hist.len();
    let entered = sql(
        &db,
        &format!("SELECT user_id, change FROM segment_changes('buyers', 0, {v})"),
    );
    assert_eq!(entered, vec![format!("{},entered", pseudo("u1"))]);

    // The webhook body as DESIGN §15 names it.
    let d = &recv.delivered()[0]["payload"];
    for k in [
        "export",
        "segment",
        "version",
        "from_version",
        "as_of",
        "batch",
        "batches",
        "changes",
    ] {
        assert!(d.get(k).is_some(), "{k} missing from {d}");
    }
    assert_eq!(d["export"], "hook");
    assert_eq!(d["segment"], "buyers");

    // The profile API.
    let lookup = token(&http, &base, "site", LOOKUP_PW).await;
    let reader = token(&http, &base, "reader", server::READER_PW).await;
    for t in [&lookup, &reader] {
        let (st, v) = segments_of(&http, &base, Some(t), "u1", None).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["segments"], json!(["buyers"]));
        assert_eq!(v["user_id"], json!(pseudo("u1")));
        assert!(v["as_of"].as_str().unwrap().ends_with('Z'));
    }
    // Known but not a member; a member without the asked purpose; unknown ids.
    let (st, v) = segments_of(&http, &base, Some(&lookup), "u2", None).await;
    assert_eq!((st, v["segments"].clone()), (200, json!([])));
    let (st, v) = segments_of(&http, &base, Some(&lookup), "u1", Some("email")).await;
    assert_eq!((st, v["segments"].clone()), (200, json!([])));
    let (st, v) = segments_of(&http, &base, Some(&lookup), "nobody-ever", None).await;
    assert_eq!((st, v), (404, json!({"error": "unknown profile"})));
    // No token, a bad token: 401.
    assert_eq!(segments_of(&http, &base, None, "u1", None).await.0, 401);
    assert_eq!(
        segments_of(&http, &base, Some("nope"), "u1", None).await.0,
        401
    );
    let bad = http
        .post(format!("{base}/v1/auth/token"))
        .basic_auth("site", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    // The POST forms.
    let r: Value = http
        .post(format!("{base}/v1/profiles/segments"))
        .bearer_auth(&lookup)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"id": "u1"})).unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str::<Value>(&t).unwrap())
        .unwrap();
    assert_eq!(r["segments"], json!(["buyers"]));
    let r: Value = http
        .post(format!("{base}/v1/profiles/segments"))
        .bearer_auth(&lookup)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"ids": ["nobody", "u1", "u2"]})).unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str::<Value>(&t).unwrap())
        .unwrap();
    let p = r["profiles"].as_array().unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(
        p[0],
        json!({"id": "nobody", "user_id": null, "segments": []})
    );
    assert_eq!(p[1]["segments"], json!(["buyers"]));
    assert_eq!(p[2]["segments"], json!([]));
    let too_many: Vec<String> = (0..1001).map(|i| format!("x{i}")).collect();
    let r = http
        .post(format!("{base}/v1/profiles/segments"))
        .bearer_auth(&lookup)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({ "ids": too_many })).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Traits: a profile's computed traits.
    sql(&db, "CREATE TRAIT purchases AS COUNT OF EVENT 'purchase'");
    wait_for(
        "the trait in the profile API",
        Duration::from_secs(20),
        || {
            let v: Value = futures::executor::block_on(async {
                http.get(format!("{base}/v1/profiles/u1/traits"))
                    .bearer_auth(&lookup)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .map(|t| serde_json::from_str::<Value>(&t).unwrap())
                    .unwrap()
            });
            v["traits"]["purchases"] == json!(1)
        },
    );
    // The lookup role may use nothing but this API.
    let mut c = server::client(&s.addr).await;
    c.handshake("site", LOOKUP_PW).await.unwrap();
    let e = c
        .execute("SELECT 1".into(), None)
        .await
        .expect_err("lookup ran a query over Flight SQL");
    assert!(e.to_string().contains("profile API"), "{e}");

    // Identity link: anonymous visitor a-9 becomes u2 through an identify; the API resolves the
    // anonymous id to u2's profile.
    let r = http
        .post(format!("{base}/v1/identify"))
        .basic_auth(&key, Some(""))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&json!({"type": "identify", "userId": "u2", "anonymousId": "a-9", "messageId": "id-a9"})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    track(&http, &base, &key, "u2", "purchase").await;
    wait_for(
        "a-9 resolving to u2 in buyers",
        Duration::from_secs(30),
        || {
            let (st, v) =
                futures::executor::block_on(segments_of(&http, &base, Some(&lookup), "a-9", None));
            st == 200 && v["segments"] == json!(["buyers"])
        },
    );

    // The receiver fails, then recovers: u3's entry arrives once, after retries.
    recv.set("fail");
    track(&http, &base, &key, "u3", "purchase").await;
    wait_for("failed attempts", Duration::from_secs(30), || {
        recv.lines()
            .iter()
            .filter(|l| l["attempt"] == json!(true) && l["mode"] == "fail")
            .count()
            >= 2
    });
    recv.set("ok");
    wait_for("u3 after recovery", Duration::from_secs(60), || {
        changes(&recv).contains(&(pseudo("u3"), "entered".into()))
    });

    // Forgotten between refresh and delivery: never sent. The receiver is down while u5 buys
    // and enters; u5 is forgotten; the receiver recovers.
    db.ingest_cli(
        "consent",
        &db.input(
            "c5.csv",
            "user_id,purpose,granted\nu5,ads,true\nu6,ads,true\n",
        ),
    );
    recv.set("fail");
    track(&http, &base, &key, "u5", "purchase").await;
    track(&http, &base, &key, "u6", "purchase").await;
    wait_for("u5 in a version", Duration::from_secs(30), || {
        let v = sql(&db, "SELECT max(version) FROM segment_history('buyers')");
        let n = sql(
            &db,
            &format!(
                "SELECT count(*) FROM segment_changes('buyers', 0, {}) WHERE user_id = '{}'",
                v[0],
                pseudo("u5")
            ),
        );
        n == vec!["1".to_string()]
    });
    // The cut is made at the first attempt; wait for one.
    let attempts = |r: &Receiver| {
        r.lines()
            .iter()
            .filter(|l| l["attempt"] == json!(true))
            .count()
    };
    let before = attempts(&recv);
    wait_for("an attempt with u5 cut", Duration::from_secs(30), || {
        attempts(&recv) > before
    });
    sql(&db, "FORGET USER 'u5'");
    // Killed mid-retry: the restarted server resumes from its cursor.
    drop(s);
    recv.set("ok");
    let s = Server::start(&db, &config, &["--http", "127.0.0.1:0"]);
    let base = s.http.clone().unwrap();
    wait_for("u6 after the restart", Duration::from_secs(60), || {
        changes(&recv).contains(&(pseudo("u6"), "entered".into()))
    });
    assert!(
        !changes(&recv).iter().any(|(u, _)| *u == pseudo("u5")),
        "a forgotten user was delivered"
    );
    // Tokens live in the server's memory: log in again. A forgotten id answers exactly as an id
    // never seen.
    let lookup = token(&http, &base, "site", LOOKUP_PW).await;
    let forgotten = segments_of(&http, &base, Some(&lookup), "u5", None).await;
    let never = segments_of(&http, &base, Some(&lookup), "never-seen-5", None).await;
    assert_eq!(forgotten, (404, json!({"error": "unknown profile"})));
    assert_eq!(forgotten, never);
    let traits = http
        .get(format!("{base}/v1/profiles/u5/traits"))
        .bearer_auth(&lookup)
        .send()
        .await
        .unwrap();
    assert_eq!(traits.status().as_u16(), 404);
    // Every version was cut once, in order: delivered ones reached the receiver, versions with
    // no change of the target group were recorded as skipped, and no version was left out.
    let runs = sql(
        &db,
        "SELECT version, from_version, status FROM export_history('hook') ORDER BY version",
    );
    let mut prev = 0u64;
    let delivered: std::collections::BTreeSet<u64> = recv
        .delivered()
        .iter()
        .map(|d| d["payload"]["version"].as_u64().unwrap())
        .collect();
    for r in &runs {
        let f: Vec<&str> = r.split(',').collect();
        let (v, from): (u64, u64) = (f[0].parse().unwrap(), f[1].parse().unwrap());
        assert_eq!(from, prev, "a version was skipped: {runs:?}");
        match f[2] {
            "ok" => assert!(
                delivered.contains(&v),
                "version {v} recorded but not received"
            ),
            "skipped" => assert!(!delivered.contains(&v)),
            other => panic!("status {other}: {runs:?}"),
        }
        prev = v;
    }
    assert!(prev >= 5, "{runs:?}");
    // The receiver deduplicates by webhook-id; the ids it accepted are unique by construction,
    // and each delivered version's batches arrived.
    assert!(
        recv.delivered()
            .iter()
            .all(|d| d["payload"]["batch"] == json!(1) && d["payload"]["batches"] == json!(1))
    );
    assert!(
        !recv
            .lines()
            .iter()
            .any(|l| l.get("bad_signature").is_some()),
        "a delivery failed verification"
    );
    // 410 disables the export; RESUME delivers again.
    recv.set("gone");
    db.ingest_cli(
        "consent",
        &db.input(
            "c7.csv",
            "user_id,purpose,granted\nu7,ads,true\nu8,ads,true\n",
        ),
    );
    track(&http, &base, &key, "u7", "purchase").await;
    wait_for("the export disabled", Duration::from_secs(30), || {
        sql(&db, "SHOW EXPORTS")
            .iter()
            .any(|l| l.contains(",disabled,"))
    });
    recv.set("ok");
    track(&http, &base, &key, "u8", "purchase").await;
    std::thread::sleep(Duration::from_secs(2));
    assert!(!changes(&recv).iter().any(|(u, _)| *u == pseudo("u8")));
    sql(&db, "ALTER EXPORT hook RESUME");
    wait_for("u7 and u8 after RESUME", Duration::from_secs(30), || {
        let c = changes(&recv);
        c.contains(&(pseudo("u7"), "entered".into()))
            && c.contains(&(pseudo("u8"), "entered".into()))
    });
    let history = sql(&db, "SELECT status FROM export_history('hook')");
    assert!(history.iter().any(|h| h == "ok"), "{history:?}");
    assert!(history.iter().any(|h| h == "disabled"), "{history:?}");
    // Bad requests to the profile API are 400s with a reason, never a crash; a looked-up raw
    // id (a canary) reaches no log line and no stored byte.
    let lookup = token(&http, &base, "site", LOOKUP_PW).await;
    let canary = "canary.7f3a@example.com";
    for body in [
        "not json".to_string(),
        "[]".to_string(),
        json!({"ids": "x"}).to_string(),
        json!({"id": ""}).to_string(),
        json!({"id": "a", "ids": ["b"]}).to_string(),
        json!({"ids": [1.5, null]}).to_string(),
        json!({}).to_string(),
        // Nested deeper than the JSON parser's limit: refused, not a crash.
        format!("{{\"id\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000)),
    ] {
        let r = http
            .post(format!("{base}/v1/profiles/segments"))
            .bearer_auth(&lookup)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}: {v}"
        );
    }
    assert_eq!(
        segments_of(&http, &base, Some(&lookup), canary, None)
            .await
            .0,
        404
    );
    let r = http
        .post(format!("{base}/v1/profiles/segments"))
        .bearer_auth(&lookup)
        .header("content-type", "application/json")
        .body(json!({"ids": [canary, "u1"]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http
        .get(format!("{base}/v1/profiles/{}/traits", urlencode(canary)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "traits without a token");
    // No raw id in anything the receiver got, and none in the server's log.
    let log = s.stop();
    assert!(!log.contains(canary), "a looked-up id was logged");
    assert!(common::files_containing(&db.data, canary).is_empty());
    let received = std::fs::read_to_string(&recv.record).unwrap();
    for raw in ["u1", "u2", "u3", "u5", "a-9"] {
        assert!(
            !received.contains(&format!("\"{raw}\"")),
            "raw {raw} delivered"
        );
        assert!(!log.contains(&format!("\"{raw}\"")), "raw {raw} logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_spec_activation_reaches_a_collector_and_a_recorder() {
    let db = TestDb::new();
    let Some(recorder) = Receiver::start(
        db.dir.path(),
        "rec",
        &["--segment", "--write-key", "rk-123"],
    ) else {
        return;
    };
    db.ingest_cli(
        "consent",
        &db.input(
            "consent.csv",
            "user_id,purpose,granted\nu1,ads,true\nu2,ads,true\n",
        ),
    );
    let (s, key) = start(&db, "[live]\nmin_interval = '200 milliseconds'\n");
    let base = s.http.clone().unwrap();
    let http = reqwest::Client::new();
    let loop_key = create_source(&db, "loopback");
    sql(
        &db,
        "CREATE MATERIALIZED SEGMENT vip FOR PURPOSE 'ads' REFRESH LIVE AS DID 'purchase' IN THE LAST 7 DAYS",
    );
    // A write key is required, and never stored in clear.
    let o = db.cli(&[
        "sql",
        "-c",
        &format!("CREATE EXPORT x FOR SEGMENT vip TO '{base}/v1/batch' FORMAT segment ON REFRESH"),
    ]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("WRITE KEY"),
        "{}",
        common::stderr(&o)
    );
    sql(
        &db,
        &format!(
            "CREATE EXPORT own FOR SEGMENT vip TO '{base}/v1/batch' FORMAT segment WRITE KEY '{loop_key}' ON REFRESH"
        ),
    );
    sql(
        &db,
        &format!(
            "CREATE EXPORT rec FOR SEGMENT vip TO 'http://127.0.0.1:{}/v1/batch' FORMAT segment WRITE KEY 'rk-123' ON REFRESH",
            recorder.port
        ),
    );
    assert!(common::files_containing(&db.data, &loop_key).is_empty());
    assert!(common::files_containing(&db.data, "rk-123").is_empty());
    track(&http, &base, &key, "u1", "purchase").await;
    let pseudo = common::expected_pseudonym("u1");
    wait_for("the recorder's batch", Duration::from_secs(30), || {
        !recorder.lines().iter().all(|l| l.get("segment").is_none())
    });
    let batch = recorder
        .lines()
        .into_iter()
        .find_map(|l| l.get("segment").cloned())
        .unwrap();
    let msgs = batch["batch"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{batch}");
    assert_eq!(msgs[0]["type"], "identify");
    assert_eq!(msgs[0]["userId"], json!(pseudo));
    assert_eq!(msgs[0]["traits"], json!({"vip": true}));
    assert_eq!(msgs[1]["type"], "track");
    assert_eq!(msgs[1]["event"], "Audience Entered");
    assert_eq!(
        msgs[1]["properties"],
        json!({"audience_key": "vip", "vip": true})
    );
    assert_eq!(msgs[0]["messageId"].as_str().unwrap().len(), 32);
    // segdb's own collector took the same messages as events of source `loopback`.
    wait_for(
        "Audience Entered in events",
        Duration::from_secs(30),
        || {
            sql(
                &db,
                "SELECT count(*) FROM events WHERE event = 'Audience Entered' AND source = 'loopback'",
            ) == vec!["1".to_string()]
        },
    );
    s.stop();
}
