//! Unified profiles: identity links (files, anonymous ids on events), the placeholder guard and
//! the per-profile cap, segments over stitched profiles (events, index and scan paths, PROFILE,
//! consent, snapshots, holdout groups), identity_of, FORGET of a whole profile, and computed
//! traits with their NULL and tie rules.

use crate::common::{self, TestDb, count, expected_pseudonym, rows, stderr, stdout};

/// Web events under anonymous ids, a CRM id that logs in, an app id linked by a file.
const EVENTS: &str = "user_id,anonymous_id,event,ts,price,category
,web-1,page_view,2026-11-20T10:00:00Z,,shoes
,web-1,add_to_cart,2026-11-20T10:05:00Z,50,shoes
crm-1,web-1,login,2026-11-21T09:00:00Z,,
crm-1,,purchase,2026-11-22T09:00:00Z,120,shoes
,web-2,page_view,2026-11-23T09:00:00Z,,bags
crm-2,,purchase,2026-11-24T09:00:00Z,30,bags
app-9,,purchase,2026-11-25T09:00:00Z,40,shoes
app-9,,purchase,2026-11-25T09:00:00Z,40,bags
,undefined,page_view,2026-11-25T09:00:00Z,,shoes
solo,,purchase,2026-11-26T09:00:00Z,15,socks
";

const LINKS: &str = "user_id,linked_id,id_type
crm-2,web-2,cookie
crm-2,app-9,device
crm-3,null,device
";

