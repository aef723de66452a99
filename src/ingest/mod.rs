//! Ingest: files in, Delta commits out. Readers (`read`) stream batches with row numbers, the
//! normaliser validates them and pseudonymises `user_id` at the door, `identity` hands out user
//! ordinals. One load is one commit of the target table, preceded by one commit of any new
//! identities (a crash between the two leaves unused ordinals, never rows without an identity).
//! Bad rows are counted and reported by file and row number, and never echo a raw identifier.

mod identity;
mod links;
mod normalize;
pub mod pii;
mod read;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};

use crate::error::{Error, Result};
use crate::privacy::Keyring;
use crate::privacy::pseudonym::Pseudonymizer;
use crate::storage::{Database, Table};

pub use crate::time::parse_micros;

/// What is being loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Events: user_id, event, ts and properties.
    Events,
    /// Profiles: user_id and attributes (a later row replaces the stored one).
    Profiles,
    /// Consent records: user_id and tc_string, us_privacy, gpp, or purpose + granted.
    Consent,
    /// Identity links (`user_id`, `linked_id`, optional `id_type`).
    Links,
}

impl Kind {
    pub fn name(self) -> &'static str {
        self.table().name()
    }
    pub fn table(self) -> Table {
        match self {
            Kind::Events => Table::Events,
            Kind::Profiles => Table::Profiles,
            Kind::Consent => Table::Consent,
            Kind::Links => Table::Links,
        }
    }
}

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Parquet,
    Ndjson,
}

/// A rejected input row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    pub file: String,
    /// 1-based data row (the CSV header is not a row; blank NDJSON lines are not rows).
    pub row: u64,
    pub reason: String,
}

impl BadRow {
    pub(crate) fn new(file: &str, row: u64, reason: String) -> Self {
        BadRow {
            file: file.to_string(),
            row,
            reason,
        }
    }
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}: {}", self.file, self.row, self.reason)
    }
}

/// Options of one load.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Format of every file; `None` picks it from each file's extension.
    pub format: Option<Format>,
    /// Commit nothing if any row is rejected.
    pub strict: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// `--pii col=RULE` for this load (over the declared rules).
    pub pii: Vec<(String, crate::storage::settings::PiiRule)>,
    /// `[identity] max_ids_per_profile` (default 50).
    pub max_ids_per_profile: Option<usize>,
    /// Profiles only: merge each row into the stored one (attributes the row leaves NULL keep
    /// their stored values) instead of replacing it whole.
    pub merge: bool,
}

/// What a load did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    pub kind: Kind,
    pub files: usize,
    pub rows_loaded: u64,
    pub rejected: Vec<BadRow>,
    pub new_users: usize,
    /// Table version the load committed (`None` when there was nothing to commit).
    pub version: Option<u64>,
    pub took_ms: u128,
    /// Links refused because a profile would hold more than `max_ids_per_profile` ids.
    pub refused_links: u64,
}

pub use crate::storage::FAILPOINT_ENV;
use crate::storage::failpoint;

/// Load `files` into the table of `kind`.
pub async fn ingest(
    db: &Database,
    keyring: &Keyring,
    kind: Kind,
    files: &[PathBuf],
    opts: &IngestOptions,
) -> Result<IngestReport> {
    let loaded = ingest_collecting(db, keyring, kind, files, opts).await?;
    after_load(db, loaded).await
}

/// Keep the event index current after an events commit (the load's own counts when the index
/// reflects the version before; otherwise a catch-up).
pub(crate) async fn after_load(
    db: &Database,
    (report, days): (IngestReport, Option<IndexDays>),
) -> Result<IngestReport> {
    if let (Some(days), Some(v)) = (days, report.version) {
        // Crash tests: the events commit is done, the index has not caught up.
        failpoint("ingest-before-index");
        crate::index::catchup::after_load(db, &days, v).await?;
    }
    Ok(report)
}

