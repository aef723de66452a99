//! The front door and the per-statement snapshot: roles cannot be bypassed through embedded SQL,
//! SELECT … INTO or the keyring; every statement sees what other processes committed before it
//! started; erasure reaches views, copies, prepared statements and segment tables made before it.

use std::process::Command;

use arrow::array::AsArray;
use arrow_flight::sql::client::FlightSqlServiceClient;
use segdb::ingest::{IngestOptions, Kind};
use tonic::transport::Channel;

use crate::common::{self, TestDb, count, expected_pseudonym, files_containing, rows};
use crate::server::*;

const USERS_CSV: &str = "user_id,event,ts,price\n\
alice@example.com,view,2026-01-10T10:00:00Z,\n\
alice@example.com,purchase,2026-01-11T10:00:00Z,30\n\
bob@example.com,view,2026-01-12T10:00:00Z,\n\
carol@example.com,purchase,2026-01-13T10:00:00Z,12\n\
dave@example.com,view,2026-01-14T10:00:00Z,\n";

async fn small() -> (TestDb, segdb::Engine) {
    let db = TestDb::new();
    let e = db.engine().await;
    let f = db.input("e.csv", USERS_CSV);
    e.ingest(Kind::Events, &[f], &IngestOptions::default())
        .await
        .unwrap();
    let p = db.input(
        "p.csv",
        "user_id,country\nalice@example.com,DE\nbob@example.com,DE\ncarol@example.com,FR\ndave@example.com,DE\n",
    );
    e.ingest(Kind::Profiles, &[p], &IngestOptions::default())
        .await
        .unwrap();
    (db, e)
}

