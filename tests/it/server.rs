//! Running `segdb serve` in tests: a child process on a free loopback port, users and roles,
//! and small Flight SQL client helpers.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use arrow_flight::{FlightDescriptor, FlightInfo, HandshakeRequest};
use base64::Engine as _;
use futures::TryStreamExt;
use prost::Message;
use tonic::transport::Channel;

use crate::common::{self, TestDb};

pub(crate) const ADMIN_PW: &str = "admin-pw-7f3c";
pub(crate) const ANALYST_PW: &str = "analyst-pw-19aa";
pub(crate) const READER_PW: &str = "reader-pw-55e0";

/// A running `segdb serve`; SIGKILLed on drop if the test did not stop it.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
    /// `http://host:port` when started with `--http`.
    pub(crate) http: Option<String>,
    pub(crate) log: PathBuf,
}

impl Server {
    pub(crate) fn start(db: &TestDb, config: &Path, extra: &[&str]) -> Server {
        Server::start_env(db, config, extra, &[])
    }

    /// [`Server::start`] with extra environment variables (a failpoint, say).
    pub(crate) fn start_env(
        db: &TestDb,
        config: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let log = db.dir.path().join(format!(
            "serve-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        // SEGDB_SERVE_BIN runs another build of the server (e.g. release, for the load numbers).
        let bin = std::env::var("SEGDB_SERVE_BIN").unwrap_or(env!("CARGO_BIN_EXE_segdb").into());
        // `serve` opens an existing database only (`init` changes nothing on one).
        let init = db.cli(&["init"]);
        assert!(init.status.success(), "{}", common::stderr(&init));
        let mut child = Command::new(bin)
            .args(["serve", "--flight", "127.0.0.1:0", "--config"])
            .arg(config)
            .args(extra)
            .env("SEGDB_DATA", &db.data)
            .env("SEGDB_KEYRING", &db.keyring)
            .env("SEGDB_LOG", "warn,segdb=trace")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // With --http a second line names the HTTP listener.
        let http = extra.contains(&"--http").then(|| {
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            let url = l
                .trim()
                .rsplit(" on ")
                .next()
                .unwrap_or_default()
                .to_string();
            assert!(
                url.starts_with("http"),
                "no HTTP line: {l:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            url
        });
        let Some(addr) = line
            .trim()
            .rsplit("://")
            .next()
            .filter(|_| !line.is_empty())
        else {
            panic!(
                "server did not start: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        };
        Server {
            addr: addr.to_string(),
            http,
            child,
            log,
        }
    }

    pub(crate) fn status_kb(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// SIGTERM, then wait for a clean exit.
    pub(crate) fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "server exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn add_user(config: &Path, name: &str, role: &str, pw: &str) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_segdb"))
        .args(["user", "add", name, "--role", role, "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(c.stdin.take().unwrap(), "{pw}").unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
}

pub(crate) fn users(db: &TestDb) -> PathBuf {
    let config = db.dir.path().join("segdb.toml");
    add_user(&config, "admin", "admin", ADMIN_PW);
    add_user(&config, "analyst", "analyst", ANALYST_PW);
    add_user(&config, "reader", "reader", READER_PW);
    config
}

pub(crate) async fn client(addr: &str) -> FlightSqlServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(ch)
}

pub(crate) async fn login(addr: &str, user: &str, pw: &str) -> FlightSqlServiceClient<Channel> {
    let mut c = client(addr).await;
    c.handshake(user, pw).await.unwrap();
    c
}

/// Run a query; checks one endpoint and that every streamed batch has the FlightInfo's schema.
pub(crate) async fn query(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Vec<RecordBatch> {
    let info = c
        .execute(sql.to_string(), None)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    fetch(c, info).await
}

pub(crate) async fn fetch(
    c: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Vec<RecordBatch> {
    assert_eq!(info.endpoint.len(), 1, "one endpoint per result");
    let schema = info.clone().try_decode_schema().unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = c.do_get(ticket).await.unwrap().try_collect().await.unwrap();
    for b in &batches {
        assert_eq!(
            b.schema().as_ref(),
            &schema,
            "stream schema = FlightInfo schema"
        );
    }
    batches
}

/// Run a metadata call on client `$c` and fetch its result.
macro_rules! meta_call {
    ($c:ident $($call:tt)*) => {{
        let info = $c $($call)*.await.unwrap();
        fetch(&mut $c, info).await
    }};
}

pub(crate) fn first_i64(batches: &[RecordBatch]) -> i64 {
    let c = batches[0].column(0);
    match c.data_type() {
        DataType::Int64 => c.as_primitive::<arrow::datatypes::Int64Type>().value(0),
        DataType::UInt64 => c.as_primitive::<arrow::datatypes::UInt64Type>().value(0) as i64,
        other => panic!("not an integer: {other}"),
    }
}

pub(crate) fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The gRPC status of GetFlightInfo for `sql` with an optional bearer token (raw client, so
/// that the code itself is checked).
pub(crate) async fn status_of(addr: &str, token: Option<&str>, sql: &str) -> tonic::Status {
    let mut c = client(addr).await.into_inner();
    let cmd = CommandStatementQuery {
        query: sql.to_string(),
        transaction_id: None,
    };
    let mut req = tonic::Request::new(FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    c.get_flight_info(req)
        .await
        .expect_err("the call must fail")
}

pub(crate) async fn handshake_status(addr: &str, user: &str, pw: &str) -> tonic::Status {
    let mut c = client(addr).await.into_inner();
    let mut req = tonic::Request::new(futures::stream::iter(vec![HandshakeRequest::default()]));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    req.metadata_mut()
        .insert("authorization", format!("Basic {basic}").parse().unwrap());
    c.handshake(req).await.expect_err("handshake must fail")
}

pub(crate) use meta_call as meta;
