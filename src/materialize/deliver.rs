//! Standing exports delivered over HTTP (DESIGN §15): `FORMAT webhook` (JSON change batches
//! signed by the Standard Webhooks v1 spec) and `FORMAT segment` (Segment-spec identify + track
//! messages to a `…/v1/batch` endpoint).
//!
//! `segdb serve` runs one delivery loop per export ([`run`]). Each version of the segment is cut
//! once into who entered and who exited since the previous delivered version; the cut is stored
//! in `_segdb/deliveries` and sent in batches of `[export] webhook_batch`, in order. After each 2xx
//! a `sent` row commits the cursor (version, batch), so a restart resumes at the next batch and
//! never skips one; a retry sends the same batch with the same `webhook-id` (minus users
//! forgotten since, who are filtered out at every send). 410 disables the export; other answers,
//! redirects (never followed), timeouts and refused connections are retried with exponential
//! backoff and jitter for `[export] webhook_retry_for`, then the export is `failed`.
//! `ALTER EXPORT name RESUME` clears either state. Every delivered version adds a row to
//! `export_history`.
//!
//! Targets are checked before every connection ([`guard`]): `https://` anywhere public,
//! `http://` only to loopback, private, link-local and metadata addresses only when `[export]
//! allowed_urls` names the URL; the connection goes to the address that was checked.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Int64Type};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use roaring::RoaringBitmap;
use serde_json::{Value, json};

use super::export::{self, StandingExport};
use super::scheduler::Contexts;
use crate::bitmap::codec::{from_bytes, to_bytes};
use crate::error::{Error, Result};
use crate::segment::ast::ExportFormat;
use crate::segment::{EvalCtx, Segments};
use crate::storage::{Table, base_schema};

/// Keyring domain whose key seals webhook secrets and write keys.
pub const SECRETS_DOMAIN: &str = "export-secrets";

/// `[export]` delivery settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Changes per batch at most.
    pub batch: usize,
    pub timeout: Duration,
    pub retry_for: Duration,
    /// `[export] allowed_urls`.
    pub allowed: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch: 500,
            timeout: Duration::from_secs(15),
            retry_for: Duration::from_secs(24 * 3600),
            allowed: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

fn cipher(segments: &Segments) -> ring::aead::LessSafeKey {
    let key = segments.keyring().key_for(SECRETS_DOMAIN);
    ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key).expect("a 32-byte key"),
    )
}

/// Seal a secret for the exports catalog: base64 of nonce and AES-256-GCM ciphertext, under the
/// keyring's `export-secrets` key (the export's name bound in as associated data).
pub fn seal(segments: &Segments, export: &str, secret: &str) -> Result<String> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::Keyring(format!("no randomness to seal a secret: {e}")))?;
    let mut buf = secret.as_bytes().to_vec();
    cipher(segments)
        .seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(export.as_bytes()),
            &mut buf,
        )
        .map_err(|_| Error::Keyring("could not seal the export's secret".into()))?;
    let mut out = nonce.to_vec();
    out.extend(buf);
    Ok(B64.encode(out))
}

/// Open a sealed secret (an error names the export, never the secret).
pub fn open(segments: &Segments, export: &str, sealed: &str) -> Result<String> {
    let bad = || {
        Error::Keyring(format!(
            "the secret of export '{export}' cannot be opened with this keyring (was the keyring's export-secrets key changed?); DROP and CREATE the export again"
        ))
    };
    let raw = B64.decode(sealed).map_err(|_| bad())?;
    if raw.len() < 12 + 16 {
        return Err(bad());
    }
    let (nonce, rest) = raw.split_at(12);
    let mut buf = rest.to_vec();
    let plain = cipher(segments)
        .open_in_place(
            ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?,
            ring::aead::Aad::from(export.as_bytes()),
            &mut buf,
        )
        .map_err(|_| bad())?;
    String::from_utf8(plain.to_vec()).map_err(|_| bad())
}

/// A new webhook secret: `whsec_` and base64 of 32 random bytes.
pub fn new_secret() -> Result<String> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k)
        .map_err(|e| Error::Keyring(format!("no randomness for a webhook secret: {e}")))?;
    Ok(format!("whsec_{}", B64.encode(k)))
}

