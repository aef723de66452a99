//! Group commit. Requests hand their mapped messages to one committer task and wait. The
//! committer takes everything waiting (at most `max_batch_events` messages; the first waits at
//! most `commit_interval`), drops what was acknowledged before and what belongs to forgotten
//! users, types the values against the tables, and loads links → consent → profiles → events
//! through the ingest path (each load commits its new ordinals first, then its one table
//! commit, then catches the event index up). Only then are the requests answered: 200 for all,
//! or 503 for all when a commit failed.
//!
//! Exactly once: after the data commits, the keyed hashes of the messages' `(source,
//! messageId)` go to `_segdb/collected`, and into the in-memory window. At start the window is
//! read back from `_segdb/collected`, plus the `message_id`s of collected events newer than its
//! last entry (a crash between the events commit and the log's commit). A crash before the
//! events commit leaves links, consent and profile merges that the client's retry applies
//! again to the same result.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use tokio::sync::{mpsc, oneshot};

use super::Settings;
use super::dedup::{self, Window};
use super::map::{Consent, Declared, Fields, Mapped, Val};
use super::stats::{Reason, Reject, Stats};
use crate::error::{Error, Result};
use crate::ingest::{IngestOptions, Kind};
use crate::privacy::Keyring;
use crate::privacy::pseudonym::Pseudonymizer;
use crate::storage::{Database, Table};

/// The messages of one request, waiting for their commit.
struct Pending {
    source: String,
    received_at: i64,
    messages: Vec<Mapped>,
    arrived: Instant,
    reply: oneshot::Sender<std::result::Result<(), String>>,
}

/// Why a request was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many messages waiting (429).
    Busy,
    /// The commit failed (503).
    Unavailable(String),
}

/// The collector's handle: submit messages, read the declared PII rules.
pub struct Collector {
    tx: mpsc::UnboundedSender<Pending>,
    stats: Arc<Stats>,
    settings: Settings,
    declared: std::sync::RwLock<Arc<Declared>>,
}

impl Collector {
    /// Start the committer over `db`.
    pub async fn start(
        db: Database,
        keyring: Arc<Keyring>,
        settings: Settings,
        stats: Arc<Stats>,
        log: Vec<(i64, i64)>,
        recent_events: Vec<(String, String, i64)>,
        max_ids: usize,
    ) -> Result<Arc<Collector>> {
        let mut window = Window::new(settings.dedup_window_micros, settings.dedup_max_ids);
        let hasher = dedup::hasher(&keyring);
        let since = chrono::Utc::now().timestamp_micros() - settings.dedup_window_micros;
        for (k, at) in log.into_iter().filter(|(_, at)| *at >= since) {
            window.insert(k, at);
        }
        for (source, mid, at) in recent_events {
            window.insert(dedup::key(&hasher, &source, &mid), at);
        }
        tracing::info!(
            target: "segdb::collector",
            remembered = window.len(),
            "collector started"
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let rules = Arc::new(declared(&db).await?);
        let collector = Arc::new(Collector {
            tx,
            stats: stats.clone(),
            settings: settings.clone(),
            declared: std::sync::RwLock::new(rules.clone()),
        });
        let committer = Committer {
            db,
            keyring,
            settings,
            stats,
            window,
            hasher,
            consent: None,
            collector: Arc::downgrade(&collector),
            max_ids,
            declared: rules,
        };
        tokio::spawn(committer.run(rx));
        Ok(collector)
    }

    /// The declared personal columns (as of the last commit).
    pub fn declared(&self) -> Arc<Declared> {
        self.declared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Wait until `messages` are committed (or refused).
    pub async fn submit(
        &self,
        source: &str,
        received_at: i64,
        messages: Vec<Mapped>,
    ) -> std::result::Result<(), Refusal> {
        if messages.is_empty() {
            return Ok(());
        }
        let n = messages.len() as u64;
        let before = self.stats.pending.fetch_add(n, Ordering::SeqCst);
        if before + n > self.settings.max_pending_events as u64 && before > 0 {
            self.stats.pending.fetch_sub(n, Ordering::SeqCst);
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Busy);
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Pending {
            source: source.to_string(),
            received_at,
            messages,
            arrived: Instant::now(),
            reply,
        });
        if sent.is_err() {
            self.stats.pending.fetch_sub(n, Ordering::SeqCst);
            return Err(Refusal::Unavailable("the collector has stopped".into()));
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Refusal::Unavailable(e)),
            Err(_) => Err(Refusal::Unavailable("the collector has stopped".into())),
        }
    }
}

