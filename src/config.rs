//! Command-line configuration (clap derive). Every option has a `SEGDB_*` environment twin; doc
//! comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ingest::{Format, Kind};

/// segdb: an embedded analytical database for audience segments.
#[derive(Debug, Parser)]
#[command(name = "segdb", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Database location: a path, file:///… or s3://bucket/prefix (AWS_* variables configure S3).
    #[arg(
        long,
        global = true,
        env = "SEGDB_DATA",
        default_value = "./segdb-data"
    )]
    pub data: String,
    /// Keyring file with the pseudonymisation keys; created (mode 0600) on first use. Must not
    /// live under the data location.
    #[arg(
        long,
        global = true,
        env = "SEGDB_KEYRING",
        default_value = "./segdb.keyring"
    )]
    pub keyring: PathBuf,
    /// Log filter for stderr: a level (error, warn, info, debug, trace) or tracing directives.
    /// Default: segdb's warnings and other components' errors (`error,segdb=warn`); for
    /// `serve`, also one info line per request (`error,segdb=info`).
    #[arg(long, global = true, env = "SEGDB_LOG")]
    pub log: Option<String>,
    /// Config file for every command: users and roles (`segdb user add` writes them),
    /// `[storage]`, `[scheduler]`, `[export]`, `[identity]`, `[server]`. A missing file is an
    /// empty config. Flags and SEGDB_* variables win over it.
    #[arg(
        long,
        global = true,
        env = "SEGDB_CONFIG",
        default_value = "./segdb.toml"
    )]
    pub config: PathBuf,
}

impl Cli {
    /// The log filter: `--log` / `SEGDB_LOG`, else the command's default.
    pub fn log_filter(&self) -> &str {
        match (&self.global.log, &self.command) {
            (Some(f), _) => f,
            (None, Command::Serve(_)) => "error,segdb=info",
            (None, _) => "error,segdb=warn",
        }
    }
}

impl GlobalOpts {
    /// How to open the database: `--data`, `--keyring`, and the `[storage]` section of the
    /// config file.
    pub fn engine_config(&self) -> crate::Result<crate::engine::Config> {
        self.engine_config_of(&self.file()?)
    }

    /// [`engine_config`](Self::engine_config) with the config file already read (a command
    /// that needs more of it reads it once).
    pub fn engine_config_of(
        &self,
        file: &crate::server::auth::ServerConfig,
    ) -> crate::Result<crate::engine::Config> {
        Ok(crate::engine::Config {
            data: self.data.clone(),
            keyring: self.keyring.clone(),
            storage: file.storage.object_store_options()?,
            create: false,
        })
    }

    /// The config file (`--config`), read afresh.
    pub fn file(&self) -> crate::Result<crate::server::auth::ServerConfig> {
        crate::server::auth::ServerConfig::load(&self.config)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run SQL: an interactive shell, or the statements of -c / -f.
    Sql(SqlArgs),
    /// Load files into events, profiles, consent or identity links (user ids are pseudonymised
    /// on the way in).
    Ingest(IngestArgs),
    /// Write a synthetic e-commerce dataset (profiles, events, consent).
    Generate(GenerateArgs),
    /// Generate a small dataset into the database if it is empty, then run example queries.
    Demo(DemoArgs),
    /// Create an empty database at --data (and a keyring at --keyring, if there is none).
    Init,
    /// Maintain the event index.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Remove superseded data files and old log entries from every table (after FORGET, no byte
    /// of a forgotten pseudonym remains).
    Vacuum,
    /// Compact small files into files of about `[storage] target_file_mb` and write a
    /// checkpoint, in a commit that changes no data (every table, or the one named).
    Optimize {
        /// events, profiles, consent, identity, or an engine table under _segdb/.
        table: Option<String>,
    },
    /// Manage pseudonymisation keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Serve Arrow Flight SQL (ADBC, JDBC, DBeaver, Superset) until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Manage the users of `segdb serve`.
    #[command(subcommand)]
    User(UserCommand),
    /// Refresh materialised segments once and exit (for cron, Airflow, Kubernetes CronJobs):
    /// the due ones (`--due`) or the named ones. Exit code 1 if any refresh failed.
    Refresh(RefreshArgs),
    /// Reports written to files.
    #[command(subcommand)]
    Report(ReportCommand),
    /// Run a Ballista scheduler for this database (queries of `segdb sql --cluster` and
    /// `segdb serve --cluster` are planned here and run on the executors).
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor for this database: reads its files and runs segdb's functions
    /// with this node's own keyring.
    Executor(ExecutorArgs),
}

#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Address to listen on (host:port; port 0 picks a free one and prints it).
    #[arg(long, default_value = "127.0.0.1:50050", env = "SEGDB_SCHEDULER_BIND")]
    pub bind: std::net::SocketAddr,
    /// Seconds after a job ends before its shuffle and result files are deleted from the
    /// executors (the client must have fetched the result by then).
    #[arg(long, default_value_t = 30, env = "SEGDB_JOB_CLEANUP_SECS")]
    pub cleanup_after: u64,
}

