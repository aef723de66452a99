//! What a new user hit (issue 20): values never changed silently, placeholder ids never become
//! users, the same columns in the same order in every database, and the smaller edges.

use segdb::ingest::{IngestOptions, Kind};

use crate::common::*;

async fn load(
    e: &segdb::Engine,
    kind: Kind,
    file: &std::path::Path,
) -> segdb::ingest::IngestReport {
    e.ingest(kind, &[file.to_path_buf()], &IngestOptions::default())
        .await
        .unwrap()
}

/// A value that does not fit its column's stored type rejects its row (with its row number):
/// it is never truncated, rounded or flipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_do_not_fit_the_stored_type_reject_their_row() {
    let db = TestDb::new();
    let e = db.engine().await;
    let first = db.input(
        "a.csv",
        "user_id,event,ts,price,qty,flag,label\nu1,buy,2026-01-01T00:00:00Z,10,1,true,x\n",
    );
    load(&e, Kind::Events, &first).await;
    // Later loads: CSV and NDJSON, with values that fit and values that do not.
    let csv = db.input(
        "b.csv",
        "user_id,event,ts,price,qty,flag,label\n\
         u2,buy,2026-01-02T00:00:00Z,49.99,1,true,a\n\
         u3,buy,2026-01-02T00:00:00Z,5.0,2,false,b\n\
         u4,buy,2026-01-02T00:00:00Z,-0.7,3,true,c\n\
         u5,buy,2026-01-02T00:00:00Z,7,abc,true,d\n\
         u6,buy,2026-01-02T00:00:00Z,8,4,maybe,e\n\
         u7,buy,2026-01-02T00:00:00Z,9,5,false,12.75\n",
    );
    let r = load(&e, Kind::Events, &csv).await;
    let rows: Vec<u64> = r.rejected.iter().map(|b| b.row).collect();
    assert_eq!(rows, vec![1, 3, 4, 5], "{:?}", r.rejected);
    assert!(
        r.rejected[0].reason.contains("\"price\""),
        "{:?}",
        r.rejected
    );
    assert_eq!(r.rows_loaded, 2);
    let ndjson = db.input(
        "c.ndjson",
        concat!(
            r#"{"user_id":"u8","event":"buy","ts":"2026-01-03T00:00:00Z","price":12.75}"#,
            "\n",
            r#"{"user_id":"u9","event":"buy","ts":"2026-01-03T00:00:00Z","price":6.0,"qty":2}"#,
            "\n",
            r#"{"user_id":"u10","event":"buy","ts":"2026-01-03T00:00:00Z","flag":2}"#,
            "\n",
            r#"{"user_id":"u11","event":"buy","ts":"2026-01-03T00:00:00Z","price":99999999999999999999}"#,
            "\n",
        ),
    );
    let r = load(&e, Kind::Events, &ndjson).await;
    let rows: Vec<u64> = r.rejected.iter().map(|b| b.row).collect();
    assert_eq!(rows, vec![1, 3, 4], "{:?}", r.rejected);
    let stored = rows_of(
        &e,
        "SELECT user_id, price, qty, flag, label FROM events ORDER BY ts, price",
    )
    .await;
    // u1 (10), u3 (5.0 as 5), u7 (9, label '12.75' as text), u9 (6.0 as 6, qty 2).
    assert_eq!(stored.len(), 4, "{stored:?}");
    let prices: Vec<&str> = stored.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(prices, vec!["10", "5", "9", "6"]);
    assert_eq!(stored[2][4], "12.75");

    // Widening is explicit: ALTER TABLE … SET DATA TYPE (tested below); until then the same rows are refused again.
    let r = load(&e, Kind::Events, &csv).await;
    assert_eq!(r.rejected.len(), 4);
}

