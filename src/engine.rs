//! The facade: an [`Engine`] opens a database with its keyring, holds the state every session
//! shares, and offers the library API — SQL in a default session, ingest, segment members.
//! Statements run in [`Session`]s (see `session`); the CLI and the library use the engine's own
//! session, the Flight SQL server one session per bearer token.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;

use crate::error::Result;
use crate::ingest::{IngestOptions, IngestReport, Kind};
use crate::privacy::Keyring;
use crate::segment::Segments;
use crate::session::{Session, Shared};
use crate::storage::{Database, Location};

pub use crate::session::{CATALOG, SCHEMA};

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--data`: a path, `file:///…` or `s3://bucket/prefix`.
    pub data: String,
    /// `--keyring`: the keyring file (created on first use).
    pub keyring: PathBuf,
    /// Object-store options for a bucket (`[storage]` of the config file: server-side
    /// encryption), applied to every object the database writes and reads.
    pub storage: std::collections::HashMap<String, String>,
    /// Create the database (and its keyring) when `data` holds none. The library does; of the
    /// commands only `init`, `ingest` and `demo` do, so a mistyped `--data` is refused rather
    /// than silently becoming an empty database.
    pub create: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: "./segdb-data".into(),
            keyring: PathBuf::from("./segdb.keyring"),
            storage: Default::default(),
            create: true,
        }
    }
}

pub use crate::result::QueryResult;

/// An open segdb database with a SQL session over it.
pub struct Engine {
    shared: Arc<Shared>,
    session: Session,
}

impl Engine {
    /// Open (or create) the database of `config`.
    pub async fn open(config: &Config) -> Result<Engine> {
        let location = Location::parse(&config.data)?.with_options(config.storage.clone());
        crate::storage::register_handlers();
        let exists = Database::exists(&location).await?;
        if !exists && !config.create {
            return Err(crate::storage::not_a_database(&location));
        }
        // A new key only for a new database: an existing one can only be read with its own.
        let keyring = if exists {
            if !config.keyring.exists() {
                return Err(crate::Error::Keyring(format!(
                    "{} does not exist: {location} needs the keyring it was created with (--keyring / SEGDB_KEYRING)",
                    config.keyring.display()
                )));
            }
            Keyring::open(&config.keyring)?
        } else {
            Keyring::open_or_create(&config.keyring)?
        };
        Self::open_with_keyring(location, keyring).await
    }

    /// Open a database with a keyring the caller manages.
    pub async fn open_with_keyring(location: Location, keyring: Keyring) -> Result<Engine> {
        crate::storage::register_handlers();
        let db = Database::open(location, &keyring).await?;
        let shared = Shared::new(db, Arc::new(keyring)).await?;
        let session = Session::new(shared.clone(), "library")?;
        Ok(Engine { shared, session })
    }

    /// Name the caller recorded in the audit log for this engine's own session ("cli", …).
    pub fn with_caller(mut self, who: &str) -> Result<Engine> {
        self.session = Session::new(self.shared.clone(), who)?;
        Ok(self)
    }

    /// Run queries over the tables on the Ballista cluster at `addr` (`df://HOST:PORT`);
    /// segment evaluation, DDL, ingest, erasure and refreshes stay here (DESIGN §12). Every
    /// call carries the cluster's secret (`SEGDB_CLUSTER_SECRET`; see
    /// [`with_cluster_secret`](Self::with_cluster_secret) to pass it).
    pub fn with_cluster(self, addr: &str) -> Result<Engine> {
        let secret = crate::cluster::auth::ClusterSecret::required(None)?;
        self.with_cluster_secret(addr, secret)
    }

    /// [`with_cluster`](Self::with_cluster) with the cluster's secret given.
    pub fn with_cluster_secret(
        mut self,
        addr: &str,
        secret: crate::cluster::auth::ClusterSecret,
    ) -> Result<Engine> {
        self.shared.attach_cluster(addr, secret)?;
        let who = self.session.who().to_string();
        self.session = Session::new(self.shared.clone(), &who)?;
        Ok(self)
    }