#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// The scheduler: HOST:PORT or df://HOST:PORT.
    #[arg(long, env = "SEGDB_SCHEDULER")]
    pub scheduler: String,
    /// Host to bind and to advertise to the scheduler and other executors.
    #[arg(long, default_value = "127.0.0.1", env = "SEGDB_EXECUTOR_HOST")]
    pub bind_host: String,
    /// Arrow Flight port for shuffle data and results.
    #[arg(long, default_value_t = 50061, env = "SEGDB_EXECUTOR_PORT")]
    pub port: u16,
    /// gRPC port (default: --port + 1).
    #[arg(long, env = "SEGDB_EXECUTOR_GRPC_PORT")]
    pub grpc_port: Option<u16>,
    /// Concurrent tasks (default: the number of cores).
    #[arg(long, env = "SEGDB_EXECUTOR_VCORES")]
    pub vcores: Option<usize>,
    /// Directory for shuffle files and spills, dedicated to this executor (default: a
    /// directory under the system temp dir named after the port).
    #[arg(long, env = "SEGDB_EXECUTOR_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Memory for tasks, e.g. 4GiB (default: 70 % of the machine's).
    #[arg(long, env = "SEGDB_EXECUTOR_MEMORY")]
    pub memory_pool_size: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// The lift of a segment with a holdout: print segment_lift's table and write an SVG chart
    /// of both groups' cumulative conversion over the days after the snapshot.
    Lift(LiftArgs),
}

