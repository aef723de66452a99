//! The segment language end to end: statements, functions, consent, the index, and a
//! differential test against DuckDB (tests/differential/segments.py).

use std::path::PathBuf;
use std::process::Command;

use segdb::ingest::{IngestOptions, Kind};

use crate::common::*;

/// The test venv's Python (scripts/test sets SEGDB_PYTHON); `None` means skip, unless
/// SEGDB_REQUIRE_PY=1, when a missing interpreter fails the test.
pub fn python() -> Option<PathBuf> {
    let p = std::env::var_os("SEGDB_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(PathBuf::from(home).join(".cache/segdb-venv/bin/python"))
        })?;
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("SEGDB_REQUIRE_PY").is_err(),
        "SEGDB_REQUIRE_PY is set but {} does not exist",
        p.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_against_duckdb() {
    let Some(py) = python() else {
        eprintln!("SKIPPED differential_against_duckdb: no test venv (run scripts/test)");
        return;
    };
    let (db, src, _) = loaded(600, 25, 5, 15.0).await;
    let seed = diff_seed();
    let cases = std::env::var("SEGDB_DIFF_CASES").unwrap_or_else(|_| "300".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/differential/segments.py"
    );
    let o = Command::new(py)
        .args([
            script,
            env!("CARGO_BIN_EXE_segdb"),
            db.data.to_str().unwrap(),
            db.keyring.to_str().unwrap(),
            src.to_str().unwrap(),
            &seed.to_string(),
            &cases,
        ])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "differential test failed (rerun with SEGDB_DIFF_SEED={seed}):\n{out}\n{}",
        stderr(&o)
    );
    assert!(out.contains(&format!("{cases} passed, 0 failed")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_functions_and_persistence() {
    let (db, _, _) = loaded(300, 20, 9, 15.0).await;
    let e = db.engine().await;
    e.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    let r = rows(
        &e,
        "CREATE SEGMENT buyers COMMENT 'bought lately' AS DID 'purchase' IN THE LAST 20 DAYS",
    )
    .await;
    let size: u64 = r[0].split('|').nth(1).unwrap().parse().unwrap();
    assert!(size > 0, "{r:?}");
    rows(&e, "CREATE SEGMENT de AS PROFILE country = 'DE'").await;
    rows(
        &e,
        "CREATE SEGMENT de_buyers AS IN SEGMENT buyers AND IN SEGMENT de",
    )
    .await;

    // The same numbers through every function.
    assert_eq!(
        count(&e, "SELECT segment_size('buyers')").await as u64,
        size
    );
    assert_eq!(
        count(&e, "SELECT count(*) FROM segment_members('buyers')").await as u64,
        size
    );
    assert_eq!(
        count(&e, "SELECT rb_cardinality(segment_bitmap('buyers'))").await as u64,
        size
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM profiles WHERE in_segment('buyers', user_id)"
        )
        .await as u64,
        size
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM profiles WHERE in_segment('buyers', uid)"
        )
        .await as u64,
        size
    );
    let plain = count(&e, "SELECT count(DISTINCT uid) FROM events WHERE event = 'purchase' AND ts >= TIMESTAMP '2026-01-12T00:00:00Z' AND ts < TIMESTAMP '2026-02-01T00:00:00Z'").await;
    assert_eq!(plain as u64, size);
    let both = count(
        &e,
        "SELECT count(*) FROM profiles WHERE country = 'DE' AND in_segment('buyers', user_id)",
    )
    .await;
    assert_eq!(count(&e, "SELECT segment_size('de_buyers')").await, both);
    let ov = rows(
        &e,
        "SELECT a, b, size_a, both FROM segment_overlap('buyers', 'de', 'de_buyers')",
    )
    .await;
    assert_eq!(ov.len(), 3);
    assert_eq!(ov[0], format!("buyers|de|{size}|{both}"));
    let by_country = rows(
        &e,
        "SELECT country, count(*) FROM profiles WHERE in_segment('de_buyers', user_id) GROUP BY 1",
    )
    .await;
    assert!(
        by_country.iter().all(|r| r.starts_with("DE|")),
        "{by_country:?}"
    );
    // The bitmap is portable Roaring: pyroaring (CRoaring) reads the same members.
    if let Some(py) = python() {
        let bytes = e.sql("SELECT segment_bitmap('buyers')").await.unwrap();
        let bin = segdb::functions::bitmap::binary::as_binary(bytes.batches[0].column(0)).unwrap();
        let f = db.dir.path().join("buyers.roaring");
        std::fs::write(
            &f,
            arrow::array::Array::is_valid(&bin, 0)
                .then(|| bin.value(0).to_vec())
                .unwrap(),
        )
        .unwrap();
        let o = Command::new(py)
            .args(["-c", "import sys, pyroaring; b = pyroaring.BitMap.deserialize(open(sys.argv[1], 'rb').read()); print(len(b), ','.join(map(str, b)))"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let ours = rows(
            &e,
            "SELECT array_to_string(rb_to_array(segment_bitmap('buyers')), ',')",
        )
        .await;
        assert_eq!(stdout(&o).trim(), format!("{size} {}", ours[0]));
    }
    // A past as_of per call.
    let earlier = count(&e, "SELECT segment_size('buyers', '2026-01-20T00:00:00Z')").await;
    assert!(earlier <= size as i64);

    // SHOW / DESCRIBE / EXPLAIN.
    let show = rows(&e, "SHOW SEGMENTS").await;
    assert_eq!(show.len(), 3);
    assert!(
        show[0].starts_with("buyers|∅|DID 'purchase' IN THE LAST 20 DAYS|bought lately|false|"),
        "{show:?}"
    );
    let desc = rows(&e, "DESCRIBE SEGMENT de_buyers").await;
    assert!(
        desc[0].starts_with("de_buyers|∅|IN SEGMENT buyers AND IN SEGMENT de|"),
        "{desc:?}"
    );
    let plan = rows(&e, "EXPLAIN SEGMENT de_buyers").await.join("\n");
    assert!(
        plan.contains("[index: 20 whole days of bit-sliced counts]")
            && plan.contains("[scan profiles]"),
        "{plan}"
    );
    // Each IN SEGMENT leaf is one line (with its size), above the lines of the segment it reads.
    assert_eq!(plan.matches("IN SEGMENT buyers").count(), 1, "{plan}");
    assert_eq!(plan.matches("IN SEGMENT de ").count(), 1, "{plan}");
    let header = plan
        .find("IN SEGMENT buyers  [segment buyers]")
        .expect("header");
    assert!(
        header < plan.find("[index: 20 whole days").unwrap(),
        "{plan}"
    );

    // Errors: duplicates, unknown events and columns with suggestions, cycles, dependants.
    let err = e
        .sql("CREATE SEGMENT buyers AS ALL USERS")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    let err = e
        .sql("CREATE SEGMENT x AS DID 'purchse' IN THE LAST 3 DAYS")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("did you mean 'purchase'") && err.contains("line 1, column 21"),
        "{err}"
    );
    let err = e
        .sql("CREATE SEGMENT x AS\n  PROFILE contry = 'DE'")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2, column 11") && err.contains("contry"),
        "{err}"
    );
    let err = e
        .sql("CREATE OR REPLACE SEGMENT buyers AS IN SEGMENT de_buyers")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refers to itself"), "{err}");
    let err = e.sql("DROP SEGMENT de").await.unwrap_err().to_string();
    assert!(err.contains("used by segment 'de_buyers'"), "{err}");
    let err = e
        .sql("SELECT segment_size('nope')")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");

    // Definitions survive a restart (a new engine on the same data).
    drop(e);
    let e2 = db.engine().await;
    e2.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    assert_eq!(
        count(&e2, "SELECT segment_size('buyers')").await as u64,
        size
    );
    e2.sql("DROP SEGMENT de_buyers").await.unwrap();
    e2.sql("DROP SEGMENT IF EXISTS de_buyers").await.unwrap();
    assert_eq!(rows(&e2, "SHOW SEGMENTS").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_and_scan_paths_agree_and_rebuild_is_identical() {
    let (db, _, _) = loaded(400, 20, 13, 15.0).await;
    let e = db.engine().await;
    e.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    let defs = [
        "DID 'purchase' AT LEAST 2 TIMES IN THE LAST 14 DAYS",
        "DID 'view_item' BETWEEN 2 AND 6 TIMES IN THE LAST 7 DAYS",
        "DID ANY EVENT AT MOST 3 TIMES IN THE LAST 10 DAYS",
        "DID 'add_to_cart' EXACTLY 0 TIMES SINCE '2026-01-20'",
        "DID 'search'",
    ];
    for (i, d) in defs.iter().enumerate() {
        e.sql(&format!("CREATE SEGMENT s{i} AS {d}")).await.unwrap();
    }
    let indexed = bitmaps(&e, defs.len()).await;
    let plan = rows(&e, "EXPLAIN SEGMENT s0").await.join("\n");
    assert!(plan.contains("index"), "{plan}");
    e.sql("SET segdb.use_index = false").await.unwrap();
    let plan = rows(&e, "EXPLAIN SEGMENT s0").await.join("\n");
    assert!(plan.contains("scan events (index off)"), "{plan}");
    assert_eq!(bitmaps(&e, defs.len()).await, indexed);
    e.sql("SET segdb.use_index = true").await.unwrap();
    // `segdb index rebuild` gives identical bitmaps.
    let o = db.cli(&["index", "rebuild"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e2 = db.engine().await;
    e2.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    assert_eq!(bitmaps(&e2, defs.len()).await, indexed);
    // A second events load keeps the index current (appended, not rebuilt).
    let more = db.input("more.csv", "user_id,event,ts\nnew-user,purchase,2026-01-30T10:00:00Z\nnew-user,purchase,2026-01-31T10:00:00Z\n");
    e2.ingest(Kind::Events, &[more], &IngestOptions::default())
        .await
        .unwrap();
    let n = count(&e2, "SELECT segment_size('s0')").await;
    e2.sql("SET segdb.use_index = false").await.unwrap();
    assert_eq!(count(&e2, "SELECT segment_size('s0')").await, n);
    assert_eq!(
        count(
            &e2,
            &format!(
                "SELECT count(*) FROM segment_members('s0') WHERE user_id = '{}'",
                expected_pseudonym("new-user")
            )
        )
        .await,
        1
    );
}

async fn bitmaps(e: &segdb::Engine, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(
            rows(
                e,
                &format!("SELECT array_to_string(rb_to_array(segment_bitmap('s{i}')), ',')"),
            )
            .await[0]
                .clone(),
        );
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_purpose_filters_members_by_consent() {
    let db = TestDb::new();
    let e = db.engine().await;
    let ev = db.input("e.csv", "user_id,event,ts\na,buy,2026-01-10\nb,buy,2026-01-10\nc,buy,2026-01-10\nd,buy,2026-01-10\ne,buy,2026-01-10\n");
    e.ingest(Kind::Events, &[ev], &IngestOptions::default())
        .await
        .unwrap();
    // a: TCF all purposes; b: TCF refused; c: marketing granted; d: marketing granted then revoked;
    // e: marketing granted but expired. The TC strings come from the shared vectors' shapes:
    // encode purposes 1-10 consent vs none with the project's encoder.
    let all = tc(&(1..=10).collect::<Vec<u8>>());
    let none = tc(&[]);
    let c = db.input(
        "c.csv",
        &format!(
            "user_id,tc_string,purpose,granted,expires_at,recorded_at\n\
             a,{all},,,,2026-01-01T00:00:00Z\n\
             b,{none},,,,2026-01-01T00:00:00Z\n\
             c,,marketing,true,,2026-01-01T00:00:00Z\n\
             d,,marketing,true,,2026-01-01T00:00:00Z\n\
             d,,marketing,false,,2026-01-05T00:00:00Z\n\
             e,,marketing,true,2026-01-15T00:00:00Z,2026-01-01T00:00:00Z\n"
        ),
    );
    e.ingest(Kind::Consent, &[c], &IngestOptions::default())
        .await
        .unwrap();
    e.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT t AS DID 'buy'").await.unwrap();
    e.sql("CREATE SEGMENT t1 FOR PURPOSE 'tcf:1' AS DID 'buy'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT mk FOR PURPOSE 'marketing' AS DID 'buy'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT both_ FOR PURPOSE 'marketing', 'tcf:1' AS DID 'buy'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT outer_ AS IN SEGMENT t1")
        .await
        .unwrap();
    let members = |n: &str| format!("SELECT user_id FROM segment_members('{n}') ORDER BY user_id");
    let ids = |v: &[&str]| {
        let mut x: Vec<String> = v.iter().map(|r| expected_pseudonym(r)).collect();
        x.sort();
        x
    };
    assert_eq!(rows(&e, &members("t")).await.len(), 5);
    assert_eq!(rows(&e, &members("t1")).await, ids(&["a"]));
    assert_eq!(
        rows(&e, &members("outer_")).await,
        ids(&["a"]),
        "IN SEGMENT leaks members of a FOR PURPOSE segment"
    );
    assert_eq!(rows(&e, &members("mk")).await, ids(&["c"]));
    assert!(rows(&e, &members("both_")).await.is_empty());
    // Before e's consent expired, e was a member.
    assert_eq!(
        count(&e, "SELECT segment_size('mk', '2026-01-12T00:00:00Z')").await,
        2
    );
    // has_consent reads the same rules, per user.
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM identity WHERE has_consent(user_id, 'marketing')"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM identity WHERE has_consent(uid, 'tcf:1')"
        )
        .await,
        1
    );
    assert_eq!(count(&e, "SELECT count(*) FROM identity WHERE has_consent(user_id, 'marketing', '2026-01-12T00:00:00Z')").await, 2);
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM identity WHERE has_consent(user_id, 'sale')"
        )
        .await,
        0
    );
    // No way around FOR PURPOSE: subqueries, CTEs, joins and bitmap functions all see the same members.
    for q in [
        "SELECT count(*) FROM (SELECT * FROM segment_members('t1')) s",
        "WITH m AS (SELECT user_id FROM segment_members('t1')) SELECT count(*) FROM m",
        "SELECT count(*) FROM identity i JOIN segment_members('outer_') m ON i.user_id = m.user_id",
        "SELECT rb_cardinality(rb_or(segment_bitmap('t1'), segment_bitmap('outer_')))",
        "SELECT count(*) FROM identity WHERE in_segment('t1', user_id)",
        "SELECT segment_size('t1')",
    ] {
        assert_eq!(count(&e, q).await, 1, "{q}");
    }
    assert!(e.sql("SET segdb.consent = off").await.is_err());
    // The raw Delta files cannot be read around the engine at all (no external table over the
    // database's own files), and a prepared statement sees the filtered members at every run.
    let raw = db.data.join("events");
    let err = e
        .sql(&format!(
            "CREATE EXTERNAL TABLE raw_events STORED AS PARQUET LOCATION '{}/'",
            raw.display()
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("database's own files"), "{err}");
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM events r WHERE in_segment('t1', r.user_id)"
        )
        .await,
        1
    );
    e.sql("PREPARE members AS SELECT count(*) FROM segment_members('t1')")
        .await
        .unwrap();
    assert_eq!(rows_of(&e.sql("EXECUTE members").await.unwrap()), vec!["1"]);
    e.sql("PREPARE sized(VARCHAR) AS SELECT segment_size($1)")
        .await
        .unwrap();
    assert_eq!(
        rows_of(&e.sql("EXECUTE sized('t1')").await.unwrap()),
        vec!["1"]
    );
    let err = e
        .sql("CREATE SEGMENT bad FOR PURPOSE 'tcf:99' AS ALL USERS")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tcf:1"), "{err}");
}

