//! Look-alike audiences (DESIGN §17) on a generated population with a planted latent group: a
//! 10 % seed list (`crm_list = 'vip'`) must recover the group far above its base rate; every
//! audience form (SIZE, TOP PERCENT, MIN SCORE, EXCLUDING SEED, WITHIN, purposes) is checked
//! against `lookalike_score` over the same users; the model is deterministic and cached by the
//! versions it read, retrains when they change, and bad definitions are refused.

use std::collections::HashSet;

use segdb::ingest::{IngestOptions, Kind};

use crate::common::*;

const PRODUCT_MAP: &str = "value,category\nshoes,content:552\napparel,content:552\n\
electronics,content:596\nhome,Home & Garden\nbeauty,Style & Fashion > Beauty\nsports,content:483\n\
books,content:42\ntoys,Hobbies & Interests\n";

async fn planted(users: u64) -> (TestDb, segdb::Engine, HashSet<String>) {
    let today = chrono::Utc::now().date_naive();
    let db = TestDb::new();
    let src = db.dir.path().join("src");
    let stats = segdb::datagen::generate(&segdb::datagen::GenConfig {
        users,
        days: 90,
        out: src,
        seed: 5,
        format: segdb::config::GenFormat::Parquet,
        end: today,
        events_per_user: 20.0,
        contacts: false,
        latent_group: 10.0,
    })
    .unwrap();
    let e = db.engine().await;
    for (kind, files) in [
        (Kind::Profiles, &stats.profile_files),
        (Kind::Events, &stats.event_files),
        (Kind::Consent, &stats.consent_files),
    ] {
        e.ingest(kind, files, &IngestOptions::default())
            .await
            .unwrap();
    }
    e.sql("CREATE CATEGORY MAP products FROM EVENT PROPERTY category")
        .await
        .unwrap();
    let map = db.input("map.csv", PRODUCT_MAP);
    e.load_category_map("products", &map).await.unwrap();
    let truth: HashSet<String> = std::fs::read_to_string(stats.latent_file.unwrap())
        .unwrap()
        .lines()
        .skip(1)
        .map(expected_pseudonym)
        .collect();
    assert_eq!(truth.len() as u64, stats.latent_members);
    (db, e, truth)
}

fn ids(rows: &[String]) -> HashSet<String> {
    rows.iter().cloned().collect()
}

#[test]
fn a_lookalike_recovers_a_planted_group() {
    on_binary_stack(recovers_a_planted_group);
}

