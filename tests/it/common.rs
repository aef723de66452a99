//! Shared helpers: temporary databases with a known key, running the CLI, independent pseudonym
//! computation, and byte-level searches of a data directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use segdb::Engine;
use segdb::privacy::Keyring;
use segdb::storage::Location;
use sha2::Sha256;

/// The fixed test key (32 bytes of 0x2a) and its keyring file text.
pub const KEY: [u8; 32] = [0x2a; 32];

pub fn keyring_json() -> String {
    format!(
        r#"{{"keys": {{"user": "{}"}}}}"#,
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

/// The DESIGN.md §6 formula, written out here independently of segdb's code.
pub fn expected_pseudonym(value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&KEY).unwrap();
    let mut msg = b"segdb/v1\x00user\x00".to_vec();
    msg.extend_from_slice(value.as_bytes());
    mac.update(&msg);
    let d = mac.finalize().into_bytes();
    format!(
        "p1_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..16])
    )
}

/// A temporary database directory with a keyring beside it (not under it).
pub struct TestDb {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub keyring: PathBuf,
}

impl TestDb {
    pub fn new() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("db");
        let keyring = dir.path().join("test.keyring");
        std::fs::write(&keyring, keyring_json()).unwrap();
        TestDb { dir, data, keyring }
    }

    pub async fn engine(&self) -> Engine {
        let ring = Keyring::open(&self.keyring).unwrap();
        Engine::open_with_keyring(Location::parse(self.data.to_str().unwrap()).unwrap(), ring)
            .await
            .unwrap()
    }

    /// A path for an input file in the scratch directory.
    pub fn input(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// Run the CLI against this database.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// A database holding one event (`u1` viewed at 2026-01-01), made through the CLI.
    pub fn with_one_event() -> TestDb {
        let db = TestDb::new();
        db.ingest_cli(
            "events",
            &db.input(
                "one.csv",
                "user_id,event,ts\nu1,view,2026-01-01T00:00:00Z\n",
            ),
        );
        db
    }

    /// `segdb ingest KIND FILE` through the CLI; it must succeed.
    pub fn ingest_cli(&self, kind: &str, file: &Path) {
        let o = self.cli(&["ingest", kind, file.to_str().unwrap()]);
        assert!(o.status.success(), "ingest {kind}: {}", stderr(&o));
    }

    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_segdb"));
        c.args(args)
            .env("SEGDB_DATA", &self.data)
            .env("SEGDB_KEYRING", &self.keyring)
            .env_remove("SEGDB_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Render every row of `r` as its cells (cast to text, NULL as `None`) passed through `cell`
/// and joined with `sep`.
pub fn render_rows(
    r: &segdb::QueryResult,
    cell: impl Fn(Option<&str>) -> String,
    sep: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for b in &r.batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    let s = c.as_string::<i32>();
                    cell((!s.is_null(i)).then(|| s.value(i)))
                })
                .collect();
            out.push(cells.join(sep));
        }
    }
    out
}

/// Run a query and render every row as a `|`-joined string of cells (NULL as `∅`).
pub async fn rows(engine: &Engine, sql: &str) -> Vec<String> {
    let r = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    render_rows(&r, |c| c.unwrap_or("∅").to_string(), "|")
}

pub async fn count(engine: &Engine, sql: &str) -> i64 {
    rows(engine, sql).await[0].parse().unwrap()
}

/// Every file under `dir` whose bytes contain `needle`, or whose Parquet string values do.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let found_raw = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            let found_decoded = p.extension().is_some_and(|x| x == "parquet")
                && parquet_strings_contain(&p, needle);
            if found_raw || found_decoded {
                hits.push(p);
            }
        }
    }
    hits
}

fn parquet_strings_contain(p: &Path, needle: &str) -> bool {
    let f = std::fs::File::open(p).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    for b in reader {
        let b = b.unwrap();
        for c in b.columns() {
            if let Ok(s) = arrow::compute::cast(c, &DataType::Utf8) {
                let s = s.as_string::<i32>();
                if (0..s.len()).any(|i| s.is_valid(i) && s.value(i).contains(needle)) {
                    return true;
                }
            }
        }
    }
    false
}

/// All files (recursively) under `dir`.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A database loaded with a generated dataset (ending 2026-02-01); returns it with the input
/// directory and the number of users.
pub async fn loaded(
    users: u64,
    days: u32,
    seed: u64,
    events_per_user: f64,
) -> (TestDb, PathBuf, u64) {
    let end = chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
    loaded_ending(users, days, seed, events_per_user, end).await
}

/// [`loaded`] with activity in the `days` before `end` (the examples' data ends today, as the
/// demo's does).
pub async fn loaded_ending(
    users: u64,
    days: u32,
    seed: u64,
    events_per_user: f64,
    end: chrono::NaiveDate,
) -> (TestDb, PathBuf, u64) {
    use segdb::ingest::{IngestOptions, Kind};
    let db = TestDb::new();
    let src = db.dir.path().join("src");
    let stats = segdb::datagen::generate(&segdb::datagen::GenConfig {
        users,
        days,
        out: src.clone(),
        seed,
        format: segdb::config::GenFormat::Parquet,
        end,
        events_per_user,
        contacts: false,
        latent_group: 0.0,
    })
    .unwrap();
    let e = db.engine().await;
    let opts = IngestOptions::default();
    for (kind, files) in [
        (Kind::Profiles, &stats.profile_files),
        (Kind::Events, &stats.event_files),
        (Kind::Consent, &stats.consent_files),
    ] {
        e.ingest(kind, files, &opts).await.unwrap();
    }
    (db, src, stats.users)
}

/// The first seed of a differential run: `SEGDB_DIFF_SEED`, or one from the clock (printed on
/// failure, so a failing run can be replayed).
pub fn diff_seed() -> u64 {
    std::env::var("SEGDB_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                % 100_000
        })
}

/// Run `tests/differential/<name>.py --segdb BIN --work DIR --seed N` for `seeds` seeds from
/// [`diff_seed`], each in a fresh work dir; fails with the oracle's report and the seed. Returns
/// false (after saying so) when there is no test venv and none is required.
pub fn run_differential(name: &str, seeds: u64) -> bool {
    let Some(py) = crate::segments::python() else {
        eprintln!("SKIPPED the {name} differential test: no test venv (run scripts/test)");
        return false;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/differential")
        .join(format!("{name}.py"));
    let base = diff_seed();
    for seed in base..base + seeds {
        let work = tempfile::tempdir().unwrap();
        let o = Command::new(&py)
            .arg(&script)
            .args(["--segdb", env!("CARGO_BIN_EXE_segdb"), "--work"])
            .arg(work.path())
            .args(["--seed", &seed.to_string()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name} differential failed (rerun with SEGDB_DIFF_SEED={seed}):\n{}\n{}",
            stdout(&o),
            stderr(&o)
        );
    }
    true
}

/// Run an async test body as the `segdb` binary runs statements: on a runtime whose threads
/// (and the one driving it) have a 64 MiB stack. Debug builds need more stack than release for
/// deeply nested evaluations (a look-alike evaluates its seed inside its own evaluation).
pub fn on_binary_stack<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    const STACK: usize = 64 << 20;
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(STACK)
                .enable_all()
                .build()
                .unwrap()
                .block_on(body())
        })
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