/// `ALTER TABLE … ALTER COLUMN … SET DATA TYPE` widens a column by rewriting the table in one
/// commit: stored values stay what they were, later loads fit, a widening that would change a
/// value is refused with nothing changed, and segments read the same before and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_data_type_widens_a_column_in_one_commit() {
    let db = TestDb::new();
    let e = db.engine().await;
    let first = db.input(
        "a.csv",
        "user_id,event,ts,price,qty,sku\n\
         u1,buy,2026-01-01T10:00:00Z,10,1,100\n\
         u2,buy,2026-01-02T10:00:00Z,20,2,200\n\
         u3,view,2026-01-02T11:00:00Z,,3,300\n",
    );
    load(&e, Kind::Events, &first).await;
    let later = db.input(
        "b.csv",
        "user_id,event,ts,price,qty,sku\nu4,buy,2026-01-03T00:00:00Z,49.99,1,A-7\n",
    );
    assert_eq!(load(&e, Kind::Events, &later).await.rejected.len(), 1);
    let seg = "CREATE OR REPLACE SEGMENT buyers AS DID 'buy' BETWEEN '2026-01-01' AND '2026-01-05'";
    let before = rows_of(&e, seg).await;

    // DECIMAL(10,2): the three rows rewritten, values unchanged.
    let r = rows_of(
        &e,
        "ALTER TABLE events ALTER COLUMN price SET DATA TYPE DECIMAL(10, 2)",
    )
    .await;
    assert_eq!(r.len(), 1);
    assert_eq!(
        &r[0][..5],
        ["events", "price", "Int64", "Decimal128(10, 2)", "3"],
        "{r:?}"
    );
    let prices = rows_of(&e, "SELECT CAST(price AS VARCHAR) FROM events ORDER BY ts").await;
    assert_eq!(prices, vec![vec!["10.00"], vec!["20.00"], vec!["NULL"]]);
    // Now 49.99 fits (the row is still refused for its sku); VARCHAR takes the sku.
    let r = load(&e, Kind::Events, &later).await;
    assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
    assert!(r.rejected[0].reason.contains("\"sku\""), "{:?}", r.rejected);
    let r = rows_of(&e, "ALTER TABLE events ALTER COLUMN sku TYPE VARCHAR").await;
    assert_eq!(&r[0][2..5], ["Int64", "Utf8", "3"], "{r:?}");
    let r = load(&e, Kind::Events, &later).await;
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    // 1.005 does not fit DECIMAL(10,2): its row is rejected, 2.5 loads.
    let odd = db.input(
        "c.csv",
        "user_id,event,ts,price\nu5,buy,2026-01-03T00:00:00Z,1.005\nu6,buy,2026-01-03T00:00:00Z,2.5\n",
    );
    let r = load(&e, Kind::Events, &odd).await;
    assert_eq!(
        r.rejected.iter().map(|b| b.row).collect::<Vec<_>>(),
        vec![1]
    );
    let stored = rows_of(
        &e,
        "SELECT CAST(price AS VARCHAR) AS p, sku FROM events WHERE price IS NOT NULL ORDER BY ts, p",
    )
    .await;
    assert_eq!(
        stored,
        vec![
            vec!["10.00", "100"],
            vec!["20.00", "200"],
            vec!["2.50", "NULL"],
            vec!["49.99", "A-7"],
        ]
    );

    // A widening that would change a value is refused, and nothing changes.
    let err = e
        .sql("ALTER TABLE events ALTER COLUMN price SET DATA TYPE DECIMAL(10, 1)")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("would change as DECIMAL(10,1)") && err.contains("nothing was changed"),
        "{err}"
    );
    let same = rows_of(
        &e,
        "SELECT count(*), CAST(sum(price) AS VARCHAR) FROM events",
    )
    .await;
    assert_eq!(same, vec![vec!["5", "82.49"]]);
    // DOUBLE keeps 49.99 and 2.5.
    rows_of(
        &e,
        "ALTER TABLE events ALTER COLUMN price SET DATA TYPE DOUBLE",
    )
    .await;
    let doubles = rows_of(
        &e,
        "SELECT price FROM events WHERE price IS NOT NULL ORDER BY price",
    )
    .await;
    assert_eq!(
        doubles,
        vec![vec!["2.5"], vec!["10.0"], vec!["20.0"], vec!["49.99"]]
    );

    // Refusals: narrowing, fixed columns, unknown columns (with a hint), other tables, types.
    for (sql, says) in [
        (
            "ALTER TABLE events ALTER COLUMN sku SET DATA TYPE DOUBLE",
            "only widens",
        ),
        (
            "ALTER TABLE events ALTER COLUMN ts SET DATA TYPE VARCHAR",
            "segdb fills or requires",
        ),
        (
            "ALTER TABLE events ALTER COLUMN prise SET DATA TYPE DOUBLE",
            "did you mean 'price'",
        ),
        (
            "ALTER TABLE consent ALTER COLUMN purpose SET DATA TYPE VARCHAR",
            "events and profiles",
        ),
        (
            "ALTER TABLE events ALTER COLUMN qty SET DATA TYPE INT",
            "expected DOUBLE, DECIMAL(p, s) or VARCHAR",
        ),
        (
            "ALTER TABLE events ALTER COLUMN qty SET DATA TYPE DECIMAL(40, 2)",
            "precision is 1 to 38",
        ),
    ] {
        let err = e.sql(sql).await.unwrap_err().to_string();
        assert!(err.contains(says), "{sql}: {err}");
    }

    // The event index carried over: the segment answers as before, plus the later buyers.
    let after = rows_of(&e, seg).await;
    let size = |r: &Vec<Vec<String>>| r[0][1].parse::<u64>().unwrap();
    assert_eq!(size(&before) + 2, size(&after), "{before:?} {after:?}");
}