async fn stitched_db() -> TestDb {
    let db = TestDb::new();
    let p = db.input("profiles.csv", "user_id,country\ncrm-1,DE\ncrm-2,FR\n");
    db.ingest_cli("profiles", &p);
    let e = db.input("events.csv", EVENTS);
    let o = db.cli(&["ingest", "events", e.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The placeholder anonymous id of row 9 is not an id: that row has no user.
    assert!(stderr(&o).contains("events.csv row 9"), "{}", stderr(&o));
    let l = db.input("links.csv", LINKS);
    let o = db.cli(&["ingest", "links", l.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("loaded 2 rows into links"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("links.csv row 3") && stderr(&o).contains("placeholder"),
        "{}",
        stderr(&o)
    );
    // app-9's profile row is the latest of its profile.
    let p2 = db.input("profiles2.csv", "user_id,country\napp-9,US\n");
    db.ingest_cli("profiles", &p2);
    db
}

fn set(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_over_stitched_profiles_see_every_id() {
    let db = stitched_db().await;
    let e = db.engine().await;
    let (crm1, crm2) = (expected_pseudonym("crm-1"), expected_pseudonym("crm-2"));
    // Links hold ordinals only: no raw id and no pseudonym in _segdb/links.
    for id in [
        "crm-2",
        "web-2",
        "app-9",
        crm2.as_str(),
        expected_pseudonym("app-9").as_str(),
    ] {
        assert!(
            common::files_containing(&db.data.join("_segdb/links"), id).is_empty(),
            "{id} in links"
        );
    }
    // identity_of: every id of a profile maps to the pseudonym of its first-seen id.
    for (id, canon) in [
        ("crm-1", &crm1),
        ("web-1", &crm1),
        ("crm-2", &crm2),
        ("web-2", &crm2),
        ("app-9", &crm2),
    ] {
        let got = rows(&e, &format!("SELECT identity_of(pseudonymize('{id}'))")).await;
        assert_eq!(&got[0], canon, "{id}");
    }
    assert_eq!(
        rows(
            &e,
            "SELECT identity_of(pseudonymize('solo')) = pseudonymize('solo')"
        )
        .await,
        ["true"]
    );

    // Three purchases across crm-2 and app-9: one profile bought at least twice.
    e.sql("CREATE SEGMENT repeat AS DID 'purchase' AT LEAST 2 TIMES")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT browsed_then_bought AS DID 'page_view' THEN 'purchase'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT cheap AS DID 'purchase' WHERE price < 35 EXACTLY 1 TIMES")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT us AS PROFILE country = 'US'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT fr AS PROFILE country = 'FR'")
        .await
        .unwrap();
    let members = |s: &str| format!("SELECT user_id FROM segment_members('{s}') ORDER BY 1");
    assert_eq!(rows(&e, &members("repeat")).await, [crm2.clone()]);
    // web-1 viewed, crm-1 (the same person) bought; web-2 viewed, crm-2 bought.
    assert_eq!(
        set(rows(&e, &members("browsed_then_bought")).await),
        set(vec![crm1.clone(), crm2.clone()])
    );
    assert_eq!(
        set(rows(&e, &members("cheap")).await),
        set(vec![crm2.clone(), expected_pseudonym("solo")])
    );
    // The most recently updated profile row of the profile decides PROFILE.
    assert_eq!(rows(&e, &members("us")).await, [crm2.clone()]);
    assert!(rows(&e, &members("fr")).await.is_empty());
    // in_segment maps its argument through identity_of.
    assert_eq!(
        rows(&e, "SELECT in_segment('repeat', pseudonymize('web-2')), in_segment('repeat', pseudonymize('crm-1'))").await,
        ["true|false"]
    );
    // The index answers the same as the scan.
    let via_index = count(&e, "SELECT segment_size('repeat')").await;
    e.sql("SET segdb.use_index = false").await.unwrap();
    assert_eq!(count(&e, "SELECT segment_size('repeat')").await, via_index);
    e.sql("SET segdb.use_index = true").await.unwrap();
    // Raw: every id on its own.
    e.sql("SET segdb.identity = 'raw'").await.unwrap();
    assert_eq!(
        set(rows(&e, &members("repeat")).await),
        [expected_pseudonym("app-9")]
    );
    assert_eq!(
        rows(&e, &members("browsed_then_bought")).await,
        Vec::<String>::new()
    );
    assert_eq!(rows(&e, &members("fr")).await, [crm2.clone()]);
    assert_eq!(
        rows(
            &e,
            "SELECT identity_of(pseudonymize('app-9')) = pseudonymize('app-9')"
        )
        .await,
        ["true"]
    );
    e.sql("SET segdb.identity = 'stitched'").await.unwrap();
    assert_eq!(rows(&e, &members("repeat")).await, [crm2.clone()]);
    let bad = e.sql("SET segdb.identity = 'sometimes'").await.unwrap_err();
    assert!(bad.to_string().contains("auto"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_of_a_profile_is_its_latest_record_across_ids() {
    let db = stitched_db().await;
    // web-2 granted first; crm-2 (same person) withdrew later; app-9's grant is older still.
    let c = db.input(
        "consent.csv",
        "user_id,purpose,granted,recorded_at
app-9,ads,true,2026-11-01T00:00:00Z
web-2,ads,true,2026-11-10T00:00:00Z
crm-2,ads,false,2026-11-20T00:00:00Z
web-1,ads,true,2026-11-10T00:00:00Z
",
    );
    db.ingest_cli("consent", &c);
    let e = db.engine().await;
    e.sql("CREATE SEGMENT buyers_ads FOR PURPOSE 'ads' AS DID 'purchase'")
        .await
        .unwrap();
    let m = rows(&e, "SELECT user_id FROM segments.buyers_ads").await;
    assert_eq!(m, [expected_pseudonym("crm-1")]);
    assert_eq!(
        rows(&e, "SELECT has_consent(pseudonymize('crm-1'), 'ads'), has_consent(pseudonymize('app-9'), 'ads'), has_consent(pseudonymize('app-9'), 'ads', TIMESTAMP '2026-11-15T00:00:00Z')").await,
        ["true|false|true"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_refuses_and_counts_links_from_the_cli_and_the_library() {
    let db = TestDb::new();
    let cfg = db.input("segdb.toml", "[identity]\nmax_ids_per_profile = 3\n");
    let l = db.input("links.csv", "user_id,linked_id\na,b\nb,c\nc,d\nx,y\ny,a\n");
    let o = db.cli(&[
        "ingest",
        "links",
        "--config",
        cfg.to_str().unwrap(),
        l.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // a-b-c is full at 3: c-d and y-a are refused; x-y is kept.
    assert!(
        stdout(&o).contains("loaded 3 rows into links"),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("refused 2 link(s)"), "{}", stderr(&o));
    let e = db.engine().await;
    let canon = |id: &str| format!("SELECT identity_of(pseudonymize('{id}'))");
    assert_eq!(rows(&e, &canon("c")).await, [expected_pseudonym("a")]);
    assert_eq!(rows(&e, &canon("d")).await, [expected_pseudonym("d")]);
    assert_eq!(rows(&e, &canon("y")).await, [expected_pseudonym("x")]);
    // The library reports refusals too, and an incremental load merges into existing profiles.
    let more = db.input("more.csv", "user_id,linked_id\nd,e\nx,a\n");
    let r = e
        .ingest(
            segdb::ingest::Kind::Links,
            &[more],
            &segdb::ingest::IngestOptions {
                max_ids_per_profile: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((r.rows_loaded, r.refused_links), (1, 1));
    assert_eq!(rows(&e, &canon("e")).await, [expected_pseudonym("d")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_of_any_id_forgets_the_whole_profile() {
    let db = stitched_db().await;
    let e = db.engine().await;
    e.sql("CREATE TRAIT spend AS SUM(price) OF EVENT 'purchase'")
        .await
        .unwrap();
    assert_eq!(count(&e, "SELECT count(*) FROM traits").await, 3);
    let r = rows(&e, "FORGET USER 'web-2'").await;
    assert_eq!(r, ["3"]);
    for id in ["crm-2", "web-2", "app-9"] {
        let p = expected_pseudonym(id);
        assert_eq!(
            count(
                &e,
                &format!("SELECT count(*) FROM events WHERE user_id = '{p}'")
            )
            .await,
            0
        );
    }
    assert_eq!(
        rows(&e, "SELECT user_id FROM traits ORDER BY 1").await,
        set(vec![
            expected_pseudonym("crm-1"),
            expected_pseudonym("solo")
        ])
    );
    e.sql("VACUUM").await.unwrap();
    for id in ["crm-2", "web-2", "app-9"] {
        for needle in [id.to_string(), expected_pseudonym(id)] {
            let hits = common::files_containing(&db.data, &needle);
            assert!(hits.is_empty(), "{needle} survives VACUUM in {hits:?}");
        }
    }
    // The rest of the data is intact.
    assert_eq!(
        rows(&e, "SELECT identity_of(pseudonymize('web-1'))").await,
        [expected_pseudonym("crm-1")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_read_through_the_current_canonical_map() {
    let db = TestDb::new();
    let e0 = db.input(
        "events.csv",
        "user_id,event,ts\nu1,purchase,2026-11-01T00:00:00Z\nu2,purchase,2026-11-02T00:00:00Z\nu3,purchase,2026-11-03T00:00:00Z\nu4,view,2026-11-03T00:00:00Z\n",
    );
    db.ingest_cli("events", &e0);
    let e = db.engine().await;
    e.sql("CREATE MATERIALIZED SEGMENT buyers HOLDOUT 50 PERCENT AS DID 'purchase'")
        .await
        .unwrap();
    let before = rows(
        &e,
        "SELECT segment_size('buyers'), (SELECT count(*) FROM segment_holdout('buyers'))",
    )
    .await;
    assert_eq!(before.len(), 1);
    let (t0, h0): (u64, u64) = {
        let mut it = before[0].split('|').map(|v| v.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert_eq!(t0 + h0, 3);
    // Link u2 and u3 to u1: without a refresh, the snapshot now holds one profile, in u1's
    // group (u1 is the canonical id and was stored).
    let l = db.input("links.csv", "user_id,linked_id\nu1,u2\nu3,u1\n");
    db.ingest_cli("links", &l);
    let u1_held = count(
        &e,
        "SELECT count(*) FROM segment_holdout('buyers') WHERE user_id = pseudonymize('u1')",
    )
    .await;
    let after = rows(
        &e,
        "SELECT segment_size('buyers'), (SELECT count(*) FROM segment_holdout('buyers'))",
    )
    .await;
    assert_eq!(after, [format!("{}|{}", 1 - u1_held, u1_held)]);
    assert_eq!(
        rows(&e, "SELECT count(*) FROM segment_history('buyers')").await,
        ["1"]
    );
    // A refresh keeps the merged profile's group and finds nothing entered or exited.
    let r = rows(&e, "REFRESH SEGMENT buyers").await;
    assert_eq!(r, [format!("2|{}|0|0|ok", 1 - u1_held)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traits_follow_their_null_and_tie_rules() {
    let db = TestDb::new();
    let ev = db.input(
        "events.csv",
        "user_id,event,ts,price,category
a,purchase,2026-11-01T10:00:00Z,10,shoes
a,purchase,2026-11-01T10:00:00Z,30,bags
a,purchase,2026-11-20T10:00:00Z,,hats
a,purchase,2026-11-21T10:00:00Z,5,
b,purchase,2026-11-05T10:00:00Z,7,socks
b,purchase,2026-11-06T10:00:00Z,7,hats
c,view,2026-11-06T10:00:00Z,1,hats
",
    );
    db.ingest_cli("events", &ev);
    let e = db.engine().await;
    for t in [
        "CREATE TRAIT n AS COUNT OF EVENT 'purchase'",
        "CREATE TRAIT total AS SUM(price) OF EVENT 'purchase'",
        "CREATE TRAIT lo AS MIN(price) OF EVENT 'purchase'",
        "CREATE TRAIT hi AS MAX(price) OF EVENT 'purchase'",
        "CREATE TRAIT first_cat AS FIRST(category) OF EVENT 'purchase'",
        "CREATE TRAIT last_cat AS LAST(category) OF EVENT 'purchase'",
        "CREATE TRAIT fav AS MOST_FREQUENT(category) OF EVENT 'purchase'",
        "CREATE TRAIT kinds AS COUNT DISTINCT(category) OF EVENT 'purchase'",
        "CREATE TRAIT recent AS COUNT OF EVENT 'purchase' IN THE LAST 7 DAYS",
        "CREATE TRAIT big AS COUNT OF EVENT 'purchase' WHERE price >= 10",
    ] {
        e.sql(t).await.unwrap_or_else(|err| panic!("{t}: {err}"));
    }
    e.sql("SET segdb.as_of = '2026-11-25T12:00:00Z'")
        .await
        .unwrap();
    let got = rows(
        &e,
        "SELECT CASE user_id WHEN pseudonymize('a') THEN 'a' WHEN pseudonymize('b') THEN 'b' ELSE 'c' END, \
         n, total, lo, hi, first_cat, last_cat, fav, kinds, recent, big FROM traits ORDER BY 1",
    )
    .await;
    assert_eq!(
        got,
        [
            // FIRST: bags and shoes share the earliest ts: the smaller value; LAST ignores the
            // NULL category of the last purchase; MOST_FREQUENT ties go to the smallest value.
            "a|4|45|5|30|bags|hats|bags|3|2|2",
            "b|2|14|7|7|socks|hats|hats|2|0|0",
            "c|0|∅|∅|∅|∅|∅|∅|0|0|0",
        ]
    );
    // A segment leaf over traits, and types on the wire.
    e.sql("CREATE SEGMENT spenders AS TRAIT total > 20 AND fav = 'bags'")
        .await
        .unwrap();
    assert_eq!(
        rows(&e, "SELECT user_id FROM segments.spenders").await,
        [expected_pseudonym("a")]
    );
    let shown = e.sql("SHOW TRAITS").await.unwrap();
    let text = common::render_rows(&shown, |c| c.unwrap_or("∅").to_string(), "|");
    assert!(
        text.iter()
            .any(|r| r.starts_with("fav|MOST_FREQUENT(category) OF EVENT 'purchase'|Utf8|")),
        "{text:?}"
    );
    // A trait in use cannot be dropped; an unused one can, and its column goes.
    let err = e.sql("DROP TRAIT total").await.unwrap_err();
    assert!(err.to_string().contains("spenders"), "{err}");
    e.sql("DROP TRAIT big").await.unwrap();
    let r = e.sql("SELECT * FROM traits").await.unwrap();
    assert!(r.schema.field_with_name("big").is_err());
    let err = e
        .sql("CREATE TRAIT oops AS SUM(no_such_col) OF EVENT 'purchase'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_such_col"), "{err}");
    let err = e
        .sql("CREATE TRAIT n AS COUNT OF EVENT 'purchase'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let err = e
        .sql("CREATE TRAIT x AS COUNT OF EVENT 'purchse'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did you mean 'purchase'"), "{err}");
}

/// Stitched segments (components computed independently in the test), identity_of, every trait
/// aggregate over random windows and as_of values, FORGET of whole components and the cap,
/// against DuckDB on the same input files (tests/differential/identity.py).
#[test]
fn identity_and_traits_match_an_independent_oracle() {
    common::run_differential("identity", 2);
}