    /// How many plans this engine's process submitted to its cluster (0 when embedded).
    pub fn cluster_jobs(&self) -> u64 {
        self.shared.cluster_jobs()
    }

    /// A new, independent session (its own settings, prepared statements, views, schemas).
    pub fn new_session(&self, who: &str) -> Result<Session> {
        Session::new(self.shared.clone(), who)
    }

    /// The engine's own session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// What every session shares.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Run the statements of `sql` (as an admin) in the engine's session; returns the last
    /// statement's result.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.session.sql(sql).await
    }

    /// Run one query with `params` bound to its `?` (or `$1, $2, …`) placeholders.
    pub async fn sql_with_params(
        &self,
        sql: &str,
        params: Vec<datafusion::common::ScalarValue>,
    ) -> Result<QueryResult> {
        self.session.sql_with_params(sql, params).await
    }

    /// The segment service (library users: evaluate segments directly).
    pub fn segments(&self) -> &Segments {
        &self.shared.segments
    }

    /// The members of segment `name` at `as_of` (default: the session's) as a bitmap of ordinals
    /// (consent, erasure and holdout applied).
    pub async fn segment_members(
        &self,
        name: &str,
        as_of: Option<i64>,
    ) -> Result<roaring::RoaringBitmap> {
        let (ctx, _) = self.session.statement_context().await?;
        let ctx = crate::segment::EvalCtx::from_state(&ctx.state(), &self.shared.db).await?;
        self.shared.segments.members(&ctx.at(as_of), name).await
    }

    /// Recreate the event index from `events`; returns (keys, bytes).
    pub async fn rebuild_index(&self) -> Result<(usize, usize)> {
        let idx = crate::index::catchup::rebuild_persisted(&self.shared.db).await?;
        Ok((idx.days.len(), idx.bytes()))
    }

    /// The opened database.
    pub fn database(&self) -> &Database {
        &self.shared.db
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.shared.keyring
    }

    /// Load files into `events`, `profiles` or `consent`.
    pub async fn ingest(
        &self,
        kind: Kind,
        files: &[PathBuf],
        opts: &IngestOptions,
    ) -> Result<IngestReport> {
        let r =
            crate::ingest::ingest(&self.shared.db, &self.shared.keyring, kind, files, opts).await?;
        self.after_load(&r).await?;
        Ok(r)
    }

    /// Replace the rows of category map `map` with those of a CSV file (`value`, `category`);
    /// returns how many. A bad row refuses the whole file.
    pub async fn load_category_map(&self, map: &str, file: &std::path::Path) -> Result<usize> {
        let rows = crate::interests::maps::read_file(file)?;
        crate::interests::maps::load(&self.shared.db, map, rows).await
    }

    /// After a consent load, derive the cached purposes' holders from the new version now, so the
    /// next statement finds them current.
    async fn after_load(&self, r: &IngestReport) -> Result<()> {
        if r.kind == Kind::Consent && r.version.is_some() {
            let (ctx, _) = self.session.statement_context().await?;
            let ctx = crate::segment::EvalCtx::from_state(&ctx.state(), &self.shared.db).await?;
            for p in self.shared.segments.cached_purposes() {
                self.shared
                    .segments
                    .consent_holders(&ctx, &p, ctx.now())
                    .await?;
            }
        }
        Ok(())
    }

    /// Load the Arrow batches `batches` yields (Flight SQL bulk ingest) like files: same
    /// validation, pseudonymisation, one commit. `name` names the input in rejected-row reports.
    pub async fn ingest_batches(
        &self,
        kind: Kind,
        name: &str,
        batches: impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
        opts: &IngestOptions,
    ) -> Result<IngestReport> {
        let r = crate::ingest::ingest_batches(
            &self.shared.db,
            &self.shared.keyring,
            kind,
            name,
            batches,
            opts,
        )
        .await?;
        self.after_load(&r).await?;
        Ok(r)
    }
}
