//! Storage: a database is a URL. This module turns `--data` into a location on an object store
//! (local path, `file://`, `s3://`), checks that it is a segdb database (or creates one in an empty
//! place), and owns the Delta tables under it: `events`, `profiles`, `consent`, `identity`, and the
//! engine's own state under `_segdb/`. It pins one version of every table per statement
//! ([`Snapshot`]), reads pinned versions (small tables directly, base tables through a Parquet
//! scan DataFusion can ship to a cluster: [`provider`]), and commits at an exact version
//! ([`commit`]). It knows nothing of SQL statements, segments or ingest formats.

pub mod commit;
pub(crate) mod location;
pub mod log;
pub mod optimize;
pub mod provider;
pub mod settings;
mod snapshot;
mod tables;

pub use location::{Location, Target};
pub use snapshot::{
    DataFile, Snapshot, Suppression, column as snapshot_column, conform, files_of, read_files,
};
pub use tables::{Table, base_schema, ts_type};

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use deltalake::DeltaTable;
use deltalake::ObjectStore;
use object_store::{ObjectStoreExt, PutPayload, path::Path as ObjPath};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::privacy::Keyring;
use crate::privacy::pseudonym::Pseudonymizer;

/// Path of the marker that makes a location a segdb database.
pub const MARKER: &str = "_segdb/segdb.json";

#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
    format_version: u32,
    created_at: String,
    /// Keyed fingerprint of the `user` key (identifies the key, reveals nothing about it).
    key_fingerprint: String,
}

type Handle = Arc<tokio::sync::Mutex<Option<DeltaTable>>>;

/// An opened database: its location and handles on its tables.
#[derive(Debug, Clone)]
pub struct Database {
    location: Location,
    store: Arc<dyn ObjectStore>,
    /// Open tables, brought up to date incrementally by [`Database::latest`] (one lock per
    /// table, so pinning a snapshot reads every table's log concurrently).
    handles: Arc<HashMap<Table, Handle>>,
    /// The suppression list of the last suppression-table version read.
    suppression: Arc<std::sync::Mutex<Option<(u64, Arc<Suppression>)>>>,
}

impl Database {
    /// Open the database at `location`, creating it when the place is empty. Refuses a non-empty
    /// place that is not a segdb database, and a keyring whose `user` key differs from the one
    /// the database was created with. A database written by an older segdb gains the engine
    /// tables and catalog columns it lacks (nothing is lost).
    pub async fn open(location: Location, keyring: &Keyring) -> Result<Database> {
        Self::open_or_create(location, keyring, true).await
    }

    /// Open an existing database (cluster nodes: they never create one).
    pub async fn open_existing(location: Location, keyring: &Keyring) -> Result<Database> {
        Self::open_or_create(location, keyring, false).await
    }