/// The key bytes of a `whsec_…` secret.
pub fn secret_key(secret: &str) -> Result<Vec<u8>> {
    let b = secret.strip_prefix("whsec_").unwrap_or(secret);
    match B64.decode(b.trim()) {
        Ok(k) if k.len() >= 16 => Ok(k),
        _ => Err(Error::invalid(
            "SECRET must be 'whsec_' followed by the base64 of at least 16 bytes (leave SECRET out and segdb generates one)",
        )),
    }
}

/// The Standard Webhooks v1 signature of a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Targets

/// Whether an address is private, link-local, a cloud metadata address or otherwise not a
/// public host.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || v.is_documentation()
                // 100.64.0.0/10 (carrier-grade NAT) and 169.254.169.254 (metadata, link-local).
                || (v.octets()[0] == 100 && (v.octets()[1] & 0xc0) == 64)
                || v.octets()[0] == 0
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4)) || v4.is_loopback();
            }
            let s = v.segments();
            v.is_unspecified()
                || v.is_multicast()
                // fc00::/7 unique local (fd00:ec2::254 is AWS's metadata address), fe80::/10.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback() || v.to_ipv4_mapped().is_some_and(|x| x.is_loopback()),
    }
}

fn under(url: &str, allowed: &[String]) -> bool {
    allowed
        .iter()
        .any(|a| !a.is_empty() && url.starts_with(a.as_str()))
}

