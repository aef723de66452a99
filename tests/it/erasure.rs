//! FORGET + VACUUM: the user leaves every result at once, their rows are deleted, and after
//! vacuum no byte of their pseudonym remains under the data directory; everyone else's data is
//! unchanged; re-ingesting them is refused.

use segdb::ingest::{IngestOptions, Kind};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_and_vacuum_leave_no_trace_and_nothing_else_changes() {
    let db = TestDb::new();
    let e = db.engine().await;
    let canary = "forget-me-canary@example.com";
    let p = expected_pseudonym(canary);
    let mut events = String::from("user_id,event,ts,price\n");
    for i in 0..40 {
        events.push_str(&format!(
            "user{i},purchase,2026-01-{:02}T10:00:00Z,{i}.5\n",
            1 + i % 28
        ));
        events.push_str(&format!(
            "{canary},purchase,2026-01-{:02}T11:00:00Z,9.5\n",
            1 + i % 28
        ));
    }
    let ev = db.input("events.csv", &events);
    let pr = db.input(
        "profiles.csv",
        &format!("user_id,plan\n{canary},premium\nuser1,free\nuser2,premium\n"),
    );
    let co = db.input(
        "consent.csv",
        &format!("user_id,purpose,granted\n{canary},marketing,true\nuser1,marketing,true\n"),
    );
    for (k, f) in [
        (Kind::Events, &ev),
        (Kind::Profiles, &pr),
        (Kind::Consent, &co),
    ] {
        e.ingest(k, &[f.clone()], &IngestOptions::default())
            .await
            .unwrap();
    }
    // A second events load, so older files of the canary exist in several versions.
    e.ingest(Kind::Events, &[ev.clone()], &IngestOptions::default())
        .await
        .unwrap();
    e.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT buyers AS DID 'purchase'")
        .await
        .unwrap();
    let members = rows(&e, "SELECT user_id FROM segment_members('buyers')").await;
    assert!(members.contains(&p));
    assert!(
        !files_containing(&db.data, &p).is_empty(),
        "the pseudonym should be stored before the forget"
    );

    let others_q = format!(
        "SELECT user_id, event, ts, price FROM events WHERE user_id <> '{p}' ORDER BY user_id, ts, price"
    );
    let before = rows(&e, &others_q).await;
    let before_profiles = rows(
        &e,
        &format!("SELECT user_id, plan FROM profiles WHERE user_id <> '{p}' ORDER BY 1"),
    )
    .await;
    assert_eq!(before.len(), 80);

    // Forget by raw id: immediate effect everywhere.
    assert_eq!(
        rows(&e, &format!("FORGET USER '{canary}'")).await,
        vec!["1"]
    );
    assert!(
        !rows(&e, "SELECT user_id FROM segment_members('buyers')")
            .await
            .contains(&p)
    );
    assert_eq!(
        count(
            &e,
            &format!("SELECT count(*) FROM events WHERE user_id = '{p}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &e,
            &format!("SELECT count(*) FROM profiles WHERE user_id = '{p}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &e,
            &format!("SELECT count(*) FROM consent WHERE user_id = '{p}'")
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &e,
            &format!("SELECT count(*) FROM identity WHERE user_id = '{p}'")
        )
        .await,
        0
    );
    // The user is gone from identity too (the ordinal stays taken: see the new user below).
    assert_eq!(count(&e, "SELECT count(*) FROM identity").await, 40);
    let max_uid = count(&e, "SELECT max(uid) FROM identity").await;
    // Idempotent, also by pseudonym.
    assert_eq!(rows(&e, &format!("FORGET USER '{p}'")).await, vec!["1"]);

    // VACUUM: no byte of the pseudonym (or the raw id) left, logs and checkpoints included.
    let v = rows(&e, "VACUUM").await;
    assert!(!v.is_empty());
    let hits = files_containing(&db.data, &p);
    assert!(hits.is_empty(), "pseudonym still in {hits:?}");
    assert!(files_containing(&db.data, canary).is_empty());
    // Everyone else is unchanged, and the database still reads.
    let e2 = db.engine().await;
    assert_eq!(rows(&e2, &others_q).await, before);
    assert_eq!(
        rows(
            &e2,
            &format!("SELECT user_id, plan FROM profiles WHERE user_id <> '{p}' ORDER BY 1")
        )
        .await,
        before_profiles
    );

    // Re-ingesting the old file does not bring the user back.
    let r = e2
        .ingest(Kind::Events, &[ev], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(r.rows_loaded, 40);
    assert_eq!(r.rejected.len(), 40);
    assert!(
        r.rejected.iter().all(|b| b.reason.contains("forgotten")),
        "{:?}",
        r.rejected[0]
    );
    assert_eq!(
        count(
            &e2,
            &format!("SELECT count(*) FROM identity WHERE user_id = '{p}'")
        )
        .await,
        0
    );
    // A new user gets a fresh ordinal; the forgotten one's is never reused.
    let newcomer = db.input(
        "new.csv",
        "user_id,event,ts
newcomer,purchase,2026-01-20
",
    );
    e2.ingest(Kind::Events, &[newcomer], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(
        count(
            &e2,
            &format!(
                "SELECT uid FROM identity WHERE user_id = '{}'",
                expected_pseudonym("newcomer")
            )
        )
        .await,
        max_uid.max(40) + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_users_in_a_query() {
    let db = TestDb::new();
    let e = db.engine().await;
    let pr = db.input(
        "p.csv",
        "user_id,plan\na,free\nb,trial\nc,trial\nd,premium\n",
    );
    e.ingest(Kind::Profiles, &[pr], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(
        rows(
            &e,
            "FORGET USERS IN (SELECT user_id FROM profiles WHERE plan = 'trial')"
        )
        .await,
        vec!["2"]
    );
    assert_eq!(
        rows(&e, "SELECT plan FROM profiles ORDER BY plan").await,
        vec!["free", "premium"]
    );
    assert_eq!(rows(&e, "FORGET USER 'nobody-at-all'").await, vec!["0"]);
    // Forget the holder of the highest ordinal: it is still never handed out again.
    assert_eq!(rows(&e, "FORGET USER 'd'").await, vec!["1"]);
    let more = db.input(
        "e.csv",
        "user_id,plan
e,free
",
    );
    e.ingest(Kind::Profiles, &[more], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(
        rows(
            &e,
            &format!(
                "SELECT uid FROM identity WHERE user_id = '{}'",
                expected_pseudonym("e")
            )
        )
        .await,
        vec!["4"]
    );
    let err = e
        .sql("FORGET USERS IN (SELECT plan FROM profiles)")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("user_id"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_events_at_vacuum() {
    let db = TestDb::new();
    let e = db.engine().await;
    let now = chrono::Utc::now();
    let old = (now - chrono::Duration::days(400)).to_rfc3339();
    let recent = (now - chrono::Duration::days(10)).to_rfc3339();
    let f = db.input(
        "e.csv",
        &format!("user_id,event,ts\na,x,{old}\nb,x,{recent}\nc,x,{old}\n"),
    );
    e.ingest(Kind::Events, &[f], &IngestOptions::default())
        .await
        .unwrap();
    assert!(
        e.sql("ALTER TABLE profiles SET RETENTION 30 DAYS")
            .await
            .is_err()
    );
    assert!(
        e.sql("ALTER TABLE events SET RETENTION 0 DAYS")
            .await
            .is_err()
    );
    e.sql("ALTER TABLE events SET RETENTION 395 DAYS")
        .await
        .unwrap();
    assert_eq!(
        count(&e, "SELECT count(*) FROM events").await,
        3,
        "retention acts at vacuum, not before"
    );
    e.sql("VACUUM").await.unwrap();
    assert_eq!(
        rows(&e, "SELECT user_id FROM events").await,
        vec![expected_pseudonym("b")]
    );
    // The settings survive a restart; RESET stops further drops.
    e.sql("ALTER TABLE events RESET RETENTION").await.unwrap();
}

#[test]
fn a_forget_interrupted_by_a_crash_completes_when_rerun() {
    let db = TestDb::new();
    let f = db.input(
        "e.csv",
        "user_id,event,ts\nvictim@example.com,x,2026-01-01\nkeep,x,2026-01-02\n",
    );
    db.ingest_cli("events", &f);
    let p = expected_pseudonym("victim@example.com");
    let o = db.cli_env(
        &["sql", "-c", "FORGET USER 'victim@example.com'"],
        &[("SEGDB_FAILPOINT", "forget-after-suppression")],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("failpoint forget-after-suppression"),
        "{}",
        stderr(&o)
    );
    // Already suppressed: gone from results although its rows are still stored.
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n FROM events",
    ]);
    assert_eq!(stdout(&o), "n\n1\n");
    assert!(!files_containing(&db.data, &p).is_empty());
    // Re-running completes it; vacuum then leaves nothing.
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "FORGET USER 'victim@example.com'; VACUUM",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("forgotten\n1\n"), "{}", stdout(&o));
    assert!(files_containing(&db.data, &p).is_empty());
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n FROM events",
    ]);
    assert_eq!(stdout(&o), "n\n1\n");
}

/// A data file no commit references (a load killed after writing it) is removed by VACUUM once
/// it is an hour old, whatever it holds; a fresh one (a load still running elsewhere) is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_removes_old_orphan_files_and_keeps_fresh_ones() {
    let db = TestDb::new();
    let f = db.input(
        "e.csv",
        "user_id,event,ts\nkept@x.com,view,2026-01-01T00:00:00Z\n",
    );
    db.ingest_cli("events", &f);
    let events = db.data.join("events");
    let active: Vec<_> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert_eq!(active.len(), 1);
    let old = events.join("part-00000-orphan-old.snappy.parquet");
    let fresh = events.join("part-00000-orphan-fresh.snappy.parquet");
    for p in [&old, &fresh] {
        std::fs::copy(&active[0], p).unwrap();
    }
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let o = db.cli(&["vacuum"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!old.exists(), "an hour-old orphan survived VACUUM");
    assert!(
        fresh.exists(),
        "VACUUM deleted a fresh, possibly in-flight file"
    );
    assert!(active[0].exists(), "VACUUM deleted an active file");
    let e = db.engine().await;
    assert_eq!(count(&e, "SELECT count(*) FROM events").await, 1);
}
