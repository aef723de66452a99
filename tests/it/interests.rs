//! Categories (DESIGN §17): the compiled-in IAB taxonomies as the `taxonomy` table.

use crate::common::*;

/// The table lists both taxonomies with namespaced ids, parents, paths and tiers; it joins like
/// any table and can be neither replaced nor dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_taxonomy_table_lists_both_iab_taxonomies() {
    let db = TestDb::new();
    let e = db.engine().await;
    assert_eq!(
        rows(
            &e,
            "SELECT taxonomy, count(*), min(tier), max(tier) FROM taxonomy GROUP BY 1 ORDER BY 1"
        )
        .await,
        ["audience|1558|1|6", "content|704|1|4"]
    );
    assert_eq!(
        rows(&e, "SELECT id, parent, name, path, tier FROM taxonomy WHERE id IN ('content:1', 'audience:3') ORDER BY id").await,
        [
            "audience:3|audience:2|18-20|Demographic > Age Range > 18-20|3",
            "content:1|∅|Automotive|Automotive|1",
        ]
    );
    // Every parent is a row of the same taxonomy, one tier up.
    assert_eq!(
        count(
            &e,
            "SELECT count(*) FROM taxonomy c LEFT JOIN taxonomy p ON c.parent = p.id \
             WHERE c.parent IS NOT NULL AND (p.id IS NULL OR p.tier + 1 <> c.tier OR p.taxonomy <> c.taxonomy)"
        )
        .await,
        0
    );
    // Neither dropped nor replaced (DataFusion's own words for both refusals).
    let err = e.sql("DROP TABLE taxonomy").await.unwrap_err().to_string();
    assert!(err.contains("doesn't exist"), "{err}");
    let err = e
        .sql("CREATE TABLE taxonomy AS SELECT 1 AS x")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(count(&e, "SELECT count(*) FROM taxonomy").await, 2262);
}

/// `segment_recommendations` against counts computed with plain SQL on the same database: every
/// candidate feature (event types in 30 and 90 days, values of profile columns with at most 50
/// values, minus what the definition reads) counted independently, ranked by lift, cut at 30
/// members and at n.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_match_plain_sql_counts() {
    let today = chrono::Utc::now().date_naive();
    let (db, _, users) = loaded_ending(3000, 90, 7, 20.0, today).await;
    let e = db.engine().await;
    e.sql("SET segdb.as_of = 'today'").await.unwrap();
    e.sql(
        "CREATE SEGMENT buyers AS DID 'page_view' IN THE LAST 30 DAYS AND PROFILE plan <> 'free'",
    )
    .await
    .unwrap();
    let got = rows(&e, "SELECT feature, in_segment, overall, round(lift, 6) FROM segment_recommendations('buyers', 100)").await;

    let size = count(&e, "SELECT segment_size('buyers')").await as f64;
    let all = count(&e, "SELECT count(*) FROM profiles").await as f64;
    assert_eq!(all as u64, users);
    let mut want: Vec<(String, i64, i64, f64)> = Vec::new();
    let at = format!("TIMESTAMP '{today}T00:00:00Z'");
    let events = rows(&e, "SELECT DISTINCT event FROM events ORDER BY 1").await;
    for ev in events.iter().filter(|e| *e != "page_view") {
        for days in [30, 90] {
            let w = format!("event = '{ev}' AND ts >= {at} - INTERVAL '{days} days' AND ts < {at}");
            let overall = count(
                &e,
                &format!("SELECT count(DISTINCT user_id) FROM events WHERE {w}"),
            )
            .await;
            let inside = count(&e, &format!("SELECT count(DISTINCT user_id) FROM events WHERE {w} AND in_segment('buyers', user_id)")).await;
            want.push((format!("event:{ev}:{days}d"), inside, overall, 0.0));
        }
    }
    // plan is read by the definition; signup_date has more than 50 values.
    for col in ["country", "device", "age_band"] {
        for r in rows(&e, &format!(
            "SELECT {col}, count(*), count(*) FILTER (WHERE in_segment('buyers', user_id)) FROM profiles WHERE {col} IS NOT NULL GROUP BY 1"
        ))
        .await
        {
            let f: Vec<&str> = r.split('|').collect();
            want.push((format!("profile:{col}={}", f[0]), f[2].parse().unwrap(), f[1].parse().unwrap(), 0.0));
        }
    }
    assert!(count(&e, "SELECT count(DISTINCT signup_date) FROM profiles").await > 50);
    for w in want.iter_mut() {
        w.3 = (w.1 as f64 / size) / (w.2 as f64 / all);
    }
    want.retain(|w| w.1 >= 30);
    want.sort_by(|a, b| {
        b.3.total_cmp(&a.3)
            .then(b.1.cmp(&a.1))
            .then_with(|| a.0.cmp(&b.0))
    });
    want.truncate(100);
    let want: Vec<String> = want
        .iter()
        .map(|(f, i, o, l)| format!("{f}|{i}|{o}|{}", (l * 1e6).round() / 1e6))
        .collect();
    assert_eq!(got, want);
    assert!(got.iter().any(|r| r.starts_with("profile:")), "{got:#?}");
    assert!(
        got.len() > 12
            && !got
                .iter()
                .any(|r| r.starts_with("event:page_view") || r.starts_with("profile:plan"))
    );
    // Ten by default: the first ten of the same ranking.
    let ten = rows(&e, "SELECT feature, in_segment, overall, round(lift, 6) FROM segment_recommendations('buyers')").await;
    assert_eq!(ten, got[..10]);
    let err = e
        .sql("SELECT * FROM segment_recommendations('nope')")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}
