//! Hardening: no single statement takes the server down, time is bounded, readers keep to their
//! session, SQL never reaches the keyring or the database's own files, export targets are
//! checked before anything is created, a trait definition that does not plan is never stored,
//! and logins neither leak user names through timing nor allow unbounded guessing.

use std::time::{Duration, Instant};

use crate::common::{self, TestDb};
use crate::server::*;

/// Every shape of deep or long input that once overflowed a stack or planned for minutes:
/// (what, statement, whether a reader is refused by role before its depth is known).
fn hostile_statements() -> Vec<(&'static str, String, bool)> {
    let sum = vec!["1"; 5_000].join(" + ");
    let or_chain: Vec<String> = (0..20_000).map(|i| format!("event = 'e{i}'")).collect();
    let nots = "NOT ".repeat(5_000);
    let parens = format!("{}ALL USERS{}", "(".repeat(50_000), ")".repeat(50_000));
    let cast = format!(
        "SELECT {}1{}",
        "CAST(".repeat(3_000),
        " AS BIGINT)".repeat(3_000)
    );
    let postfix = format!("SELECT 1{}", "::BIGINT".repeat(3_000));
    let seg_or = vec!["DID 'purchase'"; 20_000].join(" OR ");
    let sql_parens = format!("SELECT {}1{}", "(".repeat(50_000), ")".repeat(50_000));
    let profile_or: Vec<String> = (0..20_000).map(|i| format!("country = 'c{i}'")).collect();
    let unions = vec!["SELECT 1"; 20_000].join(" UNION ALL ");
    let huge_sum = vec!["1"; 900_000].join("+");
    let within = format!(
        "CREATE SEGMENT d AS LOOKALIKE OF x WITHIN {}ALL USERS{} SIZE 5",
        "(".repeat(50_000),
        ")".repeat(50_000)
    );
    let interest_or = vec!["INTERESTED IN 'Sports'"; 20_000].join(" OR ");
    vec![
        ("50,000 parentheses in a look-alike's WITHIN", within, false),
        (
            "20,000-leaf OR of INTERESTED IN",
            format!("CREATE SEGMENT d AS {interest_or}"),
            false,
        ),
        ("5,000-term sum", format!("SELECT {sum}"), false),
        ("900,000-term sum", format!("SELECT {huge_sum}"), false),
        (
            "20,000-term OR in a WHERE",
            format!(
                "SELECT count(*) FROM events WHERE {}",
                or_chain.join(" OR ")
            ),
            false,
        ),
        (
            "5,000 NOTs",
            format!("CREATE SEGMENT d AS {nots}ALL USERS"),
            false,
        ),
        (
            "50,000 parentheses in a segment",
            format!("CREATE SEGMENT d AS {parens}"),
            false,
        ),
        ("3,000-deep CAST", cast, false),
        ("3,000 postfix casts", postfix, false),
        (
            "a typo inside 30 nested CASTs",
            format!(
                "SELECT {}1 +{}",
                "CAST(".repeat(30),
                " AS BIGINT)".repeat(30)
            ),
            false,
        ),
        (
            "60 nested SUBSTRINGs",
            format!(
                "SELECT {}'abc'{}",
                "SUBSTRING(".repeat(60),
                " FROM 1)".repeat(60)
            ),
            false,
        ),
        (
            "20,000-leaf segment OR",
            format!("CREATE SEGMENT d AS {seg_or}"),
            false,
        ),
        ("50,000 parentheses in SQL", sql_parens, false),
        ("20,000 UNION ALLs", unions, false),
        (
            "20,000-term OR inside a PROFILE leaf",
            format!("CREATE SEGMENT p AS PROFILE {}", profile_or.join(" OR ")),
            true,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_single_statement_crashes_the_server() {
    let (db, _src, _) = common::loaded(50, 3, 5, 3.0).await;
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let addr = server.addr.clone();
    let mut reader = login(&addr, "reader", READER_PW).await;
    let reader_token = reader.token().unwrap().clone();
    let mut analyst = login(&addr, "analyst", ANALYST_PW).await;
    let analyst_token = analyst.token().unwrap().clone();
    for (what, sql, role_first) in hostile_statements() {
        for (token, is_reader) in [(&reader_token, true), (&analyst_token, false)] {
            let started = Instant::now();
            let status = status_of(&addr, Some(token), &sql).await;
            if is_reader && role_first {
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}");
            } else {
                assert_eq!(
                    status.code(),
                    tonic::Code::InvalidArgument,
                    "{what}: {}",
                    status.message()
                );
                let m = status.message().to_lowercase();
                assert!(
                    m.contains("too deeply nested")
                        || m.contains("nested too deeply")
                        || m.contains("too many conditions")
                        || m.contains("recursion limit"),
                    "{what}: {m}"
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what} took {:?}",
                started.elapsed()
            );
            // The server is still there for everyone.
            assert_eq!(first_i64(&query(&mut analyst, "SELECT 41 + 1").await), 42);
        }
    }
    // Just under the bounds, statements work.
    let sum = vec!["1"; 500].join(" + ");
    assert_eq!(
        first_i64(&query(&mut reader, &format!("SELECT {sum}")).await),
        500
    );
    let seg = vec!["DID 'purchase'"; 200].join(" OR ");
    query(
        &mut analyst,
        &format!("CREATE SEGMENT wide AS {}({seg})", "NOT NOT ".repeat(50)),
    )
    .await;
    let log = server.stop();
    assert!(!log.contains("overflow"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_and_only_admins_raise_it() {
    let (db, _src, _) = common::loaded(30, 2, 6, 2.0).await;
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let addr = server.addr.clone();
    let mut reader = login(&addr, "reader", READER_PW).await;
    let token = reader.token().unwrap().clone();
    let shown = query(&mut reader, "SHOW segdb.statement_timeout").await;
    let text = arrow::util::pretty::pretty_format_batches(&shown)
        .unwrap()
        .to_string();
    assert!(text.contains("5m"), "{text}");
    // A reader may lower it but not raise or lift it.
    for sql in [
        "SET segdb.statement_timeout = '1 hour'",
        "SET segdb.statement_timeout = 0",
    ] {
        let s = status_of(&addr, Some(&token), sql).await;
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{sql}: {s}");
    }
    query(&mut reader, "SET segdb.statement_timeout = '300ms'").await;
    let slow = "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 1000) b WHERE a.value + b.value < 0";
    let started = Instant::now();
    let info = reader.execute(slow.to_string(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let err = match reader.do_get(ticket).await {
        Err(e) => e.to_string(),
        Ok(stream) => {
            use futures::TryStreamExt;
            stream
                .try_collect::<Vec<_>>()
                .await
                .expect_err("the query must be cancelled")
                .to_string()
        }
    };
    assert!(err.contains("statement_timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Lowering again, and going back to the default, are allowed.
    query(&mut reader, "SET segdb.statement_timeout = '100ms'").await;
    query(&mut reader, "RESET segdb.statement_timeout").await;
    // An admin may lift it.
    let mut admin = login(&addr, "admin", ADMIN_PW).await;
    query(&mut admin, "SET segdb.statement_timeout = 0").await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_may_not_change_runtime_or_path_settings() {
    let db = TestDb::with_one_event();
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let addr = server.addr.clone();
    let mut reader = login(&addr, "reader", READER_PW).await;
    let token = reader.token().unwrap().clone();
    let spill = db.dir.path().join("reader-spill");
    for sql in [
        format!(
            "SET datafusion.runtime.temp_directory = '{}'",
            spill.display()
        ),
        "SET datafusion.runtime.memory_limit = '64G'".to_string(),
        "SET datafusion.catalog.location = '/etc'".to_string(),
        "RESET datafusion.runtime.temp_directory".to_string(),
    ] {
        let s = status_of(&addr, Some(&token), &sql).await;
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{sql}: {s}");
    }
    assert!(!spill.exists(), "a refused SET created its directory");
    // What readers may set still works.
    query(&mut reader, "SET datafusion.execution.batch_size = 1024").await;
    query(&mut reader, "SET segdb.as_of = '2026-01-02T00:00:00Z'").await;
    // Nobody raises the parser's recursion limit past what the stack holds.
    let mut admin = login(&addr, "admin", ADMIN_PW).await;
    let admin_token = admin.token().unwrap().clone();
    let s = status_of(
        &addr,
        Some(&admin_token),
        "SET datafusion.sql_parser.recursion_limit = 1000000",
    )
    .await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s}");
    query(
        &mut admin,
        "SET datafusion.sql_parser.recursion_limit = 100",
    )
    .await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_path_reaches_the_keyring_or_the_database_files() {
    let db = TestDb::with_one_event();
    let e = db.engine().await;
    let key = db.keyring.canonicalize().unwrap();
    let dir = key.parent().unwrap().display().to_string();
    let data = db.data.canonicalize().unwrap();
    let d = data.display();
    let name = key.file_name().unwrap().to_str().unwrap().to_string();
    let escaped = name.replace('.', "%2E");
    let spellings = [
        format!("{dir}/no_such/../{name}"),
        format!("file:{}", key.display()),
        format!("file://{dir}/{escaped}"),
        format!("FILE://{}", key.display()),
        format!("{dir}/./{name}"),
    ];
    for (i, loc) in spellings.iter().enumerate() {
        let err = e
            .sql(&format!(
                "CREATE EXTERNAL TABLE k{i} (line VARCHAR) STORED AS CSV LOCATION '{loc}'"
            ))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("keyring"), "{loc}: {err}");
        let err = e
            .sql(&format!("COPY (SELECT 1 AS x) TO '{loc}' STORED AS CSV"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("keyring"), "{loc}: {err}");
    }
    // The database's own files: no forged log entry, no reading around erasure.
    for loc in [
        format!("{d}/events/_delta_log/00000000000000000099.json"),
        format!("{d}/events/"),
        format!("file://{d}/x/../events/_delta_log/forged.json"),
    ] {
        let err = e
            .sql(&format!("COPY (SELECT 1 AS x) TO '{loc}' STORED AS JSON"))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("database's own files"),
            "{loc}: {err}"
        );
    }
    assert!(
        common::all_files(&data)
            .iter()
            .all(|p| !p.ends_with("00000000000000000099.json"))
    );
    let err = e
        .sql(&format!(
            "CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '{d}/events/'"
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("database's own files"), "{err}");
    // Elsewhere, COPY still works.
    let out = db.dir.path().join("out.csv");
    e.sql(&format!(
        "COPY (SELECT 1 AS x) TO '{}' STORED AS CSV",
        out.display()
    ))
    .await
    .unwrap();
    assert!(out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trait_that_does_not_plan_is_never_stored() {
    let db = TestDb::new();
    db.ingest_cli(
        "events",
        &db.input(
            "e.csv",
            "user_id,event,ts,price\nu1,purchase,2026-01-01T00:00:00Z,5\n",
        ),
    );
    let e = db.engine().await;
    e.sql("CREATE TRAIT spend AS SUM(price) OF EVENT 'purchase'")
        .await
        .unwrap();
    for bad in [
        "CREATE TRAIT broken AS COUNT OF EVENT 'purchase' WHERE (SELECT x FROM (COPY t TO '/tmp/x'))",
        "CREATE TRAIT broken AS COUNT OF EVENT 'purchase' WHERE no_such_column > 1",
        "CREATE TRAIT broken AS COUNT DISTINCT(no_such_column) OF EVENT 'purchase'",
    ] {
        assert!(e.sql(bad).await.is_err(), "{bad}");
    }
    let traits = common::rows(&e, "SELECT * FROM traits").await;
    assert_eq!(traits.len(), 1, "{traits:?}");
    let shown = common::rows(&e, "SHOW TRAITS").await;
    assert_eq!(shown.len(), 1, "{shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_cost_the_same_for_unknown_users_and_guessing_backs_off() {
    let db = TestDb::with_one_event();
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let addr = server.addr.clone();
    // Interleaved, so that drift on a shared machine hits both alike; each name stays under
    // the free failures.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..8 {
        let t = Instant::now();
        handshake_status(&addr, "reader", &format!("wrong-{i}")).await;
        known.push(t.elapsed());
        let t = Instant::now();
        handshake_status(&addr, &format!("nobody-{i}"), "wrong").await;
        unknown.push(t.elapsed());
    }
    known.sort();
    unknown.sort();
    // Three more failures for "reader": past the free ones.
    for i in 0..3 {
        handshake_status(&addr, "reader", &format!("more-{i}")).await;
    }
    let ratio = known[4].as_secs_f64() / unknown[4].as_secs_f64();
    assert!(
        (0.6..1.6).contains(&ratio),
        "a wrong password for a known user takes {ratio:.2}x the time of an unknown user ({known:?} vs {unknown:?})"
    );
    // Guessing one user's password: after the free failures, even the right password waits.
    for i in 0..4 {
        handshake_status(&addr, "analyst", &format!("guess-{i}")).await;
    }
    let s = handshake_status(&addr, "reader", READER_PW).await;
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    assert!(s.message().contains("too many failed logins"), "{s}");
    // An unknown name is throttled alike (the refusal says nothing about which names exist).
    for i in 0..12 {
        handshake_status(&addr, "nobody-x", &format!("g{i}")).await;
    }
    let s = handshake_status(&addr, "nobody-x", "g").await;
    assert!(s.message().contains("too many failed logins"), "{s}");
    // Other users from the same address are not slowed.
    let mut analyst = login(&addr, "analyst", ANALYST_PW).await;
    assert_eq!(first_i64(&query(&mut analyst, "SELECT 7").await), 7);
    server.stop();
}

#[test]
fn a_sealed_keyring_opens_only_with_its_variable() {
    let db = TestDb::with_one_event();
    let plain = std::fs::read_to_string(&db.keyring).unwrap();
    let before = db.cli(&["keys", "fingerprint"]);
    assert!(before.status.success(), "{}", common::stderr(&before));
    let pass = [("SEGDB_KEYRING_PASSPHRASE", "a long passphrase 81")];
    let o = db.cli_env(&["keys", "seal"], &pass);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let sealed = std::fs::read_to_string(&db.keyring).unwrap();
    // No key of the plain file is left in clear.
    let v: serde_json::Value = serde_json::from_str(&plain).unwrap();
    for (_, key) in v["keys"].as_object().unwrap() {
        assert!(!sealed.contains(key.as_str().unwrap()));
    }
    // Every command opens it with the variable, and only with it.
    let q = ["sql", "-c", "SELECT count(*) FROM events"];
    let o = db.cli_env(&q, &pass);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(
        common::stdout(&db.cli_env(&["keys", "fingerprint"], &pass)),
        common::stdout(&before)
    );
    for env in [
        vec![],
        vec![("SEGDB_KEYRING_PASSPHRASE", "wrong")],
        vec![(
            "SEGDB_KEYRING_KEK",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )],
    ] {
        let files_before = common::all_files(&db.data).len();
        let o = db.cli_env(
            &[
                "ingest",
                "events",
                db.input("f.csv", "user_id,event,ts\nu2,view,2026-01-01T00:00:00Z\n")
                    .to_str()
                    .unwrap(),
            ],
            &env,
        );
        assert_eq!(o.status.code(), Some(1), "{env:?}");
        let err = common::stderr(&o);
        assert!(err.contains("SEGDB_KEYRING_PASSPHRASE"), "{env:?}: {err}");
        assert_eq!(
            common::all_files(&db.data).len(),
            files_before,
            "something was written"
        );
    }
    let o = db.cli_env(&["keys", "unseal"], &pass);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let o = db.cli(&q);
    assert!(o.status.success(), "{}", common::stderr(&o));
}

/// CPU seconds the process has used so far (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A statement whose client goes away is cancelled: the server stops spending CPU on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_is_cancelled_when_its_client_goes_away() {
    let db = TestDb::with_one_event();
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let addr = server.addr.clone();
    let pid = server.child.id();
    {
        let mut reader = login(&addr, "reader", READER_PW).await;
        let slow = "SELECT count(*) FROM generate_series(1, 1000000000) a, generate_series(1, 1000) b WHERE a.value + b.value < 0";
        let info = reader.execute(slow.to_string(), None).await.unwrap();
        let ticket = info.endpoint[0].ticket.clone().unwrap();
        let stream = reader.do_get(ticket).await.unwrap();
        // The query is running: the server is busy.
        let before = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            cpu_seconds(pid) - before > 0.5,
            "the query did not run: the check below would prove nothing"
        );
        drop(stream);
        drop(reader);
    }
    // Gone: within a moment the server is idle again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.5,
        "the server used {used:.2} CPU seconds after its client left"
    );
    server.stop();
}