#[derive(Debug, Args)]
pub struct LiftArgs {
    /// A materialised segment with HOLDOUT n PERCENT.
    pub segment: String,
    /// The conversion event.
    pub event: String,
    /// Where to write the chart (SVG).
    #[arg(long)]
    pub out: PathBuf,
    /// Days after the snapshot's as_of in which a conversion counts.
    #[arg(long, default_value_t = crate::segment::lift::DEFAULT_DAYS_AFTER)]
    pub days: i64,
    /// Snapshot version (default: the latest).
    #[arg(long)]
    pub version: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// Refresh every segment whose schedule has a fire time since its last refresh (each at
    /// that fire time).
    #[arg(long, conflicts_with = "names", env = "SEGDB_REFRESH_DUE")]
    pub due: bool,
    /// Segments to refresh now.
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (host:port; port 0 picks a free one and prints it).
    #[arg(long, default_value = "127.0.0.1:50051", env = "SEGDB_FLIGHT")]
    pub flight: std::net::SocketAddr,
    /// Accept every call without credentials, as an admin. Only for a trusted machine.
    #[arg(long, env = "SEGDB_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// PEM certificate (chain) to serve TLS with (needs --tls-key).
    #[arg(long, requires = "tls_key", env = "SEGDB_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", env = "SEGDB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Run queries over the tables on a Ballista cluster: df://HOST:PORT of `segdb scheduler`.
    #[arg(long, env = "SEGDB_CLUSTER")]
    pub cluster: Option<String>,
    /// Also listen for HTTP (the collector, /healthz, /metrics) on host:port (port 0 picks a
    /// free one); off unless given here or as `[http] listen`.
    #[arg(long, env = "SEGDB_HTTP")]
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add (or replace) a user; the password is read from stdin (prompted on a terminal) and
    /// stored as an argon2id hash.
    Add {
        /// User name.
        name: String,
        /// reader (queries), analyst (queries, CREATE/DROP SEGMENT) or admin (everything).
        #[arg(long)]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Replace a partner domain's key with a new random one (ids made with the old key stop
    /// matching). The `user` key cannot be rotated: stored pseudonyms depend on it.
    Rotate {
        /// The domain, e.g. partner_x.
        #[arg(long, env = "SEGDB_KEYS_DOMAIN")]
        domain: String,
    },
    /// Rewrite the keyring file sealed (AES-256-GCM) under a key-encryption key from
    /// SEGDB_KEYRING_PASSPHRASE (stretched with argon2id) or SEGDB_KEYRING_KEK (base64 of 32
    /// bytes). Every command then needs that variable to open it.
    Seal,
    /// Rewrite a sealed keyring file in clear (needs its variable).
    Unseal,
    /// Print the keyed fingerprint of the `user` key that databases record (the same sealed or
    /// not; it identifies the key without revealing it).
    Fingerprint,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Recreate the per-(event, day) bitmap index from the events table.
    Rebuild,
}

/// Result output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Run these statements (repeatable; each may hold several statements separated by ';').
    #[arg(short = 'c', long = "command", env = "SEGDB_COMMAND")]
    pub command: Vec<String>,
    /// Run the statements in this file (repeatable).
    #[arg(short = 'f', long = "file", env = "SEGDB_FILE")]
    pub file: Vec<PathBuf>,
    /// Output format of results.
    #[arg(long, value_enum, default_value_t, env = "SEGDB_FORMAT")]
    pub format: OutputFormat,
    /// Print "Time: <ms> ms" to stderr after each statement.
    #[arg(long, env = "SEGDB_TIMING")]
    pub timing: bool,
    /// Run queries over the tables on a Ballista cluster: df://HOST:PORT of `segdb scheduler`.
    #[arg(long, env = "SEGDB_CLUSTER")]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Target: events (user_id, event, ts, properties), profiles (user_id, attributes),
    /// consent (user_id and tc_string, us_privacy, gpp or purpose + granted) or links
    /// (user_id, linked_id, optional id_type).
    #[arg(value_enum)]
    pub kind: IngestKind,
    /// Input files (format from the extension unless --format is given).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Format of all inputs.
    #[arg(long, value_enum, env = "SEGDB_INGEST_FORMAT")]
    pub format: Option<Format>,
    /// Commit nothing (and exit 3) if any row is rejected.
    #[arg(long, env = "SEGDB_INGEST_STRICT")]
    pub strict: bool,
    /// How many rejected rows to list (all are counted).
    #[arg(long, default_value_t = 20, env = "SEGDB_INGEST_SHOW_REJECTED")]
    pub show_rejected: usize,
    /// For this load, what to do with a personal column: COL=EMAIL (stored only as its SHA-256
    /// match key COL_sha256), COL=PHONE[:CC] (COL_sha256 and COL_e164_sha256), COL=DROP, or
    /// COL=KEEP (not personal after all; audited). Repeatable; overrides ALTER TABLE … SET PII.
    #[arg(long = "pii", value_parser = crate::ingest::pii::parse_arg)]
    pub pii: Vec<(String, crate::storage::settings::PiiRule)>,
    /// Profiles only: merge each row into the stored profile (an attribute the row leaves empty
    /// keeps its stored value) instead of replacing the stored row whole.
    #[arg(long, env = "SEGDB_INGEST_MERGE")]
    pub merge: bool,
    /// category_map only: the map (made by CREATE CATEGORY MAP) whose rows the file replaces.
    #[arg(long)]
    pub map: Option<String>,
}

