//! Materialised segments: snapshots with history, reads from the snapshot with current erasure
//! and consent, changes between versions, KEEP and VACUUM, schedules in `segdb serve` and
//! `segdb refresh`, bad input refused with nothing written, crash safety under kill -9.

use std::path::Path;
use std::time::{Duration, Instant};

use segdb::ingest::{IngestOptions, Kind};

use crate::common::{self, TestDb, count, expected_pseudonym, rows};

/// Four users with purchases on known days, profiles and 'ads' consent for three of them.
async fn shop() -> (TestDb, segdb::Engine) {
    let db = TestDb::new();
    let e = db.engine().await;
    let ev = db.input(
        "e.csv",
        "user_id,event,ts,price\n\
         a@x.com,purchase,2026-01-03T10:00:00Z,10\n\
         b@x.com,purchase,2026-01-05T10:00:00Z,20\n\
         c@x.com,purchase,2026-01-09T10:00:00Z,30\n\
         d@x.com,view,2026-01-09T11:00:00Z,\n",
    );
    let c = db.input(
        "c.csv",
        "user_id,purpose,granted,recorded_at\n\
         a@x.com,ads,true,2025-12-01T00:00:00Z\n\
         b@x.com,ads,true,2025-12-01T00:00:00Z\n\
         c@x.com,ads,true,2025-12-01T00:00:00Z\n\
         d@x.com,ads,false,2025-12-01T00:00:00Z\n",
    );
    let opts = IngestOptions::default();
    e.ingest(Kind::Events, &[ev], &opts).await.unwrap();
    e.ingest(Kind::Consent, &[c], &opts).await.unwrap();
    (db, e)
}

fn p(raw: &str) -> String {
    expected_pseudonym(raw)
}