fn rows_of_sync(r: &segdb::QueryResult) -> Vec<Vec<String>> {
    render_rows(r, |s| s.unwrap_or("NULL").to_string(), "\u{1f}")
        .into_iter()
        .map(|l| l.split('\u{1f}').map(str::to_string).collect())
        .collect()
}

async fn rows_of(e: &segdb::Engine, sql: &str) -> Vec<Vec<String>> {
    rows_of_sync(&e.sql(sql).await.unwrap())
}

/// One placeholder rule at every door: a row whose only id is a placeholder is rejected, and
/// no placeholder becomes a user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_ids_never_become_users() {
    let db = TestDb::new();
    let e = db.engine().await;
    let events = db.input(
        "e.csv",
        "user_id,anonymous_id,event,ts\n\
         u1,,view,2026-01-01T00:00:00Z\n\
         undefined,,view,2026-01-01T00:00:00Z\n\
         Guest,,view,2026-01-01T00:00:00Z\n\
         -1,,view,2026-01-01T00:00:00Z\n\
         null,undefined,view,2026-01-01T00:00:00Z\n\
         \" NaN \",anonymous,view,2026-01-01T00:00:00Z\n\
         0,a-77,view,2026-01-01T00:00:00Z\n\
         [object Object],,view,2026-01-01T00:00:00Z\n",
    );
    let r = load(&e, Kind::Events, &events).await;
    let rows: Vec<u64> = r.rejected.iter().map(|b| b.row).collect();
    assert_eq!(rows, vec![2, 3, 4, 5, 6, 8], "{:?}", r.rejected);
    assert!(
        r.rejected[0].reason.contains("placeholder"),
        "{:?}",
        r.rejected
    );
    // u1 and the anonymous id a-77 (whose user_id was the placeholder 0).
    assert_eq!(r.rows_loaded, 2);
    e.sql("CREATE SEGMENT everyone AS ALL USERS").await.unwrap();
    assert_eq!(
        count(&e, "SELECT segment_size('everyone')").await,
        2,
        "ALL USERS grew from placeholders"
    );
    let profiles = db.input(
        "p.csv",
        "user_id,plan\nundefined,gold\nnone,gold\nu1,silver\n",
    );
    let r = load(&e, Kind::Profiles, &profiles).await;
    assert_eq!(r.rows_loaded, 1);
    assert_eq!(r.rejected.len(), 2);
    let consent = db.input(
        "c.csv",
        "user_id,purpose,granted\nN/A,ads,true\nunknown,ads,true\nu1,ads,true\n",
    );
    let r = load(&e, Kind::Consent, &consent).await;
    assert_eq!((r.rows_loaded, r.rejected.len()), (1, 2));
    assert_eq!(count(&e, "SELECT count(*) FROM identity").await, 2);
}

