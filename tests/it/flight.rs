//! The Flight SQL server end to end: `segdb serve` runs as a child process on a free loopback
//! port and is driven by arrow-flight's Rust client and, through tests/flight/clients.py, by the
//! ADBC Flight SQL driver and flightsql-dbapi (SQLAlchemy).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, ProstMessageExt, SqlInfo};
use futures::TryStreamExt;
use prost::Message;

use crate::common::{self, TestDb};

use crate::server::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_end_to_end() {
    let (db, _src, _) = common::loaded(200, 14, 11, 6.0).await;
    let e = db.engine().await;
    let events = common::count(&e, "SELECT count(*) FROM events").await;
    let purchases = common::count(&e, "SELECT count(*) FROM events WHERE event = 'purchase'").await;
    drop(e);
    let config = users(&db);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains(ADMIN_PW) && text.contains("$argon2id$"));
    let server = Server::start(&db, &config, &[]);
    let addr = server.addr.clone();

    // Handshake returns the token in the payload and in the authorization header.
    let mut admin = client(&addr).await;
    let token = admin.handshake("admin", ADMIN_PW).await.unwrap();
    assert!(!token.is_empty());
    let token = String::from_utf8(token.to_vec()).unwrap();
    assert_eq!(admin.token(), Some(&token), "header token = payload token");

    // Queries: counts equal the library's, streams carry the FlightInfo schema.
    assert_eq!(
        first_i64(&query(&mut admin, "SELECT count(*) FROM events").await),
        events
    );
    let all = query(&mut admin, "SELECT * FROM events").await;
    assert_eq!(rows(&all) as i64, events);
    // Strings travel as plain Utf8 (not views sharing whole Parquet pages with every batch).
    let user_id = all[0].schema().field_with_name("user_id").unwrap().clone();
    assert_eq!(user_id.data_type(), &DataType::Utf8);
    let shown = query(&mut admin, "SHOW TABLES").await;
    assert!(rows(&shown) >= 4);

    // Segment statements as updates and as queries; segment functions.
    let n = admin
        .execute_update("CREATE SEGMENT rs_buyers AS DID 'purchase'".into(), None)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let size = first_i64(&query(&mut admin, "SELECT segment_size('rs_buyers')").await);
    let buyers = first_i64(
        &query(
            &mut admin,
            "SELECT count(DISTINCT user_id) FROM events WHERE event = 'purchase'",
        )
        .await,
    );
    assert_eq!(size, buyers);
    let segs = query(&mut admin, "SHOW SEGMENTS").await;
    assert_eq!(rows(&segs), 1);
    // Segments are browsable tables of members.
    let members = first_i64(&query(&mut admin, "SELECT count(*) FROM segments.rs_buyers").await);
    assert_eq!(members, size);
    let listed = meta!(admin.get_tables(CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: None,
        table_name_filter_pattern: None,
        table_types: vec!["SEGMENT".into()],
        include_schema: true,
    }));
    assert_eq!(rows(&listed), 1);

    // Prepared statement with a parameter.
    let mut p = admin
        .prepare("SELECT count(*) FROM events WHERE event = $1".into(), None)
        .await
        .unwrap();
    assert_eq!(p.parameter_schema().unwrap().fields().len(), 1);
    assert_eq!(p.dataset_schema().unwrap().fields().len(), 1);
    let param = RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)])),
        vec![std::sync::Arc::new(StringArray::from(vec!["purchase"]))],
    )
    .unwrap();
    p.set_parameters(param).unwrap();
    let info = p.execute().await.unwrap();
    assert_eq!(first_i64(&fetch(&mut admin, info).await), purchases);
    p.close().await.unwrap();

    // Metadata.
    let cats = meta!(admin.get_catalogs());
    let names: Vec<String> = cats[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["segdb"]);
    let schemas = meta!(admin.get_db_schemas(CommandGetDbSchemas {
        catalog: None,
        db_schema_filter_pattern: Some("pub%".into()),
    }));
    assert_eq!(rows(&schemas), 1);
    let tables = meta!(admin.get_tables(CommandGetTables {
        catalog: Some("segdb".into()),
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: Some("ev%".into()),
        table_types: vec![],
        include_schema: true,
    }));
    assert_eq!(rows(&tables), 1);
    let ipc = tables[0].column_by_name("table_schema").unwrap();
    let ipc = ipc.as_binary::<i32>().value(0);
    let decoded = arrow::ipc::convert::try_schema_from_ipc_buffer(ipc).unwrap();
    assert!(decoded.field_with_name("user_id").is_ok() && decoded.field_with_name("ts").is_ok());
    assert_eq!(
        decoded.field_with_name("user_id").unwrap().data_type(),
        &DataType::Utf8,
        "listed types = the types results arrive with"
    );
    let types = meta!(admin.get_table_types());
    assert!(rows(&types) >= 2);
    let info = meta!(admin.get_sql_info(vec![
        SqlInfo::FlightSqlServerName,
        SqlInfo::FlightSqlServerReadOnly
    ]));
    assert_eq!(rows(&info), 2);
    let xdbc = meta!(
        admin.get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
    );
    assert!(rows(&xdbc) >= 8);

    // Status codes.
    assert_eq!(
        handshake_status(&addr, "admin", "nope").await.code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        status_of(&addr, None, "SELECT 1").await.code(),
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        status_of(&addr, Some("forged-token"), "SELECT 1")
            .await
            .code(),
        tonic::Code::Unauthenticated
    );
    let mut reader = login(&addr, "reader", READER_PW).await;
    let reader_token = reader.token().unwrap().clone();
    assert_eq!(
        first_i64(&query(&mut reader, "SELECT count(*) FROM events").await),
        events
    );
    for sql in [
        "FORGET USER 'x@example.com'",
        "CREATE SEGMENT r AS DID 'purchase'",
        "VACUUM",
        "CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '/tmp'",
    ] {
        let s = status_of(&addr, Some(&reader_token), sql).await;
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{sql}: {s}");
    }
    let s = status_of(&addr, Some(&token), "SELEC count(*) FROM events").await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("SELEC"), "{}", s.message());
    // Writing into a base table would skip pseudonymisation: refused even for an admin.
    let s = status_of(
        &addr,
        Some(&token),
        "INSERT INTO events (user_id, event, ts) VALUES ('raw@example.com', 'x', now())",
    )
    .await;
    assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s}");

    // A query that fails while streaming ends the stream with an error status.
    let info = admin
        .execute("SELECT CAST(event AS INT) FROM events".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let streamed: Result<Vec<RecordBatch>, _> =
        admin.do_get(ticket).await.unwrap().try_collect().await;
    assert!(streamed.is_err(), "a failed cast must surface as an error");

    // CancelQuery before the fetch: the parked result is dropped, the ticket no longer works.
    let info = admin
        .execute("SELECT * FROM events".into(), None)
        .await
        .unwrap();
    let cancel = arrow_flight::sql::ActionCancelQueryRequest {
        info: info.encode_to_vec().into(),
    };
    let mut raw = admin.inner().clone();
    let mut req = tonic::Request::new(arrow_flight::Action {
        r#type: "CancelQuery".into(),
        body: cancel.as_any().encode_to_vec().into(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let results: Vec<arrow_flight::Result> = raw
        .do_action(req)
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let any = arrow_flight::sql::Any::decode(results[0].body.clone()).unwrap();
    let r: arrow_flight::sql::ActionCancelQueryResult = any.unpack().unwrap().unwrap();
    assert_eq!(r.result, 1, "CANCEL_RESULT_CANCELLED");
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    assert!(
        admin.do_get(ticket).await.is_err(),
        "a cancelled ticket is gone"
    );

    // Real clients: ADBC and flightsql-dbapi.
    let canary = "canary.flight.9e1b@example.com";
    if let Some(py) = crate::segments::python() {
        let out = Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/flight/clients.py"))
            .args([&addr, ADMIN_PW, ANALYST_PW, READER_PW, canary])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python clients failed:\n{}\n{}",
            common::stdout(&out),
            common::stderr(&out)
        );
        let summary: serde_json::Value =
            serde_json::from_str(common::stdout(&out).lines().last().unwrap()).unwrap();
        assert_eq!(summary["events"].as_i64().unwrap(), events);
        assert_eq!(summary["purchases"].as_i64().unwrap(), purchases);
        assert_eq!(summary["ingested"].as_i64().unwrap(), 3);
        eprintln!("python clients: {summary}");
        // The ingested raw id was pseudonymised at the door: no byte of it under the data dir.
        assert!(
            common::files_containing(&db.data, canary).is_empty(),
            "raw id stored"
        );
        let email = canary.replace('@', ".mail@");
        assert!(
            common::files_containing(&db.data, &email).is_empty(),
            "raw e-mail stored"
        );
    }

    let log = server.stop();
    let email = canary.replace('@', ".mail@");
    for secret in [canary, email.as_str(), ADMIN_PW, READER_PW, token.as_str()] {
        assert!(!log.contains(secret), "log leaks {secret}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("call user=admin call=\"do_get\" kind=\"query\" rows=")),
        "{log}"
    );
    // Metadata calls are logged too (one line per call).
    for call in ["do_get_tables", "do_get_schemas", "do_get_sql_info"] {
        assert!(
            log.contains(&format!("call=\"{call}\"")),
            "no log line for {call}"
        );
    }
    assert!(log.contains("took_ms="), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in a log file");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_concurrent_clients() {
    let (db, _src, _) = common::loaded(150, 10, 5, 5.0).await;
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let addr = server.addr.clone();
    let mut admin = login(&addr, "admin", ADMIN_PW).await;
    admin
        .execute_update("CREATE SEGMENT c_buyers AS DID 'purchase'".into(), None)
        .await
        .unwrap();
    let queries = [
        "SELECT count(*) FROM events",
        "SELECT count(*) FROM events WHERE event = 'purchase'",
        "SELECT segment_size('c_buyers')",
        "SELECT count(*) FROM (SELECT event, count(*) FROM events GROUP BY event)",
        "SELECT count(*) FROM (SELECT * FROM profiles LIMIT 50)",
    ];
    let mut expected = Vec::new();
    for q in queries {
        expected.push(first_i64(&query(&mut admin, q).await));
    }
    let clients: usize = std::env::var("SEGDB_FLIGHT_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let per_client: usize = std::env::var("SEGDB_FLIGHT_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let round = |n: usize| {
        let addr = addr.clone();
        let expected = expected.clone();
        async move {
            let mut tasks = Vec::new();
            for c in 0..clients {
                let addr = addr.clone();
                let expected = expected.clone();
                tasks.push(tokio::spawn(async move {
                    let mut cl = login(&addr, "reader", READER_PW).await;
                    for i in 0..n {
                        let k = (c + i) % (queries.len() + 1);
                        if k == queries.len() {
                            // Metadata call in the mix.
                            let t = cl
                                .get_tables(CommandGetTables {
                                    catalog: None,
                                    db_schema_filter_pattern: Some("public".into()),
                                    table_name_filter_pattern: None,
                                    table_types: vec![],
                                    include_schema: false,
                                })
                                .await
                                .unwrap();
                            assert!(rows(&fetch(&mut cl, t).await) >= 4);
                        } else {
                            assert_eq!(first_i64(&query(&mut cl, queries[k]).await), expected[k]);
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.expect("a client failed");
            }
        }
    };
    // Rounds of fresh logins. The first round warms caches and allocator arenas; after it a round
    // may add only its 32 new sessions (~60 kB each, kept for the token's lifetime). Each
    // argon2 check once left ~20 MB with the allocator, which grew the server 60-100 MB a round.
    let rounds: usize = std::env::var("SEGDB_FLIGHT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut rss = vec![server.status_kb("VmRSS:")];
    let started = Instant::now();
    for r in 0..rounds {
        round(per_client / rounds + usize::from(r < per_client % rounds)).await;
        rss.push(server.status_kb("VmRSS:"));
    }
    let took = started.elapsed();
    let peak = server.status_kb("VmHWM:");
    eprintln!(
        "{clients} clients x {per_client} queries in {:.1} s ({:.0} q/s); server RSS before and after each round (MB): {:?}, peak {} MB",
        took.as_secs_f64(),
        (clients * per_client) as f64 / took.as_secs_f64(),
        rss.iter().map(|k| k / 1024).collect::<Vec<_>>(),
        peak / 1024
    );
    for r in 2..rss.len() {
        let grew = rss[r].saturating_sub(rss[r - 1]);
        assert!(
            grew <= 16 * 1024,
            "RSS grew by {grew} kB in round {r} after the first: {rss:?}"
        );
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_without_users_needs_the_insecure_flag() {
    let db = TestDb::new();
    assert!(db.cli(&["init"]).status.success());
    let config = db.dir.path().join("none.toml");
    let out = db.cli(&[
        "serve",
        "--flight",
        "127.0.0.1:0",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("segdb user add"),
        "{}",
        common::stderr(&out)
    );

    let server = Server::start(&db, &config, &["--insecure-no-auth"]);
    let mut c = client(&server.addr).await;
    assert_eq!(first_i64(&query(&mut c, "SELECT 40 + 2").await), 42);
    let log = server.stop();
    assert!(
        log.contains("WARNING") && log.contains("insecure-no-auth"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_over_tls() {
    let db = TestDb::new();
    let dir = db.dir.path();
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    // A throwaway CA and a localhost certificate it signs.
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let d = |f: &str| dir.join(f).to_str().unwrap().to_string();
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=segdb test CA",
            "-keyout",
            &d("ca.key"),
            "-out",
            &d("ca.pem"),
        ],
        vec![
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &d("key.pem"),
            "-out",
            &d("leaf.csr"),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &d("leaf.csr"),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &d("leaf.ext"),
            "-out",
            &d("cert.pem"),
        ],
    ] {
        let out = Command::new("openssl").args(&args).output().unwrap();
        assert!(out.status.success(), "{}", common::stderr(&out));
    }
    let config = dir.join("segdb.toml");
    add_user(&config, "admin", "admin", ADMIN_PW);
    let server = Server::start(
        &db,
        &config,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    // The HTTP listener serves TLS with the same certificate.
    let http = server.http.clone().unwrap();
    assert!(http.starts_with("https://"), "{http}");
    let http_port = http.rsplit(':').next().unwrap();
    let web = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .resolve(
            "localhost",
            format!("127.0.0.1:{http_port}").parse().unwrap(),
        )
        .build()
        .unwrap();
    let ok = web
        .get(format!("https://localhost:{http_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let denied = web
        .post(format!("https://localhost:{http_port}/v1/track"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    assert!(
        reqwest::get(format!("http://127.0.0.1:{http_port}/healthz"))
            .await
            .is_err(),
        "plain HTTP is not served on the TLS listener"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&ca).unwrap(),
        ))
        .domain_name("localhost");
    let ch = tonic::transport::Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightSqlServiceClient::new(ch);
    c.handshake("admin", ADMIN_PW).await.unwrap();
    assert_eq!(first_i64(&query(&mut c, "SELECT 7 * 6").await), 42);
    // A plaintext client cannot talk to it.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let mut pc = FlightSqlServiceClient::new(ch);
        assert!(pc.handshake("admin", ADMIN_PW).await.is_err());
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_sigterm_lets_running_streams_finish() {
    let (db, _src, _) = common::loaded(300, 10, 21, 8.0).await;
    let e = db.engine().await;
    let events = common::count(&e, "SELECT count(*) FROM events").await;
    drop(e);
    let config = users(&db);
    let server = Server::start(&db, &config, &[]);
    let mut c = login(&server.addr, "admin", ADMIN_PW).await;
    let info = c
        .execute("SELECT * FROM events ORDER BY ts".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut stream = c.do_get(ticket).await.unwrap();
    let first = stream.try_next().await.unwrap().expect("a first batch");
    // SIGTERM while the result is being streamed: the stream still ends complete and clean.
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<RecordBatch> = stream.try_collect().await.unwrap();
    assert_eq!((first.num_rows() + rows(&rest)) as i64, events);
    let log = server.stop();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
}
