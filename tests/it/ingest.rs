//! Ingest end to end: formats, upsert, schema growth, bad rows, identity.

use segdb::config::GenFormat;
use segdb::datagen::{GenConfig, generate};
use segdb::ingest::{IngestOptions, Kind};

use crate::common::*;

fn make_data(dir: &std::path::Path, format: GenFormat) -> segdb::datagen::GenStats {
    generate(&GenConfig {
        users: 300,
        days: 10,
        out: dir.to_path_buf(),
        seed: 7,
        format,
        end: chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
        events_per_user: 12.0,
        contacts: false,
        latent_group: 0.0,
    })
    .unwrap()
}

/// The same generated data written as CSV, NDJSON and Parquet loads to identical tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_each_format_gives_identical_tables() {
    let mut results: Vec<(GenFormat, Vec<String>, Vec<String>, Vec<String>)> = Vec::new();
    for format in [GenFormat::Parquet, GenFormat::Csv, GenFormat::Ndjson] {
        let db = TestDb::new();
        let src = db.dir.path().join("src");
        let stats = make_data(&src, format);
        assert!(
            stats.events > 1000,
            "generator made {} events",
            stats.events
        );
        let e = db.engine().await;
        let opts = IngestOptions::default();
        let r = e
            .ingest(Kind::Profiles, &stats.profile_files, &opts)
            .await
            .unwrap();
        assert_eq!(r.rows_loaded, stats.users);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        let r = e
            .ingest(Kind::Events, &stats.event_files, &opts)
            .await
            .unwrap();
        assert_eq!(r.rows_loaded, stats.events);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        let r = e
            .ingest(Kind::Consent, &stats.consent_files, &opts)
            .await
            .unwrap();
        assert_eq!(r.rows_loaded, stats.consent);
        let events = rows(&e, "SELECT user_id, uid, event, ts, session_id, product_id, category, price FROM events ORDER BY uid, ts, event, session_id").await;
        let profiles = rows(&e, "SELECT user_id, uid, country, device, CAST(signup_date AS VARCHAR), age_band, plan FROM profiles ORDER BY uid").await;
        let consent = rows(&e, "SELECT user_id, uid, tc_string, us_privacy, purpose, granted, recorded_at FROM consent ORDER BY uid, recorded_at").await;
        assert_eq!(events.len() as u64, stats.events);
        assert_eq!(profiles.len() as u64, stats.users);
        results.push((format, events, profiles, consent));
    }
    let (_, e0, p0, c0) = &results[0];
    for (format, e, p, c) in &results[1..] {
        for (what, mine, base) in [("events", e, e0), ("profiles", p, p0), ("consent", c, c0)] {
            assert_eq!(
                mine.len(),
                base.len(),
                "{what}: row counts differ for {format:?}"
            );
            if let Some(i) = (0..mine.len()).find(|&i| mine[i] != base[i]) {
                panic!(
                    "{what} differ for {format:?} at row {i}:\n  {}\n  {} (parquet)",
                    mine[i], base[i]
                );
            }
        }
    }
}

