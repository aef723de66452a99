//! What the profile API answers from (DESIGN §15): the target members of every materialised
//! segment's latest version, with consent and erasure applied, held in memory and rebuilt when a
//! table they depend on commits (a background task looks every [`POLL`]).
//!
//! A lookup pseudonymises the raw id in memory, finds its ordinal in the identity map, and
//! follows identity links to its canonical profile. An id never seen and a forgotten one answer
//! alike (`None`), so the API tells neither apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use roaring::RoaringBitmap;

use super::scheduler::Contexts;
use crate::error::Result;
use crate::privacy::keyring::USER_DOMAIN;
use crate::privacy::pseudonym::Pseudonymizer;
use crate::segment::eval::IdentityMap;
use crate::segment::stitch::Canon;
use crate::segment::{EvalCtx, Segments};
use crate::storage::Table;

/// How often the background task looks for new versions.
pub const POLL: Duration = Duration::from_millis(100);
/// A view is rebuilt at least this often, so that consent and traits follow the clock.
const MAX_AGE: Duration = Duration::from_secs(10);

/// One materialised segment in a view.
struct Member {
    name: String,
    /// (generation, latest version) the target was read from.
    version: (String, u64),
    /// Target members of the latest version with the segment's purposes and erasure applied.
    target: Arc<RoaringBitmap>,
}

/// The membership of every materialised segment at one moment.
pub struct View {
    key: Vec<u64>,
    /// The versions every target depends on besides its own segment's history (consent,
    /// suppression, identity, links, the catalog): unchanged, a target whose segment has no new
    /// version is reused.
    shared_key: Vec<u64>,
    /// The versions the traits depend on.
    traits_key: Vec<u64>,
    built: std::time::Instant,
    /// The moment the view reflects (µs since the epoch).
    pub as_of: i64,
    ctx: EvalCtx,
    ids: Arc<IdentityMap>,
    canon: Option<Arc<Canon>>,
    raw_universe: Arc<RoaringBitmap>,
    universe: Arc<RoaringBitmap>,
    segments: Vec<Member>,
    /// Consent holders of extra purposes asked for, derived on first use.
    purposes: Mutex<HashMap<String, Arc<RoaringBitmap>>>,
    /// The traits table and its rows by profile, computed on first use.
    traits: Arc<tokio::sync::OnceCell<Arc<Traits>>>,
}

/// The computed traits of every profile, by ordinal.
pub struct Traits {
    pub batch: arrow::array::RecordBatch,
    pub rows: HashMap<u32, usize>,
}

/// A resolved profile.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// The canonical ordinal.
    pub uid: u32,
}

impl View {
    /// The profile of a raw id, or `None` for an id never seen or forgotten.
    pub fn resolve(&self, pseudonym: &str) -> Option<Profile> {
        let u = *self.ids.by_pseudonym.get(pseudonym)?;
        if !self.raw_universe.contains(u) {
            return None;
        }
        let c = self.canon.as_ref().map_or(u, |c| c.of(u));
        if !self.universe.contains(c) {
            return None;
        }
        Some(Profile { uid: c })
    }

    /// The stored pseudonym of a profile.
    pub fn user_id(&self, p: Profile) -> Option<&str> {
        self.ids.pseudonym(p.uid)
    }

    /// The segments a profile is in, sorted by name; with `purpose`, only if it also consents to
    /// that purpose.
    pub async fn segments_of(
        &self,
        segments: &Segments,
        p: Profile,
        purpose: Option<&str>,
    ) -> Result<Vec<&str>> {
        if let Some(purpose) = purpose
            && !self.consents(segments, p, purpose).await?
        {
            return Ok(Vec::new());
        }
        Ok(self
            .segments
            .iter()
            .filter(|m| m.target.contains(p.uid))
            .map(|m| m.name.as_str())
            .collect())
    }

    async fn consents(&self, segments: &Segments, p: Profile, purpose: &str) -> Result<bool> {
        let cached = self
            .purposes
            .lock()
            .expect("not poisoned")
            .get(purpose)
            .cloned();
        let holders = match cached {
            Some(h) => h,
            None => {
                let h = segments
                    .consent_holders(&self.ctx, purpose, self.as_of)
                    .await?;
                let mut g = self.purposes.lock().expect("not poisoned");
                // A caller can name any purpose; keep a bounded number.
                if g.len() >= 256 {
                    g.clear();
                }
                g.insert(purpose.to_string(), h.clone());
                h
            }
        };
        Ok(holders.contains(p.uid))
    }

    /// The computed traits of every profile at the view's moment.
    pub async fn traits(&self, segments: &Segments) -> Result<Arc<Traits>> {
        self.traits
            .get_or_try_init(|| async {
                let batch = segments.traits_table(&self.ctx).await?;
                let uid = crate::storage::snapshot_column(
                    &batch,
                    "uid",
                    &arrow::datatypes::DataType::Int64,
                )?;
                use arrow::array::{Array, AsArray};
                let uid = uid.as_primitive::<arrow::datatypes::Int64Type>();
                let rows = (0..batch.num_rows())
                    .filter(|&i| uid.is_valid(i))
                    .map(|i| (uid.value(i) as u32, i))
                    .collect();
                Ok(Arc::new(Traits {
                    batch: (*batch).clone(),
                    rows,
                }))
            })
            .await
            .cloned()
    }
}

