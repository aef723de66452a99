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

/// The interest differential (tests/differential/interests.py): the `interests` table,
/// `INTERESTED IN` leaves and `interests(user_id, n)` against DuckDB and the taxonomy TSV, at
/// midnight and mid-day `as_of`s, after a half-life change, a map reload and a FORGET.
#[test]
fn interests_match_the_oracle() {
    run_differential("interests", 2);
}

const PRODUCT_MAP: &str = "value,category\nshoes,content:552\napparel,content:552\n\
electronics,content:596\nhome,Home & Garden\nbeauty,Style & Fashion > Beauty\nsports,content:483\n\
books,content:42\ntoys,Hobbies & Interests\n";

/// Interests in one process: a map made after the events applies to them; a load of more
/// events is caught up by the cached index and answers as a fresh process does; EXPLAIN names
/// the path; recommendations show interests; bad categories, map files and maps are refused
/// with what was wrong, and a refused file changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interests_follow_loads_and_refuse_bad_input() {
    let today = chrono::Utc::now().date_naive();
    let (db, _, _) = loaded_ending(1500, 40, 11, 20.0, today).await;
    let e = db.engine().await;
    e.sql("SET segdb.as_of = 'today'").await.unwrap();
    e.sql("CREATE CATEGORY MAP products FROM EVENT PROPERTY category")
        .await
        .unwrap();
    let map = db.input("map.csv", PRODUCT_MAP);
    assert_eq!(e.load_category_map("products", &map).await.unwrap(), 8);
    assert_eq!(
        rows(&e, "SHOW CATEGORY MAPS").await[0]
            .split('|')
            .take(3)
            .collect::<Vec<_>>(),
        ["products", "category", "8"]
    );
    // Beauty counts for its parent, Style & Fashion, too.
    let fashion = "SELECT count(DISTINCT user_id) FROM interests WHERE category = 'content:552'";
    let footwear_or_apparel = format!(
        "SELECT count(DISTINCT user_id) FROM events WHERE category IN ('shoes', 'apparel', 'beauty') \
        AND ts >= TIMESTAMP '{today}T00:00:00Z' - INTERVAL '30 days' AND ts < TIMESTAMP '{today}T00:00:00Z'"
    );
    let n = count(&e, fashion).await;
    assert!(n > 100, "{n}");
    assert_eq!(n, count(&e, &footwear_or_apparel).await);
    rows(
        &e,
        "CREATE SEGMENT fashion AS INTERESTED IN 'Style & Fashion' IN THE LAST 30 DAYS",
    )
    .await;
    assert_eq!(count(&e, "SELECT segment_size('fashion')").await, n);
    let plan = rows(&e, "EXPLAIN SEGMENT fashion").await.join("\n");
    assert!(
        plan.contains("interest index: content:552 (Style & Fashion), 30 whole days"),
        "{plan}"
    );
    // Interests are recommended like events and profile values.
    let rec = rows(
        &e,
        "SELECT feature, in_segment, overall FROM segment_recommendations('fashion', 100) WHERE feature LIKE 'interest:%'",
    )
    .await;
    let tech = count(
        &e,
        "SELECT count(DISTINCT user_id) FROM interests WHERE category = 'content:596'",
    )
    .await;
    let tech_fans = count(&e, "SELECT count(DISTINCT user_id) FROM interests WHERE category = 'content:596' AND in_segment('fashion', user_id)").await;
    assert!(
        rec.contains(&format!("interest:content:596|{tech_fans}|{tech}")),
        "{rec:?}"
    );
    assert!(
        !rec.iter().any(|r| r.starts_with("interest:content:552|")),
        "the definition's own category is left out: {rec:?}"
    );

    // More events today (a new user and a known one): the same engine catches up.
    let before = count(&e, "SELECT segment_size('fashion')").await;
    let now = chrono::Utc::now();
    let extra = db.input(
        "more.csv",
        &format!(
            "user_id,event,ts,category\nnewbie@example.com,view_item,{t},shoes\nnewbie2@example.com,view_item,{t},toys\n",
            t = (now - chrono::Duration::minutes(5)).to_rfc3339()
        ),
    );
    e.ingest(
        segdb::ingest::Kind::Events,
        &[extra],
        &segdb::ingest::IngestOptions::default(),
    )
    .await
    .unwrap();
    e.sql("SET segdb.as_of = 'now'").await.unwrap();
    let after = count(&e, "SELECT segment_size('fashion')").await;
    let fresh = db.engine().await;
    fresh.sql("SET segdb.as_of = 'now'").await.unwrap();
    // The window moved to now, so compare with a fresh process at the same instant: its own
    // count must equal the caught-up one (both read the same versions at as_of now).
    let pin = chrono::Utc::now().to_rfc3339();
    for x in [&e, &fresh] {
        x.sql(&format!("SET segdb.as_of = '{pin}'")).await.unwrap();
    }
    let (caught_up, rebuilt) = (
        rows(
            &e,
            "SELECT user_id, category, score FROM interests ORDER BY 1, 2",
        )
        .await,
        rows(
            &fresh,
            "SELECT user_id, category, score FROM interests ORDER BY 1, 2",
        )
        .await,
    );
    assert_eq!(caught_up, rebuilt);
    assert_eq!(after, before + 1, "the new fashion fan counts at once");
    let newbie = expected_pseudonym("newbie@example.com");
    assert!(
        caught_up
            .iter()
            .any(|r| r.starts_with(&format!("{newbie}|content:552|")))
    );
    assert_eq!(
        rows(
            &e,
            "SELECT category, name FROM interests(pseudonymize('newbie2@example.com'))"
        )
        .await,
        ["content:239|Hobbies & Interests"]
    );

    // Refusals.
    let err = e
        .sql("CREATE SEGMENT x AS INTERESTED IN 'Knitting for cats'")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), segdb::error::ErrorKind::NotFound);
    assert!(
        err.to_string()
            .contains("no category \"Knitting for cats\""),
        "{err}"
    );
    let err = e
        .sql("CREATE SEGMENT x AS INTERESTED IN 'content:1' MIN SCORE -1")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("MIN SCORE"), "{err}");
    let bad = db.input(
        "bad.csv",
        "value,category\nshoes,content:552\nhats,Millinery of Mars\n",
    );
    let err = e
        .load_category_map("products", &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("row 3") && err.contains("Millinery of Mars"),
        "{err}"
    );
    assert_eq!(
        rows(&e, "SHOW CATEGORY MAPS").await[0].split('|').nth(2),
        Some("8")
    );
    let err = e.load_category_map("nope", &map).await.unwrap_err();
    assert_eq!(err.kind(), segdb::error::ErrorKind::NotFound);
    let err = e
        .sql("CREATE CATEGORY MAP products FROM EVENT PROPERTY category")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    let err = e
        .sql("ALTER DATABASE SET INTERESTS HALF LIFE 'a fortnight'")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a half-life"), "{err}");
    // The CLI wants the map's name.
    let o = db.cli(&["ingest", "category_map", map.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--map NAME"), "{}", stderr(&o));
    let o = db.cli(&[
        "ingest",
        "category_map",
        map.to_str().unwrap(),
        "--map",
        "products",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("loaded 8 rows into category map products"));
    e.sql("DROP CATEGORY MAP products").await.unwrap();
    assert!(rows(&e, "SHOW CATEGORY MAPS").await.is_empty());
    assert_eq!(count(&e, "SELECT count(*) FROM interests").await, 0);
    let err = e.sql("DROP CATEGORY MAP products").await.unwrap_err();
    assert_eq!(err.kind(), segdb::error::ErrorKind::NotFound);
    e.sql("DROP CATEGORY MAP IF EXISTS products").await.unwrap();
}
