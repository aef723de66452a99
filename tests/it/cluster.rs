//! Scale-out on Ballista: a scheduler and two executors on 127.0.0.1 (in this process, and once
//! as the real `segdb scheduler` / `segdb executor` binaries) give the same rows, with the same
//! types, as the embedded engine — for every query of sql/examples and for joins, shuffling
//! GROUP BYs, bitmaps built per group, pseudonymize over a column, tcf_* over consent and reads
//! after a FORGET. Each query is checked to have really been sent to the cluster.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use segdb::Engine;
use segdb::cli::demo::EXAMPLES;
use segdb::privacy::Keyring;
use segdb::statement::split as split_statements;
use segdb::storage::{Database, Location};

use crate::common::*;

/// The cluster secret every node and client of these tests shares.
const SECRET: &str = "test-cluster-secret-6f1e2a";

fn secret() -> segdb::cluster::auth::ClusterSecret {
    segdb::cluster::auth::ClusterSecret::new(SECRET).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scheduler and `n` executors of `db`, in this process.
struct InProcess {
    addr: String,
    work_dirs: Vec<tempfile::TempDir>,
}

async fn start_in_process(db: &TestDb, n: usize) -> InProcess {
    segdb::storage::register_handlers();
    let ring = Arc::new(Keyring::open(&db.keyring).unwrap());
    let handle = Database::open(Location::parse(db.data.to_str().unwrap()).unwrap(), &ring)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(segdb::cluster::node::run_scheduler(
        handle.clone(),
        ring.clone(),
        listener,
        2,
        secret(),
    ));
    let mut work_dirs = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let o = segdb::cluster::node::ExecutorOptions {
            scheduler_host: "127.0.0.1".into(),
            scheduler_port: addr.port(),
            bind_host: "127.0.0.1".into(),
            port: free_port(),
            grpc_port: free_port(),
            vcores: 2,
            work_dir: dir.path().to_path_buf(),
            memory_pool_size: Some(1 << 30),
            secret: secret(),
        };
        let (h, r) = (handle.clone(), ring.clone());
        tokio::spawn(async move { segdb::cluster::node::run_executor(h, r, o).await });
        work_dirs.push(dir);
    }
    InProcess {
        addr: format!("df://{addr}"),
        work_dirs,
    }
}

/// Rows (sorted) and column types of a result.
fn shape(r: &segdb::QueryResult) -> (Vec<String>, Vec<String>) {
    let mut rows = render_rows(r, |c| c.unwrap_or("∅").to_string(), "|");
    rows.sort();
    let types = r
        .schema
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    (rows, types)
}

/// Run `sql` embedded and on the cluster; they must agree, and the cluster engine must have
/// sent it to the cluster when `remote` says so.
async fn same(embedded: &Engine, cluster: &Engine, sql: &str, remote: bool) -> usize {
    let want = embedded
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("embedded: {sql}\n{e}"));
    let before = cluster.cluster_jobs();
    let got = cluster
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("cluster: {sql}\n{e}"));
    let sent = cluster.cluster_jobs() - before;
    if remote {
        assert!(sent > 0, "not sent to the cluster: {sql}");
    }
    let (w, g) = (shape(&want), shape(&got));
    assert_eq!(w.1, g.1, "column types differ: {sql}");
    assert_eq!(w.0, g.0, "rows differ: {sql}");
    w.0.len()
}

fn is_query(stmt: &str) -> bool {
    let head: String = stmt
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ");
    let h = head.trim_start().to_ascii_uppercase();
    h.starts_with("SELECT") || h.starts_with("WITH")
}

