//! Privacy at the door: pseudonyms follow the DESIGN.md formula, and planted canary raw ids never
//! reach any byte under the data directory, the logs, or the output.

use segdb::ingest::{IngestOptions, Kind};
use segdb::privacy::Keyring;
use segdb::storage::Location;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_pseudonyms_equal_the_design_formula() {
    let db = TestDb::new();
    let e = db.engine().await;
    let f = db.input(
        "e.csv",
        "user_id,event,ts\nalice@example.com,a,2026-01-01\n12345,a,2026-01-01\n",
    );
    e.ingest(Kind::Events, &[f], &IngestOptions::default())
        .await
        .unwrap();
    let got = rows(&e, "SELECT user_id FROM events ORDER BY uid").await;
    assert_eq!(
        got,
        vec![
            expected_pseudonym("alice@example.com"),
            expected_pseudonym("12345")
        ]
    );
    // The SQL function computes the same value, so users can look people up by raw id.
    let got = rows(&e, "SELECT pseudonymize('alice@example.com'), count(*) FROM events WHERE user_id = pseudonymize('alice@example.com')").await;
    assert_eq!(
        got,
        vec![format!("{}|1", expected_pseudonym("alice@example.com"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_raw_ids_never_reach_storage_logs_or_output() {
    let db = TestDb::new();
    let canaries = [
        "canary-7f3a9e@example.com",
        "CANARY_SECOND_81d2",
        "canary.bad.row.55c1",
    ];
    // Events as CSV (incl. a rejected row carrying a canary), profiles as NDJSON, consent as Parquet.
    let ev = db.input(
        "ev.csv",
        &format!(
            "user_id,event,ts,note\n{0},page_view,2026-01-01T00:00:00Z,hello\n{1},purchase,2026-01-02T00:00:00Z,x\n{2},page_view,garbage,y\n",
            canaries[0], canaries[1], canaries[2]
        ),
    );
    let pr = db.input(
        "pr.ndjson",
        &format!(
            "{{\"user_id\":\"{}\",\"plan\":\"free\"}}\n{{\"user_id\":\"{}\",\"plan\":\"plus\"}}\n",
            canaries[0], canaries[1]
        ),
    );
    let cons = db.dir.path().join("cons.parquet");
    {
        use arrow::array::{RecordBatch, StringArray};
        use std::sync::Arc;
        let b = RecordBatch::try_from_iter(vec![
            (
                "user_id",
                Arc::new(StringArray::from(vec![canaries[0], canaries[1]])) as _,
            ),
            (
                "us_privacy",
                Arc::new(StringArray::from(vec!["1YNN", "1YYN"])) as _,
            ),
        ])
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&cons).unwrap(),
            b.schema(),
            None,
        )
        .unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    }
    let trace = [("SEGDB_LOG", "trace")];
    let mut transcript = String::new();
    for (kind, file) in [("events", &ev), ("profiles", &pr), ("consent", &cons)] {
        let o = db.cli_env(&["ingest", kind, file.to_str().unwrap()], &trace);
        assert!(o.status.success(), "{}", stderr(&o));
        transcript.push_str(&stdout(&o));
        transcript.push_str(&stderr(&o));
    }
    let o = db.cli_env(&["sql", "--format", "json", "-c", "SELECT * FROM events; SELECT * FROM profiles; SELECT * FROM consent; SELECT * FROM identity"], &trace);
    assert!(o.status.success(), "{}", stderr(&o));
    transcript.push_str(&stdout(&o));
    transcript.push_str(&stderr(&o));
    // A failing query that mentions a pseudonym column must not leak either.
    let o = db.cli_env(&["sql", "-c", "SELECT user_id + 1 FROM events"], &trace);
    transcript.push_str(&stderr(&o));

    assert!(
        transcript.contains("rejected 1 rows"),
        "the bad row was not reported: {transcript}"
    );
    assert!(
        transcript.len() > 1000,
        "trace logging produced too little output to be a meaningful check"
    );
    for c in canaries {
        assert!(
            !transcript.contains(c),
            "canary {c} appeared in CLI output or logs"
        );
        let hits = files_containing(&db.data, c);
        assert!(hits.is_empty(), "canary {c} found in {hits:?}");
        // Sanity: the search works (the canary is in the input file itself).
        assert!(!files_containing(db.dir.path(), c).is_empty());
    }
    // …and the pseudonyms are there instead.
    assert!(!files_containing(&db.data, &expected_pseudonym(canaries[0])).is_empty());
    assert!(
        files_containing(&db.data, &expected_pseudonym(canaries[2])).is_empty(),
        "a rejected row created an identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_wrong_keyring_foreign_directories_and_keys_inside_the_data() {
    let db = TestDb::new();
    drop(db.engine().await);
    // Another key: refused, with a message that names the fix and no key material.
    let other = Keyring::from_keys([("user".to_string(), [1u8; 32])]).unwrap();
    let err = segdb::Engine::open_with_keyring(
        Location::parse(db.data.to_str().unwrap()).unwrap(),
        other,
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("not the one"), "{err}");

    // A directory with other files is not a database.
    let foreign = db.dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "hi").unwrap();
    let o = db.cli(&["--data", foreign.to_str().unwrap(), "sql", "-c", "SELECT 1"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("is not a segdb database") && err.lines().count() == 1,
        "{err}"
    );

    // A keyring under the data directory is refused.
    let inside = db.data.join("k.keyring");
    std::fs::write(&inside, keyring_json()).unwrap();
    let o = db.cli(&[
        "--keyring",
        inside.to_str().unwrap(),
        "sql",
        "-c",
        "SELECT 1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("inside the database"), "{}", stderr(&o));
}

#[test]
fn a_new_keyring_is_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_segdb"))
        .current_dir(dir.path())
        .args(["init"])
        .env_remove("SEGDB_DATA")
        .env_remove("SEGDB_KEYRING")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let k = dir.path().join("segdb.keyring");
    let ring = Keyring::open(&k).unwrap();
    drop(ring);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(dir.path().join("segdb-data/_segdb/segdb.json").exists());
    assert!(dir.path().join("segdb-data/events/_delta_log").exists());
}

#[test]
fn rotating_a_partner_key_changes_partner_ids_only() {
    let db = TestDb::new();
    let f = db.input("e.csv", "user_id,event,ts\nalice,a,2026-01-01\n");
    db.ingest_cli("events", &f);
    let q = [
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT user_id, pseudonymize(user_id, 'partner_x') AS partner FROM events",
    ];
    let before = stdout(&db.cli(&q));
    let o = db.cli(&["keys", "rotate", "--domain", "partner_x"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = stdout(&db.cli(&q));
    let (b, a): (Vec<&str>, Vec<&str>) = (
        before.lines().nth(1).unwrap().split(',').collect(),
        after.lines().nth(1).unwrap().split(',').collect(),
    );
    assert_eq!(a[0], b[0], "stored pseudonyms must not change");
    assert_eq!(a[0], expected_pseudonym("alice"));
    assert_ne!(a[1], b[1], "the partner id must change after rotation");
    // The user key cannot be rotated, and the database still opens with the keyring.
    let o = db.cli(&["keys", "rotate", "--domain", "user"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot be rotated"));
    assert!(db.cli(&["sql", "-c", "SELECT 1"]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_writes_into_base_tables_are_refused() {
    // INSERT would store whatever id it is given, skipping pseudonymisation and identity.
    let (db, e) = one_event().await;
    for sql in [
        "INSERT INTO events (user_id, event, ts) VALUES ('raw.canary@example.com', 'a', now())",
        "INSERT INTO public.profiles (user_id) VALUES ('raw.canary@example.com')",
        "INSERT INTO consent (user_id, purpose) SELECT user_id, 'ads' FROM events",
    ] {
        let err = e.sql(sql).await.unwrap_err().to_string();
        assert!(err.contains("written only by ingest"), "{sql}: {err}");
        assert!(!err.contains("raw.canary"), "{err}");
    }
    assert_eq!(count(&e, "SELECT count(*) FROM events").await, 1);
    assert!(files_containing(&db.data, "raw.canary@example.com").is_empty());
    // Memory tables of the session still take inserts.
    e.sql("CREATE TABLE scratch (a INT)").await.unwrap();
    e.sql("INSERT INTO scratch VALUES (1), (2)").await.unwrap();
    assert_eq!(count(&e, "SELECT count(*) FROM scratch").await, 2);
}

fn segdb_rows(r: &segdb::QueryResult) -> Vec<String> {
    render_rows(r, |c| c.unwrap_or("∅").to_string(), "|")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_parameters_are_cast_and_never_echoed() {
    use datafusion::common::{ParamValues, ScalarValue};
    let (_db, e) = one_event().await;
    let sql = "SELECT count(*) FROM events WHERE uid = $1";
    // A text parameter where the planner wants an integer is cast ...
    let s = e.session();
    let p = s.parse_one(sql).unwrap();
    let admin = segdb::statement::Role::Admin;
    let ok = s
        .plan(
            &p,
            admin,
            Some(ParamValues::from(vec![ScalarValue::from("0")])),
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(segdb_rows(&ok), vec!["1"]);
    // ... and one that does not cast fails without repeating the value.
    let Err(err) = s
        .plan(
            &p,
            admin,
            Some(ParamValues::from(vec![ScalarValue::from(
                "raw.canary@example.com",
            )])),
        )
        .await
    else {
        panic!("an uncastable parameter must fail");
    };
    let err = err.to_string();
    assert!(err.contains("parameter $1"), "{err}");
    assert!(!err.contains("raw.canary"), "{err}");
}

/// A database with one event of alice@example.com.
async fn one_event() -> (TestDb, segdb::Engine) {
    let db = TestDb::new();
    let e = db.engine().await;
    let f = db.input(
        "e.csv",
        "user_id,event,ts\nalice@example.com,a,2026-01-01\n",
    );
    e.ingest(Kind::Events, &[f], &IngestOptions::default())
        .await
        .unwrap();
    (db, e)
}