/// The lookup service: the current view and how to build the next.
pub struct Lookup {
    segments: Arc<Segments>,
    contexts: Contexts,
    pseudonyms: Pseudonymizer,
    view: RwLock<Option<Arc<View>>>,
}

impl Lookup {
    pub fn new(segments: Arc<Segments>, contexts: Contexts) -> Arc<Lookup> {
        let pseudonyms = Pseudonymizer::new(segments.keyring(), USER_DOMAIN);
        Arc::new(Lookup {
            segments,
            contexts,
            pseudonyms,
            view: RwLock::new(None),
        })
    }

    pub fn segments(&self) -> &Segments {
        &self.segments
    }

    /// The pseudonym of a raw id (in memory only).
    pub fn pseudonym(&self, raw: &str) -> String {
        self.pseudonyms.pseudonymize(raw)
    }

    /// The current view, built first if there is none yet.
    pub async fn view(&self) -> Result<Arc<View>> {
        if let Some(v) = self.view.read().expect("not poisoned").clone() {
            return Ok(v);
        }
        self.refresh().await
    }

    /// Rebuild the view if a table it depends on has a new version (or it is old).
    pub async fn refresh(&self) -> Result<Arc<View>> {
        let ctx = (self.contexts)().await?;
        let key: Vec<u64> = [
            Table::Segments,
            Table::Snapshots,
            Table::Consent,
            Table::Suppression,
            Table::Identity,
            Table::Links,
            Table::Traits,
            Table::Events,
            Table::Profiles,
        ]
        .iter()
        .map(|t| ctx.snap.version(*t))
        .collect();
        if let Some(v) = self.view.read().expect("not poisoned").clone()
            && v.key == key
            && v.built.elapsed() < MAX_AGE
        {
            return Ok(v);
        }
        let prev = self.view.read().expect("not poisoned").clone();
        let v = Arc::new(build(&self.segments, ctx, key, prev.as_deref()).await?);
        *self.view.write().expect("not poisoned") = Some(v.clone());
        Ok(v)
    }

    /// Keep the view current until `stop` turns true.
    pub async fn follow(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(target: "segdb::http", error = %e, "profile lookups could not read the latest versions");
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

async fn build(
    segments: &Segments,
    ctx: EvalCtx,
    key: Vec<u64>,
    prev: Option<&View>,
) -> Result<View> {
    let versions = |ts: &[Table]| -> Vec<u64> { ts.iter().map(|t| ctx.snap.version(*t)).collect() };
    let shared_key = versions(&[
        Table::Segments,
        Table::Consent,
        Table::Suppression,
        Table::Identity,
        Table::Links,
    ]);
    let traits_key = versions(&[
        Table::Traits,
        Table::Events,
        Table::Identity,
        Table::Suppression,
        Table::Links,
    ]);
    // Within MAX_AGE of the previous build, what did not change is reused.
    let fresh = prev.filter(|p| p.built.elapsed() < MAX_AGE);
    let reuse = fresh.filter(|p| p.shared_key == shared_key);
    let catalog = segments.catalog(&ctx).await?;
    let history = segments.history(&ctx).await?;
    let mut members = Vec::new();
    for def in catalog.segments.values().filter(|d| d.materialized) {
        let version = (
            def.generation.clone(),
            history.max_version(&def.name, &def.generation),
        );
        let kept = reuse.and_then(|p| {
            p.segments
                .iter()
                .find(|m| m.name == def.name && m.version == version && version.1 > 0)
        });
        if let Some(m) = kept {
            members.push(Member {
                name: m.name.clone(),
                version,
                target: m.target.clone(),
            });
            continue;
        }
        // A segment whose latest version cannot be read (a definition gone bad before its
        // first snapshot) is left out rather than failing every lookup.
        match segments.members(&ctx, &def.name).await {
            Ok(target) => members.push(Member {
                name: def.name.clone(),
                version,
                target: Arc::new(target),
            }),
            Err(e) => {
                tracing::warn!(target: "segdb::http", segment = %def.name, error = %e, "segment left out of profile lookups")
            }
        }
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let ids = segments.identity(&ctx).await?;
    let canon = segments.canonical(&ctx).await?;
    let raw_universe = segments.raw_universe(&ctx).await?;
    let universe = segments.universe(&ctx).await?;
    let traits = match fresh.filter(|p| p.traits_key == traits_key) {
        Some(p) => p.traits.clone(),
        None => Arc::new(tokio::sync::OnceCell::new()),
    };
    Ok(View {
        key,
        shared_key,
        traits_key,
        built: std::time::Instant::now(),
        as_of: ctx.as_of,
        ids,
        canon,
        raw_universe,
        universe,
        segments: members,
        purposes: Mutex::new(HashMap::new()),
        traits,
        ctx,
    })
}