/// Load Arrow batches (Flight SQL bulk ingest), see [`ingest_stream`].
pub async fn ingest_batches(
    db: &Database,
    keyring: &Keyring,
    kind: Kind,
    name: &str,
    batches: impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
    opts: &IngestOptions,
) -> Result<IngestReport> {
    let loaded = ingest_stream(db, keyring, kind, name, batches, opts).await?;
    after_load(db, loaded).await
}

/// Per-(event, day) counts of the rows an events load committed.
pub(crate) type IndexDays = crate::index::Days;

/// [`ingest`], also returning the index counts of an events load.
pub(crate) async fn ingest_collecting(
    db: &Database,
    keyring: &Keyring,
    kind: Kind,
    files: &[PathBuf],
    opts: &IngestOptions,
) -> Result<(IngestReport, Option<IndexDays>)> {
    let started = Instant::now();
    if files.is_empty() {
        return Err(Error::invalid("no input files given"));
    }
    // URLs (file://, s3://) become local paths; remote objects are fetched to a scratch directory
    // that lives until the load ends.
    let scratch = tempfile_dir()?;
    let mut local = Vec::new();
    for f in files {
        local.push(fetch_input(f, &scratch).await?);
    }
    let result = ingest_local(db, keyring, kind, &local, opts, started).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("segdb-ingest-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A local path for an input given as a path, `file://` URL or `s3://bucket/key` URL.
async fn fetch_input(f: &Path, scratch: &Path) -> Result<PathBuf> {
    use object_store::ObjectStoreExt;
    let Some(s) = f.to_str() else {
        return Ok(f.to_path_buf());
    };
    let Some((scheme, _)) = s.split_once("://") else {
        return Ok(f.to_path_buf());
    };
    let url =
        url::Url::parse(s).map_err(|e| Error::ingest(format!("{s} is not a valid URL: {e}")))?;
    match scheme {
        "file" => url
            .to_file_path()
            .map_err(|_| Error::ingest(format!("{s} is not a local file URL"))),
        "s3" | "s3a" => {
            let bucket = url.host_str().unwrap_or_default().to_string();
            let key = url.path().trim_start_matches('/').to_string();
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
            if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            let store = b.build().map_err(|e| {
                Error::ingest(format!(
                    "cannot reach s3://{bucket}: {}",
                    e.to_string().lines().next().unwrap_or("")
                ))
            })?;
            let bytes = store
                .get(&object_store::path::Path::from(key.as_str()))
                .await
                .map_err(|e| {
                    Error::ingest(format!(
                        "cannot read {s}: {}",
                        e.to_string().lines().next().unwrap_or("")
                    ))
                })?
                .bytes()
                .await
                .map_err(|e| Error::ingest(format!("cannot read {s}: {e}")))?;
            let name = key
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or("input");
            let dir = scratch.join(uuid::Uuid::new_v4().to_string());
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(name);
            std::fs::write(&path, &bytes)?;
            Ok(path)
        }
        other => Err(Error::ingest(format!(
            "input scheme {other:?} is not supported; use a path, file:// or s3://"
        ))),
    }
}

async fn ingest_local(
    db: &Database,
    keyring: &Keyring,
    kind: Kind,
    files: &[PathBuf],
    opts: &IngestOptions,
    started: Instant,
) -> Result<(IngestReport, Option<IndexDays>)> {
    let mut inputs = Vec::new();
    let mut total_bytes = 0u64;
    for f in files {
        let meta = std::fs::metadata(f)
            .map_err(|e| Error::ingest(format!("cannot read {}: {e}", f.display())))?;
        if !meta.is_file() {
            return Err(Error::ingest(format!("{} is not a file", f.display())));
        }
        total_bytes += meta.len();
        inputs.push((f.clone(), read::detect_format(f, opts.format)?));
    }
    // Personal columns: checked for every input before anything is read or written.
    let rules = pii::Rules::for_load(db, kind, &opts.pii).await?;
    for (p, f) in &inputs {
        rules.check(&read::peek_columns(p, *f)?, &display_name(p))?;
    }
    if opts
        .pii
        .iter()
        .any(|(_, r)| *r == crate::storage::settings::PiiRule::Keep)
    {
        let cols: Vec<&str> = opts
            .pii
            .iter()
            .filter(|(_, r)| *r == crate::storage::settings::PiiRule::Keep)
            .map(|(c, _)| c.as_str())
            .collect();
        crate::erasure::audit_action(
            db,
            &format!("INGEST {} --pii KEEP {}", kind.name(), cols.join(",")),
            "ingest",
        )
        .await?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<(usize, read::SourceBatch)>>(4);
    let mut text = normalize::text_columns(kind);
    text.extend(rules.text_columns());
    let names = inputs.iter().map(|(p, _)| display_name(p)).collect();
    let reader = tokio::task::spawn_blocking(move || {
        for (idx, (path, format)) in inputs.iter().enumerate() {
            let mut sink = |b: read::SourceBatch| -> Result<()> {
                tx.blocking_send(Ok((idx, b)))
                    .map_err(|_| Error::ingest("load cancelled"))
            };
            if let Err(e) = read::read_file(path, *format, &text, &mut sink) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    });
    let progress = progress_bar(opts.progress, total_bytes);
    let r = load(
        db, keyring, kind, names, rx, &progress, opts, started, &rules,
    )
    .await;
    reader
        .await
        .map_err(|e| Error::ingest(format!("reader failed: {e}")))?;
    progress.finish_and_clear();
    r
}

/// Load Arrow batches as `batches` yields them (e.g. over Flight SQL) into the table of `kind`,
/// with the same checks, pseudonymisation and single commit as a file load. `name` stands for
/// the input in rejected-row reports; rows are numbered from 1 across all batches.
pub(crate) async fn ingest_stream(
    db: &Database,
    keyring: &Keyring,
    kind: Kind,
    name: &str,
    batches: impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
    opts: &IngestOptions,
) -> Result<(IngestReport, Option<IndexDays>)> {
    use futures::StreamExt;
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<(usize, read::SourceBatch)>>(4);
    let feeder = tokio::spawn(async move {
        let mut batches = std::pin::pin!(batches);
        let mut row = 0u64;
        while let Some(b) = batches.next().await {
            let msg = b.map(|batch| {
                let n = batch.num_rows() as u64;
                let rows = (row + 1..=row + n).collect();
                row += n;
                (
                    0,
                    read::SourceBatch {
                        bytes: batch.get_array_memory_size() as u64,
                        batch,
                        rows,
                        bad: Vec::new(),
                    },
                )
            });
            let failed = msg.is_err();
            if tx.send(msg).await.is_err() || failed {
                return;
            }
        }
    });
    let progress = indicatif::ProgressBar::hidden();
    let rules = pii::Rules::for_load(db, kind, &opts.pii).await?;
    let r = load(
        db,
        keyring,
        kind,
        vec![name.to_string()],
        rx,
        &progress,
        opts,
        started,
        &rules,
    )
    .await;
    feeder.abort();
    r
}

/// The common part of every load: normalise what the readers send, then commit once.
#[allow(clippy::too_many_arguments)]
async fn load(
    db: &Database,
    keyring: &Keyring,
    kind: Kind,
    names: Vec<String>,
    mut rx: tokio::sync::mpsc::Receiver<Result<(usize, read::SourceBatch)>>,
    progress: &indicatif::ProgressBar,
    opts: &IngestOptions,
    started: Instant,
    rules: &pii::Rules,
) -> Result<(IngestReport, Option<IndexDays>)> {
    if kind == Kind::Links {
        return load_links(db, keyring, names, rx, progress, opts, started).await;
    }
    let mut table = db.latest(kind.table()).await?;
    let table_schema = table.snapshot()?.snapshot().arrow_schema();
    let mut identity = identity::Identity::load(db).await?;
    let now = chrono::Utc::now().timestamp_micros();
    let pseudo = Pseudonymizer::new(keyring, crate::privacy::keyring::USER_DOMAIN);
    let suppression = db.latest_suppression().await?;
    let forgotten = suppression.by_hash.keys().cloned().collect();
    let mut norm = normalize::Normalizer::new(kind, pseudo, table_schema.clone(), now)
        .with_forgotten(
            forgotten,
            Pseudonymizer::new(keyring, crate::erasure::FORGET_DOMAIN),
        );

    let mut writer = match kind {
        Kind::Profiles => None,
        _ => Some(RecordBatchWriter::for_table(&table)?),
    };
    let mut held: Vec<RecordBatch> = Vec::new();
    let mut rejected = Vec::new();
    let mut rows_loaded = 0u64;
    let mut checked = vec![false; names.len()];
    let mut collector = (kind == Kind::Events).then(crate::index::Collector::default);
    let mut loaded_uids = roaring::RoaringBitmap::new();
    while let Some(msg) = rx.recv().await {
        let (idx, mut sb) = msg?;
        let name = names[idx].clone();
        if !checked[idx] {
            let columns: Vec<String> = sb
                .batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            rules.check(&columns, &name)?;
            norm.check_columns(&sb.batch.schema(), &name)?;
            checked[idx] = true;
        }
        sb.batch = rules.apply(sb.batch)?;
        progress.inc(sb.bytes);
        let out = norm.normalize(sb, &mut identity, &mut rejected, &name)?;
        norm.note_schema(&out.schema());
        if out.num_rows() == 0 {
            continue;
        }
        rows_loaded += out.num_rows() as u64;
        note_uids(&out, &mut loaded_uids)?;
        if let Some(c) = collector.as_mut() {
            c.add_batch(&out)?;
        }
        match writer.as_mut() {
            Some(w) => w.write_with_mode(out, WriteMode::MergeSchema).await?,
            None => held.push(out),
        }
    }
    rejected.sort_by(|a, b| (&a.file, a.row).cmp(&(&b.file, b.row)));

    if opts.strict && !rejected.is_empty() {
        return Err(Error::Rejected(format!(
            "{} rows rejected and the load is strict (--strict, or a Flight SQL bulk ingest); nothing was committed (first: {})",
            rejected.len(),
            rejected[0]
        )));
    }
    let new_users = identity.fresh_count();
    if rows_loaded == 0 {
        return Ok((
            IngestReport {
                kind,
                files: names.len(),
                rows_loaded,
                rejected,
                new_users: 0,
                version: None,
                took_ms: started.elapsed().as_millis(),
                refused_links: 0,
            },
            None,
        ));
    }

    // 1. Identities first: rows must never reference an ordinal that is not committed.
    commit_identity(db, &identity, now).await?;
    // Then the load's links (anonymous ids it tied to users), then the load itself.
    let anon: Vec<links::Link> = norm
        .links
        .iter()
        .map(|(a, b)| links::Link {
            a: *a,
            b: *b,
            id_type: Some("anonymous_id".into()),
        })
        .collect();
    let max = opts
        .max_ids_per_profile
        .unwrap_or(crate::links::DEFAULT_MAX_IDS);
    let (_, refused_links, _) = links::commit(db, &anon, max, now).await?;

    // 2. The load itself, in one commit — unless a FORGET committed since the load began and
    //    names users in it (their rows would come back after the FORGET deleted them).
    let raced = |s: &crate::storage::Suppression| -> bool {
        !(&s.uids - &suppression.uids).is_disjoint(&loaded_uids)
    };
    let version = match writer {
        Some(w) => {
            commit_append(&mut table, w, || async {
                Ok(raced(&*db.latest_suppression().await?))
            })
            .await?
        }
        None => {
            failpoint("ingest-before-commit");
            if raced(&*db.latest_suppression().await?) {
                return Err(forget_raced());
            }
            upsert_profiles(table, held, opts.merge).await?
        }
    };
    // A FORGET that committed between the check and the commit: complete it on these rows.
    let after = db.latest_suppression().await?;
    if raced(&after) {
        let late: Vec<u32> = (&(&after.uids - &suppression.uids) & &loaded_uids)
            .iter()
            .collect();
        tracing::info!(
            users = late.len(),
            "a FORGET overlapped this load; deleting its rows again"
        );
        crate::erasure::complete(db, &late).await?;
    }
    let took_ms = started.elapsed().as_millis();
    tracing::info!(
        table = kind.name(),
        rows = rows_loaded,
        rejected = rejected.len(),
        new_users,
        version,
        took_ms,
        "ingested"
    );
    let report = IngestReport {
        kind,
        files: names.len(),
        rows_loaded,
        rejected,
        new_users,
        version: Some(version),
        took_ms,
        refused_links,
    };
    Ok((report, collector.map(|c| c.finish())))
}

fn forget_raced() -> Error {
    Error::ingest(
        "a FORGET committed while this load ran and names users in it; nothing was committed. Run the load again: rows of forgotten users are then rejected",
    )
}

/// Add the `uid`s of a normalised batch to `out`.
fn note_uids(b: &RecordBatch, out: &mut roaring::RoaringBitmap) -> Result<()> {
    use arrow::array::{Array, AsArray};
    if let Some(c) = b.column_by_name("uid") {
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64)?;
        let c = c.as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..c.len() {
            if c.is_valid(i) {
                out.insert(c.value(i) as u32);
            }
        }
    }
    Ok(())
}

pub(crate) fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn progress_bar(enabled: bool, total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})")
            .expect("valid template"),
    );
    pb
}