/// The committed sample in datasets/ loads completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_sample_loads() {
    let db = TestDb::new();
    let e = db.engine().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample");
    let lines = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .lines()
            .count() as u64
            - 1
    };
    let opts = IngestOptions::default();
    let r = e
        .ingest(Kind::Profiles, &[dir.join("profiles.csv")], &opts)
        .await
        .unwrap();
    assert_eq!(
        (r.rows_loaded, r.rejected.len()),
        (lines("profiles.csv"), 0)
    );
    let r = e
        .ingest(Kind::Events, &[dir.join("events-00000.csv")], &opts)
        .await
        .unwrap();
    assert_eq!(
        (r.rows_loaded, r.rejected.len()),
        (lines("events-00000.csv"), 0)
    );
    let r = e
        .ingest(Kind::Consent, &[dir.join("consent.csv")], &opts)
        .await
        .unwrap();
    assert_eq!((r.rows_loaded, r.rejected.len()), (lines("consent.csv"), 0));
    // Every event's user has a profile, and ordinals are dense from 0.
    assert_eq!(count(&e, "SELECT count(*) FROM events e LEFT JOIN profiles p ON e.uid = p.uid WHERE p.uid IS NULL").await, 0);
    let n = count(&e, "SELECT count(*) FROM identity").await;
    assert_eq!(count(&e, "SELECT max(uid) + 1 FROM identity").await, n);
    assert_eq!(
        count(&e, "SELECT count(DISTINCT uid) FROM identity").await,
        n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_upsert_replaces_the_whole_row() {
    let db = TestDb::new();
    let e = db.engine().await;
    let a = db.input("p1.csv", "user_id,plan,country\nu-a,free,DE\nu-b,plus,FR\n");
    e.ingest(Kind::Profiles, &[a], &IngestOptions::default())
        .await
        .unwrap();
    // Second load: u-a changes (and loses country), a new column appears, u-c is new,
    // and u-c appears twice (the later row wins).
    let b = db.input(
        "p2.csv",
        "user_id,plan,ltv\nu-a,premium,120.5\nu-c,free,1\nu-c,plus,2\n",
    );
    let r = e
        .ingest(Kind::Profiles, &[b], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(r.rows_loaded, 3);
    assert_eq!(r.new_users, 1);
    let got = rows(
        &e,
        "SELECT user_id, plan, country, ltv FROM profiles ORDER BY uid",
    )
    .await;
    assert_eq!(
        got,
        vec![
            format!("{}|premium|∅|120.5", expected_pseudonym("u-a")),
            format!("{}|plus|FR|∅", expected_pseudonym("u-b")),
            format!("{}|plus|∅|2.0", expected_pseudonym("u-c")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_schema_grows_with_new_properties() {
    let db = TestDb::new();
    let e = db.engine().await;
    let a = db.input(
        "e1.csv",
        "user_id,event,ts\nu1,page_view,2026-01-01T10:00:00Z\n",
    );
    e.ingest(Kind::Events, &[a], &IngestOptions::default())
        .await
        .unwrap();
    let b = db.input("e2.ndjson", "{\"user_id\":\"u1\",\"event\":\"purchase\",\"ts\":1767261600000,\"coupon\":\"XMAS\",\"amount\":42}\n");
    e.ingest(Kind::Events, &[b], &IngestOptions::default())
        .await
        .unwrap();
    let c = db.input(
        "e3.csv",
        "user_id,event,ts,amount\nu2,purchase,2026-01-02,7\n",
    );
    e.ingest(Kind::Events, &[c], &IngestOptions::default())
        .await
        .unwrap();
    let got = rows(
        &e,
        "SELECT uid, event, ts, coupon, amount FROM events ORDER BY ts, event",
    )
    .await;
    assert_eq!(
        got,
        vec![
            "0|page_view|2026-01-01T10:00:00Z|∅|∅",
            "0|purchase|2026-01-01T10:00:00Z|XMAS|42",
            "1|purchase|2026-01-02T00:00:00Z|∅|7",
        ]
    );
    let cols = rows(&e, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events' ORDER BY ordinal_position").await;
    assert!(
        cols.iter().any(|c| c.starts_with("coupon|Utf8")),
        "{cols:?}"
    );
    assert!(cols.contains(&"amount|Int64".to_string()), "{cols:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_are_reported_by_number_and_good_rows_commit() {
    let db = TestDb::new();
    let e = db.engine().await;
    let csv = "user_id,event,ts,qty\n\
               secret-good-1,view,2026-01-01T00:00:00Z,1\n\
               ,view,2026-01-01T00:00:00Z,1\n\
               secret-bad-ts,view,not-a-time,1\n\
               secret-no-event,,2026-01-01T00:00:00Z,1\n\
               secret-short-row,view\n\
               secret-good-2,buy,1767225600000,2\n";
    let f = db.input("mixed.csv", csv);
    let r = e
        .ingest(Kind::Events, &[f], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(r.rows_loaded, 2);
    let reported: Vec<(u64, String)> = r
        .rejected
        .iter()
        .map(|b| (b.row, b.reason.clone()))
        .collect();
    assert_eq!(
        reported,
        vec![
            (
                2,
                "user_id is missing or a placeholder (such as null, undefined, guest, -1)"
                    .to_string()
            ),
            (
                3,
                "ts is not an ISO-8601 timestamp or epoch milliseconds".to_string()
            ),
            (4, "event is missing".to_string()),
            (5, "has 2 fields, the header has 4".to_string()),
        ]
    );
    for b in &r.rejected {
        assert!(
            !b.to_string().contains("secret"),
            "a report echoed a raw id: {b}"
        );
    }
    assert_eq!(
        rows(&e, "SELECT event, qty FROM events ORDER BY event").await,
        vec!["buy|2", "view|1"]
    );

    // NDJSON: broken lines and non-objects are rows too.
    let nd = db.input("mixed.ndjson", "{\"user_id\":\"x1\",\"event\":\"a\",\"ts\":\"2026-01-01\"}\n{broken\n[1,2]\n\n{\"user_id\":\"x2\",\"event\":\"b\",\"ts\":\"2026-01-01\"}\n");
    let r = e
        .ingest(Kind::Events, &[nd], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(r.rows_loaded, 2);
    let reported: Vec<(u64, String)> = r
        .rejected
        .iter()
        .map(|b| (b.row, b.reason.clone()))
        .collect();
    assert_eq!(
        reported,
        vec![
            (2, "is not valid JSON".to_string()),
            (3, "is not a JSON object".to_string())
        ]
    );

    // A file missing a required column fails whole, and nothing of the load is committed.
    let before = count(&e, "SELECT count(*) FROM events").await;
    let ok = db.input("ok.csv", "user_id,event,ts\nz,a,2026-01-01\n");
    let bad = db.input("nots.csv", "user_id,event\nz,a\n");
    let err = e
        .ingest(Kind::Events, &[ok, bad], &IngestOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no \"ts\" column"), "{err}");
    assert_eq!(count(&e, "SELECT count(*) FROM events").await, before);

    // --strict commits nothing when a row is rejected.
    let f = db.input(
        "strict.csv",
        "user_id,event,ts\ns1,a,2026-01-01\ns2,a,never\n",
    );
    let err = e
        .ingest(
            Kind::Events,
            &[f],
            &IngestOptions {
                strict: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--strict"), "{err}");
    assert_eq!(count(&e, "SELECT count(*) FROM events").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_rows_are_validated() {
    let db = TestDb::new();
    let e = db.engine().await;
    let f = db.input(
        "c.csv",
        "user_id,purpose,granted,tc_string,us_privacy,expires_at\n\
         a,marketing,true,,,2027-01-01\n\
         b,,,CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA,,\n\
         c,,,,1YYN,\n\
         d,marketing,,,,\n\
         e,,,,,\n\
         f,analytics,maybe,,,\n",
    );
    let r = e
        .ingest(Kind::Consent, &[f], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(r.rows_loaded, 3);
    let reported: Vec<u64> = r.rejected.iter().map(|b| b.row).collect();
    assert_eq!(reported, vec![4, 5, 6]);
    assert_eq!(
        rows(&e, "SELECT purpose, granted, us_privacy, CAST(expires_at AS VARCHAR) FROM consent ORDER BY uid").await,
        vec!["marketing|true|∅|2027-01-01T00:00:00Z", "∅|∅|∅|∅", "∅|∅|1YYN|∅"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_is_dense_stable_and_shared_across_tables() {
    let db = TestDb::new();
    let e = db.engine().await;
    let a = db.input(
        "a.csv",
        "user_id,event,ts\nm,x,2026-01-01\nn,x,2026-01-01\nm,y,2026-01-02\n",
    );
    e.ingest(Kind::Events, &[a], &IngestOptions::default())
        .await
        .unwrap();
    let p = db.input("p.csv", "user_id,plan\nn,free\no,plus\n");
    let r = e
        .ingest(Kind::Profiles, &[p], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(r.new_users, 1);
    let ids = rows(&e, "SELECT user_id, uid FROM identity ORDER BY uid").await;
    assert_eq!(
        ids,
        vec![
            format!("{}|0", expected_pseudonym("m")),
            format!("{}|1", expected_pseudonym("n")),
            format!("{}|2", expected_pseudonym("o")),
        ]
    );
    assert_eq!(
        rows(&e, "SELECT uid FROM profiles ORDER BY uid").await,
        vec!["1", "2"]
    );
}

/// A second engine (as a second process would) sees what the first committed, per statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_sees_committed_data() {
    let db = TestDb::new();
    let writer = db.engine().await;
    let reader = db.engine().await;
    assert_eq!(count(&reader, "SELECT count(*) FROM events").await, 0);
    let load = |name: &str, csv: String| {
        let f = db.input(name, &csv);
        let writer = &writer;
        async move {
            writer
                .ingest(Kind::Events, &[f], &IngestOptions::default())
                .await
                .unwrap();
        }
    };
    load("a.csv", "user_id,event,ts\nm,x,2026-01-01\n".into()).await;
    assert_eq!(count(&reader, "SELECT count(*) FROM events").await, 1);
    // The reader's handle is at that version. More commits, then a VACUUM that checkpoints and
    // removes the log entries below it (the reader's own among them): the reader must still
    // find the newest version, not keep its old one.
    for (i, name) in ["b.csv", "c.csv", "d.csv"].into_iter().enumerate() {
        load(name, format!("user_id,event,ts\nm{i},x,2026-01-02\n")).await;
    }
    writer.sql("VACUUM").await.unwrap();
    assert_eq!(count(&reader, "SELECT count(*) FROM events").await, 4);
    load("e.csv", "user_id,event,ts\nm9,x,2026-01-03\n".into()).await;
    assert_eq!(count(&reader, "SELECT count(*) FROM events").await, 5);
}