/// Check a delivery URL's form (no network): https, or http to a loopback name or address.
pub fn check_url(url: &str, role_allowed: Option<&[String]>) -> Result<url::Url> {
    let u = url::Url::parse(url.trim()).map_err(|e| {
        Error::invalid(format!(
            "'{url}' is not a URL ({e}); a webhook goes to https://host/path"
        ))
    })?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err(Error::invalid(format!(
            "a webhook or segment export goes to https:// (or http:// on this machine), not {}://",
            u.scheme()
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(Error::invalid(format!("'{url}' names no host")));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(Error::invalid(
            "put no credentials in the URL: a webhook is signed with its SECRET, a segment export authenticates with WRITE KEY",
        ));
    }
    if let Some(allowed) = role_allowed
        && !under(u.as_str(), allowed)
    {
        return Err(Error::denied(format!(
            "{} is not under [export] allowed_urls; analysts deliver only there (an admin may deliver anywhere)",
            u.as_str()
        )));
    }
    Ok(u)
}

/// Resolve a delivery URL and check every address it names; returns the address to connect to.
pub async fn guard(u: &url::Url, allowed: &[String]) -> Result<SocketAddr> {
    let host = u.host_str().unwrap_or_default();
    let port = u.port_or_known_default().unwrap_or(443);
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host_for_lookup, port))
        .await
        .map_err(|e| Error::invalid(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(Error::invalid(format!("{host} resolves to no address")));
    }
    let named = under(u.as_str(), allowed);
    for a in &addrs {
        let ip = a.ip();
        if u.scheme() == "http" && !is_loopback(ip) {
            return Err(Error::invalid(format!(
                "http:// goes only to this machine (loopback); {host} is elsewhere, so use https://"
            )));
        }
        if is_internal(ip) && !named {
            return Err(Error::invalid(format!(
                "{host} resolves to a private, link-local or metadata address; name the URL in [export] allowed_urls to deliver there"
            )));
        }
    }
    Ok(addrs[0])
}

// ---------------------------------------------------------------------------------------------
// The deliveries table

/// One row of `_segdb/deliveries`.
#[derive(Debug, Clone)]
struct Row {
    export: String,
    generation: String,
    kind: String,
    version: u64,
    from_version: u64,
    batch: u64,
    batches: u64,
    as_of: i64,
    /// When the row was written.
    at: i64,
    entered: Option<Vec<u8>>,
    exited: Option<Vec<u8>>,
}

fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for b in batches {
        let t = |n: &str| crate::storage::snapshot_column(b, n, &DataType::Utf8);
        let i = |n: &str| crate::storage::snapshot_column(b, n, &DataType::Int64);
        let bin = |n: &str| crate::storage::snapshot_column(b, n, &DataType::Binary);
        let (e, g, k) = (t("export")?, t("generation")?, t("kind")?);
        let (v, f, bt, bs, at, written) = (
            i("version")?,
            i("from_version")?,
            i("batch")?,
            i("batches")?,
            i("as_of")?,
            i("at")?,
        );
        let (en, ex) = (bin("entered")?, bin("exited")?);
        let (e, g, k) = (
            e.as_string::<i32>(),
            g.as_string::<i32>(),
            k.as_string::<i32>(),
        );
        let n = |a: &ArrayRef, r: usize| {
            let a = a.as_primitive::<Int64Type>();
            if a.is_valid(r) {
                a.value(r).max(0) as u64
            } else {
                0
            }
        };
        let (en, ex) = (en.as_binary::<i32>(), ex.as_binary::<i32>());
        for r in 0..b.num_rows() {
            if e.is_null(r) || k.is_null(r) {
                continue;
            }
            out.push(Row {
                export: e.value(r).to_string(),
                generation: if g.is_valid(r) {
                    g.value(r).to_string()
                } else {
                    String::new()
                },
                kind: k.value(r).to_string(),
                version: n(&v, r),
                from_version: n(&f, r),
                batch: n(&bt, r),
                batches: n(&bs, r),
                as_of: {
                    let a = at.as_primitive::<Int64Type>();
                    if a.is_valid(r) { a.value(r) } else { 0 }
                },
                at: {
                    let a = written.as_primitive::<Int64Type>();
                    if a.is_valid(r) { a.value(r) } else { 0 }
                },
                entered: en.is_valid(r).then(|| en.value(r).to_vec()),
                exited: ex.is_valid(r).then(|| ex.value(r).to_vec()),
            });
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn append(
    segments: &Segments,
    export: &str,
    generation: &str,
    kind: &str,
    version: u64,
    from_version: u64,
    batch: u64,
    batches: u64,
    as_of: i64,
    sets: Option<(&RoaringBitmap, &RoaringBitmap)>,
    error: Option<&str>,
) -> Result<()> {
    let n = |v: u64| Arc::new(Int64Array::from(vec![v as i64])) as ArrayRef;
    let now = chrono::Utc::now().timestamp_micros();
    let b = RecordBatch::try_new(
        base_schema(Table::Deliveries),
        vec![
            Arc::new(StringArray::from(vec![export])),
            Arc::new(StringArray::from(vec![generation])),
            Arc::new(StringArray::from(vec![kind])),
            n(version),
            n(from_version),
            n(batch),
            n(batches),
            Arc::new(TimestampMicrosecondArray::from(vec![as_of]).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(vec![now]).with_timezone("UTC")),
            Arc::new(BinaryArray::from(vec![
                sets.map(|s| to_bytes(s.0)).as_deref(),
            ])),
            Arc::new(BinaryArray::from(vec![
                sets.map(|s| to_bytes(s.1)).as_deref(),
            ])),
            Arc::new(StringArray::from(vec![error])),
        ],
    )?;
    crate::storage::commit::append(
        segments.db(),
        Table::Deliveries,
        vec![b],
        crate::storage::commit::op("deliver"),
    )
    .await?;
    Ok(())
}

/// `ALTER EXPORT name RESUME`: a failed or disabled export delivers again from its cursor.
pub async fn resume(segments: &Segments, ctx: &EvalCtx, name: &str) -> Result<()> {
    let all = export::standing(ctx).await?;
    let e = all
        .get(name)
        .ok_or_else(|| Error::NotFound(format!("export '{name}' does not exist")))?;
    if !e.spec.format.is_some_and(ExportFormat::is_http) {
        return Err(Error::invalid(format!(
            "export '{name}' writes files; only webhook and segment exports are resumed (a file export runs again at the next refresh)"
        )));
    }
    append(segments, name, "", "resumed", 0, 0, 0, 0, 0, None, None).await
}

/// Where an export stands, from its rows.
#[derive(Debug, Default)]
struct Cursor {
    /// The latest cut of the generation: (version, from, batches, as_of, entered, exited).
    cut: Option<(u64, u64, u64, i64, RoaringBitmap, RoaringBitmap)>,
    /// Batches of that cut delivered.
    sent: u64,
    /// `disabled` or `failed` and not resumed since.
    stopped: Option<String>,
}

fn cursor(rows: &[Row], export: &str, generation: &str) -> Result<Cursor> {
    let mut c = Cursor::default();
    let mut best: Option<&Row> = None;
    // Files are not read in commit order: the latest mark by its time decides.
    let mark = rows
        .iter()
        .filter(|r| {
            r.export == export && matches!(r.kind.as_str(), "disabled" | "failed" | "resumed")
        })
        .max_by_key(|r| r.at);
    if let Some(m) = mark
        && m.kind != "resumed"
    {
        c.stopped = Some(m.kind.clone());
    }
    for r in rows.iter().filter(|r| r.export == export) {
        match r.kind.as_str() {
            "cut" if r.generation == generation && best.is_none_or(|b| r.version >= b.version) => {
                best = Some(r)
            }
            _ => {}
        }
    }
    if let Some(b) = best {
        let dec = |x: &Option<Vec<u8>>| -> Result<RoaringBitmap> {
            match x {
                Some(v) => from_bytes(v).ok_or_else(|| {
                    Error::storage(format!("a delivery record of export '{export}' is damaged"))
                }),
                None => Ok(RoaringBitmap::new()),
            }
        };
        c.sent = rows
            .iter()
            .filter(|r| {
                r.export == export
                    && r.kind == "sent"
                    && r.generation == generation
                    && r.version == b.version
            })
            .map(|r| r.batch)
            .max()
            .unwrap_or(0);
        c.cut = Some((
            b.version,
            b.from_version,
            b.batches,
            b.as_of,
            dec(&b.entered)?,
            dec(&b.exited)?,
        ));
    }
    Ok(c)
}

/// The lowest version each segment's webhook/segment exports still have to deliver (their
/// current cut, or the version after it): VACUUM keeps it.
pub async fn floors(segments: &Segments, ctx: &EvalCtx) -> Result<HashMap<String, u64>> {
    let t = segments.db().latest(Table::Deliveries).await?;
    let rows = rows_of(&crate::storage::read_pinned(segments.db(), Table::Deliveries, &t).await?)?;
    let mut out: HashMap<String, u64> = HashMap::new();
    for e in export::standing(ctx).await?.values() {
        if !e.spec.format.is_some_and(ExportFormat::is_http) {
            continue;
        }
        let v = rows
            .iter()
            .filter(|r| r.export == e.name && r.kind == "cut")
            .map(|r| r.version)
            .max()
            .unwrap_or(0);
        let f = out.entry(e.segment.clone()).or_insert(u64::MAX);
        *f = (*f).min(v.max(1));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Delivery

/// What one step of an export's loop did.
enum Step {
    /// Something was delivered or cut: go on at once.
    Progress,
    /// Nothing to do now.
    Idle,
    /// The target failed: wait.
    Retry(Duration),
    /// The export is gone.
    Gone,
}

/// Failures in a row of one export (in memory: a restart starts the retry window again).
#[derive(Default)]
struct Failing {
    since: Option<Instant>,
    attempts: u32,
}

/// The delivery loop of `segdb serve`: one task per webhook or segment export.
pub async fn run(
    segments: Arc<Segments>,
    contexts: Contexts,
    settings: Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let running: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let settings = Arc::new(settings);
    loop {
        if *stop.borrow() {
            return;
        }
        match contexts().await {
            Ok(ctx) => match export::standing(&ctx).await {
                Ok(all) => {
                    for e in all.into_values() {
                        if !e.spec.format.is_some_and(ExportFormat::is_http) {
                            continue;
                        }
                        if !running.lock().expect("not poisoned").insert(e.name.clone()) {
                            continue;
                        }
                        let (segments, contexts, settings, running, stop) = (
                            segments.clone(),
                            contexts.clone(),
                            settings.clone(),
                            running.clone(),
                            stop.clone(),
                        );
                        tokio::spawn(async move {
                            export_loop(&segments, &contexts, &settings, &e.name, stop).await;
                            running.lock().expect("not poisoned").remove(&e.name);
                        });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "deliveries: the exports could not be read"),
            },
            Err(e) => tracing::warn!(error = %e, "deliveries: no snapshot"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn export_loop(
    segments: &Segments,
    contexts: &Contexts,
    settings: &Settings,
    name: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failing = Failing::default();
    let mut rows_cache: Option<(Option<u64>, Arc<Vec<Row>>)> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match step(
            segments,
            contexts,
            settings,
            name,
            &mut failing,
            &mut rows_cache,
        )
        .await
        {
            Ok(Step::Progress) => Duration::ZERO,
            Ok(Step::Idle) => Duration::from_millis(100),
            Ok(Step::Retry(d)) => d,
            Ok(Step::Gone) => return,
            Err(e) => {
                tracing::warn!(export = %name, error = %e, "delivery step failed; trying again");
                Duration::from_secs(1)
            }
        };
        if wait > Duration::ZERO {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// The backoff before attempt `n` (1-based): 1 s doubling to at most 5 minutes, times a random
/// factor in [0.5, 1.5).
fn backoff(n: u32) -> Duration {
    let base =
        Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300));
    let jitter: f64 = 0.5 + rand::random::<f64>();
    base.mul_f64(jitter)
}

async fn step(
    segments: &Segments,
    contexts: &Contexts,
    settings: &Settings,
    name: &str,
    failing: &mut Failing,
    rows_cache: &mut Option<(Option<u64>, Arc<Vec<Row>>)>,
) -> Result<Step> {
    let ctx = contexts().await?;
    let all = export::standing(&ctx).await?;
    let Some(e) = all.get(name).cloned() else {
        return Ok(Step::Gone);
    };
    let catalog = segments.catalog(&ctx).await?;
    let Some(def) = catalog.get(&e.segment).cloned() else {
        return Ok(Step::Idle);
    };
    let table = segments.db().latest(Table::Deliveries).await?;
    let rows = match rows_cache {
        Some((v, r)) if *v == table.version() => r.clone(),
        _ => {
            let r = Arc::new(rows_of(
                &crate::storage::read_pinned(segments.db(), Table::Deliveries, &table).await?,
            )?);
            *rows_cache = Some((table.version(), r.clone()));
            r
        }
    };
    let c = cursor(&rows, name, &def.generation)?;
    if c.stopped.is_some() {
        failing.since = None;
        failing.attempts = 0;
        return Ok(Step::Idle);
    }
    let purposes = export::purposes_of(&def, &e.spec)?;
    // The batch to send, or a new cut.
    let pending = match &c.cut {
        Some((v, from, batches, as_of, en, ex)) if c.sent < *batches => Some((
            *v,
            *from,
            *batches,
            *as_of,
            en.clone(),
            ex.clone(),
            c.sent + 1,
        )),
        _ => None,
    };
    let Some((version, from, batches, as_of, entered, exited, batch)) = pending else {
        // Cut the next version, if there is one.
        let h = segments.history(&ctx).await?;
        let latest = h.max_version(&def.name, &def.generation);
        let (next, from) = match &c.cut {
            None => (latest, 0),
            Some((v, ..)) => {
                // The next ok version after the last cut (a failed attempt has none).
                let next = h
                    .of(&def.name, &def.generation)
                    .filter_map(|r| r.version)
                    .filter(|x| x > v)
                    .min();
                match next {
                    Some(n) => (n, *v),
                    None => return Ok(Step::Idle),
                }
            }
        };
        if next == 0 {
            return Ok(Step::Idle);
        }
        let (old, _) = export::sent(segments, &ctx, &def, &purposes, from, None).await?;
        let (new, as_of) =
            export::sent(segments, &ctx, &def, &purposes, next, Some(ctx.now())).await?;
        let (entered, exited) = (&new - &old, &old - &new);
        let total = entered.len() + exited.len();
        let batches = total.div_ceil(settings.batch as u64);
        append(
            segments,
            name,
            &def.generation,
            "cut",
            next,
            from,
            0,
            batches,
            as_of,
            Some((&entered, &exited)),
            None,
        )
        .await?;
        if batches == 0 {
            export::record_delivery(segments, &e, next, from, 0, 0, "skipped", None).await?;
        }
        return Ok(Step::Progress);
    };
    // The users of this batch: entered then exited, each in ordinal order.
    let size = settings.batch as u64;
    let skip = (batch - 1) * size;
    let universe = segments.universe(&ctx).await?;
    let mut chosen: Vec<(u32, &str)> = Vec::with_capacity(size as usize);
    for (u, ch) in entered
        .iter()
        .map(|u| (u, "entered"))
        .chain(exited.iter().map(|u| (u, "exited")))
        .skip(skip as usize)
        .take(size as usize)
    {
        // Forgotten since the cut: never sent.
        if universe.contains(u) {
            chosen.push((u, ch));
        }
    }
    let en: RoaringBitmap = chosen
        .iter()
        .filter(|c| c.1 == "entered")
        .map(|c| c.0)
        .collect();
    let ex: RoaringBitmap = chosen
        .iter()
        .filter(|c| c.1 == "exited")
        .map(|c| c.0)
        .collect();
    let rows = export::member_rows(
        segments,
        &ctx,
        &[(&en, Some("entered")), (&ex, Some("exited"))],
    )
    .await?;
    let (shaped, _) = export::shape_for_delivery(segments, &ctx, &e.spec, rows).await?;
    let changes = to_json_rows(&shaped)?;
    let format = e.spec.format.unwrap_or(ExportFormat::Webhook);
    let secret = match export::sealed_secret(&e) {
        Some(s) => open(segments, name, s)?,
        None => {
            return Err(Error::invalid(format!(
                "export '{name}' has no stored secret; DROP and CREATE it again"
            )));
        }
    };
    let as_of_text = rfc3339(as_of);
    let (body, headers) = match format {
        ExportFormat::Segment => {
            segment_body(&e, &def.name, version, &as_of_text, &changes, &secret)
        }
        _ => webhook_body(
            &e,
            &def.name,
            version,
            from,
            &as_of_text,
            batch,
            batches,
            &changes,
            &secret,
        )?,
    };
    let status = post(
        &e.spec.url,
        &settings.allowed,
        settings.timeout,
        &headers,
        body.clone(),
    )
    .await;
    match status {
        Ok(s) if (200..300).contains(&s) => {
            append(
                segments,
                name,
                &def.generation,
                "sent",
                version,
                from,
                batch,
                batches,
                as_of,
                None,
                None,
            )
            .await?;
            failing.since = None;
            failing.attempts = 0;
            if batch == batches {
                let total = entered.len() + exited.len();
                export::record_delivery(segments, &e, version, from, batches, total, "ok", None)
                    .await?;
                tracing::info!(export = %name, version, batches, changes = total, "delivered");
            }
            Ok(Step::Progress)
        }
        Ok(410) => {
            append(
                segments, name, "", "disabled", version, from, batch, batches, as_of, None, None,
            )
            .await?;
            export::record_delivery(
                segments,
                &e,
                version,
                from,
                0,
                0,
                "disabled",
                Some("the receiver answered 410 Gone; ALTER EXPORT … RESUME to deliver again"),
            )
            .await?;
            tracing::warn!(export = %name, "receiver answered 410: export disabled");
            Ok(Step::Idle)
        }
        other => {
            let why = match other {
                Ok(s) => format!("the receiver answered {s}"),
                Err(e) => e,
            };
            let since = *failing.since.get_or_insert_with(Instant::now);
            failing.attempts += 1;
            if since.elapsed() >= settings.retry_for {
                let msg = format!(
                    "{why}; gave up after retrying for {} s (ALTER EXPORT … RESUME to try again)",
                    settings.retry_for.as_secs()
                );
                append(
                    segments,
                    name,
                    "",
                    "failed",
                    version,
                    from,
                    batch,
                    batches,
                    as_of,
                    None,
                    Some(&msg),
                )
                .await?;
                export::record_delivery(segments, &e, version, from, 0, 0, "failed", Some(&msg))
                    .await?;
                failing.since = None;
                failing.attempts = 0;
                tracing::warn!(export = %name, error = %why, "delivery failed for good");
                return Ok(Step::Idle);
            }
            let d = backoff(failing.attempts);
            tracing::info!(export = %name, version, batch, error = %why, retry_in_ms = d.as_millis() as u64, "delivery failed; retrying");
            Ok(Step::Retry(d))
        }
    }
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The shaped rows as JSON objects (column order kept).
fn to_json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Map<String, Value>>> {
    let mut out = Vec::new();
    for b in batches {
        if b.num_rows() == 0 {
            continue;
        }
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(Vec::new());
        w.write(b)?;
        w.finish()?;
        let v: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&w.into_inner())
            .map_err(|e| Error::invalid(format!("a batch could not be encoded: {e}")))?;
        // Keep the schema's column order.
        for m in v {
            let mut o = serde_json::Map::new();
            for f in b.schema().fields() {
                o.insert(
                    f.name().clone(),
                    m.get(f.name()).cloned().unwrap_or(Value::Null),
                );
            }
            out.push(o);
        }
    }
    Ok(out)
}

type Headers = Vec<(String, String)>;

#[allow(clippy::too_many_arguments)]
fn webhook_body(
    e: &StandingExport,
    segment: &str,
    version: u64,
    from: u64,
    as_of: &str,
    batch: u64,
    batches: u64,
    changes: &[serde_json::Map<String, Value>],
    secret: &str,
) -> Result<(Vec<u8>, Headers)> {
    let body = json!({
        "export": e.name,
        "segment": segment,
        "version": version,
        "from_version": from,
        "as_of": as_of,
        "batch": batch,
        "batches": batches,
        "changes": changes,
    })
    .to_string()
    .into_bytes();
    let id = format!("{}.{version}.{batch}", e.name);
    let ts = chrono::Utc::now().timestamp();
    let sig = sign(&secret_key(secret)?, &id, ts, &body);
    Ok((
        body,
        vec![
            ("content-type".into(), "application/json".into()),
            ("webhook-id".into(), id),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), sig),
        ],
    ))
}

/// The messageId of one Segment-spec message.
pub fn message_id(export: &str, version: u64, user_id: &str, change: &str, kind: &str) -> String {
    let h = crate::privacy::hashing::sha256_hex(
        format!("{export}|{version}|{user_id}|{change}|{kind}").as_bytes(),
    );
    h[..32].to_string()
}

fn segment_body(
    e: &StandingExport,
    segment: &str,
    version: u64,
    as_of: &str,
    changes: &[serde_json::Map<String, Value>],
    key: &str,
) -> (Vec<u8>, Headers) {
    let mut batch = Vec::with_capacity(changes.len() * 2);
    for c in changes {
        // The exported id: the first COLUMNS value, else the stored pseudonym.
        let user_id = c
            .iter()
            .find(|(k, _)| k.as_str() != "change" && k.as_str() != "user_id")
            .map(|(_, v)| v)
            .or_else(|| c.get("user_id"))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        let change = c.get("change").and_then(Value::as_str).unwrap_or("entered");
        let member = change == "entered";
        batch.push(json!({
            "type": "identify",
            "userId": user_id,
            "traits": { segment: member },
            "messageId": message_id(&e.name, version, &user_id, change, "identify"),
            "timestamp": as_of,
        }));
        batch.push(json!({
            "type": "track",
            "event": if member { "Audience Entered" } else { "Audience Exited" },
            "userId": user_id,
            "properties": { "audience_key": segment, segment: member },
            "messageId": message_id(&e.name, version, &user_id, change, "track"),
            "timestamp": as_of,
        }));
    }
    let body = json!({ "batch": batch, "sentAt": rfc3339(chrono::Utc::now().timestamp_micros()) })
        .to_string()
        .into_bytes();
    let auth = format!("Basic {}", B64.encode(format!("{key}:")));
    (
        body,
        vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), auth),
        ],
    )
}

/// POST a body to the export's URL after checking where it goes. `Ok(status)` for any answer;
/// `Err(reason)` for a refused target, a connection failure or a timeout.
async fn post(
    url: &str,
    allowed: &[String],
    timeout: Duration,
    headers: &Headers,
    body: Vec<u8>,
) -> std::result::Result<u16, String> {
    let u = check_url(url, None).map_err(|e| e.to_string())?;
    let addr = guard(&u, allowed).await.map_err(|e| e.to_string())?;
    let host = u.host_str().unwrap_or_default().to_string();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .resolve(&host, addr)
        .user_agent(concat!("segdb/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let mut req = client.post(u);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.body(body).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) if e.is_timeout() => Err(format!("no answer within {} s", timeout.as_secs())),
        Err(e) if e.is_connect() => Err("the connection was refused or failed".into()),
        Err(e) => Err(format!("the request failed: {}", e.without_url())),
    }
}

/// Answers for `CREATE EXPORT … FORMAT webhook|segment`: the checks that need no network beyond
/// name resolution, and the secret to store.
pub async fn prepare(
    segments: &Segments,
    name: &str,
    spec: &crate::segment::ast::ExportSpec,
    role_allowed: Option<&[String]>,
    allowed: &[String],
) -> Result<(String, String)> {
    let format = spec.format.unwrap_or(ExportFormat::Webhook);
    if spec.preset.is_some() {
        return Err(Error::invalid(
            "a PRESET shapes files for an ad platform's upload; webhook and segment exports take COLUMNS instead",
        ));
    }
    if spec.max_rows_per_file.is_some() {
        return Err(Error::invalid(
            "MAX ROWS PER FILE is for files; webhook batches hold [export] webhook_batch changes",
        ));
    }
    if spec.changes.is_some() {
        return Err(Error::invalid(
            "a webhook or segment export delivers every version's changes from its creation on; leave out CHANGES FROM",
        ));
    }
    let u = check_url(&spec.url, role_allowed)?;
    guard(&u, allowed).await?;
    let secret = match (format, &spec.secret) {
        (ExportFormat::Segment, Some(k)) if !k.is_empty() => k.clone(),
        (ExportFormat::Segment, _) => {
            return Err(Error::invalid(
                "FORMAT segment needs WRITE KEY 'k': the key of the source that receives the messages",
            ));
        }
        (_, Some(s)) => {
            secret_key(s)?;
            s.clone()
        }
        (_, None) => new_secret()?,
    };
    let sealed = seal(segments, name, &secret)?;
    Ok((secret, sealed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for a in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(is_internal(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "2606:2800:220:1::1", "127.0.0.1", "::1"] {
            assert!(!is_internal(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn targets_are_checked_before_any_connection() {
        // http only to loopback; private and metadata addresses only when allowed.
        let u = check_url("http://127.0.0.1:9/in", None).unwrap();
        assert!(guard(&u, &[]).await.is_ok());
        let u = check_url("http://10.0.0.5/in", None).unwrap();
        assert!(
            guard(&u, &[])
                .await
                .unwrap_err()
                .to_string()
                .contains("loopback")
        );
        let u = check_url("https://169.254.169.254/latest", None).unwrap();
        let e = guard(&u, &[]).await.unwrap_err().to_string();
        assert!(e.contains("allowed_urls"), "{e}");
        let u = check_url("https://10.0.0.5/hook", None).unwrap();
        assert!(guard(&u, &["https://10.0.0.5/".into()]).await.is_ok());
        assert!(check_url("ftp://x/y", None).is_err());
        assert!(check_url("https://user:pw@example.com/", None).is_err());
        // Analysts deliver only under allowed_urls.
        let e = check_url(
            "https://example.com/x",
            Some(&["https://hooks.example.org/".into()]),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Denied(_)), "{e}");
        assert!(
            check_url(
                "https://hooks.example.org/a",
                Some(&["https://hooks.example.org/".into()])
            )
            .is_ok()
        );
    }

    #[test]
    fn secrets_are_checked_and_signatures_follow_the_spec() {
        assert!(secret_key("whsec_c2hvcnQ=").is_err());
        let s = new_secret().unwrap();
        assert_eq!(secret_key(&s).unwrap().len(), 32);
        // HMAC-SHA256 over "id.timestamp.body", base64, prefixed "v1,".
        let sig = sign(b"0123456789abcdef", "e.1.1", 1_700_000_000, b"{}");
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        m.update(b"e.1.1.1700000000.{}");
        assert_eq!(sig, format!("v1,{}", B64.encode(m.finalize().into_bytes())));
        assert_eq!(message_id("x", 3, "p1_a", "entered", "track").len(), 32);
        assert_ne!(
            message_id("x", 3, "p1_a", "entered", "track"),
            message_id("x", 3, "p1_a", "entered", "identify")
        );
    }
}