/// Commit the ordinals a load assigned (refusing when another load assigned some meanwhile).
async fn commit_identity(db: &Database, identity: &identity::Identity, now: i64) -> Result<()> {
    if let Some(batch) = identity.fresh_batch(now)? {
        let mut id_table = db.latest(Table::Identity).await?;
        if id_table.version() != identity.version {
            return Err(Error::ingest(
                "another load assigned user ordinals at the same time; nothing was committed, run this load again",
            ));
        }
        let mut w = RecordBatchWriter::for_table(&id_table)?
            .with_commit_properties(CommitProperties::default().with_max_retries(0));
        w.write(batch).await?;
        w.flush_and_commit(&mut id_table).await.map_err(|e| match e {
            deltalake::DeltaTableError::VersionAlreadyExists(_) | deltalake::DeltaTableError::Transaction { .. } => {
                Error::ingest("another load assigned user ordinals at the same time; nothing was committed, run this load again")
            }
            other => other.into(),
        })?;
    }
    Ok(())
}

/// A links load: read, pseudonymise, assign ordinals, then commit identities and links.
#[allow(clippy::too_many_arguments)]
async fn load_links(
    db: &Database,
    keyring: &Keyring,
    names: Vec<String>,
    mut rx: tokio::sync::mpsc::Receiver<Result<(usize, read::SourceBatch)>>,
    progress: &indicatif::ProgressBar,
    opts: &IngestOptions,
    started: Instant,
) -> Result<(IngestReport, Option<IndexDays>)> {
    let mut identity = identity::Identity::load(db).await?;
    let now = chrono::Utc::now().timestamp_micros();
    let suppression = db.latest_suppression().await?;
    let mut reader = links::LinkReader::new(
        Pseudonymizer::new(keyring, crate::privacy::keyring::USER_DOMAIN),
        suppression.by_hash.keys().cloned().collect(),
        Pseudonymizer::new(keyring, crate::erasure::FORGET_DOMAIN),
    );
    let mut rejected = Vec::new();
    let mut checked = vec![false; names.len()];
    let mut rows = 0;
    while let Some(msg) = rx.recv().await {
        let (idx, sb) = msg?;
        if !checked[idx] {
            links::LinkReader::check_columns(&sb.batch.schema(), &names[idx])?;
            checked[idx] = true;
        }
        progress.inc(sb.bytes);
        rows += reader.add(sb, &mut identity, &mut rejected, &names[idx])?;
    }
    rejected.sort_by(|a, b| (&a.file, a.row).cmp(&(&b.file, b.row)));
    if opts.strict && !rejected.is_empty() {
        return Err(Error::Rejected(format!(
            "{} rows rejected and the load is strict (--strict, or a Flight SQL bulk ingest); nothing was committed (first: {})",
            rejected.len(),
            rejected[0]
        )));
    }
    let new_users = identity.fresh_count();
    commit_identity(db, &identity, now).await?;
    let max = opts
        .max_ids_per_profile
        .unwrap_or(crate::links::DEFAULT_MAX_IDS);
    let (accepted, refused, version) = links::commit(db, &reader.links, max, now).await?;
    let _ = rows;
    let took_ms = started.elapsed().as_millis();
    tracing::info!(
        table = "links",
        links = accepted,
        refused,
        rejected = rejected.len(),
        new_users,
        took_ms,
        "ingested"
    );
    Ok((
        links::report(
            names.len(),
            accepted,
            rejected,
            new_users,
            refused,
            version,
            took_ms,
        ),
        None,
    ))
}