/// Job directories left in executor work dirs, and any file left in their spill directories
/// (`datafusion-*`, one per cached task runtime, empty between spills).
fn job_dirs(dirs: &[tempfile::TempDir]) -> Vec<std::path::PathBuf> {
    let mut left = Vec::new();
    for d in dirs {
        for e in std::fs::read_dir(d.path()).unwrap() {
            let p = e.unwrap().path();
            let spill = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("datafusion-"));
            if spill {
                left.extend(all_files(&p));
            } else {
                left.push(p);
            }
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_answers_equal_embedded() {
    let (db, _, _) = loaded_ending(2000, 30, 7, 15.0, chrono::Utc::now().date_naive()).await;
    let cluster = start_in_process(&db, 2).await;
    let embedded = db.engine().await;
    let remote = db
        .engine()
        .await
        .with_cluster_secret(&cluster.addr, secret())
        .unwrap();

    // Every query of the examples (their segment DDL runs once, embedded; SET in both).
    let mut on_cluster = 0;
    for (name, script) in EXAMPLES {
        for stmt in split_statements(script) {
            if is_query(&stmt) {
                let reads_tables = [
                    "FROM events",
                    "FROM profiles",
                    "FROM consent",
                    "JOIN profiles",
                ]
                .iter()
                .any(|t| stmt.contains(t));
                let probes = ["in_segment", "has_consent", "identity_of", "segment_"]
                    .iter()
                    .any(|f| stmt.contains(f));
                let remote_expected = reads_tables && !probes;
                same(&embedded, &remote, &stmt, remote_expected).await;
                if remote_expected {
                    on_cluster += 1;
                }
            } else {
                embedded
                    .sql(&stmt)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {stmt}\n{e}"));
                if stmt.trim_start().to_ascii_uppercase().starts_with("SET") {
                    remote.sql(&stmt).await.unwrap();
                }
            }
        }
    }
    assert!(
        on_cluster >= 6,
        "only {on_cluster} example queries ran on the cluster"
    );

    let queries = [
        // Joins and GROUP BYs that shuffle (many groups).
        "SELECT p.country, p.device, count(*) AS n, count(DISTINCT e.uid) AS users, round(sum(e.price), 2) AS revenue \
         FROM events e JOIN profiles p ON e.uid = p.uid GROUP BY p.country, p.device",
        "SELECT uid, count(*) AS n, min(ts) AS first, max(ts) AS last FROM events GROUP BY uid",
        "SELECT e.event, count(*) FROM events e LEFT JOIN consent c ON e.uid = c.uid AND c.granted GROUP BY e.event",
        "SELECT count(*) FROM events WHERE uid IN (SELECT uid FROM profiles WHERE country = 'DE')",
        "SELECT event, count(*) AS n FROM events GROUP BY event HAVING count(*) > (SELECT count(*) / 100 FROM events)",
        // Bitmaps built per group on the executors: the same bytes.
        "SELECT event, rb_build_agg(uid) AS users, rb_cardinality(rb_build_agg(uid)) AS n FROM events GROUP BY event",
        "SELECT rb_cardinality(rb_and(a.b, b.b)) FROM \
         (SELECT rb_build_agg(uid) AS b FROM events WHERE event = 'purchase') a, \
         (SELECT rb_build_agg(uid) AS b FROM profiles WHERE country = 'DE') b",
        // pseudonymize over a column: the executors' keyring.
        "SELECT pseudonymize(country) AS k, count(*) FROM profiles GROUP BY 1",
        "SELECT count(*) FROM profiles WHERE user_id = pseudonymize('greta.nguyen.0@example.com')",
        // tcf_* over the consent table.
        "SELECT tcf_purpose_consent(tc_string, 1) AS p1, tcf_vendor_consent(tc_string, 755) AS v, count(*) \
         FROM consent WHERE tc_string IS NOT NULL GROUP BY 1, 2",
        "SELECT purpose, granted, count(*) FROM consent GROUP BY purpose, granted",
        // Window functions and ORDER BY with LIMIT.
        "SELECT uid, event, ts, row_number() OVER (PARTITION BY uid ORDER BY ts, event) AS k FROM events \
         WHERE uid < 50",
        "SELECT user_id, country FROM profiles ORDER BY user_id LIMIT 7",
    ];
    for q in queries {
        same(&embedded, &remote, q, true).await;
    }
    // A segment read joined with a base table: the segment is evaluated here and shipped.
    same(
        &embedded,
        &remote,
        "SELECT s.user_id, count(*) FROM segments.app_heavy s JOIN profiles p ON p.user_id = s.user_id \
         JOIN events e ON e.uid = p.uid GROUP BY s.user_id",
        true,
    )
    .await;
    // Probes over evaluated members run here (their member sets are not shipped), correctly.
    same(
        &embedded,
        &remote,
        "SELECT count(*) FROM profiles WHERE in_segment('app_heavy', user_id)",
        false,
    )
    .await;

    // Once with adaptive planning off.
    remote
        .sql("SET ballista.planner.adaptive.enabled = false")
        .await
        .unwrap();
    for q in &queries[..3] {
        same(&embedded, &remote, q, true).await;
    }
    remote
        .sql("SET ballista.planner.adaptive.enabled = true")
        .await
        .unwrap();

    // After a FORGET: the executors apply the new suppression list exactly as embedded.
    let victim = rows(
        &embedded,
        "SELECT user_id FROM profiles ORDER BY user_id LIMIT 1",
    )
    .await[0]
        .clone();
    let before = count(&embedded, "SELECT count(*) FROM events").await;
    let theirs = count(
        &embedded,
        &format!("SELECT count(*) FROM events WHERE user_id = '{victim}'"),
    )
    .await;
    assert!(theirs > 0);
    embedded
        .sql(&format!("FORGET USER '{victim}'"))
        .await
        .unwrap();
    for q in [
        "SELECT count(*) FROM events".to_string(),
        format!("SELECT count(*) FROM events WHERE user_id = '{victim}'"),
        format!("SELECT count(*) FROM profiles WHERE user_id = '{victim}'"),
        queries[0].to_string(),
    ] {
        same(&embedded, &remote, &q, true).await;
    }
    assert_eq!(
        count(&remote, "SELECT count(*) FROM events").await,
        before - theirs
    );
    assert_eq!(
        count(
            &remote,
            &format!("SELECT count(*) FROM events WHERE user_id = '{victim}'")
        )
        .await,
        0
    );

    // Executors delete every job's files once it ends (the scheduler here says so after 2 s):
    // the last job's are there now, and gone soon.
    assert!(
        !job_dirs(&cluster.work_dirs).is_empty(),
        "no job files right after a query: the cleanup check below would prove nothing"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !job_dirs(&cluster.work_dirs).is_empty() {
        assert!(
            Instant::now() < deadline,
            "job files left behind: {:?}",
            job_dirs(&cluster.work_dirs)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(db: &TestDb, args: &[&str], log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_segdb"))
            .args(args)
            .env("SEGDB_DATA", &db.data)
            .env("SEGDB_KEYRING", &db.keyring)
            .env("SEGDB_LOG", "debug")
            .env("SEGDB_CLUSTER_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(f)
            .spawn()
            .unwrap(),
    )
}

fn first_line(p: &mut Proc) -> String {
    use std::io::BufRead;
    let out = p.0.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(out).read_line(&mut line).unwrap();
    line
}

/// The real binaries on free ports: three commands, as in the README; `segdb sql --cluster`
/// answers like `segdb sql`; no raw identifier reaches a node's log (debug level, which prints
/// plans) or work dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_binaries_answer_like_the_embedded_cli() {
    let (db, _, _) = loaded(800, 10, 11, 10.0).await;
    let logs = tempfile::tempdir().unwrap();
    let mut scheduler = spawn(
        &db,
        &["scheduler", "--bind", "127.0.0.1:0", "--cleanup-after", "2"],
        &logs.path().join("scheduler.log"),
    );
    let line = first_line(&mut scheduler);
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(addr.starts_with("df://127.0.0.1:"), "{line}");
    let mut executors = Vec::new();
    let mut executor_ports = Vec::new();
    let mut work = Vec::new();
    for i in 0..2 {
        let w = logs.path().join(format!("work{i}"));
        // The second executor takes --port 0: it must advertise the port it got, or the
        // queries below could not fetch its results.
        let port = if i == 0 {
            free_port().to_string()
        } else {
            "0".into()
        };
        let grpc = if i == 0 {
            free_port().to_string()
        } else {
            "0".into()
        };
        let mut p = spawn(
            &db,
            &[
                "executor",
                "--scheduler",
                &addr,
                "--port",
                &port,
                "--grpc-port",
                &grpc,
                "--vcores",
                "1",
                "--work-dir",
                w.to_str().unwrap(),
            ],
            &logs.path().join(format!("executor{i}.log")),
        );
        let line = first_line(&mut p);
        if i == 0 {
            assert!(line.contains(&format!(":{port} ")), "{line}");
            executor_ports.push(port.clone());
        } else {
            let advertised: u16 = line
                .split("flight on ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|hp| hp.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{line}"));
            assert_ne!(advertised, 0, "{line}");
        }
        executors.push(p);
        work.push(w);
    }
    // Each node checks its own keyring against the database, and never creates one.
    let other = logs.path().join("other.keyring");
    std::fs::write(
        &other,
        r#"{"keys": {"user": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}}"#,
    )
    .unwrap();
    let o = db.cli_env(
        &[
            "--keyring",
            other.to_str().unwrap(),
            "executor",
            "--scheduler",
            &addr,
        ],
        &[("SEGDB_CLUSTER_SECRET", SECRET)],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("is not the one"),
        "{}",
        stderr(&o)
    );
    let empty = logs.path().join("no-db-here");
    let o = db.cli_env(
        &[
            "--data",
            empty.to_str().unwrap(),
            "scheduler",
            "--bind",
            "127.0.0.1:0",
        ],
        &[("SEGDB_CLUSTER_SECRET", SECRET)],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("is not a segdb database"),
        "{}",
        stderr(&o)
    );
    assert!(!empty.join("_segdb").exists(), "a node created a database");

    let canary = "canary.raw.4471@example.com";
    let queries = [
        "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event".to_string(),
        "SELECT p.country, count(DISTINCT e.uid) AS users FROM events e JOIN profiles p ON e.uid = p.uid \
         GROUP BY p.country ORDER BY p.country"
            .to_string(),
        format!("SELECT count(*) AS n FROM profiles WHERE user_id = pseudonymize('{canary}')"),
        // Even with the optimizer's constant folding off, the raw id is replaced on the client.
        format!(
            "SET datafusion.optimizer.max_passes = 0; \
             SELECT count(*) AS n FROM profiles WHERE user_id = pseudonymize('{canary}')"
        ),
    ];
    for q in &queries {
        let local = db.cli(&["sql", "--format", "csv", "-c", q]);
        assert!(local.status.success(), "{}", stderr(&local));
        let remote = db.cli_env(
            &["sql", "--format", "csv", "--cluster", &addr, "-c", q],
            &[("SEGDB_CLUSTER_SECRET", SECRET)],
        );
        assert!(remote.status.success(), "{q}\n{}", stderr(&remote));
        assert_eq!(stdout(&local), stdout(&remote), "{q}");
    }
    // The raw id was turned into its pseudonym on the client: no node saw it.
    std::thread::sleep(Duration::from_secs(1));
    for f in all_files(logs.path()) {
        // A node may remove a file between the listing and the read (seen under load).
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        assert!(
            !String::from_utf8_lossy(&bytes).contains(canary),
            "the raw id reached {}",
            f.display()
        );
    }
    // Without the secret the cluster is no key oracle: a client with an empty database of its
    // own, its own keyring and a guessed secret gets UNAUTHENTICATED, and so does any raw call
    // to the scheduler or to an executor's Flight service (shuffle and result fetches).
    let attacker = TestDb::new();
    attacker.ingest_cli(
        "events",
        &attacker.input(
            "a.csv",
            "user_id,event,ts
x,view,2026-01-01T00:00:00Z
",
        ),
    );
    let probe =
        format!("SELECT pseudonymize('{canary}') AS p UNION ALL SELECT user_id AS p FROM events");
    let o = attacker.cli_env(
        &["sql", "--format", "csv", "--cluster", &addr, "-c", &probe],
        &[("SEGDB_CLUSTER_SECRET", "a-guessed-secret-of-length")],
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o).to_lowercase();
    assert!(
        err.contains("unauthenticated") || err.contains("secret"),
        "{err}"
    );
    assert!(!stdout(&o).contains("p1_"), "{}", stdout(&o));
    let o = attacker.cli(&["sql", "--cluster", &addr, "-c", "SELECT 1"]);
    assert!(!o.status.success() && stderr(&o).contains("SEGDB_CLUSTER_SECRET"));
    let url = format!("http://{}", addr.trim_start_matches("df://"));
    let mut raw =
        ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient::connect(url)
            .await
            .unwrap();
    let status = raw
        .get_job_status(ballista_core::serde::protobuf::GetJobStatusParams {
            job_id: "any".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    let flight = format!("http://127.0.0.1:{}", executor_ports[0]);
    let channel = tonic::transport::Endpoint::from_shared(flight)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw = arrow_flight::flight_service_client::FlightServiceClient::new(channel);
    let status = raw
        .do_get(arrow_flight::Ticket::new("anything"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");

    let sched_log = std::fs::read_to_string(logs.path().join("scheduler.log")).unwrap();
    assert!(
        !sched_log.is_empty(),
        "the scheduler logged nothing at debug level: the canary check would prove nothing"
    );
    drop(executors);
    drop(scheduler);
}