/// Column order is the first file's, then new columns in order of first appearance: the same
/// in every database loaded from the same files, for CSV, NDJSON and profile upserts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_order_is_the_files_and_the_same_in_every_database() {
    let mut seen: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for _ in 0..3 {
        let db = TestDb::new();
        let e = db.engine().await;
        let p1 = db.input("p1.csv", "user_id,zeta,alpha,mid\nu1,1,2,3\n");
        let p2 = db.input(
            "p2.csv",
            "user_id,zeta,omega,beta,gamma,delta,epsilon,alpha,mid\nu2,1,2,3,4,5,6,7,8\n",
        );
        load(&e, Kind::Profiles, &p1).await;
        load(&e, Kind::Profiles, &p2).await;
        let e1 = db.input(
            "e1.ndjson",
            concat!(
                r#"{"user_id":"u1","zz":1,"event":"view","ts":"2026-01-01T00:00:00Z","aa":2,"mm":3}"#,
                "\n",
                r#"{"user_id":"u1","event":"view","ts":"2026-01-01T00:00:00Z","new_b":1,"new_a":2}"#,
                "\n"
            ),
        );
        load(&e, Kind::Events, &e1).await;
        let cols = |sql: &'static str| {
            let e = &e;
            async move {
                let r = e.sql(sql).await.unwrap();
                r.schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
            }
        };
        seen.push((
            cols("SELECT * FROM profiles").await,
            cols("SELECT * FROM events").await,
        ));
    }
    let (profiles, events) = &seen[0];
    let p: Vec<&str> = profiles
        .iter()
        .map(String::as_str)
        .filter(|c| !["user_id", "uid", "updated_at"].contains(c))
        .collect();
    assert_eq!(
        p,
        vec![
            "zeta", "alpha", "mid", "omega", "beta", "gamma", "delta", "epsilon"
        ],
        "{profiles:?}"
    );
    let ev: Vec<&str> = events
        .iter()
        .map(String::as_str)
        .filter(|c| !["user_id", "uid", "event", "ts"].contains(c))
        .collect();
    assert_eq!(ev, vec!["zz", "aa", "mm", "new_b", "new_a"], "{events:?}");
    for s in &seen[1..] {
        assert_eq!(s, &seen[0]);
    }
}

/// `SELECT pseudonymize('a'), pseudonymize('b')` works (two columns, two names), and no raw
/// value becomes a column name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_private_calls_in_one_projection() {
    let db = TestDb::new();
    let e = db.engine().await;
    let r = e
        .sql("SELECT pseudonymize('a@x.org'), pseudonymize('b@x.org'), hash_email('a@x.org'), hash_email('b@x.org')")
        .await
        .unwrap();
    let names: Vec<String> = r.schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(
        names,
        vec![
            "pseudonymize",
            "pseudonymize_2",
            "hash_email",
            "hash_email_2"
        ]
    );
    let row = &rows_of_sync(&r)[0];
    assert_eq!(row[0], expected_pseudonym("a@x.org"));
    assert_eq!(row[1], expected_pseudonym("b@x.org"));
    assert_ne!(row[2], row[3]);
}

/// A cron schedule that never fires is refused, naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_that_never_fire_are_refused() {
    let db = TestDb::with_one_event();
    let e = db.engine().await;
    let err = e
        .sql("CREATE MATERIALIZED SEGMENT s REFRESH CRON '0 6 30 2 *' AS ALL USERS")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("never fires"), "{err}");
    let err = e
        .sql("CREATE MATERIALIZED SEGMENT s REFRESH CRON '0 24 * * *' AS ALL USERS")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("field 2 (hour) has 24"), "{err}");
    assert!(common_segments(&e).await.is_empty());
}

async fn common_segments(e: &segdb::Engine) -> Vec<String> {
    rows(e, "SHOW SEGMENTS").await
}

/// Errors of segment functions read as segdb wrote them, without DataFusion's wrapper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_function_errors_are_plain() {
    let db = TestDb::with_one_event();
    let e = db.engine().await;
    let err = e
        .sql("SELECT segment_size('no_such_segment')")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("External error"), "{err}");
    assert!(err.contains("no_such_segment"), "{err}");
}