/// Finish the data files, then commit them (with the grown schema, if any) as one append —
/// unless `raced` (asked after the files are written) says a FORGET overlapped the load.
async fn commit_append<F, Fut>(
    table: &mut DeltaTable,
    mut w: RecordBatchWriter,
    raced: F,
) -> Result<u64>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    use deltalake::kernel::transaction::CommitBuilder;
    use deltalake::kernel::{Action, MetadataExt, StructType};
    use deltalake::protocol::{DeltaOperation, SaveMode};

    let grown = w.arrow_schema();
    let before = table.snapshot()?.snapshot().arrow_schema();
    let adds = w.flush().await?;
    // Every data file of the load is on storage now; nothing is visible until the commit.
    failpoint("ingest-before-commit");
    if raced().await? {
        // Nothing references these files and VACUUM only removes files a commit removed: delete
        // them now, or the forgotten users' rows would stay on storage.
        use object_store::ObjectStoreExt;
        let store = table.object_store();
        for a in &adds {
            let path = deltalake::Path::from(a.path.as_str());
            if let Err(e) = store.delete(&path).await {
                tracing::warn!(error = %e, "could not delete a refused load's data file");
            }
        }
        return Err(forget_raced());
    }
    let mut actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    let names = |s: &Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    if names(&grown) != names(&before) {
        let kernel: StructType = grown.as_ref().try_into_kernel()?;
        let meta = MetadataExt::with_schema(table.snapshot()?.metadata().clone(), &kernel)
            .map_err(|e| Error::storage(format!("cannot grow the schema: {e}")))?;
        actions.push(Action::Metadata(meta));
    }
    let op = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: None,
        predicate: None,
    };
    let done = CommitBuilder::from(
        deltalake::kernel::transaction::CommitProperties::default()
            .with_metadata(crate::storage::commit::op("ingest")),
    )
    .with_actions(actions)
    .build(Some(table.snapshot()?), table.log_store(), op)
    .await?;
    Ok(done.version())
}