    /// Whether `location` holds a segdb database (its marker), without creating anything.
    pub async fn exists(location: &Location) -> Result<bool> {
        if let Some(p) = location.local_path() {
            return Ok(p.join(MARKER).is_file());
        }
        let store = location.object_store()?;
        match store.head(&ObjPath::from(MARKER)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::storage(format!(
                "cannot reach {location}: {}",
                e.to_string().lines().next().unwrap_or("")
            ))),
        }
    }

    async fn open_or_create(
        location: Location,
        keyring: &Keyring,
        create: bool,
    ) -> Result<Database> {
        location.check_keyring_outside(keyring)?;
        if !create
            && location
                .local_path()
                .is_some_and(|p| !p.join(MARKER).is_file())
        {
            // Nothing is created for a place that is not a database (a mistyped --data).
            return Err(not_a_database(&location));
        }
        location.prepare_local()?;
        let store = location.object_store()?;
        let handles = Table::BASE
            .into_iter()
            .chain(Table::ENGINE)
            .map(|t| (t, Handle::default()))
            .collect();
        let db = Database {
            location,
            store,
            handles: Arc::new(handles),
            suppression: Default::default(),
        };
        let fingerprint = Pseudonymizer::fingerprint(keyring);
        match db.read_marker().await? {
            Some(m) => {
                if m.format != "segdb" {
                    return Err(Error::storage(format!(
                        "{} is not a segdb database",
                        db.location
                    )));
                }
                if m.key_fingerprint != fingerprint {
                    return Err(Error::Keyring(format!(
                        "the keyring's \"user\" key is not the one {} was created with; use that database's keyring (--keyring / SEGDB_KEYRING)",
                        db.location
                    )));
                }
            }
            None if !create => return Err(not_a_database(&db.location)),
            None => {
                db.ensure_empty().await?;
                let marker = Marker {
                    format: "segdb".into(),
                    format_version: 2,
                    created_at: Utc::now().to_rfc3339(),
                    key_fingerprint: fingerprint,
                };
                let bytes = serde_json::to_vec_pretty(&marker).expect("marker serialises");
                db.store
                    .put(&ObjPath::from(MARKER), PutPayload::from(bytes))
                    .await
                    .map_err(|e| db.unreachable(e))?;
                tracing::info!(location = %db.location, "created a new database");
            }
        }
        for t in Table::BASE.into_iter().chain(Table::ENGINE) {
            db.ensure_table(t).await?;
        }
        for t in Table::ENGINE.into_iter().chain([Table::Consent]) {
            commit::migrate_columns(&db, t).await?;
        }
        Ok(db)
    }

    /// Where this database lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The object store rooted at the database location.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Load the latest committed version of a table afresh (writers).
    pub async fn load(&self, table: Table) -> Result<DeltaTable> {
        let url = self.location.table_url(table.path())?;
        let t = deltalake::DeltaTableBuilder::from_url(url)?
            .with_storage_options(self.location.storage_options())
            .load()
            .await?;
        Ok(t)
    }

    /// The latest committed version of a table, reusing an open handle (only new log entries are
    /// read). The returned table is a snapshot: later commits do not change it.
    pub async fn latest(&self, table: Table) -> Result<DeltaTable> {
        let handle = self.handles.get(&table).expect("every table has a handle");
        let mut h = handle.lock().await;
        if let Some(t) = h.as_mut() {
            if self.no_commit_after(table, t) {
                return Ok(t.clone());
            }
            if t.update_incremental(None).await.is_ok() {
                return Ok(t.clone());
            }
        }
        let t = self.load(table).await?;
        *h = Some(t.clone());
        Ok(t)
    }

    /// On a local disk, whether no commit follows the handle's version: two `stat`s instead of
    /// delta-rs listing the log through the blocking pool (twelve tables per statement made that
    /// most of a small statement's time). A commit is a log entry that appears whole (written
    /// elsewhere, then linked in) and is always a JSON entry, so a missing next entry means no
    /// newer version, provided the handle's own entry is still there: VACUUM removes the entries
    /// below its checkpoint, and a handle older than that must ask delta-rs. On object stores
    /// delta-rs asks as before.
    fn no_commit_after(&self, table: Table, t: &DeltaTable) -> bool {
        let (Some(root), Some(v)) = (self.location.local_path(), t.version()) else {
            return false;
        };
        let log = root.join(table.path()).join("_delta_log");
        let entry = |v: u64| log.join(format!("{v:020}.json"));
        let missing = |p: std::path::PathBuf| matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        std::fs::symlink_metadata(entry(v)).is_ok() && missing(entry(v + 1))
    }

    /// Pin the latest version of every table a statement may read.
    pub async fn pin(&self) -> Result<Arc<Snapshot>> {
        Snapshot::pin(self).await
    }

    /// The suppression list of a suppression-table version (cached per version).
    pub(crate) async fn suppression_at(&self, table: &DeltaTable) -> Result<Arc<Suppression>> {
        let version = table.version().unwrap_or(0);
        if let Some((v, s)) = self.suppression.lock().expect("not poisoned").as_ref()
            && *v == version
        {
            return Ok(s.clone());
        }
        let batches = snapshot::read_table(self, Table::Suppression, table).await?;
        let s = Arc::new(Suppression::from_batches(&batches)?);
        *self.suppression.lock().expect("not poisoned") = Some((version, s.clone()));
        Ok(s)
    }

    /// The suppression list of the latest suppression-table version.
    pub async fn latest_suppression(&self) -> Result<Arc<Suppression>> {
        let t = self.latest(Table::Suppression).await?;
        self.suppression_at(&t).await
    }

    /// Drop open handles (after log entries were removed).
    pub async fn forget_handles(&self) {
        for h in self.handles.values() {
            *h.lock().await = None;
        }
    }

    async fn ensure_table(&self, table: Table) -> Result<()> {
        if let Some(root) = self.location.local_path() {
            std::fs::create_dir_all(root.join(table.path()))?;
        }
        // A table exists once its log has a commit; look before asking delta-rs, which logs an
        // error for every missing table it is asked to load.
        use futures::StreamExt;
        let log = ObjPath::from(format!("{}/_delta_log/", table.path()));
        if let Some(entry) = self.store.list(Some(&log)).next().await {
            entry.map_err(|e| self.unreachable(e))?;
            return Ok(());
        }
        let url = self.location.table_url(table.path())?;
        let t = deltalake::DeltaTableBuilder::from_url(url)?
            .with_storage_options(self.location.storage_options())
            .build()?;
        tables::create(t, table).await
    }

    async fn read_marker(&self) -> Result<Option<Marker>> {
        match self.store.get(&ObjPath::from(MARKER)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.unreachable(e))?;
                let m = serde_json::from_slice(&bytes).map_err(|_| {
                    Error::storage(format!("{}/{MARKER} is damaged (not JSON)", self.location))
                })?;
                Ok(Some(m))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.unreachable(e)),
        }
    }

    async fn ensure_empty(&self) -> Result<()> {
        use futures::StreamExt;
        let mut listing = self.store.list(None);
        match listing.next().await {
            None => Ok(()),
            Some(Ok(_)) => Err(Error::storage(format!(
                "{} is not a segdb database (it holds other files and no {MARKER}); point --data at an empty location or an existing database",
                self.location
            ))),
            Some(Err(e)) => Err(self.unreachable(e)),
        }
    }

    pub(crate) fn unreachable(&self, e: object_store::Error) -> Error {
        let detail = e.to_string();
        let first = detail.lines().next().unwrap_or("").trim();
        Error::storage(format!("cannot reach {}: {first}", self.location))
    }
}

/// Every row of a loaded version of `t` (writers reading what they are about to change).
pub async fn read_pinned(
    db: &Database,
    t: Table,
    d: &DeltaTable,
) -> Result<Vec<arrow::array::RecordBatch>> {
    snapshot::read_table(db, t, d).await
}

/// The refusal for a place that holds no database, saying how to create one.
pub fn not_a_database(location: &Location) -> Error {
    Error::NotFound(format!(
        "{location} is not a segdb database: check --data / SEGDB_DATA, or create one there with `segdb init` (or load data with `segdb ingest`, or run `segdb demo`)"
    ))
}

/// Register the object-store handlers for `s3://` (idempotent).
pub fn register_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| deltalake::aws::register_handlers(None));
}

/// Stop the process here when `SEGDB_FAILPOINT` names this point (crash-safety tests only).
pub fn failpoint(name: &str) {
    if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// The environment variable naming a failpoint.
pub const FAILPOINT_ENV: &str = "SEGDB_FAILPOINT";