/// A mistyped --data is refused by every command but init, ingest and demo, which say so and
/// create nothing; a mistyped --keyring directory leaves no stray file.
#[test]
fn a_missing_database_is_refused_and_nothing_is_created() {
    let db = TestDb::new();
    let typo = db.dir.path().join("segdb-dtaa");
    let fresh_key = db.dir.path().join("fresh.keyring");
    let at = |data: &std::path::Path, key: &std::path::Path, args: &[&str]| {
        let mut full = vec![
            "--data",
            data.to_str().unwrap(),
            "--keyring",
            key.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        db.cli(&full)
    };
    for args in [
        vec!["sql", "-c", "SELECT 1"],
        vec!["vacuum"],
        vec!["refresh", "--due"],
        vec!["index", "rebuild"],
    ] {
        let o = at(&typo, &fresh_key, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("segdb init"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(!typo.exists(), "{args:?} created the directory");
        assert!(!fresh_key.exists(), "{args:?} created a keyring");
    }
    // init creates it (and its keyring); a second init changes nothing.
    let o = at(&typo, &fresh_key, &["init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fresh_key.exists());
    let o = at(&typo, &fresh_key, &["init"]);
    assert!(
        o.status.success() && stdout(&o).contains("already"),
        "{}",
        stdout(&o)
    );
    let o = at(
        &typo,
        &fresh_key,
        &["sql", "-c", "SELECT count(*) FROM events"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // An existing database with a keyring path that does not exist: refused, no new key.
    let gone = db.dir.path().join("gone.keyring");
    let o = at(&typo, &gone, &["sql", "-c", "SELECT 1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!gone.exists());
    // A keyring in a directory that does not exist: refused, no directory made.
    let nodir = db.dir.path().join("no/such/dir/k.keyring");
    let f = db.input("e.csv", "user_id,event,ts\nu1,view,2026-01-01T00:00:00Z\n");
    let other = db.dir.path().join("other-db");
    let o = at(&other, &nodir, &["ingest", "events", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!db.dir.path().join("no").exists());
}

/// An unclosed quote is reported at its own row, naming the lines it swallowed, in the last
/// column too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclosed_csv_quote_names_the_lines_it_swallows() {
    let db = TestDb::new();
    let e = db.engine().await;
    let f = db.input(
        "q.csv",
        "user_id,event,ts,note\n\
         u1,view,2026-01-01T00:00:00Z,fine\n\
         u2,\"view,2026-01-01T00:00:00Z,never closed\n\
         u3,view,2026-01-01T00:00:00Z,x\n\
         u4,view,2026-01-01T00:00:00Z,y\n",
    );
    let r = load(&e, Kind::Events, &f).await;
    assert_eq!(r.rows_loaded, 1);
    assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
    assert_eq!(r.rejected[0].row, 2);
    let why = &r.rejected[0].reason;
    assert!(
        why.contains("unclosed quote") && why.contains("lines 4 to 5"),
        "{why}"
    );

    // Left open in the last column: the field count matches, the swallowed lines have the
    // shape of rows. Rejected, naming them; a real multi-line note still loads.
    let f = db.input(
        "last.csv",
        "user_id,event,ts,note\n\
         u5,view,2026-01-02T00:00:00Z,\"two lines,\nof one note\"\n\
         u6,view,2026-01-02T00:00:00Z,\"never closed\n\
         u7,view,2026-01-02T00:00:00Z,x\n\
         u8,view,2026-01-02T00:00:00Z,y\n",
    );
    let r = load(&e, Kind::Events, &f).await;
    assert_eq!(r.rows_loaded, 1, "{:?}", r.rejected);
    assert_eq!(r.rejected.len(), 1, "{:?}", r.rejected);
    assert_eq!(r.rejected[0].row, 2);
    let why = &r.rejected[0].reason;
    assert!(
        why.contains("unclosed quote")
            && why.contains("last column")
            && why.contains("lines 5 to 6"),
        "{why}"
    );
    let notes = rows_of(&e, "SELECT note FROM events WHERE ts >= '2026-01-02'").await;
    assert_eq!(notes, vec![vec!["two lines,\nof one note"]]);
}

/// A purpose nobody's consent names is accepted (consent may arrive later) but said out loud.
#[test]
fn an_unseen_purpose_is_warned_about() {
    let db = TestDb::with_one_event();
    db.ingest_cli(
        "consent",
        &db.input("c.csv", "user_id,purpose,granted\nu1,marketing,true\n"),
    );
    let o = db.cli(&[
        "sql",
        "-c",
        "CREATE SEGMENT a FOR PURPOSE 'ads' AS ALL USERS",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no consent record names purpose 'ads'"),
        "{}",
        stderr(&o)
    );
    let o = db.cli(&[
        "sql",
        "-c",
        "CREATE SEGMENT m FOR PURPOSE 'marketing' AS ALL USERS",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("no consent record"), "{}", stderr(&o));
    let o = db.cli(&[
        "sql",
        "-c",
        "CREATE SEGMENT t FOR PURPOSE 'tcf:1' AS ALL USERS",
    ]);
    assert!(stderr(&o).contains("purpose 'tcf:1'"), "{}", stderr(&o));
}

/// The match keys of DESIGN §9 at the door: names, postal codes and advertising ids hashed
/// after their own normalisation, Google's e-mail key beside the plain one, and the presets
/// writing them; no raw value is stored or exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_zips_maids_and_googles_email_rule_are_match_keys() {
    let db = TestDb::new();
    let e = db.engine().await;
    e.sql("ALTER TABLE profiles SET PII (email AS EMAIL, first_name AS FIRST_NAME, last_name AS LAST_NAME, zip AS ZIP 'US', maid AS MAID)")
        .await
        .unwrap();
    let f = db.input(
        "p.csv",
        "user_id,email,first_name,last_name,zip,maid\n\
         u1,John.Doe@GMail.com,  John. ,O'Brien,94103-1234,6D92078A-8246-4BA4-AE5B-76104861E7DC\n",
    );
    let r = load(&e, Kind::Profiles, &f).await;
    assert_eq!(r.rows_loaded, 1, "{:?}", r.rejected);
    let sha = |s: &str| segdb::privacy::hashing::sha256_hex(s.as_bytes());
    let row = &rows_of(
        &e,
        "SELECT email_sha256, email_google_sha256, first_name_sha256, last_name_sha256, zip_sha256, maid_sha256 FROM profiles",
    )
    .await[0];
    assert_eq!(row[0], sha("john.doe@gmail.com"));
    assert_eq!(row[1], sha("johndoe@gmail.com"));
    assert_eq!(row[2], sha("john"));
    assert_eq!(row[3], sha("obrien"));
    assert_eq!(row[4], sha("94103"));
    assert_eq!(row[5], sha("6d92078a-8246-4ba4-ae5b-76104861e7dc"));
    for raw in ["John.Doe", "O'Brien", "94103-1234", "6D92078A"] {
        assert!(files_containing(&db.data, raw).is_empty(), "{raw} stored");
    }
    // The presets write the platforms' columns from these keys.
    let ev = db.input("e.csv", "user_id,event,ts\nu1,buy,2026-01-01T00:00:00Z\n");
    load(&e, Kind::Events, &ev).await;
    let c = db.input("c.csv", "user_id,purpose,granted\nu1,ads,true\n");
    load(&e, Kind::Consent, &c).await;
    e.sql("CREATE MATERIALIZED SEGMENT all_u FOR PURPOSE 'ads' AS ALL USERS")
        .await
        .unwrap();
    let out = db.dir.path().join("out");
    for preset in ["google", "meta"] {
        e.sql(&format!(
            "EXPORT SEGMENT all_u TO '{}' FORMAT csv PRESET {preset}",
            out.display()
        ))
        .await
        .unwrap();
    }
    let header = |p: &str| {
        std::fs::read_to_string(out.join(format!("all_u-v1-{p}/part-00000.csv")))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let g = header("google");
    assert_eq!(g[0], "Email,First Name,Last Name,Zip");
    assert!(g[1].starts_with(&sha("johndoe@gmail.com")), "{g:?}");
    let m = header("meta");
    assert_eq!(m[0], "email,fn,ln,zip,madid");
    assert!(m[1].starts_with(&sha("john.doe@gmail.com")), "{m:?}");
}

/// Windows in calendar months (the day clamped to the month's end) and timestamps relative to
/// `as_of` (in windows) or to each statement's start (in `SET segdb.as_of`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn month_windows_and_relative_timestamps() {
    let db = TestDb::new();
    let e = db.engine().await;
    // as_of is 2026-03-31T12:00Z: one month back is 2026-02-28T12:00Z.
    let f = db.input(
        "e.csv",
        "user_id,event,ts\n\
         feb27,buy,2026-02-27T12:00:00Z\n\
         feb28_early,buy,2026-02-28T11:59:59Z\n\
         feb28_late,buy,2026-02-28T12:00:00Z\n\
         mar30,buy,2026-03-30T08:00:00Z\n\
         mar31,buy,2026-03-31T06:00:00Z\n\
         dec31,buy,2025-12-31T12:00:00Z\n",
    );
    load(&e, Kind::Events, &f).await;
    e.sql("SET segdb.as_of = '2026-03-31T12:00:00Z'")
        .await
        .unwrap();
    assert_eq!(seg_size(&e, "m1", "DID 'buy' IN THE LAST 1 MONTH").await, 3);
    assert_eq!(
        seg_size(&e, "m3", "DID 'buy' IN THE LAST 3 MONTHS").await,
        6
    );
    assert_eq!(seg_size(&e, "today", "DID 'buy' SINCE 'today'").await, 1);
    assert_eq!(
        seg_size(&e, "yest", "DID 'buy' BETWEEN 'yesterday' AND 'today'").await,
        1
    );
    assert_eq!(seg_size(&e, "week", "DID 'buy' SINCE '-7 days'").await, 2);
    // The definition keeps the relative form: it moves with as_of.
    e.sql("SET segdb.as_of = '2026-03-01T00:00:00Z'")
        .await
        .unwrap();
    // [22 Feb, 1 Mar): feb27, feb28_early and feb28_late.
    assert_eq!(count(&e, "SELECT segment_size('week')").await, 3);
    let shown = rows(&e, "DESCRIBE SEGMENT week").await.join("\n");
    assert!(shown.contains("SINCE '-7 days'"), "{shown}");
    // SET segdb.as_of takes a relative time too, resolved at each statement.
    e.sql("SET segdb.as_of = '-1 days'").await.unwrap();
    assert_eq!(
        rows(&e, "SHOW segdb.as_of").await.join(""),
        "segdb.as_of|-1 days"
    );
    // WITHIN needs a fixed length.
    let err = e
        .sql("CREATE SEGMENT s AS DID 'buy' THEN 'buy' WITHIN 1 MONTH")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("fixed length"), "{err}");
}

/// Create (or replace) segment `name` as `def` and return its size.
async fn seg_size(e: &segdb::Engine, name: &str, def: &str) -> i64 {
    e.sql(&format!("CREATE OR REPLACE SEGMENT {name} AS {def}"))
        .await
        .unwrap();
    count(e, &format!("SELECT segment_size('{name}')")).await
}

/// "Why is this user in that segment": one row per node with whether the user satisfies it and
/// how many do; a raw id and its pseudonym give the same answer; an unknown and a forgotten id
/// the same refusal, which never echoes the id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_segment_for_user_says_why() {
    let db = TestDb::new();
    let e = db.engine().await;
    let f = db.input(
        "e.csv",
        "user_id,event,ts\n\
         alice@x.org,cart,2026-01-30T10:00:00Z\n\
         bob@x.org,cart,2026-01-30T10:00:00Z\n\
         bob@x.org,buy,2026-01-30T11:00:00Z\n\
         carol@x.org,view,2026-01-30T11:00:00Z\n",
    );
    load(&e, Kind::Events, &f).await;
    e.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT abandoners AS DID 'cart' IN THE LAST 7 DAYS AND NOT DID 'buy' IN THE LAST 7 DAYS")
        .await
        .unwrap();
    let alice = rows_of(&e, "EXPLAIN SEGMENT abandoners FOR USER 'alice@x.org'").await;
    let nodes: Vec<(String, String, String)> = alice
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("segment abandoners".into(), "true".into(), "1".into()),
            ("  AND".into(), "true".into(), "1".into()),
            (
                "    DID 'cart' IN THE LAST 7 DAYS".into(),
                "true".into(),
                "2".into()
            ),
            ("    NOT".into(), "true".into(), "2".into()),
            (
                "      DID 'buy' IN THE LAST 7 DAYS".into(),
                "false".into(),
                "1".into()
            ),
        ]
    );
    let bob = rows_of(&e, "EXPLAIN SEGMENT abandoners FOR USER 'bob@x.org'").await;
    assert_eq!(bob[0][1], "false");
    assert_eq!(bob[4][1], "true");
    let by_pseudonym = rows_of(
        &e,
        &format!(
            "EXPLAIN SEGMENT abandoners FOR USER '{}'",
            expected_pseudonym("alice@x.org")
        ),
    )
    .await;
    assert_eq!(by_pseudonym, alice);
    // The widest definition the language allows (1,000 leaves, a 999-deep OR chain): one row
    // per node, and nothing recurses past what the stack holds.
    let wide = vec!["DID 'cart' IN THE LAST 7 DAYS"; 1_000].join(" OR ");
    e.sql(&format!("CREATE SEGMENT wide AS {wide}"))
        .await
        .unwrap();
    let rows = rows_of(&e, "EXPLAIN SEGMENT wide FOR USER 'alice@x.org'").await;
    assert_eq!(rows.len(), 2_000);
    assert!(rows.iter().all(|r| r[1] == "true"), "alice carted");
    e.sql("FORGET USER 'carol@x.org'").await.unwrap();
    for id in ["nobody@x.org", "carol@x.org"] {
        let err = e
            .sql(&format!("EXPLAIN SEGMENT abandoners FOR USER '{id}'"))
            .await
            .unwrap_err();
        assert!(matches!(err, segdb::Error::NotFound(_)), "{err}");
        assert_eq!(err.to_string(), "unknown user");
    }
}

/// `ingest profiles --merge`: a row merges into the stored profile (empty attributes keep their
/// values; rows of one user in a load merge in order), where a plain load replaces it whole.
#[test]
fn profiles_merge_or_replace() {
    let db = TestDb::new();
    db.ingest_cli(
        "profiles",
        &db.input(
            "p1.csv",
            "user_id,plan,age,city\nu1,pro,41,Berlin\nu2,basic,30,Rome\n",
        ),
    );
    let merge = db.input("p2.csv", "user_id,plan,age,city\nu1,gold,,\nu1,,42,\n");
    let o = db.cli(&["ingest", "profiles", "--merge", merge.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT plan, age, city FROM profiles ORDER BY user_id = pseudonymize('u1') DESC",
    ]);
    assert_eq!(stdout(&o), "plan,age,city\ngold,42,Berlin\nbasic,30,Rome\n");
    // Without --merge the row replaces the profile whole.
    db.ingest_cli("profiles", &db.input("p3.csv", "user_id,plan\nu1,free\n"));
    let o = db.cli(&[
        "sql",
        "--format",
        "csv",
        "-c",
        "SELECT plan, age, city FROM profiles WHERE user_id = pseudonymize('u1')",
    ]);
    assert_eq!(stdout(&o), "plan,age,city\nfree,,\n");
    let events = db.input("e.csv", "user_id,event,ts\nu1,e,2026-01-01T00:00:00Z\n");
    let o = db.cli(&["ingest", "events", "--merge", events.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--merge applies to profiles"),
        "{}",
        stderr(&o)
    );
}

/// PII actions IP_COUNTRY and USER_AGENT at the door of a file load (DESIGN §17): only the
/// country and the browser, OS and device class are stored; the raw address and string appear
/// in no stored byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_and_user_agent_are_enriched_at_the_door_and_never_stored() {
    let db = TestDb::new();
    let e = db.engine().await;
    e.sql("ALTER TABLE events SET PII (ip AS IP_COUNTRY, user_agent AS USER_AGENT)")
        .await
        .unwrap();
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 CanaryUA";
    let f = db.input(
        "e.csv",
        &format!(
            "user_id,event,ts,ip,user_agent\n\
             u1,view,2026-01-01T00:00:00Z,8.8.8.8,\"{chrome}\"\n\
             u2,view,2026-01-01T00:00:00Z,192.168.17.33,\"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)\"\n\
             u3,view,2026-01-01T00:00:00Z,,\n"
        ),
    );
    let r = load(&e, Kind::Events, &f).await;
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    let names: Vec<String> = e
        .sql("SELECT * FROM events LIMIT 0")
        .await
        .unwrap()
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert!(
        !names.iter().any(|n| n == "ip" || n == "user_agent"),
        "{names:?}"
    );
    let got = rows_of(
        &e,
        "SELECT ip_country, user_agent_browser, user_agent_os, user_agent_device FROM events \
         ORDER BY user_id = pseudonymize('u1') DESC, user_id = pseudonymize('u2') DESC",
    )
    .await;
    assert_eq!(
        got,
        vec![
            vec!["US", "Chrome", "Windows 10", "desktop"],
            vec!["NULL", "Googlebot", "NULL", "bot"],
            vec!["NULL", "NULL", "NULL", "NULL"],
        ]
    );
    for canary in ["192.168.17.33", "8.8.8.8", "CanaryUA"] {
        assert!(
            files_containing(&db.data, canary).is_empty(),
            "{canary} is stored"
        );
    }
}