async fn recovers_a_planted_group() {
    let (db, e, truth) = planted(20_000).await;
    e.sql("SET segdb.as_of = 'today'").await.unwrap();
    e.sql("SET segdb.as_of = '-6 hours'").await.unwrap();
    rows(&e, "CREATE SEGMENT vip AS PROFILE crm_list = 'vip'").await;
    let seed = ids(&rows(&e, "SELECT user_id FROM segment_members('vip')").await);
    assert!(seed.len() > 120 && seed.is_subset(&truth), "{}", seed.len());
    let n = truth.len();
    rows(
        &e,
        &format!("CREATE SEGMENT alike AS LOOKALIKE OF vip SIZE {n}"),
    )
    .await;
    let members = ids(&rows(&e, "SELECT user_id FROM segment_members('alike')").await);
    assert_eq!(members.len(), n);
    let precision = members.intersection(&truth).count() as f64 / n as f64;
    let base = n as f64 / 20_000.0;
    assert!(
        precision > 3.0 * base,
        "precision {precision:.3} at the group's size, base rate {base:.3}"
    );
    // Creating it trained the model once: reading it again reuses it.
    let plan = rows(&e, "EXPLAIN SEGMENT alike").await.join("\n");
    assert!(
        plan.contains("model cached for these table versions"),
        "{plan}"
    );
    let report = rows(&e, "SELECT round(auc, 6), round(recall_at_size, 6), seed_size, sample_size, features FROM lookalike_report('alike')").await;
    let r: Vec<&str> = report[0].split('|').collect();
    let auc: f64 = r[0].parse().unwrap();
    assert!(auc > 0.7, "{report:?}");
    assert_eq!(r[2], seed.len().to_string());
    assert_eq!(r[3], "5000");
    // The seed's own column is not a feature; what it leans to is.
    let feats = rows(&e, "SELECT feature FROM lookalike_features('alike', 100)").await;
    assert!(!feats.iter().any(|f| f.contains("crm_list")), "{feats:?}");
    assert!(
        feats.contains(&"interest:content:483".to_string()),
        "{feats:?}"
    );
    assert_eq!(feats.len() as u64, r[4].parse::<u64>().unwrap());
    let top = rows(&e, "SELECT feature FROM lookalike_features('alike', 3)").await;
    assert_eq!(top, feats[..3]);

    // SIZE n is the top n by lookalike_score (ties by ordinal), seed members included.
    let scored = rows(
        &e,
        "SELECT user_id, lookalike_score('alike', user_id) AS s FROM profiles ORDER BY s DESC, uid",
    )
    .await;
    let by_score: Vec<String> = scored
        .iter()
        .map(|r| r.split('|').next().unwrap().to_string())
        .collect();
    assert_eq!(ids(&by_score[..n].to_vec()), members);
    let s: Vec<f64> = scored
        .iter()
        .map(|r| r.split('|').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(s.iter().all(|x| (0.0..=1.0).contains(x)));
    // Recall at size: held-out seed members scoring at least the audience's lowest score.
    let recall: f64 = r[1].parse().unwrap();
    assert!(recall > 0.3, "{report:?}");

    // The same versions give the same model and audience in a fresh process.
    let fresh = db.engine().await;
    fresh.sql("SET segdb.as_of = '-6 hours'").await.unwrap();
    let again = ids(&rows(&fresh, "SELECT user_id FROM segment_members('alike')").await);
    assert_eq!(again.len(), n);
    let overlap = again.intersection(&members).count();
    assert!(overlap as f64 > 0.99 * n as f64, "{overlap} of {n}");
    assert_eq!(
        rows(
            &fresh,
            "SELECT round(auc, 6), seed_size, sample_size FROM lookalike_report('alike')"
        )
        .await[0],
        format!("{}|{}|{}", r[0], r[2], r[3])
    );

    // EXCLUDING SEED, TOP p PERCENT, MIN SCORE, WITHIN.
    rows(
        &e,
        "CREATE SEGMENT fresh_faces AS LOOKALIKE OF vip TOP 5 PERCENT EXCLUDING SEED",
    )
    .await;
    let ff = ids(&rows(&e, "SELECT user_id FROM segment_members('fresh_faces')").await);
    assert!(ff.is_disjoint(&seed));
    assert_eq!(
        ff.len(),
        ((20_000 - seed.len()) as f64 * 0.05).ceil() as usize
    );
    rows(
        &e,
        "CREATE SEGMENT likely AS LOOKALIKE OF vip MIN SCORE 0.5",
    )
    .await;
    let likely = ids(&rows(&e, "SELECT user_id FROM segment_members('likely')").await);
    let over_half: HashSet<String> = rows(
        &e,
        "SELECT user_id FROM profiles WHERE lookalike_score('likely', user_id) >= 0.5",
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(likely, over_half);
    assert!(!likely.is_empty());
    rows(&e, "CREATE SEGMENT alike_de AS LOOKALIKE OF vip WITHIN PROFILE country = 'DE' AND DID ANY EVENT IN THE LAST 30 DAYS SIZE 200").await;
    let de = ids(&rows(&e, "SELECT user_id FROM profiles WHERE country = 'DE'").await);
    let ade = ids(&rows(&e, "SELECT user_id FROM segment_members('alike_de')").await);
    assert_eq!(ade.len(), 200);
    assert!(ade.is_subset(&de));
    let plan = rows(&e, "EXPLAIN SEGMENT alike_de").await.join("\n");
    assert!(
        plan.contains("look-alike model") && plan.contains("PROFILE country = 'DE'"),
        "{plan}"
    );

    // Purposes: only consenting users are trained on or scored.
    rows(
        &e,
        "CREATE SEGMENT alike_mkt FOR PURPOSE 'marketing' AS LOOKALIKE OF vip SIZE 300",
    )
    .await;
    let mkt = rows(&e, "SELECT count(*) FROM segment_members('alike_mkt') m WHERE NOT has_consent(m.user_id, 'marketing')").await;
    assert_eq!(mkt, ["0"]);
    let consenting_seed = count(
        &e,
        "SELECT count(*) FROM segment_members('vip') m WHERE has_consent(m.user_id, 'marketing')",
    )
    .await;
    assert_eq!(
        rows(&e, "SELECT seed_size FROM lookalike_report('alike_mkt')").await,
        [consenting_seed.to_string()]
    );
    let unscored = count(&e, "SELECT count(*) FROM profiles WHERE NOT has_consent(user_id, 'marketing') AND lookalike_score('alike_mkt', user_id) IS NOT NULL").await;
    assert_eq!(unscored, 0);

    // A materialised look-alike retrains when the data changes.
    rows(
        &e,
        "CREATE MATERIALIZED SEGMENT alike_m AS LOOKALIKE OF vip SIZE 1000",
    )
    .await;
    let t1 = rows(&e, "SELECT trained_at FROM lookalike_report('alike_m')").await;
    let more = db.input(
        "more.csv",
        &format!(
            "user_id,event,ts,category\nsomeone@example.com,view_item,{},sports\n",
            (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339()
        ),
    );
    e.ingest(Kind::Events, &[more], &IngestOptions::default())
        .await
        .unwrap();
    rows(&e, "REFRESH SEGMENT alike_m").await;
    let t2 = rows(&e, "SELECT trained_at FROM lookalike_report('alike_m')").await;
    assert_ne!(t1, t2, "a new events version retrains");
    assert_eq!(count(&e, "SELECT segment_size('alike_m')").await, 1000);

    // Refusals.
    let bad = [
        (
            "CREATE SEGMENT x AS LOOKALIKE OF nobody SIZE 10",
            "does not exist",
        ),
        (
            "CREATE SEGMENT x AS LOOKALIKE OF vip",
            "SIZE n, TOP p PERCENT or MIN SCORE s",
        ),
        (
            "CREATE SEGMENT x AS LOOKALIKE OF vip TOP 0 PERCENT",
            "above 0",
        ),
        (
            "CREATE SEGMENT x AS LOOKALIKE OF vip MIN SCORE 2",
            "between 0 and 1",
        ),
        (
            "CREATE SEGMENT x AS DID 'search' AND LOOKALIKE OF vip SIZE 5",
            "expected PROFILE",
        ),
        (
            "CREATE SEGMENT tiny AS PROFILE crm_list = 'vip' AND PROFILE country = 'IS'",
            "",
        ),
        (
            "SELECT * FROM lookalike_report('vip')",
            "is not a look-alike",
        ),
    ];
    for (sql, want) in bad {
        let r = e.sql(sql).await;
        if want.is_empty() {
            r.unwrap();
            continue;
        }
        let err = r.unwrap_err().to_string();
        assert!(err.contains(want), "{sql}: {err}");
    }
    let err = e
        .sql("CREATE SEGMENT x AS LOOKALIKE OF tiny SIZE 10")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs at least"), "{err}");
    let err = e
        .sql("CREATE OR REPLACE SEGMENT vip AS LOOKALIKE OF alike SIZE 10")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refers to itself"), "{err}");
}