/// The declared personal columns of events and profiles.
async fn declared(db: &Database) -> Result<Declared> {
    let s = crate::storage::settings::Settings::read(db).await?;
    Ok(Declared {
        events: s.pii_of("events").into_keys().collect(),
        profiles: s.pii_of("profiles").into_keys().collect(),
    })
}

/// The `(key, at)` rows of `_segdb/collected`, oldest first (read once at start: the scheduled
/// compaction keeps it about a dedup window long).
pub async fn logged(db: &Database) -> Result<Vec<(i64, i64)>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    let table = db.load(Table::Collected).await?;
    let mut out = Vec::new();
    for b in crate::storage::read_pinned(db, Table::Collected, &table).await? {
        let k = crate::storage::snapshot_column(&b, "key", &DataType::Int64)?;
        let at = crate::storage::snapshot_column(&b, "at", &crate::storage::ts_type())?;
        let (k, at) = (
            k.as_primitive::<Int64Type>(),
            at.as_primitive::<TimestampMicrosecondType>(),
        );
        for i in 0..b.num_rows() {
            if k.is_valid(i) && at.is_valid(i) {
                out.push((k.value(i), at.value(i)));
            }
        }
    }
    out.sort_by_key(|(_, at)| *at);
    Ok(out)
}

/// Delete the entries of `_segdb/collected` older than the dedup window (the scheduled
/// compaction runs it first, so the log stays about a window long).
pub async fn prune_log(db: &Database, window_micros: i64) -> Result<()> {
    use datafusion::logical_expr::{col, lit};
    let cutoff = chrono::Utc::now().timestamp_micros() - window_micros;
    let table = db.load(Table::Collected).await?;
    if table.version().unwrap_or(0) == 0 {
        return Ok(());
    }
    let at =
        datafusion::common::ScalarValue::TimestampMicrosecond(Some(cutoff), Some("UTC".into()));
    table
        .delete()
        .with_predicate(col("at").lt(lit(at)))
        .with_commit_properties(
            deltalake::kernel::transaction::CommitProperties::default()
                .with_metadata(crate::storage::commit::op("collected-prune")),
        )
        .await?;
    Ok(())
}

/// The latest consent value per (pseudonym, kind[:purpose]), as of a consent version.
struct ConsentState {
    version: u64,
    latest: HashMap<(String, String), String>,
}

struct Committer {
    db: Database,
    keyring: Arc<Keyring>,
    settings: Settings,
    stats: Arc<Stats>,
    window: Window,
    hasher: Pseudonymizer,
    consent: Option<ConsentState>,
    collector: std::sync::Weak<Collector>,
    /// `[identity] max_ids_per_profile`.
    max_ids: usize,
    /// The declared personal columns, read after each commit (and published to the handlers).
    declared: Arc<Declared>,
}