fn err_text(r: segdb::Result<segdb::QueryResult>) -> String {
    match r {
        Ok(_) => panic!("the statement must fail"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sql_is_an_expression_never_a_statement() {
    let (db, e) = small().await;
    let keyring = db.keyring.display().to_string();
    // Even an admin cannot run DDL inside a segment: the external table over the keyring must
    // not come into existence.
    for def in [
        format!("USERS IN (CREATE EXTERNAL TABLE k STORED AS CSV LOCATION '{keyring}')"),
        "USERS IN (CREATE VIEW k AS SELECT user_id FROM events)".to_string(),
        "USERS IN (SELECT user_id INTO k FROM events)".to_string(),
        "DID 'view' WHERE (SELECT 1 FROM (COPY events TO '/tmp/never.csv'))".to_string(),
    ] {
        let msg = err_text(e.sql(&format!("CREATE SEGMENT s AS {def}")).await);
        assert!(!msg.is_empty(), "{def}");
        let gone = err_text(e.sql("SELECT * FROM k").await);
        assert!(
            gone.contains("k"),
            "{def}: table k exists afterwards ({gone})"
        );
    }
    assert!(!std::path::Path::new("/tmp/never.csv").exists());
    assert_eq!(
        rows(&e, "SHOW SEGMENTS").await.len(),
        0,
        "no segment was stored"
    );
    // And no SQL path reads the keyring, not even an admin's.
    let msg = err_text(
        e.sql(&format!(
            "CREATE EXTERNAL TABLE k2 STORED AS CSV LOCATION '{keyring}'"
        ))
        .await,
    );
    assert!(msg.contains("keyring"), "{msg}");
    let dir = db.keyring.parent().unwrap().display().to_string();
    let msg = err_text(
        e.sql(&format!(
            "CREATE EXTERNAL TABLE k3 STORED AS CSV LOCATION '{dir}/'"
        ))
        .await,
    );
    assert!(msg.contains("keyring"), "{msg}");
    let before = std::fs::read(&db.keyring).unwrap();
    let msg = err_text(
        e.sql(&format!(
            "COPY (SELECT 1 AS x) TO '{keyring}' STORED AS CSV"
        ))
        .await,
    );
    assert!(msg.contains("keyring"), "{msg}");
    assert_eq!(
        std::fs::read(&db.keyring).unwrap(),
        before,
        "keyring untouched"
    );
    // The CLI is the same front door.
    let o = db.cli(&[
        "sql",
        "-c",
        &format!("CREATE SEGMENT s AS USERS IN (CREATE EXTERNAL TABLE k STORED AS CSV LOCATION '{keyring}')"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    let o = db.cli(&["sql", "-c", "SHOW SEGMENTS"]);
    assert!(
        !common::stdout(&o).contains("| s "),
        "{}",
        common::stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn individual_ids_are_refused_in_stored_definitions() {
    let (_db, e) = small().await;
    let p = expected_pseudonym("alice@example.com");
    for def in [
        "USERS IN (SELECT pseudonymize('alice@example.com') AS user_id)".to_string(),
        format!("PROFILE user_id = '{p}'"),
        format!("DID 'view' WHERE user_id = '{p}'"),
    ] {
        let msg = err_text(e.sql(&format!("CREATE SEGMENT s AS {def}")).await);
        assert!(msg.contains("individual user"), "{def}: {msg}");
        assert!(msg.contains("USERS IN (SELECT user_id FROM"), "{msg}");
        assert!(!msg.contains("alice"), "the refusal echoes the id: {msg}");
    }
    assert_eq!(rows(&e, "SHOW SEGMENTS").await.len(), 0);
    // A list of users in a table is the way.
    e.sql("CREATE TABLE vip AS SELECT user_id FROM events WHERE event = 'purchase'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT vips AS USERS IN (SELECT user_id FROM vip)")
        .await
        .unwrap();
    assert_eq!(count(&e, "SELECT segment_size('vips')").await, 2);
}

async fn refused(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> tonic::Status {
    use arrow_flight::error::FlightError;
    let status = |e: FlightError| match e {
        FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    };
    match c.execute(sql.to_string(), None).await {
        Ok(info) => {
            // Some statements only fail when fetched; fetching must fail then.
            let t = info.endpoint[0].ticket.clone().unwrap();
            match c.do_get(t).await {
                Ok(s) => match futures::TryStreamExt::try_collect::<Vec<_>>(s).await {
                    Ok(_) => panic!("{sql} was not refused"),
                    Err(e) => status(e),
                },
                Err(e) => status(e),
            }
        }
        Err(e) => status(e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_hold_over_flight_sql_and_sessions_are_isolated() {
    let (db, e) = small().await;
    drop(e);
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let addr = server.addr.clone();
    let keyring = db.keyring.display().to_string();
    let mut reader = login(&addr, "reader", READER_PW).await;
    for sql in [
        "SELECT * INTO t FROM events",
        "CREATE TABLE t AS SELECT * FROM events",
        "CREATE VIEW t AS SELECT * FROM events",
        "COPY (SELECT 1) TO '/tmp/segdb-reader-copy.csv' STORED AS CSV",
        "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
        "PREPARE p AS INSERT INTO t VALUES (1)",
        "CREATE SEGMENT s AS ALL USERS",
        "FORGET USER 'alice@example.com'",
    ] {
        let s = refused(&mut reader, sql).await;
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{sql}: {s:?}");
    }
    assert!(!std::path::Path::new("/tmp/segdb-reader-copy.csv").exists());
    // The refused PREPARE left no statement behind: executing its name is refused as unknown
    // (NOT_FOUND, DESIGN §19).
    let s = refused(&mut reader, "EXECUTE p").await;
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    assert!(s.message().contains("does not exist"), "{s:?}");
    let gone = refused(&mut reader, "SELECT * FROM t").await;
    assert!(gone.message().contains("t"), "{gone:?}");
    // A reader may prepare and execute a query of its own.
    query(
        &mut reader,
        "PREPARE q(VARCHAR) AS SELECT count(*) FROM events WHERE event = $1",
    )
    .await;
    assert_eq!(first_i64(&query(&mut reader, "EXECUTE q('view')").await), 3);
    // An analyst's segment cannot smuggle DDL in.
    let mut analyst = login(&addr, "analyst", ANALYST_PW).await;
    let s = refused(
        &mut analyst,
        &format!("CREATE SEGMENT s AS USERS IN (CREATE EXTERNAL TABLE k STORED AS CSV LOCATION '{keyring}')"),
    )
    .await;
    assert_ne!(s.code(), tonic::Code::Ok);
    assert!(
        refused(&mut analyst, "SELECT * FROM k")
            .await
            .message()
            .contains("k")
    );
    // Admins cannot read the keyring either.
    let mut admin = login(&addr, "admin", ADMIN_PW).await;
    let s = refused(
        &mut admin,
        &format!("CREATE EXTERNAL TABLE k STORED AS CSV LOCATION '{keyring}'"),
    )
    .await;
    assert!(s.message().contains("keyring"), "{s:?}");
    // Sessions: settings, views and prepared statements belong to one token.
    query(&mut admin, "SET datafusion.execution.batch_size = 1234").await;
    query(&mut admin, "SET segdb.as_of = '2026-01-12T00:00:00Z'").await;
    query(&mut admin, "CREATE VIEW mine AS SELECT 1 AS x").await;
    let shown = query(&mut admin, "SHOW datafusion.execution.batch_size").await;
    assert_eq!(shown[0].column(1).as_string::<i32>().value(0), "1234");
    let shown = query(&mut admin, "SHOW segdb.as_of").await;
    assert_eq!(
        shown[0].column(1).as_string::<i32>().value(0),
        "2026-01-12T00:00:00Z"
    );
    let mut other = login(&addr, "admin", ADMIN_PW).await;
    let shown = query(&mut other, "SHOW datafusion.execution.batch_size").await;
    assert_eq!(shown[0].column(1).as_string::<i32>().value(0), "8192");
    assert!(
        refused(&mut other, "SELECT * FROM mine")
            .await
            .message()
            .contains("mine")
    );
    assert_eq!(first_i64(&query(&mut admin, "SELECT x FROM mine").await), 1);
    // FORGET over Flight SQL is audited with the Flight user who asked.
    assert_eq!(
        first_i64(&query(&mut admin, "FORGET USER 'dave@example.com'").await),
        1
    );
    server.stop();
    let e = db.engine().await;
    let d = e.database();
    let audit = d.load(segdb::storage::Table::Audit).await.unwrap();
    let who: Vec<String> = segdb::storage::read_pinned(d, segdb::storage::Table::Audit, &audit)
        .await
        .unwrap()
        .iter()
        .flat_map(|b| {
            let w = b.column_by_name("requested_by").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .map(|i| w.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(who, vec!["admin"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_forget_reaches_a_running_server_and_every_earlier_plan() {
    let (db, e) = small().await;
    e.sql("CREATE SEGMENT everyone AS ALL USERS").await.unwrap();
    drop(e);
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let mut admin = login(&server.addr, "admin", ADMIN_PW).await;
    let alice = expected_pseudonym("alice@example.com");
    let bob = expected_pseudonym("bob@example.com");
    query(&mut admin, "CREATE VIEW v AS SELECT user_id FROM events").await;
    query(
        &mut admin,
        "CREATE TABLE copy AS SELECT user_id, event FROM events",
    )
    .await;
    query(
        &mut admin,
        "CREATE VIEW members AS SELECT user_id FROM segments.everyone",
    )
    .await;
    query(
        &mut admin,
        "PREPARE by_user(VARCHAR) AS SELECT count(*) FROM events WHERE user_id = $1",
    )
    .await;
    let mut prepared = admin
        .prepare(
            "SELECT count(*) FROM events WHERE user_id = ?".to_string(),
            None,
        )
        .await
        .unwrap();
    let checks = [
        format!("SELECT count(*) FROM events WHERE user_id = '{alice}'"),
        format!("SELECT count(*) FROM v WHERE user_id = '{alice}'"),
        format!("SELECT count(*) FROM copy WHERE user_id = '{alice}'"),
        format!("SELECT count(*) FROM members WHERE user_id = '{alice}'"),
        format!("SELECT count(*) FROM segments.everyone WHERE user_id = '{alice}'"),
        format!("EXECUTE by_user('{alice}')"),
        format!("SELECT count(*) FROM (SELECT 1 WHERE in_segment('everyone', '{alice}'))"),
    ];
    for q in &checks {
        assert!(
            first_i64(&query(&mut admin, q).await) > 0,
            "{q} before FORGET"
        );
    }
    let param = |p: &str| {
        arrow::array::RecordBatch::try_from_iter(vec![(
            "$1",
            std::sync::Arc::new(arrow::array::StringArray::from(vec![p.to_string()])) as _,
        )])
        .unwrap()
    };
    prepared.set_parameters(param(&alice)).unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(first_i64(&fetch(&mut admin, info).await), 2);

    // FORGET from another process, interrupted right after its suppression commit (the rows
    // are still in the tables): the server must exclude alice at its next statement.
    let o = db.cli_env(
        &["sql", "-c", "FORGET USER 'alice@example.com'"],
        &[("SEGDB_FAILPOINT", "forget-after-suppression")],
    );
    assert!(!o.status.success(), "the failpoint aborts the forget");
    for q in &checks {
        assert_eq!(
            first_i64(&query(&mut admin, q).await),
            0,
            "{q} after FORGET"
        );
    }
    let info = prepared.execute().await.unwrap();
    assert_eq!(
        first_i64(&fetch(&mut admin, info).await),
        0,
        "prepared after FORGET"
    );
    // Everyone else is still there.
    assert!(
        first_i64(
            &query(
                &mut admin,
                &format!("SELECT count(*) FROM copy WHERE user_id = '{bob}'")
            )
            .await
        ) > 0
    );
    assert_eq!(
        first_i64(&query(&mut admin, "SELECT segment_size('everyone')").await),
        3
    );
    // The base tables are still tables, not views.
    let tables = meta!(admin.get_tables(arrow_flight::sql::CommandGetTables {
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: Some("events".into()),
        ..Default::default()
    }));
    assert_eq!(tables[0].column(3).as_string::<i32>().value(0), "TABLE");
    // Re-running the forget completes it; VACUUM leaves no byte of the pseudonym.
    let o = db.cli(&["sql", "-c", "FORGET USER 'alice@example.com'"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = db.cli(&["vacuum"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let log = server.stop();
    assert!(files_containing(&db.data, &alice).is_empty());
    assert!(!log.contains("alice"), "the server log names the user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_finds_the_index_behind_answers_exactly_and_writes_nothing() {
    let (db, e) = small().await;
    drop(e);
    let more = db.input(
        "more.csv",
        "user_id,event,ts\nbob@example.com,purchase,2026-01-15T00:00:00Z\nbob@example.com,purchase,2026-01-16T00:00:00Z\n",
    );
    // The load commits its events, then dies before the index catches up.
    let o = db.cli_env(
        &["ingest", "events", more.to_str().unwrap()],
        &[("SEGDB_FAILPOINT", "ingest-before-index")],
    );
    assert!(!o.status.success());
    let index_log = db.data.join("_segdb/event_index/_delta_log");
    let before = std::fs::read_dir(&index_log).unwrap().count();
    let q = "SET segdb.as_of = '2026-02-01T00:00:00Z'; \
             CREATE SEGMENT IF NOT EXISTS buyers AS DID 'purchase' AT LEAST 2 TIMES IN THE LAST 30 DAYS; \
             SELECT segment_size('buyers')";
    let e = db.engine().await;
    assert_eq!(
        rows(&e, q).await,
        vec!["1"],
        "bob bought twice, through index + catch-up"
    );
    assert_eq!(
        std::fs::read_dir(&index_log).unwrap().count(),
        before,
        "a reader committed to the index"
    );
    let explain = rows(
        &e,
        "SET segdb.as_of = '2026-02-01T00:00:00Z'; EXPLAIN SEGMENT buyers",
    )
    .await;
    assert!(explain.iter().any(|l| l.contains("index")), "{explain:?}");
    // The next writer brings the persisted index up to date.
    let o = db.cli(&["index", "rebuild"]);
    assert!(o.status.success());
    assert!(std::fs::read_dir(&index_log).unwrap().count() > before);
    assert_eq!(rows(&e, q).await, vec!["1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_purposes_value_fails_closed() {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use segdb::storage::Table;
    let (_db, e) = small().await;
    e.sql("CREATE SEGMENT s FOR PURPOSE 'marketing' AS ALL USERS")
        .await
        .unwrap();
    // Damage the stored purposes (as a bad manual edit or a torn write would).
    let db = e.database();
    let table = db.load(Table::Segments).await.unwrap();
    let mut batches = segdb::storage::read_pinned(db, Table::Segments, &table)
        .await
        .unwrap();
    let b = batches.remove(0);
    let schema = b.schema();
    let i = schema.index_of("purposes").unwrap();
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[i] = std::sync::Arc::new(StringArray::from(vec!["['marketing'"]));
    let damaged = RecordBatch::try_new(schema, cols).unwrap();
    segdb::storage::commit::overwrite_exact(&table, vec![damaged], vec![])
        .await
        .unwrap();
    let msg = err_text(e.sql("SELECT segment_size('s')").await);
    assert!(msg.contains("damaged"), "{msg}");
    let msg = err_text(e.sql("SELECT count(*) FROM segments.s").await);
    assert!(msg.contains("damaged"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_in_segment_never_selects_users_who_withheld_consent() {
    let (db, e) = small().await;
    // alice and bob (DE) are in `germans`; only alice holds consent for 'ads'.
    let c = db.input(
        "c.csv",
        "user_id,purpose,granted,recorded_at\nalice@example.com,ads,true,2026-01-01T00:00:00Z\nbob@example.com,ads,false,2026-01-01T00:00:00Z\n",
    );
    e.ingest(Kind::Consent, &[c], &IngestOptions::default())
        .await
        .unwrap();
    e.sql("SET segdb.as_of = '2026-02-01T00:00:00Z'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT germans FOR PURPOSE 'ads' AS PROFILE country = 'DE'")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT others AS NOT IN SEGMENT germans")
        .await
        .unwrap();
    e.sql("CREATE SEGMENT others3 AS ALL USERS AND NOT (IN SEGMENT germans OR PROFILE country = 'XX')")
        .await
        .unwrap();
    assert_eq!(count(&e, "SELECT segment_size('germans')").await, 1);
    let carol = expected_pseudonym("carol@example.com");
    for s in ["others", "others3"] {
        let members = rows(&e, &format!("SELECT user_id FROM segment_members('{s}')")).await;
        assert_eq!(
            members,
            vec![carol.clone()],
            "{s}: bob withheld consent and is not 'not German'"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_takes_effect_when_the_user_chose() {
    use segdb::privacy::tcf::{CoreSegment, encode_core};
    let (db, e) = small().await;
    // A CMP export without a time column: each TC string says when the user chose.
    let tc = |day: &str, purposes: Vec<u8>| {
        let t = chrono::DateTime::parse_from_rfc3339(&format!("{day}T12:00:00Z")).unwrap();
        let ds = (t.timestamp() * 10) as u64;
        encode_core(&CoreSegment {
            version: 2,
            created: ds,
            last_updated: ds,
            cmp_id: 7,
            cmp_version: 1,
            consent_screen: 1,
            consent_language: *b"EN",
            vendor_list_version: 48,
            tcf_policy_version: 4,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_feature_optins: vec![],
            purposes_consent: purposes,
            purposes_li: vec![],
            purpose_one_treatment: false,
            publisher_cc: *b"DE",
            vendor_consent: vec![],
            vendor_li: vec![],
            pub_restrictions: vec![],
        })
    };
    let csv = format!(
        "user_id,tc_string\nalice@example.com,{}\nbob@example.com,{}\n",
        tc("2025-06-01", vec![1, 2]),
        tc("2026-01-20", vec![1])
    );
    let f = db.input("tc.csv", &csv);
    e.ingest(Kind::Consent, &[f], &IngestOptions::default())
        .await
        .unwrap();
    e.sql("CREATE SEGMENT measured FOR PURPOSE 'tcf:1' AS ALL USERS")
        .await
        .unwrap();
    // Loaded today, but alice chose in June 2025 and bob on 2026-01-20.
    let at = |t: &str| format!("SELECT segment_size('measured', '{t}')");
    assert_eq!(count(&e, &at("2025-01-01T00:00:00Z")).await, 0);
    assert_eq!(count(&e, &at("2026-01-01T00:00:00Z")).await, 1);
    assert_eq!(count(&e, &at("2026-02-01T00:00:00Z")).await, 2);
    // Ties at one time: the later row of the load wins.
    let f = db.input(
        "tie.csv",
        "user_id,purpose,granted,recorded_at\ncarol@example.com,x,true,2026-01-01T00:00:00Z\ncarol@example.com,x,false,2026-01-01T00:00:00Z\ndave@example.com,x,false,2026-01-01T00:00:00Z\ndave@example.com,x,true,2026-01-01T00:00:00Z\n",
    );
    e.ingest(Kind::Consent, &[f], &IngestOptions::default())
        .await
        .unwrap();
    let dave = expected_pseudonym("dave@example.com");
    assert_eq!(
        rows(
            &e,
            "SELECT user_id FROM events WHERE has_consent(user_id, 'x', '2026-02-01T00:00:00Z') GROUP BY user_id"
        )
        .await,
        vec![dave]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_is_audited_with_who_asked_and_leaves_no_raw_id_in_trace_logs() {
    use arrow::array::Array;
    use segdb::storage::Table;
    let (db, e) = small().await;
    drop(e);
    let canary = "canary.trace.7f2a@example.com";
    let o = db.cli(&[
        "--log",
        "trace",
        "sql",
        "-c",
        &format!("SELECT pseudonymize('{canary}')"),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = format!("{}{}", common::stdout(&o), common::stderr(&o));
    assert!(
        out.contains(&expected_pseudonym(canary)),
        "the result is there"
    );
    assert!(!out.contains(canary), "a raw id in the trace output");
    let o = db.cli(&[
        "--log",
        "trace",
        "sql",
        "-c",
        "FORGET USER 'carol@example.com'",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = format!("{}{}", common::stdout(&o), common::stderr(&o));
    assert!(
        !out.contains("carol@example.com"),
        "a raw id in the trace output"
    );
    let o = db.cli(&["sql", "-c", "FORGET USER 'nobody@example.com'"]);
    assert!(o.status.success());
    assert!(common::stdout(&o).contains('0'));
    let o = db.cli(&["vacuum"]);
    assert!(o.status.success());
    let e = db.engine().await;
    let d = e.database();
    let audit = d.load(Table::Audit).await.unwrap();
    let mut seen = Vec::new();
    for b in segdb::storage::read_pinned(d, Table::Audit, &audit)
        .await
        .unwrap()
    {
        let a = b
            .column_by_name("action")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let u = b
            .column_by_name("users")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let w = b
            .column_by_name("requested_by")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            seen.push((
                a.value(i).to_string(),
                u.value(i),
                if w.is_null(i) {
                    String::new()
                } else {
                    w.value(i).to_string()
                },
            ));
        }
    }
    seen.sort();
    assert!(
        seen.contains(&("FORGET USER".into(), 1, "cli".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("FORGET USER".into(), 0, "cli".into())),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("VACUUM".into(), 0, "cli".into())),
        "{seen:?}"
    );
    assert!(files_containing(&db.data, &expected_pseudonym("carol@example.com")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_inputs_are_decompressed() {
    use std::io::Write;
    let db = TestDb::new();
    let e = db.engine().await;
    let path = db.dir.path().join("events.csv.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(USERS_CSV.as_bytes()).unwrap();
    gz.finish().unwrap();
    let r = e
        .ingest(Kind::Events, &[path], &IngestOptions::default())
        .await
        .unwrap();
    assert_eq!(r.rows_loaded, 5);
    assert_eq!(
        count(&e, "SELECT count(DISTINCT user_id) FROM events").await,
        4
    );
    let pq = db.dir.path().join("x.parquet.gz");
    std::fs::copy(db.dir.path().join("events.csv.gz"), &pq).unwrap();
    let msg = e
        .ingest(Kind::Events, &[pq], &IngestOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("decompress"), "{msg}");
}

/// Run `segdb` with the test database's environment, not waiting.
fn spawn(db: &TestDb, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_segdb"))
        .args(args)
        .env("SEGDB_DATA", &db.data)
        .env("SEGDB_KEYRING", &db.keyring)
        .env_remove("SEGDB_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_processes_lose_no_update_and_apply_no_commit_twice() {
    let (db, e) = small().await;
    drop(e);
    // Four loads of known users' events at once, with readers querying the index meanwhile.
    let mut files = Vec::new();
    for i in 0..4 {
        let mut csv = String::from("user_id,event,ts\n");
        for (j, u) in ["alice", "bob", "carol", "dave"].iter().enumerate() {
            for k in 0..=(i + j) {
                csv.push_str(&format!(
                    "{u}@example.com,purchase,2026-01-{:02}T0{k}:00:00Z\n",
                    20 + i
                ));
            }
        }
        files.push(db.input(&format!("more{i}.csv"), &csv));
    }
    let mut children: Vec<_> = files
        .iter()
        .map(|f| spawn(&db, &["ingest", "events", f.to_str().unwrap()]))
        .collect();
    for _ in 0..2 {
        children.push(spawn(
            &db,
            &[
                "sql",
                "-c",
                "SET segdb.as_of = '2026-02-01T00:00:00Z'; SELECT count(*) FROM events",
            ],
        ));
    }
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let e = db.engine().await;
    let d = e.database();
    let index = d.load(segdb::storage::Table::EventIndex).await.unwrap();
    let persisted = segdb::index::store::load(d, &index).await.unwrap();
    let events = d.load(segdb::storage::Table::Events).await.unwrap();
    let fresh = segdb::index::catchup::rebuild(d, &events).await.unwrap();
    let caught = segdb::index::catchup::catch_up(d, &events, persisted)
        .await
        .unwrap();
    assert_eq!(caught.events_version, fresh.events_version);
    assert_eq!(caught.days, fresh.days, "index counts equal a rebuild");
    assert_eq!(count(&e, "SELECT count(*) FROM events").await, 5 + 64);

    // Two processes creating 20 segments each: all 40 exist.
    let mk = |p: &str| {
        (0..20)
            .map(|i| format!("CREATE SEGMENT {p}_{i} AS DID 'purchase';"))
            .collect::<String>()
    };
    let a = spawn(&db, &["sql", "-c", &mk("a")]);
    let b = spawn(&db, &["sql", "-c", &mk("b")]);
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(rows(&e, "SHOW SEGMENTS").await.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_racing_a_forget_never_brings_the_user_back() {
    let (db, e) = small().await;
    drop(e);
    let target = "eve.race@example.com";
    let mut csv = String::from("user_id,event,ts\n");
    for i in 0..20000 {
        let u = if i % 10 == 0 {
            target.to_string()
        } else {
            format!("u{}@example.com", i % 997)
        };
        csv.push_str(&format!("{u},view,2026-01-{:02}T10:00:00Z\n", 1 + i % 28));
    }
    let first = db.input(
        "first.csv",
        &format!("user_id,event,ts\n{target},view,2026-01-01T00:00:00Z\n"),
    );
    let o = db.cli(&["ingest", "events", first.to_str().unwrap()]);
    assert!(o.status.success());
    let big = db.input("big.csv", &csv);
    for delay_ms in [0u64, 150, 400] {
        let load = spawn(&db, &["ingest", "events", big.to_str().unwrap()]);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let o = db.cli(&["sql", "-c", &format!("FORGET USER '{target}'")]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        // The load either commits without the forgotten user's rows, or refuses to commit.
        let _ = load.wait_with_output().unwrap();
    }
    let o = db.cli(&["vacuum"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let p = expected_pseudonym(target);
    let found = files_containing(&db.data, &p);
    assert!(
        found.is_empty(),
        "the forgotten pseudonym is back in {found:?}"
    );
    let e = db.engine().await;
    assert_eq!(
        count(
            &e,
            &format!("SELECT count(*) FROM events WHERE user_id = '{p}'")
        )
        .await,
        0
    );
}