fn err(r: segdb::Result<segdb::QueryResult>) -> String {
    match r {
        Ok(_) => panic!("the statement must fail"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_history_changes_and_reads_from_snapshots() {
    let (db, e) = shop().await;
    e.sql("SET segdb.as_of = '2026-01-04T12:00:00Z'")
        .await
        .unwrap();
    let created = rows(&e, "CREATE MATERIALIZED SEGMENT buyers FOR PURPOSE 'ads' REFRESH MANUAL AS DID 'purchase' IN THE LAST 7 DAYS").await;
    assert_eq!(
        created,
        vec!["buyers|1"],
        "version 1 at the session's as_of: only a"
    );
    // Version 2 a week later: a, b, c (d never bought).
    let r = rows(&e, "REFRESH SEGMENT buyers AS OF '2026-01-09T12:00:00Z'").await;
    assert_eq!(r, vec!["2|3|2|0|ok"]);
    // Version 3: a fell out of the window.
    let r = rows(&e, "REFRESH SEGMENT buyers AS OF '2026-01-10T12:00:00Z'").await;
    assert_eq!(r, vec!["3|2|0|1|ok"]);
    let h = rows(
        &e,
        "SELECT version, as_of, trigger, status, size, entered, exited, error FROM segment_history('buyers')",
    )
    .await;
    assert_eq!(
        h,
        vec![
            "1|2026-01-04T12:00:00Z|create|ok|1|1|0|∅",
            "2|2026-01-09T12:00:00Z|manual|ok|3|2|0|∅",
            "3|2026-01-10T12:00:00Z|manual|ok|2|0|1|∅",
        ]
    );
    let types = rows(
        &e,
        "SELECT arrow_typeof(version), arrow_typeof(as_of), arrow_typeof(refreshed_at), arrow_typeof(size) FROM segment_history('buyers') LIMIT 1",
    )
    .await;
    assert_eq!(
        types,
        vec!["Int64|Timestamp(µs, \"UTC\")|Timestamp(µs, \"UTC\")|UInt64"]
    );
    // Reads take the latest snapshot at or before the as_of, evaluating nothing.
    e.sql("SET segdb.as_of = 'now'").await.unwrap();
    assert_eq!(count(&e, "SELECT segment_size('buyers')").await, 2);
    assert_eq!(
        count(&e, "SELECT segment_size('buyers', '2026-01-09T13:00:00Z')").await,
        3
    );
    assert_eq!(
        count(&e, "SELECT segment_size('buyers', '2026-01-05T00:00:00Z')").await,
        1
    );
    // Before the first snapshot, the segment is evaluated live.
    assert_eq!(
        count(&e, "SELECT segment_size('buyers', '2026-01-04T00:00:00Z')").await,
        1
    );
    // segment_changes: version 0 is empty; both sides as of now.
    let mut ch = rows(
        &e,
        "SELECT user_id, change FROM segment_changes('buyers', 0, 1)",
    )
    .await;
    ch.sort();
    assert_eq!(ch, vec![format!("{}|entered", p("a@x.com"))]);
    let mut ch = rows(
        &e,
        "SELECT user_id, change FROM segment_changes('buyers', 2, 3)",
    )
    .await;
    ch.sort();
    assert_eq!(ch, vec![format!("{}|exited", p("a@x.com"))]);
    // SHOW SEGMENTS shows the latest snapshot and evaluates nothing.
    e.sql("CREATE SEGMENT plain AS ALL USERS").await.unwrap();
    let show = e.sql("SHOW SEGMENTS").await.unwrap();
    let cols: Vec<String> = show
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        cols,
        [
            "name",
            "purposes",
            "definition",
            "comment",
            "materialized",
            "refresh",
            "version",
            "refreshed_at",
            "size"
        ]
    );
    let text = common::render_rows(&show, |c| c.unwrap_or("∅").to_string(), "|");
    assert!(
        text[0].starts_with("buyers|'ads'|DID 'purchase' IN THE LAST 7 DAYS|∅|true|MANUAL|3|"),
        "{text:?}"
    );
    assert!(text[0].ends_with("|2"), "{text:?}");
    assert_eq!(text[1], "plain|∅|ALL USERS|∅|false|∅|∅|∅|∅");
    // A FORGET and a consent withdrawal take effect at once, without a refresh.
    e.sql("FORGET USER 'b@x.com'").await.unwrap();
    assert_eq!(count(&e, "SELECT segment_size('buyers')").await, 1);
    let w = db.input(
        "w.csv",
        "user_id,purpose,granted,recorded_at\nc@x.com,ads,false,2026-01-11T00:00:00Z\n",
    );
    e.ingest(Kind::Consent, &[w], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(count(&e, "SELECT segment_size('buyers')").await, 0);
    assert_eq!(
        count(&e, &format!("SELECT count(*) FROM segment_changes('buyers', 0, 3) WHERE user_id IN ('{}', '{}')", p("b@x.com"), p("c@x.com"))).await,
        0,
        "forgotten and withdrawn users never appear in changes"
    );
    // The live mode evaluates the definition instead.
    e.sql("SET segdb.materialized = 'live'").await.unwrap();
    assert_eq!(
        count(&e, "SELECT segment_size('buyers', '2026-01-09T13:00:00Z')").await,
        2,
        "a and c: b is forgotten, c withdrew only on 11 January (live uses consent at as_of)"
    );
    e.sql("SET segdb.materialized = 'snapshot'").await.unwrap();
    // OR REPLACE starts a new history at version 1.
    e.sql("SET segdb.as_of = '2026-01-09T12:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE OR REPLACE MATERIALIZED SEGMENT buyers FOR PURPOSE 'ads' AS DID 'purchase' IN THE LAST 30 DAYS").await.unwrap();
    assert_eq!(
        rows(&e, "SELECT version, trigger FROM segment_history('buyers')").await,
        vec!["1|create"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_versions_and_vacuum_prune_history() {
    let (_db, e) = shop().await;
    e.sql("SET segdb.as_of = '2026-01-09T12:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE MATERIALIZED SEGMENT m FOR PURPOSE 'ads' KEEP 2 VERSIONS AS DID 'purchase'")
        .await
        .unwrap();
    for d in 10..14 {
        e.sql(&format!("REFRESH SEGMENT m AS OF '2026-01-{d}T12:00:00Z'"))
            .await
            .unwrap();
    }
    assert_eq!(
        count(&e, "SELECT count(*) FROM segment_history('m')").await,
        5
    );
    // Beyond KEEP, versions stay readable until VACUUM.
    assert_eq!(
        count(&e, "SELECT count(*) FROM segment_changes('m', 1, 2)").await,
        0
    );
    e.sql("VACUUM").await.unwrap();
    assert_eq!(
        rows(&e, "SELECT version FROM segment_history('m')").await,
        vec!["4", "5"]
    );
    let msg = err(e.sql("SELECT * FROM segment_changes('m', 1, 5)").await);
    assert!(msg.contains("no version 1"), "{msg}");
    e.sql("ALTER SEGMENT m SET KEEP 1 VERSIONS").await.unwrap();
    e.sql("ALTER SEGMENT m SET REFRESH EVERY '1 hour'")
        .await
        .unwrap();
    let d = rows(&e, "DESCRIBE SEGMENT m").await;
    assert!(d[0].contains("|EVERY '1 hour'|∅|1|"), "{d:?}");
    let show = rows(&e, "SHOW SEGMENTS").await;
    assert!(show[0].contains("EVERY '1 hour'"), "{show:?}");
    e.sql("VACUUM").await.unwrap();
    assert_eq!(
        rows(&e, "SELECT version FROM segment_history('m')").await,
        vec!["5"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_nothing_written() {
    let (db, e) = shop().await;
    e.sql("SET segdb.as_of = '2026-01-09T12:00:00Z'")
        .await
        .unwrap();
    for (sql, why) in [
        (
            "CREATE MATERIALIZED SEGMENT m REFRESH EVERY '500 milliseconds' AS ALL USERS",
            "under a second",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m REFRESH EVERY 'often' AS ALL USERS",
            "not valid",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m REFRESH CRON '0 25 * * *' AS ALL USERS",
            "not valid",
        ),
        (
            "CREATE MATERIALIZED SEGMENT m REFRESH CRON '0 6 * * *' TIMEZONE 'Europe/Atlantis' AS ALL USERS",
            "unknown time zone",
        ),
        (
            "CREATE SEGMENT m REFRESH EVERY '1 hour' AS ALL USERS",
            "materialised",
        ),
    ] {
        let msg = err(e.sql(sql).await);
        assert!(msg.contains(why), "{sql}: {msg}");
    }
    assert!(rows(&e, "SHOW SEGMENTS").await.is_empty(), "nothing stored");
    e.sql("CREATE SEGMENT plain AS ALL USERS").await.unwrap();
    let msg = err(e.sql("REFRESH SEGMENT plain").await);
    assert!(msg.contains("not materialised"), "{msg}");
    let msg = err(e
        .sql("ALTER SEGMENT plain SET REFRESH EVERY '1 hour'")
        .await);
    assert!(msg.contains("not materialised"), "{msg}");
    let msg = err(e
        .sql("EXPORT SEGMENT plain TO '/tmp/x' FOR PURPOSE 'ads'")
        .await);
    assert!(msg.contains("only materialised segments"), "{msg}");
    e.sql("CREATE MATERIALIZED SEGMENT m AS DID 'purchase'")
        .await
        .unwrap();
    let out = db.dir.path().join("out");
    let msg = err(e
        .sql(&format!("EXPORT SEGMENT m TO '{}'", out.display()))
        .await);
    assert!(msg.contains("needs a purpose"), "{msg}");
    let msg = err(e
        .sql(&format!(
            "EXPORT SEGMENT m TO '{}' FOR PURPOSE 'ads' PRESET meta",
            out.display()
        ))
        .await);
    assert!(msg.contains("match key"), "{msg}");
    let msg = err(e
        .sql("EXPORT SEGMENT m TO '/proc/no/such/place' FOR PURPOSE 'ads'")
        .await);
    assert!(msg.contains("/proc/no/such/place"), "{msg}");
    let msg = err(e
        .sql(&format!(
            "EXPORT SEGMENT m TO '{}' FOR PURPOSE 'ads' CHANGES FROM VERSION 7",
            out.display()
        ))
        .await);
    assert!(msg.contains("no version 7"), "{msg}");
    // Nothing was written by the refused exports.
    assert!(
        common::all_files(&out).is_empty(),
        "{:?}",
        common::all_files(&out)
    );
    let ok = rows(
        &e,
        &format!(
            "EXPORT SEGMENT m TO '{}' FOR PURPOSE 'ads' FORMAT csv",
            out.display()
        ),
    )
    .await;
    assert!(ok[0].contains("m-v1|1|3|"), "{ok:?}");
    let msg = err(e
        .sql(&format!(
            "EXPORT SEGMENT m TO '{}' FOR PURPOSE 'ads'",
            out.display()
        ))
        .await);
    assert!(msg.contains("already holds an export"), "{msg}");
    assert_eq!(
        count(&e, "SELECT count(*) FROM segment_history('m')").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_is_recorded_without_a_version() {
    let (db, e) = shop().await;
    e.sql("SET segdb.as_of = '2026-01-09T12:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE TABLE vips AS SELECT user_id FROM events WHERE event = 'purchase'")
        .await
        .unwrap();
    e.sql("CREATE MATERIALIZED SEGMENT m AS USERS IN (SELECT user_id FROM vips)")
        .await
        .unwrap();
    drop(e);
    // Another session does not have the session table: the refresh fails, and is recorded.
    let o = db.cli(&[
        "sql",
        "-c",
        "REFRESH SEGMENT m AS OF '2026-01-10T00:00:00Z'",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        common::stderr(&o).contains("failed"),
        "{}",
        common::stderr(&o)
    );
    let o = db.cli(&["refresh", "m"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "segdb refresh exits 1 on a failed refresh"
    );
    let e = db.engine().await;
    let h = rows(
        &e,
        "SELECT version, status, size, error IS NOT NULL FROM segment_history('m')",
    )
    .await;
    assert_eq!(
        h,
        vec!["1|ok|3|false", "∅|failed|∅|true", "∅|failed|∅|true"]
    );
    let errors = rows(
        &e,
        "SELECT error FROM segment_history('m') WHERE status = 'failed'",
    )
    .await;
    assert!(errors[0].contains("vips"), "{errors:?}");
    assert!(!errors[0].contains("@x.com"), "{errors:?}");
    // The previous snapshot still reads.
    assert_eq!(count(&e, "SELECT segment_size('m')").await, 3);
}

fn history(db: &TestDb, seg: &str) -> Vec<String> {
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        &format!("SELECT version, trigger, status, as_of FROM segment_history('{seg}') ORDER BY refreshed_at"),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    common::stdout(&o)
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_run_in_serve_and_in_segdb_refresh() {
    use crate::server::{Server, users};
    let (db, e) = shop().await;
    e.sql("CREATE MATERIALIZED SEGMENT fast FOR PURPOSE 'ads' REFRESH EVERY '1 second' AS DID 'purchase'")
        .await
        .unwrap();
    e.sql("CREATE MATERIALIZED SEGMENT slow REFRESH EVERY '1 day' AS ALL USERS")
        .await
        .unwrap();
    drop(e);
    let config = users(&db);
    // Two servers on one database: each slot refreshes once, versions are never duplicated.
    let a = Server::start(&db, &config, &[]);
    let b = Server::start(&db, &config, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = history(&db, "fast");
        if h.iter().filter(|l| l.contains(",schedule,ok,")).count() >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled refreshes: {h:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log_a = a.stop();
    let log_b = b.stop();
    assert!(log_a.contains("refresh") || log_b.contains("refresh"));
    let h = history(&db, "fast");
    let versions: Vec<u64> = h
        .iter()
        .filter(|l| l.contains(",ok,"))
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=versions.len() as u64).collect();
    assert_eq!(
        versions, expected,
        "versions are consecutive and unique: {h:?}"
    );
    // Scheduled refreshes evaluate at their fire time: whole seconds.
    for l in h.iter().filter(|l| l.contains(",schedule,")) {
        let as_of = l.rsplit(',').next().unwrap();
        assert!(!as_of.contains('.'), "as_of {as_of} is not a fire time");
    }
    // The daily one refreshed once (its slot since creation), not every second.
    assert!(
        history(&db, "slow")
            .iter()
            .filter(|l| l.contains(",schedule,"))
            .count()
            <= 1
    );
    // Downtime: one catch-up refresh, not one per missed slot.
    std::thread::sleep(Duration::from_millis(3500));
    let before = history(&db, "fast").len();
    let o = db.cli(&["refresh", "--due"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(
        common::stdout(&o).contains("fast: ok"),
        "{}",
        common::stdout(&o)
    );
    assert_eq!(history(&db, "fast").len(), before + 1);
    // Nothing is due right after.
    let o = db.cli(&["refresh", "--due"]);
    assert!(o.status.success());
    let o = db.cli(&["refresh"]);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
}

/// `kill -9` at random points of refreshes: the previous version always reads exactly, the
/// history never has a torn or duplicate version, and the next refresh is correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_survive_kill_9_at_any_point() {
    use rand::{Rng, SeedableRng};
    let (db, e) = shop().await;
    e.sql("SET segdb.as_of = '2026-01-09T12:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE MATERIALIZED SEGMENT k FOR PURPOSE 'ads' AS DID 'purchase' IN THE LAST 7 DAYS")
        .await
        .unwrap();
    drop(e);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let bin = env!("CARGO_BIN_EXE_segdb");
    let env = |c: &mut std::process::Command| {
        c.env("SEGDB_DATA", &db.data)
            .env("SEGDB_KEYRING", &db.keyring)
            .env_remove("SEGDB_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
    };
    let check = |db: &TestDb| -> (u64, Vec<u64>) {
        let o = db.cli(&["sql", "--format", "csv", "-c", "SELECT segment_size('k'); SELECT version FROM segment_history('k') WHERE status = 'ok'"]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        let out = common::stdout(&o);
        let mut lines = out.lines();
        lines.next();
        let size: u64 = lines.next().unwrap().parse().unwrap();
        lines.next();
        let versions: Vec<u64> = lines.map(|l| l.parse().unwrap()).collect();
        (size, versions)
    };
    let mut killed = 0;
    for i in 0..100 {
        let failpoint = match i % 4 {
            0 => Some("refresh-before-commit"),
            1 => Some("refresh-after-commit"),
            _ => None,
        };
        let mut c = std::process::Command::new(bin);
        c.args([
            "sql",
            "-c",
            &format!(
                "REFRESH SEGMENT k AS OF '2026-01-{:02}T12:00:00Z'",
                9 + (i % 3)
            ),
        ]);
        env(&mut c);
        if let Some(f) = failpoint {
            c.env("SEGDB_FAILPOINT", f);
        }
        let mut child = c.spawn().unwrap();
        if failpoint.is_none() {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..120)));
            if child.try_wait().unwrap().is_none() {
                let _ = child.kill(); // SIGKILL
                killed += 1;
            }
        }
        let _ = child.wait();
        let (size, versions) = check(&db);
        let expected: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(
            versions, expected,
            "iteration {i}: torn or duplicate versions"
        );
        // Every version of this test has the same members (a, b, c within 7 days of 9–11 Jan
        // minus those out of the window); the latest must read whole.
        assert!(size <= 3, "iteration {i}: size {size}");
    }
    assert!(
        killed > 10,
        "only {killed} refreshes were actually killed mid-way"
    );
    // The next refresh is correct.
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "REFRESH SEGMENT k AS OF '2026-01-09T12:00:00Z'",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains(",3,"), "{}", common::stdout(&o));
    let (size, _) = check(&db);
    assert_eq!(size, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_columns_are_hashed_or_dropped_at_the_door() {
    let db = TestDb::new();
    let e = db.engine().await;
    let raw_email = "Canary.Person+tag@Example.COM";
    let raw_phone = "+49 30 9018 2077";
    let f = db.input(
        "p.csv",
        &format!("user_id,email,phone,first_name,plan\nu1@x.com, {raw_email} ,{raw_phone},Canarina,free\nu2@x.com,not-an-address,call me,Bob,plus\n"),
    );
    // Undeclared personal columns fail the load before anything is written.
    let before = std::fs::read_dir(db.data.join("profiles/_delta_log"))
        .unwrap()
        .count();
    let msg = e
        .ingest(Kind::Profiles, &[f.clone()], &IngestOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("\"email\"") && msg.contains("ALTER TABLE profiles SET PII"),
        "{msg}"
    );
    assert!(!msg.contains("Canary"), "{msg}");
    assert_eq!(
        std::fs::read_dir(db.data.join("profiles/_delta_log"))
            .unwrap()
            .count(),
        before
    );
    e.sql("ALTER TABLE profiles SET PII (email AS EMAIL, phone AS PHONE 'DE', first_name AS DROP)")
        .await
        .unwrap();
    e.ingest(Kind::Profiles, &[f], &IngestOptions::default())
        .await
        .unwrap();
    let cols = rows(&e, "SELECT column_name FROM information_schema.columns WHERE table_name = 'profiles' ORDER BY column_name").await;
    assert!(
        cols.contains(&"email_sha256".to_string())
            && cols.contains(&"phone_e164_sha256".to_string()),
        "{cols:?}"
    );
    assert!(
        !cols
            .iter()
            .any(|c| c == "email" || c == "phone" || c == "first_name"),
        "{cols:?}"
    );
    let same = rows(
        &e,
        &format!("SELECT email_sha256 = hash_email('{raw_email}'), phone_sha256 = hash_phone('030 9018 2077', 'DE'), phone_e164_sha256 IS NOT NULL FROM profiles WHERE user_id = '{}'", p("u1@x.com")),
    )
    .await;
    assert_eq!(same, vec!["true|true|true"]);
    // A value that does not normalise gives a NULL key; the row is kept.
    assert_eq!(
        rows(
            &e,
            &format!(
                "SELECT email_sha256, phone_sha256, plan FROM profiles WHERE user_id = '{}'",
                p("u2@x.com")
            )
        )
        .await,
        vec!["∅|∅|plus"]
    );
    // --pii for one load.
    let ev = db.input(
        "ev.csv",
        "user_id,event,ts,contact_email\nu1@x.com,view,2026-01-01,canary.two@example.com\n",
    );
    let opts = IngestOptions {
        pii: vec![(
            "contact_email".into(),
            segdb::storage::settings::PiiRule::Email,
        )],
        ..Default::default()
    };
    e.ingest(Kind::Events, &[ev], &opts).await.unwrap();
    assert_eq!(
        count(&e, "SELECT count(contact_email_sha256) FROM events").await,
        1
    );
    for raw in [
        raw_email.trim(),
        "Canary.Person",
        "9018 2077",
        "Canarina",
        "canary.two@example.com",
    ] {
        assert!(
            common::files_containing(&db.data, raw).is_empty(),
            "{raw} stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_1_database_opens_and_migrates() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wave1");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture.join("db"), &dir.path().join("db"));
    let ring = dir.path().join("k.keyring");
    std::fs::copy(fixture.join("wave1.keyring"), &ring).unwrap();
    let db = TestDb {
        data: dir.path().join("db"),
        keyring: ring,
        dir,
    };
    let e = db.engine().await;
    let show = common::render_rows(
        &e.sql("SHOW SEGMENTS").await.unwrap(),
        |c| c.unwrap_or("∅").to_string(),
        "|",
    );
    assert!(show.iter().any(|l| l.starts_with("buyers|")), "{show:?}");
    let mat = show
        .iter()
        .find(|l| l.starts_with("hourly|"))
        .expect("the materialised wave-1 segment");
    assert!(
        mat.contains("|true|EVERY '1 hour'|∅|∅|∅"),
        "no snapshot yet: {mat}"
    );
    // Evaluated live until its first refresh, then read from its snapshot.
    e.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    let live = count(&e, "SELECT segment_size('hourly')").await;
    assert!(live > 0);
    assert_eq!(
        rows(&e, "REFRESH SEGMENT hourly").await[0],
        format!("1|{live}|{live}|0|ok")
    );
    // Read from the snapshot, with current consent: what a live evaluation now gives.
    let read = count(&e, "SELECT segment_size('hourly')").await;
    e.sql("SET segdb.materialized = 'live'").await.unwrap();
    e.sql("SET segdb.as_of = 'now'").await.unwrap();
    assert_eq!(count(&e, "SELECT segment_size('hourly')").await, read);
    e.sql("SET segdb.materialized = 'snapshot'").await.unwrap();
    e.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    assert!(count(&e, "SELECT segment_size('buyers')").await > 0);
    // The wave-1 FORGET stands: 60 users were loaded, one was forgotten.
    assert_eq!(count(&e, "SELECT count(*) FROM identity").await, 59);
    assert_eq!(
        count(&e, "SELECT count(DISTINCT uid) FROM profiles").await,
        59
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

/// Every version's members, history counts and changes against DuckDB on the same input files,
/// with a FORGET and consent withdrawals between versions (tests/differential/materialized.py).
#[test]
fn materialized_versions_match_an_independent_oracle() {
    common::run_differential("materialized", 3);
}

/// The stored history rows: (version, base_version, bytes of the full bitmaps, bytes of the
/// changes), read straight from the Parquet files under `_segdb/snapshots`.
fn stored_versions(db: &TestDb, segment: &str) -> Vec<(i64, Option<i64>, usize, usize)> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for f in common::all_files(&db.data.join("_segdb/snapshots")) {
        // Data files only (a Delta checkpoint is Parquet too).
        if f.extension().is_none_or(|e| e != "parquet")
            || f.components().any(|c| c.as_os_str() == "_delta_log")
        {
            continue;
        }
        let file = std::fs::File::open(&f).unwrap();
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in r {
            let b = b.unwrap();
            let get = |n: &str| b.column_by_name(n).cloned();
            let seg = get("segment").unwrap();
            let seg = seg.as_string::<i32>();
            let ver = get("version").unwrap();
            let ver = ver.as_primitive::<arrow::datatypes::Int64Type>();
            let base = get("base_version");
            let members = get("members").unwrap();
            let members = members.as_binary::<i32>();
            let delta = get("delta");
            for i in 0..b.num_rows() {
                if seg.value(i) != segment || ver.is_null(i) {
                    continue;
                }
                let base = base.as_ref().and_then(|a| {
                    let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                    a.is_valid(i).then(|| a.value(i))
                });
                let d = delta.as_ref().map_or(0, |a| {
                    let a = a.as_binary::<i32>();
                    if a.is_valid(i) { a.value(i).len() } else { 0 }
                });
                let m = if members.is_valid(i) {
                    members.value(i).len()
                } else {
                    0
                };
                out.push((ver.value(i), base, m, d));
            }
        }
    }
    out.sort();
    out
}

/// Versions cost their changes (DESIGN §15): after version 1 and every `full_every`-th, a version
/// is stored as what entered and left; every version reads back as computed, before and after
/// VACUUM, and the oldest version VACUUM keeps is stored in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_stored_as_their_changes_with_periodic_full_bitmaps() {
    let db = TestDb::new();
    let e = db.engine().await;
    // 3,000 users (every other ordinal, so that a full bitmap does not compress to runs) active
    // every day from 1 to 12 January, except that user k skips day k % 97.
    // Users with odd numbers only view; ordinals follow first appearance, so the members are
    // every other ordinal.
    let mut ev = String::from("user_id,event,ts\n");
    for u in 0..6000 {
        if u % 2 == 1 {
            ev.push_str(&format!("user{u},view,2026-01-01T08:00:00Z\n"));
            continue;
        }
        for d in 1..=12 {
            if u % 97 == d {
                continue;
            }
            ev.push_str(&format!("user{u},visit,2026-01-{d:02}T08:00:00Z\n"));
        }
    }
    let f = db.input("e.csv", &ev);
    e.ingest(Kind::Events, &[f], &IngestOptions::default())
        .await
        .unwrap();
    segdb::materialize::set_full_every(4);
    e.sql("SET segdb.as_of = '2026-01-02T12:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE MATERIALIZED SEGMENT daily KEEP 5 VERSIONS AS DID 'visit' IN THE LAST 1 DAYS")
        .await
        .unwrap();
    for d in 3..=12 {
        e.sql(&format!(
            "REFRESH SEGMENT daily AS OF '2026-01-{d:02}T12:00:00Z'"
        ))
        .await
        .unwrap();
    }
    // The oracle: who visited in the day before each version's as_of.
    async fn members_of(e: &segdb::Engine, v: i64) -> Vec<String> {
        let mut r = rows(
            e,
            &format!("SELECT user_id FROM segment_changes('daily', 0, {v}) ORDER BY user_id"),
        )
        .await;
        r.sort();
        r
    }
    let oracle = |d: i64| {
        let mut want: Vec<String> = (0..6000)
            .step_by(2)
            .filter(|u| u % 97 != d)
            .map(|u| p(&format!("user{u}")))
            .collect();
        want.sort();
        want
    };
    for v in 1..=11i64 {
        // Version v was refreshed at noon of day v + 1: its window holds that day's 08:00 visits.
        assert_eq!(members_of(&e, v).await, oracle(v + 1), "version {v}");
    }
    let stored = stored_versions(&db, "daily");
    assert_eq!(stored.len(), 11, "{stored:?}");
    for (v, base, full, changes) in &stored {
        if (v - 1) % 4 == 0 {
            assert_eq!(*base, None, "version {v} is due a full bitmap");
            assert!(*full > 0);
        } else {
            assert_eq!(*base, Some(v - 1), "version {v} is stored as changes");
            assert_eq!(*full, 0);
            // A few dozen users changed, out of about 3,000 members.
            assert!(
                *changes * 4 < stored[0].2,
                "version {v}: {changes} bytes of changes"
            );
        }
    }
    e.sql("VACUUM").await.unwrap();
    let stored = stored_versions(&db, "daily");
    let kept: Vec<i64> = stored.iter().map(|s| s.0).collect();
    assert_eq!(kept, vec![7, 8, 9, 10, 11]);
    assert_eq!(
        stored[0].1, None,
        "the oldest kept version is stored in full"
    );
    for v in 7..=11i64 {
        assert_eq!(
            members_of(&e, v).await,
            oracle(v + 1),
            "version {v} after VACUUM"
        );
    }
    segdb::materialize::set_full_every(100);
}