/// One kept message and where it came from.
struct Item<'a> {
    source: &'a str,
    received_at: i64,
    m: &'a Mapped,
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        while let Some(first) = rx.recv().await {
            let deadline =
                tokio::time::Instant::from_std(first.arrived + self.settings.commit_interval);
            let mut n = first.messages.len();
            let mut batch = vec![first];
            while n < self.settings.max_batch_events {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => {
                        n += p.messages.len();
                        batch.push(p);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            let started = Instant::now();
            let result = self.guarded(&batch).await;
            self.stats.pending.fetch_sub(n as u64, Ordering::SeqCst);
            match result {
                Ok(stored) => {
                    if stored {
                        self.stats.commit_took(started.elapsed().as_secs_f64());
                    }
                    for p in batch {
                        let _ = p.reply.send(Ok(()));
                    }
                }
                Err(e) if batch.len() > 1 => {
                    // One request's messages may be what fails the group (or another writer
                    // raced it): commit each request on its own, so the others still land.
                    tracing::warn!(target: "segdb::collector", error = %e, requests = batch.len(), "a collector commit failed; committing its requests one by one");
                    for p in batch {
                        let one = [p];
                        let r = self.guarded(&one).await;
                        let [p] = one;
                        self.answer(p, r);
                    }
                }
                Err(e) => {
                    for p in batch {
                        self.answer(p, Err(e.clone()));
                    }
                }
            }
            if let Ok(d) = declared(&self.db).await {
                self.declared = Arc::new(d);
                if let Some(c) = self.collector.upgrade() {
                    *c.declared.write().unwrap_or_else(|p| p.into_inner()) = self.declared.clone();
                }
            }
        }
    }

    /// [`Committer::commit`], with a panic turned into an error (the collector keeps running).
    async fn guarded(&mut self, batch: &[Pending]) -> std::result::Result<bool, String> {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(self.commit(batch))
            .catch_unwind()
            .await
        {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                // The in-memory consent state may be half updated: read it afresh.
                self.consent = None;
                Err("the collector's commit panicked (a bug); nothing was acknowledged".into())
            }
        }
    }

    /// Answer one request.
    fn answer(&self, p: Pending, r: std::result::Result<bool, String>) {
        match &r {
            Ok(true) => {}
            Ok(false) => {}
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target: "segdb::collector", error = %e, messages = p.messages.len(), "a collector request was answered 503");
            }
        }
        let _ = p.reply.send(r.map(|_| ()));
    }

    fn reject(&self, source: &str, reason: Reason, kind: &str, field: Option<&str>) {
        self.stats.reject(Reject {
            at: chrono::Utc::now().timestamp_micros(),
            source: source.to_string(),
            reason,
            kind: Some(kind.to_string()),
            field: field.map(str::to_string),
        });
    }

    /// Commit one group; `Ok(true)` when something was stored.
    async fn commit(&mut self, batch: &[Pending]) -> Result<bool> {
        if std::env::var(crate::storage::FAILPOINT_ENV).is_ok_and(|v| v == "collector-commit-fails")
        {
            // Tests: a storage failure, answered 503.
            return Err(Error::storage("failpoint collector-commit-fails"));
        }
        let now = chrono::Utc::now().timestamp_micros();
        self.window.expire(now);
        // 1. Acknowledged before (or twice in this group): acknowledged again, not stored.
        let mut keys_in_group = HashSet::new();
        let mut items = Vec::new();
        let mut keys = Vec::new();
        for p in batch {
            let mut dups = 0;
            for m in &p.messages {
                if let Some(mid) = &m.message_id {
                    let k = dedup::key(&self.hasher, &p.source, mid);
                    if self.window.contains(k) || !keys_in_group.insert(k) {
                        dups += 1;
                        continue;
                    }
                    keys.push((k, p.received_at));
                }
                items.push(Item {
                    source: &p.source,
                    received_at: p.received_at,
                    m,
                });
            }
            self.stats.deduplicated(&p.source, dups);
        }
        // 2. Messages of forgotten users are dropped (the latest suppression list).
        let suppression = self.db.latest_suppression().await?;
        if !suppression.by_hash.is_empty() {
            let user = Pseudonymizer::new(&self.keyring, crate::privacy::keyring::USER_DOMAIN);
            let forget = Pseudonymizer::new(&self.keyring, crate::erasure::FORGET_DOMAIN);
            let gone = |raw: &str| {
                suppression
                    .by_hash
                    .contains_key(&forget.pseudonymize(&user.pseudonymize(raw)))
            };
            items.retain(|it| {
                let ids = [
                    it.m.user_id.as_deref(),
                    it.m.anonymous_id.as_deref(),
                    it.m.link.as_ref().map(|(l, _)| l.as_str()),
                ];
                let hit = ids.into_iter().flatten().any(gone);
                if hit {
                    self.reject(it.source, Reason::Forgotten, it.m.kind, None);
                }
                !hit
            });
        }
        if items.is_empty() {
            self.remember(&keys).await;
            return Ok(false);
        }
        // 3. The loads, in the ingest's order.
        self.load_links(&items).await?;
        self.load_consent(&items).await?;
        self.load_profiles(&items).await?;
        self.load_events(&items).await?;
        let mut per_source: HashMap<&str, u64> = HashMap::new();
        for it in &items {
            *per_source.entry(it.source).or_default() += 1;
            for (reason, field) in &it.m.dropped {
                self.reject(it.source, *reason, it.m.kind, Some(field));
            }
        }
        for (s, n) in per_source {
            self.stats.accepted(s, n);
        }
        self.remember(&keys).await;
        Ok(true)
    }

    /// Log the group's keys to `_segdb/collected` and the window. A failed log write is only
    /// logged: the data is committed, and the window still holds the keys while the server runs.
    async fn remember(&mut self, keys: &[(i64, i64)]) {
        if keys.is_empty() {
            return;
        }
        let batch = RecordBatch::try_new(
            crate::storage::base_schema(Table::Collected),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter_values(
                    keys.iter().map(|(k, _)| *k),
                )) as ArrayRef,
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(keys.iter().map(|(_, a)| *a))
                        .with_timezone("UTC"),
                ),
            ],
        );
        // Crash tests: the data is committed, the log is not.
        crate::storage::failpoint("collector-before-log");
        let r = match batch {
            Ok(b) => {
                crate::storage::commit::append(
                    &self.db,
                    Table::Collected,
                    vec![b],
                    crate::storage::commit::op("collected"),
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = r {
            tracing::warn!(target: "segdb::collector", error = %e, "could not log acknowledged message ids; they are remembered until the server stops");
        }
        for (k, at) in keys {
            self.window.insert(*k, *at);
        }
    }

    async fn ingest(&self, kind: Kind, batch: RecordBatch, opts: IngestOptions) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let stream = futures::stream::iter([Ok(batch)]);
        let opts = IngestOptions {
            max_ids_per_profile: Some(self.max_ids),
            ..opts
        };
        let (report, days) =
            crate::ingest::ingest_stream(&self.db, &self.keyring, kind, "collector", stream, &opts)
                .await?;
        // The rows are committed: from here on nothing may turn the group into a 503 (its
        // retry would store them twice). Readers catch a lagging index up themselves.
        let committed = report.clone();
        if let Err(e) = crate::ingest::after_load(&self.db, (report, days)).await {
            tracing::warn!(target: "segdb::collector", table = kind.name(), error = %e, "the event index could not be brought up to date after a collector commit; statements catch it up as they read");
        }
        let report = committed;
        if !report.rejected.is_empty() {
            // The mapper checked ids and the committer the forgotten; what is left is a race.
            tracing::warn!(target: "segdb::collector", table = kind.name(), rows = report.rejected.len(), "collected rows were rejected by the ingest checks");
        }
        Ok(())
    }

    async fn load_links(&self, items: &[Item<'_>]) -> Result<()> {
        let (mut a, mut b, mut t) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        for it in items {
            if let (Some(u), Some((other, id_type))) = (&it.m.user_id, &it.m.link) {
                a.append_value(u);
                b.append_value(other);
                t.append_value(id_type);
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("linked_id", DataType::Utf8, true),
            Field::new("id_type", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(a.finish()) as ArrayRef,
                Arc::new(b.finish()),
                Arc::new(t.finish()),
            ],
        )?;
        self.ingest(Kind::Links, batch, IngestOptions::default())
            .await
    }

    /// Consent rows that differ from the user's latest record of the same kind (and purpose).
    async fn load_consent(&mut self, items: &[Item<'_>]) -> Result<()> {
        if items.iter().all(|it| it.m.consent.is_empty()) {
            return Ok(());
        }
        let table = self.db.latest(Table::Consent).await?;
        let version = table.version().unwrap_or(0) as u64;
        if self.consent.as_ref().is_none_or(|c| c.version != version) {
            self.consent = Some(ConsentState {
                version,
                latest: latest_consent(&self.db, &table).await?,
            });
        }
        let user = Pseudonymizer::new(&self.keyring, crate::privacy::keyring::USER_DOMAIN);
        let state = self.consent.as_mut().expect("loaded");
        let mut rows: Vec<(&str, i64, &Consent)> = Vec::new();
        let mut changed = Vec::new();
        for it in items {
            if it.m.consent.is_empty() {
                continue;
            }
            let owner = it.m.owner();
            let p = user.pseudonymize(owner);
            for c in &it.m.consent {
                let k = (p.clone(), c.key());
                if state.latest.get(&k) != Some(&c.value()) {
                    state.latest.insert(k.clone(), c.value());
                    changed.push(k);
                    rows.push((owner, it.m.ts, c));
                }
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut uid = StringBuilder::new();
        let (mut tc, mut usp, mut gpp, mut purpose) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let mut granted = BooleanBuilder::new();
        let mut at = Vec::new();
        for (owner, ts, c) in &rows {
            uid.append_value(owner);
            at.push(*ts);
            let (mut t, mut u, mut g, mut p, mut gr) = (None, None, None, None, None);
            match c {
                Consent::Purpose(name, yes) => {
                    p = Some(name.as_str());
                    gr = Some(*yes);
                }
                Consent::Tc(s) => t = Some(s.as_str()),
                Consent::Usp(s) => u = Some(s.as_str()),
                Consent::Gpp(s) => g = Some(s.as_str()),
            }
            tc.append_option(t);
            usp.append_option(u);
            gpp.append_option(g);
            purpose.append_option(p);
            granted.append_option(gr);
        }
        let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("tc_string", DataType::Utf8, true),
            Field::new("us_privacy", DataType::Utf8, true),
            Field::new("gpp", DataType::Utf8, true),
            Field::new("purpose", DataType::Utf8, true),
            Field::new("granted", DataType::Boolean, true),
            Field::new("recorded_at", ts, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(uid.finish()) as ArrayRef,
                Arc::new(tc.finish()),
                Arc::new(usp.finish()),
                Arc::new(gpp.finish()),
                Arc::new(purpose.finish()),
                Arc::new(granted.finish()),
                Arc::new(TimestampMicrosecondArray::from(at).with_timezone("UTC")),
            ],
        )?;
        match self
            .ingest(Kind::Consent, batch, IngestOptions::default())
            .await
        {
            Ok(()) => {
                // The state now reflects our own commit.
                if let Some(s) = self.consent.as_mut() {
                    s.version = self.db.latest(Table::Consent).await?.version().unwrap_or(0) as u64;
                }
                Ok(())
            }
            Err(e) => {
                // Not stored: read the state afresh next time.
                self.consent = None;
                let _ = changed;
                Err(e)
            }
        }
    }

    async fn load_profiles(&self, items: &[Item<'_>]) -> Result<()> {
        let rows: Vec<(&Item, &Fields)> = items
            .iter()
            .filter_map(|it| it.m.profile.as_ref().map(|f| (it, f)))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let table = self.db.latest(Table::Profiles).await?;
        let schema = table.snapshot()?.snapshot().arrow_schema();
        let mut cols = Columns::new(&schema, self.settings.max_columns);
        let mut ids = StringBuilder::new();
        for (i, (it, f)) in rows.iter().enumerate() {
            ids.append_value(it.m.owner());
            for (name, v) in &f.0 {
                if let Some(why) = cols.put(i, name, v) {
                    self.reject(it.source, why, it.m.kind, Some(name));
                }
            }
        }
        let mut fields = vec![Field::new("user_id", DataType::Utf8, true)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(ids.finish())];
        cols.finish(rows.len(), &mut fields, &mut arrays);
        let opts = IngestOptions {
            merge: true,
            ..Default::default()
        };
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        self.ingest(Kind::Profiles, batch, opts).await
    }

    async fn load_events(&self, items: &[Item<'_>]) -> Result<()> {
        let rows: Vec<(&Item, &(String, Fields))> = items
            .iter()
            .filter_map(|it| it.m.event.as_ref().map(|e| (it, e)))
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let table = self.db.latest(Table::Events).await?;
        let schema = table.snapshot()?.snapshot().arrow_schema();
        let mut cols = Columns::new(&schema, self.settings.max_columns);
        let (mut user, mut anon, mut event, mut mid, mut source) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let (mut ts, mut received) = (Vec::new(), Vec::new());
        for (i, (it, (name, f))) in rows.iter().enumerate() {
            user.append_option(it.m.user_id.as_deref());
            anon.append_option(it.m.anonymous_id.as_deref());
            event.append_value(name);
            ts.push(it.m.ts);
            received.push(it.received_at);
            mid.append_option(it.m.message_id.as_deref());
            source.append_value(it.source);
            for (col, v) in &f.0 {
                if let Some(why) = cols.put(i, col, v) {
                    self.reject(it.source, why, it.m.kind, Some(col));
                }
            }
        }
        let tst = crate::storage::ts_type();
        let mut fields = vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("anonymous_id", DataType::Utf8, true),
            Field::new("event", DataType::Utf8, true),
            Field::new("ts", tst.clone(), true),
            Field::new("received_at", tst.clone(), true),
            Field::new("message_id", DataType::Utf8, true),
            Field::new("source", DataType::Utf8, true),
        ];
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(user.finish()),
            Arc::new(anon.finish()),
            Arc::new(event.finish()),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(received).with_timezone("UTC")),
            Arc::new(mid.finish()),
            Arc::new(source.finish()),
        ];
        cols.finish(rows.len(), &mut fields, &mut arrays);
        // `name` is a product or page name in events, not a person's (unless declared).
        let mut opts = IngestOptions::default();
        if fields.iter().any(|f| f.name() == "name") && !self.declared.events.contains("name") {
            opts.pii = vec![("name".to_string(), crate::storage::settings::PiiRule::Keep)];
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        self.ingest(Kind::Events, batch, opts).await
    }
}

/// The latest consent value per (pseudonym, kind[:purpose]) in `table`.
async fn latest_consent(
    db: &Database,
    table: &deltalake::DeltaTable,
) -> Result<HashMap<(String, String), String>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMicrosecondType;
    let mut best: HashMap<(String, String), (i64, i64, String)> = HashMap::new();
    let mut seq = 0i64;
    for b in crate::storage::read_pinned(db, Table::Consent, table).await? {
        let text = |n: &str| crate::storage::snapshot_column(&b, n, &DataType::Utf8);
        let (u, tc, usp, gpp, p) = (
            text("user_id")?,
            text("tc_string")?,
            text("us_privacy")?,
            text("gpp")?,
            text("purpose")?,
        );
        let g = crate::storage::snapshot_column(&b, "granted", &DataType::Boolean)?;
        let at = crate::storage::snapshot_column(&b, "recorded_at", &crate::storage::ts_type())?;
        let (u, tc, usp, gpp, p, g, at) = (
            u.as_string::<i32>(),
            tc.as_string::<i32>(),
            usp.as_string::<i32>(),
            gpp.as_string::<i32>(),
            p.as_string::<i32>(),
            g.as_boolean(),
            at.as_primitive::<TimestampMicrosecondType>(),
        );
        for i in 0..b.num_rows() {
            seq += 1;
            if !u.is_valid(i) {
                continue;
            }
            let when = if at.is_valid(i) {
                at.value(i)
            } else {
                i64::MIN
            };
            let mut put = |k: String, v: String| {
                let key = (u.value(i).to_string(), k);
                let e = best
                    .entry(key)
                    .or_insert((i64::MIN, i64::MIN, String::new()));
                if (when, seq) >= (e.0, e.1) {
                    *e = (when, seq, v);
                }
            };
            if p.is_valid(i) && g.is_valid(i) {
                put(format!("purpose:{}", p.value(i)), g.value(i).to_string());
            }
            if tc.is_valid(i) {
                put("tc_string".into(), tc.value(i).to_string());
            }
            if usp.is_valid(i) {
                put("us_privacy".into(), usp.value(i).to_string());
            }
            if gpp.is_valid(i) {
                put("gpp".into(), gpp.value(i).to_string());
            }
        }
    }
    Ok(best.into_iter().map(|(k, (_, _, v))| (k, v)).collect())
}

/// The typed columns of one commit to one table: a column's type is the table's, else the
/// first non-null value's; a value that does not fit is stored NULL and reported.
struct Columns<'s> {
    table: &'s Schema,
    max: usize,
    /// Columns this commit adds to the table.
    added: usize,
    order: Vec<String>,
    by_name: HashMap<String, Col>,
}

enum Col {
    Bool(Vec<(usize, bool)>),
    Int(Vec<(usize, i64)>),
    Float(Vec<(usize, f64)>),
    Text(Vec<(usize, String)>),
    /// A timestamp column (from a file load): text that reads as a time.
    Ts(Vec<(usize, i64)>, DataType),
    /// A DECIMAL(p, s) column (from a file load or a widening): numbers it holds exactly.
    Decimal(Vec<(usize, i128)>, u8, i8),
    /// A table column of another type: every value is a `type` reject.
    Other(DataType),
}

impl<'s> Columns<'s> {
    fn new(table: &'s Schema, max: usize) -> Self {
        Columns {
            table,
            max,
            added: 0,
            order: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    /// Put `row`'s value; `Some(reason)` when it is not stored.
    fn put(&mut self, row: usize, name: &str, v: &Val) -> Option<Reason> {
        if !self.by_name.contains_key(name) {
            let col = match self.table.field_with_name(name) {
                Ok(f) => match f.data_type() {
                    DataType::Boolean => Col::Bool(Vec::new()),
                    DataType::Int64 => Col::Int(Vec::new()),
                    DataType::Float64 => Col::Float(Vec::new()),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                        Col::Text(Vec::new())
                    }
                    t @ DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, _) => {
                        Col::Ts(Vec::new(), t.clone())
                    }
                    DataType::Decimal128(p, s) => Col::Decimal(Vec::new(), *p, *s),
                    other => Col::Other(other.clone()),
                },
                Err(_) => {
                    if self.table.fields().len() + self.added + 1 > self.max {
                        return Some(Reason::Columns);
                    }
                    self.added += 1;
                    match v {
                        Val::Bool(_) => Col::Bool(Vec::new()),
                        Val::Int(_) => Col::Int(Vec::new()),
                        Val::Float(_) => Col::Float(Vec::new()),
                        Val::Text(_) => Col::Text(Vec::new()),
                    }
                }
            };
            self.order.push(name.to_string());
            self.by_name.insert(name.to_string(), col);
        }
        let col = self.by_name.get_mut(name).expect("added");
        match (col, v) {
            (Col::Bool(c), Val::Bool(b)) => c.push((row, *b)),
            (Col::Int(c), Val::Int(i)) => c.push((row, *i)),
            // A whole Float64 fits an Int64 column.
            (Col::Int(c), Val::Float(f)) if f.fract() == 0.0 && *f >= -9.2e18 && *f <= 9.2e18 => {
                c.push((row, *f as i64))
            }
            (Col::Float(c), Val::Float(f)) => c.push((row, *f)),
            // An integer beyond 2^53 would change as a double: a reject, not a rounding.
            (Col::Float(c), Val::Int(i))
                if (*i as f64) as i64 == *i && i.unsigned_abs() <= 1 << 53 =>
            {
                c.push((row, *i as f64))
            }
            (Col::Text(c), Val::Text(s)) => c.push((row, s.clone())),
            // A text column takes any value as its text (as a file load's does).
            (Col::Text(c), Val::Int(i)) => c.push((row, i.to_string())),
            (Col::Text(c), Val::Float(f)) => c.push((row, f.to_string())),
            (Col::Text(c), Val::Bool(b)) => c.push((row, b.to_string())),
            (Col::Decimal(c, p, s), v) => match decimal_of(v, *p, *s) {
                Some(n) => c.push((row, n)),
                None => return Some(Reason::Type),
            },
            (Col::Ts(c, _), Val::Text(s)) => match crate::time::parse_micros(s) {
                Some(t) => c.push((row, t)),
                None => return Some(Reason::Type),
            },
            _ => return Some(Reason::Type),
        }
        None
    }

    /// Append the columns (in first-seen order) to a batch of `rows` rows.
    fn finish(self, rows: usize, fields: &mut Vec<Field>, arrays: &mut Vec<ArrayRef>) {
        let mut by_name = self.by_name;
        for name in self.order {
            let Some(col) = by_name.remove(&name) else {
                continue;
            };
            let (t, a): (DataType, ArrayRef) = match col {
                Col::Bool(v) => {
                    let mut b = BooleanBuilder::with_capacity(rows);
                    b.extend(fill(rows, v));
                    (DataType::Boolean, Arc::new(b.finish()))
                }
                Col::Int(v) => {
                    let mut b = Int64Builder::with_capacity(rows);
                    b.extend(fill(rows, v));
                    (DataType::Int64, Arc::new(b.finish()))
                }
                Col::Float(v) => {
                    let mut b = Float64Builder::with_capacity(rows);
                    b.extend(fill(rows, v));
                    (DataType::Float64, Arc::new(b.finish()))
                }
                Col::Text(v) => {
                    let mut b = StringBuilder::new();
                    b.extend(fill(rows, v));
                    (DataType::Utf8, Arc::new(b.finish()))
                }
                Col::Ts(v, t) => {
                    let tz = match &t {
                        DataType::Timestamp(_, tz) => tz.clone(),
                        _ => None,
                    };
                    let a = TimestampMicrosecondArray::from(fill(rows, v)).with_timezone_opt(tz);
                    (t, Arc::new(a))
                }
                Col::Decimal(v, p, s) => {
                    let a = arrow::array::Decimal128Array::from(fill(rows, v))
                        .with_precision_and_scale(p, s)
                        .expect("the table's own precision and scale");
                    (DataType::Decimal128(p, s), Arc::new(a))
                }
                Col::Other(t) => (t.clone(), arrow::array::new_null_array(&t, rows)),
            };
            fields.push(Field::new(name, t, true));
            arrays.push(a);
        }
    }
}

/// A number as the unscaled value of DECIMAL(p, s), when it is held exactly (49.99 in (10,2),
/// not 1.005); `None` otherwise.
fn decimal_of(v: &Val, p: u8, s: i8) -> Option<i128> {
    let limit = 10i128.checked_pow(u32::from(p))?;
    let n = match v {
        Val::Int(i) if s >= 0 => i128::from(*i).checked_mul(10i128.checked_pow(s as u32)?)?,
        Val::Float(f) if f.is_finite() && s >= 0 => {
            let scale = 10f64.powi(i32::from(s));
            let n = (f * scale).round();
            if n.abs() >= 1e37 || n / scale != *f {
                return None;
            }
            n as i128
        }
        _ => return None,
    };
    (n.abs() < limit).then_some(n)
}

/// Values at their rows, NULL elsewhere (rows ascend).
fn fill<T>(rows: usize, v: Vec<(usize, T)>) -> Vec<Option<T>> {
    let mut out: Vec<Option<T>> = (0..rows).map(|_| None).collect();
    for (r, x) in v {
        out[r] = Some(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Widened columns (ALTER … SET DATA TYPE) keep taking collected values, exactly.
    #[test]
    fn widened_columns_take_values_that_fit_them() {
        let table = Schema::new(vec![
            Field::new("price", DataType::Decimal128(10, 2), true),
            Field::new("sku", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
        ]);
        let mut c = Columns::new(&table, 10);
        assert_eq!(c.put(0, "price", &Val::Float(49.99)), None);
        assert_eq!(c.put(1, "price", &Val::Int(7)), None);
        assert_eq!(c.put(2, "price", &Val::Float(1.005)), Some(Reason::Type));
        assert_eq!(c.put(2, "price", &Val::Float(1e12)), Some(Reason::Type));
        assert_eq!(c.put(0, "sku", &Val::Int(1234)), None);
        assert_eq!(c.put(1, "sku", &Val::Bool(false)), None);
        assert_eq!(c.put(0, "score", &Val::Int(1 << 53)), None);
        assert_eq!(
            c.put(1, "score", &Val::Int((1 << 53) + 1)),
            Some(Reason::Type)
        );
        let (mut f, mut a) = (Vec::new(), Vec::new());
        c.finish(3, &mut f, &mut a);
        use arrow::array::{Array, AsArray};
        let price = a[0].as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!(
            (price.value(0), price.value(1), price.is_null(2)),
            (4999, 700, true)
        );
        assert_eq!(f[0].data_type(), &DataType::Decimal128(10, 2));
        let sku = a[1].as_string::<i32>();
        assert_eq!((sku.value(0), sku.value(1)), ("1234", "false"));
    }

    #[test]
    fn columns_type_by_table_then_first_value() {
        let table = Schema::new(vec![
            Field::new("price", DataType::Float64, true),
            Field::new("qty", DataType::Int64, true),
        ]);
        let mut c = Columns::new(&table, 4);
        assert_eq!(c.put(0, "price", &Val::Int(3)), None);
        assert_eq!(c.put(0, "qty", &Val::Float(2.0)), None);
        assert_eq!(c.put(1, "qty", &Val::Float(2.5)), Some(Reason::Type));
        assert_eq!(c.put(1, "plan", &Val::Text("pro".into())), None);
        assert_eq!(c.put(2, "plan", &Val::Int(1)), None);
        assert_eq!(c.put(3, "qty", &Val::Bool(true)), Some(Reason::Type));
        // Two table columns + plan + one more = 4; a fifth is over max_columns.
        assert_eq!(c.put(2, "flag", &Val::Bool(true)), None);
        assert_eq!(c.put(2, "extra", &Val::Bool(true)), Some(Reason::Columns));
        let (mut f, mut a) = (Vec::new(), Vec::new());
        c.finish(3, &mut f, &mut a);
        let names: Vec<&str> = f.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["price", "qty", "plan", "flag"]);
        use arrow::array::{Array, AsArray};
        let qty = a[1].as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(
            (qty.value(0), qty.is_null(1), qty.is_null(2)),
            (2, true, true)
        );
        let plan = a[2].as_string::<i32>();
        assert_eq!(
            (plan.is_null(0), plan.value(1), plan.value(2)),
            (true, "pro", "1")
        );
    }
}