/// Profiles are upserts: the latest row of a user in this load replaces their stored row whole
/// (attributes the new row lacks become NULL). With `merge`, a user's rows are merged instead:
/// each attribute takes the load's last non-NULL value, else keeps the stored one. One MERGE,
/// one commit.
async fn upsert_profiles(
    mut table: DeltaTable,
    held: Vec<RecordBatch>,
    merge: bool,
) -> Result<u64> {
    use datafusion::common::Column;
    use datafusion::logical_expr::Expr;

    // The source carries every target column (NULL where this load lacks it: the row is
    // replaced whole) plus any new ones, so the MERGE only copies source columns.
    let target_schema = table.snapshot()?.snapshot().arrow_schema();
    let target_plain = Schema::new(
        target_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    );
    let merged = Arc::new(Schema::try_merge(
        std::iter::once(target_plain).chain(held.iter().map(|b| b.schema().as_ref().clone())),
    )?);
    // New columns are added first, in the order they appeared (a MERGE would add them in an
    // order of its own).
    if merged.fields().len() > target_schema.fields().len() {
        let mut fields: Vec<arrow::datatypes::FieldRef> =
            target_schema.fields().iter().cloned().collect();
        fields.extend(
            merged
                .fields()
                .iter()
                .filter(|f| target_schema.field_with_name(f.name()).is_err())
                .cloned(),
        );
        table = crate::storage::commit::grow_schema(table, &Schema::new(fields)).await?;
    }
    let batches: Vec<RecordBatch> = held
        .iter()
        .map(|b| conform(b, &merged))
        .collect::<Result<_>>()?;
    use arrow::array::Array;
    let all = arrow::compute::concat_batches(&merged, &batches)?;
    let uids = all
        .column(1)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .expect("uid is Int64")
        .clone();
    // One output row per user, in the order of their first row.
    let mut slot: HashMap<i64, usize> = HashMap::new();
    let mut rows_of: Vec<Vec<u32>> = Vec::new();
    for r in 0..all.num_rows() {
        let s = *slot.entry(uids.value(r)).or_insert_with(|| {
            rows_of.push(Vec::new());
            rows_of.len() - 1
        });
        rows_of[s].push(r as u32);
    }
    let cols = all
        .columns()
        .iter()
        .map(|c| {
            // Replace: the user's last row. Merge: per attribute, the last non-NULL value.
            let idx: UInt32Array = rows_of
                .iter()
                .map(|rows| {
                    if merge {
                        rows.iter()
                            .rev()
                            .find(|r| c.is_valid(**r as usize))
                            .copied()
                    } else {
                        rows.last().copied()
                    }
                })
                .collect();
            arrow::compute::take(c, &idx, None)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let source = vec![RecordBatch::try_new(merged.clone(), cols)?];

    let ctx = SessionContext::new();
    let df = ctx.read_batches(source)?;
    let src = |c: &str| Expr::Column(Column::new(Some("source"), c));
    let tgt = |c: &str| Expr::Column(Column::new(Some("target"), c));
    let predicate = tgt("uid").eq(src("uid"));
    let cols: Vec<String> = merged.fields().iter().map(|f| f.name().clone()).collect();
    let existing: std::collections::HashSet<String> = target_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let (table, metrics) = table
        .merge(df, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(true)
        .when_matched_update(|mut u| {
            for c in &cols {
                let keep_stored = merge
                    && existing.contains(c)
                    && !["user_id", "uid", "updated_at"].contains(&c.as_str());
                let value = if keep_stored {
                    datafusion::functions::core::expr_fn::coalesce(vec![src(c), tgt(c)])
                } else {
                    src(c)
                };
                u = u.update(Column::new_unqualified(c), value);
            }
            u
        })?
        .when_not_matched_insert(|mut i| {
            for c in &cols {
                i = i.set(Column::new_unqualified(c), src(c));
            }
            i
        })?
        .await?;
    tracing::debug!(
        inserted = metrics.num_target_rows_inserted,
        updated = metrics.num_target_rows_updated,
        "profiles merged"
    );
    Ok(table.version().unwrap_or(0))
}

/// Reorder / null-fill `b` to `schema`.
fn conform(b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| match b.schema().index_of(f.name()) {
            Ok(i) => Ok(b.column(i).clone()),
            Err(_) => Ok(arrow::array::new_null_array(f.data_type(), b.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
