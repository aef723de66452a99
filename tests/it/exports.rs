//! Exports of materialised segments: files and a manifest written last, consent and erasure
//! applied, presets with the platforms' columns and hashing, changes between versions, standing
//! exports after each refresh, and who may export where.

use std::path::Path;

use arrow::array::AsArray;
use segdb::ingest::{IngestOptions, Kind};

use crate::common::{self, TestDb, count, expected_pseudonym, rows};

async fn shop() -> (TestDb, segdb::Engine) {
    let db = TestDb::new();
    let e = db.engine().await;
    e.sql("ALTER TABLE profiles SET PII (email AS EMAIL, phone AS PHONE 'DE')")
        .await
        .unwrap();
    let mut p = String::from("user_id,email,phone,country\n");
    let mut ev = String::from("user_id,event,ts\n");
    let mut c = String::from("user_id,purpose,granted,recorded_at\n");
    for i in 0..120 {
        let email = if i % 10 == 0 {
            String::new()
        } else {
            format!("User{i}@Example.com")
        };
        let phone = if i % 3 == 0 {
            format!("030 9018{i:03}")
        } else {
            String::new()
        };
        p.push_str(&format!("u{i}@x.com,{email},{phone},DE\n"));
        ev.push_str(&format!(
            "u{i}@x.com,purchase,2026-01-0{}T10:00:00Z\n",
            1 + i % 5
        ));
        c.push_str(&format!(
            "u{i}@x.com,ads,{},2025-12-01T00:00:00Z\n",
            i % 7 != 0
        ));
    }
    let opts = IngestOptions::default();
    e.ingest(Kind::Profiles, &[db.input("p.csv", &p)], &opts)
        .await
        .unwrap();
    e.ingest(Kind::Events, &[db.input("e.csv", &ev)], &opts)
        .await
        .unwrap();
    e.ingest(Kind::Consent, &[db.input("c.csv", &c)], &opts)
        .await
        .unwrap();
    e.sql("SET segdb.as_of = '2026-01-06T00:00:00Z'")
        .await
        .unwrap();
    e.sql(
        "CREATE MATERIALIZED SEGMENT buyers FOR PURPOSE 'ads' AS DID 'purchase' IN THE LAST 7 DAYS",
    )
    .await
    .unwrap();
    (db, e)
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("_manifest.json")).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_changes_exports_with_consent_and_erasure() {
    let (db, e) = shop().await;
    let out = db.dir.path().join("out");
    // 120 users, 1 in 7 refused 'ads': 102 members.
    assert_eq!(count(&e, "SELECT segment_size('buyers')").await, 102);
    let r = rows(
        &e,
        &format!(
            "EXPORT SEGMENT buyers TO '{}' FORMAT csv MAX ROWS PER FILE 40",
            out.display()
        ),
    )
    .await;
    let dir = out.join("buyers-v1");
    assert_eq!(
        r,
        vec![format!(
            "{}|3|102|{}|1|∅|0|∅",
            dir.display(),
            r[0].split('|').nth(3).unwrap()
        )]
    );
    let m = manifest(&dir);
    assert_eq!(m["segment"], "buyers");
    assert_eq!(m["version"], 1);
    assert_eq!(m["rows"], 102);
    assert_eq!(m["files"].as_array().unwrap().len(), 3);
    assert_eq!(m["purposes"][0], "ads");
    let mut exported: Vec<String> = Vec::new();
    for f in ["part-00000.csv", "part-00001.csv", "part-00002.csv"] {
        let rows = read_csv(&dir.join(f));
        assert_eq!(rows[0], vec!["user_id"]);
        exported.extend(rows[1..].iter().map(|r| r[0].clone()));
    }
    assert_eq!(exported.len(), 102);
    assert!(
        !exported.contains(&expected_pseudonym("u0@x.com")),
        "u0 refused consent"
    );
    // The export's own purpose narrows further; an unknown purpose nobody holds exports no one.
    let r = rows(
        &e,
        &format!(
            "EXPORT SEGMENT buyers TO '{}/p' FOR PURPOSE 'newsletter'",
            out.display()
        ),
    )
    .await;
    assert!(r[0].contains("|1|0|"), "{r:?}");
    // Forgotten users leave at once; a consent withdrawal goes out as `exited`.
    e.sql("FORGET USER 'u1@x.com'").await.unwrap();
    let w = db.input(
        "w.csv",
        "user_id,purpose,granted,recorded_at\nu2@x.com,ads,false,2026-01-05T00:00:00Z\n",
    );
    e.ingest(Kind::Consent, &[w], &IngestOptions::default())
        .await
        .unwrap();
    let more = db.input(
        "m.csv",
        "user_id,event,ts\nnew@x.com,purchase,2026-01-06T10:00:00Z\n",
    );
    e.ingest(Kind::Events, &[more], &IngestOptions::default())
        .await
        .unwrap();
    let c2 = db.input(
        "c2.csv",
        "user_id,purpose,granted,recorded_at\nnew@x.com,ads,true,2026-01-06T09:00:00Z\n",
    );
    e.ingest(Kind::Consent, &[c2], &IngestOptions::default())
        .await
        .unwrap();
    e.sql("REFRESH SEGMENT buyers AS OF '2026-01-07T00:00:00Z'")
        .await
        .unwrap();
    let r = rows(
        &e,
        &format!(
            "EXPORT SEGMENT buyers TO '{}' CHANGES FROM VERSION 1 TO VERSION 2",
            out.display()
        ),
    )
    .await;
    assert!(r[0].contains("buyers-v2-changes-1-2|1|2|"), "{r:?}");
    assert!(r[0].contains("|2|1|0|"), "version 2 from version 1: {r:?}");
    let path = out.join("buyers-v2-changes-1-2/part-00000.parquet");
    let f = std::fs::File::open(&path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let mut changes = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let u = b
            .column_by_name("user_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let c = b
            .column_by_name("change")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            changes.push(format!("{}|{}", u.value(i), c.value(i)));
        }
    }
    changes.sort();
    let mut want = vec![
        format!("{}|entered", expected_pseudonym("new@x.com")),
        format!("{}|exited", expected_pseudonym("u2@x.com")),
    ];
    want.sort();
    assert_eq!(
        changes, want,
        "the forgotten u1 is in no export, u2's withdrawal is an exit"
    );
    assert!(
        common::files_containing(&out, &expected_pseudonym("u1@x.com"))
            .iter()
            .all(|p| p.starts_with(out.join("buyers-v1"))),
        "only the export made before the FORGET holds u1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_write_the_platforms_columns_and_count_the_skipped() {
    let (db, e) = shop().await;
    let out = db.dir.path().join("out");
    for (preset, cols, min) in [
        ("google", vec!["Email", "Phone"], 100),
        ("meta", vec!["email", "phone"], 100),
        ("tiktok", vec!["Email_SHA256", "Phone_SHA256"], 1000),
    ] {
        let target = out.join(preset);
        let r = e
            .sql(&format!(
                "EXPORT SEGMENT buyers TO '{}' FORMAT csv PRESET {preset}",
                target.display()
            ))
            .await
            .unwrap();
        let cells = common::render_rows(&r, |c| c.unwrap_or("∅").to_string(), "|");
        let f: Vec<&str> = cells[0].split('|').collect();
        let (n, skipped) = (f[2].parse::<u64>().unwrap(), f[6].parse::<u64>().unwrap());
        // Members without an e-mail (every 10th) and without a phone (2 of 3) are skipped.
        assert_eq!(n + skipped, 102, "{preset}");
        assert!(skipped > 0 && n > 0, "{preset}: {cells:?}");
        assert_eq!(
            f[7] != "∅",
            n < min,
            "{preset}: the minimum-size warning: {cells:?}"
        );
        let rows = read_csv(&target.join(format!("buyers-v1-{preset}/part-00000.csv")));
        assert_eq!(rows[0], cols, "{preset}");
        for r in &rows[1..] {
            for v in r {
                assert!(
                    v.is_empty() || (v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit())),
                    "{preset}: {v}"
                );
            }
        }
    }
    // Keys equal the hashing functions: e-mail trimmed and lower-cased; phone with '+' for
    // Google, digits only for Meta.
    let g = read_csv(&out.join("google/buyers-v1-google/part-00000.csv"));
    let m = read_csv(&out.join("meta/buyers-v1-meta/part-00000.csv"));
    // One version for two platforms under one URL: two folders, no collision.
    let shared = db.dir.path().join("shared");
    for preset in ["google", "meta"] {
        e.sql(&format!(
            "EXPORT SEGMENT buyers TO '{}' FORMAT csv PRESET {preset}",
            shared.display()
        ))
        .await
        .unwrap();
        assert!(
            shared
                .join(format!("buyers-v1-{preset}/_manifest.json"))
                .is_file()
        );
    }
    let want_email = rows(&e, "SELECT hash_email('User3@Example.com')").await[0].clone();
    assert!(g.iter().any(|r| r[0] == want_email) && m.iter().any(|r| r[0] == want_email));
    let digits = rows(&e, "SELECT hash_phone('030 9018003', 'DE')").await[0].clone();
    assert!(m.iter().any(|r| r[1] == digits));
    assert!(
        !g.iter().any(|r| r[1] == digits),
        "google hashes the + form"
    );
    // No raw e-mail or phone anywhere: not in the database, not in the exports.
    for raw in ["User3@Example.com", "user3@example.com", "9018003"] {
        assert!(common::files_containing(&db.data, raw).is_empty(), "{raw}");
        assert!(common::files_containing(&out, raw).is_empty(), "{raw}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standing_exports_follow_each_refresh() {
    let (db, e) = shop().await;
    let out = db.dir.path().join("standing");
    let shown = rows(
        &e,
        &format!(
            "CREATE EXPORT daily FOR SEGMENT buyers TO '{}' FORMAT csv ON REFRESH",
            out.display()
        ),
    )
    .await;
    assert!(shown[0].starts_with("daily|buyers|"), "{shown:?}");
    // Version 1 in full when created.
    assert_eq!(read_csv(&out.join("buyers-v1/part-00000.csv")).len(), 103);
    let more = db.input(
        "m.csv",
        "user_id,event,ts\nu0@x.com,purchase,2026-01-06T10:00:00Z\n",
    );
    e.ingest(Kind::Events, &[more], &IngestOptions::default())
        .await
        .unwrap();
    let late = db.input(
        "late.csv",
        "user_id,purpose,granted,recorded_at\nu0@x.com,ads,true,2026-01-06T09:00:00Z\n",
    );
    e.ingest(Kind::Consent, &[late], &IngestOptions::default())
        .await
        .unwrap();
    e.sql("REFRESH SEGMENT buyers AS OF '2026-01-07T00:00:00Z'")
        .await
        .unwrap();
    // Then the changes since its last run.
    let changes = read_csv(&out.join("buyers-v2-changes-1-2/part-00000.csv"));
    assert_eq!(
        changes,
        vec![
            vec!["user_id".to_string(), "change".to_string()],
            vec![expected_pseudonym("u0@x.com"), "entered".to_string()],
        ]
    );
    let h = rows(
        &e,
        "SELECT status, version, from_version, rows FROM export_history('daily')",
    )
    .await;
    assert_eq!(h, vec!["ok|1|∅|102", "ok|2|1|1"]);
    let show = common::render_rows(
        &e.sql("SHOW EXPORTS").await.unwrap(),
        |c| c.unwrap_or("∅").to_string(),
        "|",
    );
    assert!(
        show[0].starts_with("daily|buyers|") && show[0].contains("|2|"),
        "{show:?}"
    );
    let msg = e.sql("DROP SEGMENT buyers").await.unwrap_err().to_string();
    assert!(msg.contains("DROP EXPORT daily"), "{msg}");
    e.sql("DROP EXPORT daily").await.unwrap();
    assert!(e.sql("SHOW EXPORTS").await.unwrap().num_rows() == 0);
    e.sql("DROP EXPORT IF EXISTS daily").await.unwrap();
    assert!(e.sql("DROP EXPORT daily").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_export_only_under_allowed_urls() {
    use crate::server::*;
    let (db, e) = shop().await;
    drop(e);
    let config = users(&db);
    let allowed = db.dir.path().join("allowed");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[export]\nallowed_urls = [\"{}\", \"http://127.0.0.1:9/hooks/\"]\n",
        allowed.display()
    ));
    std::fs::write(&config, text).unwrap();
    let server = Server::start(&db, &config, &[]);
    let mut analyst = login(&server.addr, "analyst", ANALYST_PW).await;
    let ok = query(
        &mut analyst,
        &format!("EXPORT SEGMENT buyers TO '{}/team'", allowed.display()),
    )
    .await;
    assert_eq!(ok[0].num_rows(), 1);
    let elsewhere = db.dir.path().join("elsewhere");
    let err = analyst
        .execute(
            format!("EXPORT SEGMENT buyers TO '{}'", elsewhere.display()),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("allowed_urls"), "{err}");
    assert!(!elsewhere.join("buyers-v1").exists());
    // Webhooks too: under allowed_urls only, for an analyst.
    let made = query(
        &mut analyst,
        "CREATE EXPORT hook_ok FOR SEGMENT buyers TO 'http://127.0.0.1:9/hooks/a' FORMAT webhook ON REFRESH",
    )
    .await;
    assert_eq!(made[0].num_rows(), 1);
    let secret =
        arrow::compute::cast(made[0].column(1), &arrow::datatypes::DataType::Utf8).unwrap();
    use arrow::array::AsArray;
    assert!(secret.as_string::<i32>().value(0).starts_with("whsec_"));
    let err = analyst
        .execute(
            "CREATE EXPORT hook_no FOR SEGMENT buyers TO 'http://127.0.0.1:9/other' FORMAT webhook ON REFRESH"
                .into(),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("allowed_urls"), "{err}");
    let mut reader = login(&server.addr, "reader", READER_PW).await;
    let err = reader
        .execute(
            "CREATE EXPORT hook_r FOR SEGMENT buyers TO 'http://127.0.0.1:9/hooks/r' FORMAT webhook ON REFRESH"
                .into(),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("permission") || err.contains("may not"),
        "{err}"
    );
    let err = reader
        .execute(
            format!("EXPORT SEGMENT buyers TO '{}/r'", allowed.display()),
            None,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("permission") || err.contains("may not"),
        "{err}"
    );
    server.stop();
}