/// A single-column result as text (NULL as "NULL").
fn rows_of(r: &segdb::QueryResult) -> Vec<String> {
    render_rows(r, |c| c.unwrap_or("NULL").to_string(), "|")
}

fn tc(purposes: &[u8]) -> String {
    use segdb::privacy::tcf::{CoreSegment, encode_core};
    encode_core(&CoreSegment {
        version: 2,
        created: 17_000_000_000,
        last_updated: 17_000_000_000,
        cmp_id: 300,
        cmp_version: 1,
        consent_screen: 1,
        consent_language: *b"EN",
        vendor_list_version: 100,
        tcf_policy_version: 4,
        is_service_specific: true,
        use_non_standard_texts: false,
        special_feature_optins: vec![],
        purposes_consent: purposes.to_vec(),
        purposes_li: vec![],
        purpose_one_treatment: false,
        publisher_cc: *b"DE",
        vendor_consent: vec![1, 2],
        vendor_li: vec![],
        pub_restrictions: vec![],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_bitmaps_are_reused_within_their_window_and_rederived_at_ingest() {
    let db = TestDb::new();
    let e = db.engine().await;
    let ev = db.input(
        "e.csv",
        "user_id,event,ts\na,buy,2026-01-10\nb,buy,2026-01-10\nc,buy,2026-01-10\n",
    );
    e.ingest(Kind::Events, &[ev], &IngestOptions::default())
        .await
        .unwrap();
    let c = db.input(
        "c.csv",
        "user_id,purpose,granted,expires_at,recorded_at\n\
         a,marketing,true,,2026-01-01T00:00:00Z\n\
         b,marketing,true,2026-01-20T00:00:00Z,2026-01-01T00:00:00Z\n\
         c,marketing,false,,2026-01-01T00:00:00Z\n",
    );
    e.ingest(Kind::Consent, &[c], &IngestOptions::default())
        .await
        .unwrap();
    let holders = |at: &str| {
        format!("SELECT count(*) FROM identity WHERE has_consent(user_id, 'marketing', '{at}')")
    };
    let derived = e.segments().consent_derivations();
    assert_eq!(count(&e, &holders("2026-01-10T00:00:00Z")).await, 2);
    assert_eq!(e.segments().consent_derivations(), derived + 1);
    // Another time in the same window (no record starts or expires in between): reused.
    assert_eq!(count(&e, &holders("2026-01-15T00:00:00Z")).await, 2);
    assert_eq!(e.segments().consent_derivations(), derived + 1);
    // Past b's expiry: a new window, derived again, and correct.
    assert_eq!(count(&e, &holders("2026-01-25T00:00:00Z")).await, 1);
    assert_eq!(e.segments().consent_derivations(), derived + 2);
    // A FOR PURPOSE segment reads the same bitmaps.
    e.sql("SET segdb.as_of = '2026-01-25T00:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT mk FOR PURPOSE 'marketing' AS DID 'buy'")
        .await
        .unwrap();
    assert_eq!(count(&e, "SELECT segment_size('mk')").await, 1);
    assert_eq!(e.segments().consent_derivations(), derived + 2);
    // A consent load re-derives the cached purposes at once; the answers follow the new records.
    let more = db.input(
        "c2.csv",
        "user_id,purpose,granted,recorded_at\nc,marketing,true,2026-01-02T00:00:00Z\n",
    );
    e.ingest(Kind::Consent, &[more], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(e.segments().consent_derivations(), derived + 3);
    assert_eq!(count(&e, "SELECT segment_size('mk')").await, 2);
    assert_eq!(count(&e, &holders("2026-01-10T00:00:00Z")).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_schema_lists_and_reads_members() {
    let (db, _src, _) = loaded(120, 7, 3, 5.0).await;
    let e = db.engine().await;
    e.sql("CREATE SEGMENT buyers AS DID 'purchase'")
        .await
        .unwrap();
    let size = count(&e, "SELECT segment_size('buyers')").await;
    assert!(size > 0);
    assert_eq!(
        count(&e, "SELECT count(*) FROM segments.buyers").await,
        size
    );
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM segments.buyers s JOIN segment_members('buyers') m ON s.user_id = m.user_id"
        )
        .await,
        size
    );
    let listed = count(
        &e,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'segments'",
    )
    .await;
    assert_eq!(listed, 1);
    // A segment created by another engine (process) is found by name.
    let other = db.engine().await;
    other
        .sql("CREATE SEGMENT viewers AS DID 'page_view'")
        .await
        .unwrap();
    assert!(count(&e, "SELECT count(*) FROM segments.viewers").await > 0);
    e.sql("DROP SEGMENT buyers").await.unwrap();
    assert!(e.sql("SELECT count(*) FROM segments.buyers").await.is_err());
}