/// What `segdb ingest` loads: a table, or the rows of a category map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IngestKind {
    /// Events: user_id, event, ts and properties.
    Events,
    /// Profiles: user_id and attributes (a later row replaces the stored one).
    Profiles,
    /// Consent records: user_id and tc_string, us_privacy, gpp, or purpose + granted.
    Consent,
    /// Identity links (`user_id`, `linked_id`, optional `id_type`).
    Links,
    /// The rows of a category map (CSV `value`, `category`; with `--map name`), replacing its
    /// rows.
    #[value(name = "category_map", alias = "category-map")]
    CategoryMap,
}

impl IngestKind {
    /// The table load it is, `None` for a category map.
    pub fn data(self) -> Option<Kind> {
        match self {
            IngestKind::Events => Some(Kind::Events),
            IngestKind::Profiles => Some(Kind::Profiles),
            IngestKind::Consent => Some(Kind::Consent),
            IngestKind::Links => Some(Kind::Links),
            IngestKind::CategoryMap => None,
        }
    }
}

/// Output format of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum GenFormat {
    #[default]
    Parquet,
    Csv,
    Ndjson,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of users.
    #[arg(long, env = "SEGDB_GEN_USERS")]
    pub users: u64,
    /// Days of activity (ending at --end).
    #[arg(long, env = "SEGDB_GEN_DAYS")]
    pub days: u32,
    /// Output directory (created).
    #[arg(long, env = "SEGDB_GEN_OUT")]
    pub out: PathBuf,
    /// Random seed: the same seed, sizes and end give the same files.
    #[arg(long, default_value_t = 42, env = "SEGDB_GEN_SEED")]
    pub seed: u64,
    /// File format.
    #[arg(long, value_enum, default_value_t, env = "SEGDB_GEN_FORMAT")]
    pub format: GenFormat,
    /// Exclusive end of the activity window (UTC date).
    #[arg(long, default_value = "2026-02-01", env = "SEGDB_GEN_END")]
    pub end: String,
    /// Mean events per user.
    #[arg(long, default_value_t = 20.0, env = "SEGDB_GEN_EVENTS_PER_USER")]
    pub events_per_user: f64,
    /// Also write `email` and `phone` profile columns (personal: declare them with
    /// `ALTER TABLE profiles SET PII` or `ingest --pii` before loading).
    #[arg(long)]
    pub contacts: bool,
    /// Plant a latent group of this share of users (0 to 50 %; 0: none): its members lean
    /// toward electronics and sports products, searches, newsletter signups, the premium plan
    /// and tablets — each a modest tilt, none decisive. A tenth of them carry `crm_list = 'vip'`
    /// (a seed list for a look-alike); `latent_group.csv` lists every member (ground truth, not
    /// for loading).
    #[arg(long, default_value_t = 0.0)]
    pub latent_group: f64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Users to generate when the database is empty.
    #[arg(long, default_value_t = 5000, env = "SEGDB_DEMO_USERS")]
    pub users: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filter_defaults_per_command_and_respects_an_explicit_one() {
        let cli = |args: &[&str]| Cli::parse_from(args);
        // An explicit filter wins, also when it equals another command's default.
        let c = cli(&["segdb", "serve", "--log", "error,segdb=warn"]);
        assert_eq!(c.log_filter(), "error,segdb=warn");
        if std::env::var_os("SEGDB_LOG").is_none() {
            assert_eq!(cli(&["segdb", "serve"]).log_filter(), "error,segdb=info");
            assert_eq!(cli(&["segdb", "vacuum"]).log_filter(), "error,segdb=warn");
        }
    }
}
