//! Materialised segments' history, `_segdb/snapshots`: one row per refresh attempt of a segment
//! generation — ok rows carry a version (1, 2, … per generation), the member bitmap over
//! ordinals *before* purposes are applied (never pseudonyms), the holdout group, and the counts
//! as of the refresh; failed attempts have no version and an error without ids. This module
//! reads it; `materialize` writes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use roaring::RoaringBitmap;

use super::eval::IdentityMap;
use crate::bitmap::codec::from_bytes;
use crate::error::{Error, Result};
use crate::privacy::Keyring;
use crate::privacy::pseudonym::Pseudonymizer;
use crate::storage::{Snapshot, Table, snapshot_column as column};

/// Keyring domain of holdout assignment.
pub const HOLDOUT_DOMAIN: &str = "segdb/holdout";

/// One row of the history (without its bitmaps).
#[derive(Debug, Clone)]
pub struct Row {
    pub segment: String,
    pub generation: String,
    pub version: Option<u64>,
    pub as_of: i64,
    pub refreshed_at: i64,
    pub trigger: String,
    pub status: String,
    pub size: Option<u64>,
    pub entered: Option<u64>,
    pub exited: Option<u64>,
    pub holdout: Option<u64>,
    pub took_ms: Option<u64>,
    pub error: Option<String>,
    pub sources: Option<String>,
    /// For a version stored as changes: the version they apply to.
    pub base_version: Option<u64>,
    /// Index of the row's bitmaps in `History::bitmaps`.
    bitmaps: usize,
}

/// A decoded ok snapshot.
#[derive(Debug)]
pub struct Stored {
    pub version: u64,
    pub as_of: i64,
    /// Members before purposes (holdout included).
    pub members: RoaringBitmap,
    /// The holdout group (a subset of `members`; empty without HOLDOUT).
    pub holdout: RoaringBitmap,
    /// Every ordinal ever assigned a group in this generation (holdout assignments carry over).
    pub assigned: RoaringBitmap,
    /// The target group as activated at refresh time.
    pub target: RoaringBitmap,
}

/// The stored bitmap columns of one row: members, groups, target, delta.
type Bitmaps = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// The history of one snapshots-table version.
#[derive(Debug, Default)]
pub struct History {
    pub rows: Vec<Row>,
    bitmaps: Vec<Bitmaps>,
    decoded: Mutex<HashMap<(String, String, u64), Arc<Stored>>>,
}

impl History {
    pub async fn load(snap: &Snapshot) -> Result<History> {
        let batches = snap.read(Table::Snapshots).await?;
        Self::from_batches(&batches)
    }

    pub fn from_batches(batches: &[RecordBatch]) -> Result<History> {
        let mut h = History::default();
        for b in batches {
            let t = |n: &str| column(b, n, &DataType::Utf8);
            let i = |n: &str| column(b, n, &DataType::Int64);
            let (seg, generation, trigger, status, error, sources) = (
                t("segment")?,
                t("generation")?,
                t("trigger")?,
                t("status")?,
                t("error")?,
                t("sources")?,
            );
            let (version, as_of, at, size, entered, exited, holdout, took) = (
                i("version")?,
                i("as_of")?,
                i("refreshed_at")?,
                i("size")?,
                i("entered")?,
                i("exited")?,
                i("holdout")?,
                i("took_ms")?,
            );
            let members = column(b, "members", &DataType::Binary)?;
            let members = members.as_binary::<i32>();
            let held = column(b, "holdout_members", &DataType::Binary)?;
            let held = held.as_binary::<i32>();
            let target = column(b, "target_members", &DataType::Binary)?;
            let target = target.as_binary::<i32>();
            let delta = column(b, "delta", &DataType::Binary)?;
            let delta = delta.as_binary::<i32>();
            let base = i("base_version")?;
            let s = |a: &arrow::array::ArrayRef, r: usize| {
                let a = a.as_string::<i32>();
                a.is_valid(r).then(|| a.value(r).to_string())
            };
            let n = |a: &arrow::array::ArrayRef, r: usize| {
                let a = a.as_primitive::<Int64Type>();
                a.is_valid(r).then(|| a.value(r))
            };
            for r in 0..b.num_rows() {
                let Some(segment) = s(&seg, r) else { continue };
                h.bitmaps.push((
                    members.is_valid(r).then(|| members.value(r).to_vec()),
                    held.is_valid(r).then(|| held.value(r).to_vec()),
                    target.is_valid(r).then(|| target.value(r).to_vec()),
                    delta.is_valid(r).then(|| delta.value(r).to_vec()),
                ));
                h.rows.push(Row {
                    segment,
                    generation: s(&generation, r).unwrap_or_default(),
                    version: n(&version, r).map(|v| v as u64),
                    as_of: n(&as_of, r).unwrap_or(0),
                    refreshed_at: n(&at, r).unwrap_or(0),
                    trigger: s(&trigger, r).unwrap_or_default(),
                    status: s(&status, r).unwrap_or_default(),
                    size: n(&size, r).map(|v| v as u64),
                    entered: n(&entered, r).map(|v| v as u64),
                    exited: n(&exited, r).map(|v| v as u64),
                    holdout: n(&holdout, r).map(|v| v as u64),
                    took_ms: n(&took, r).map(|v| v as u64),
                    error: s(&error, r),
                    sources: s(&sources, r),
                    base_version: n(&base, r).map(|v| v as u64),
                    bitmaps: h.bitmaps.len() - 1,
                });
            }
        }
        h.rows.sort_by(|a, b| {
            (&a.segment, a.refreshed_at, a.version).cmp(&(&b.segment, b.refreshed_at, b.version))
        });
        Ok(h)
    }

    /// Every row of one segment generation, oldest first.
    pub fn of<'h>(
        &'h self,
        segment: &'h str,
        generation: &'h str,
    ) -> impl Iterator<Item = &'h Row> {
        self.rows
            .iter()
            .filter(move |r| r.segment == segment && r.generation == generation)
    }

    /// The highest ok version of a generation (0: none yet).
    pub fn max_version(&self, segment: &str, generation: &str) -> u64 {
        self.of(segment, generation)
            .filter_map(|r| r.version)
            .max()
            .unwrap_or(0)
    }

    /// The latest ok snapshot of a generation; with `at`, the latest whose `as_of` is at or
    /// before it.
    pub async fn latest(
        &self,
        segment: &str,
        generation: &str,
        at: Option<i64>,
    ) -> Result<Option<Arc<Stored>>> {
        let row = self
            .of(segment, generation)
            .filter(|r| r.status == "ok" && r.version.is_some())
            .filter(|r| at.is_none_or(|t| r.as_of <= t))
            .max_by_key(|r| r.version);
        match row {
            Some(r) => self.decode(r).map(Some),
            None => Ok(None),
        }
    }

    /// An ok version of a generation.
    pub fn version(&self, segment: &str, generation: &str, v: u64) -> Result<Option<Arc<Stored>>> {
        match self
            .of(segment, generation)
            .find(|r| r.version == Some(v) && r.status == "ok")
        {
            Some(r) => self.decode(r).map(Some),
            None => Ok(None),
        }
    }

    fn decode(&self, r: &Row) -> Result<Arc<Stored>> {
        let v = r.version.expect("ok rows have versions");
        let key = (r.segment.clone(), r.generation.clone(), v);
        if let Some(s) = self.decoded.lock().expect("not poisoned").get(&key) {
            return Ok(s.clone());
        }
        let damaged = || {
            Error::storage(format!(
                "snapshot version {v} of segment '{}' is damaged; refresh it again",
                r.segment
            ))
        };
        let (m, h, t, d) = &self.bitmaps[r.bitmaps];
        let s = match (r.base_version, d) {
            // A version stored as its changes: replay them on the version they apply to (which
            // replays its own, back to the nearest full version).
            (Some(b), Some(d)) => {
                let base_row = self
                    .of(&r.segment, &r.generation)
                    .find(|x| x.version == Some(b) && x.status == "ok")
                    .ok_or_else(|| {
                        Error::storage(format!(
                            "version {v} of segment '{}' is stored as changes to version {b}, which is gone; refresh it again",
                            r.segment
                        ))
                    })?;
                if b >= v {
                    return Err(damaged());
                }
                let base = self.decode(base_row)?;
                let delta = Delta::decode(d).ok_or_else(damaged)?;
                delta.apply(&base, v, r.as_of)
            }
            _ => {
                let members = match m {
                    Some(b) => from_bytes(b).ok_or_else(damaged)?,
                    None => RoaringBitmap::new(),
                };
                let (holdout, assigned) = match h {
                    Some(b) => decode_groups(b).ok_or_else(damaged)?,
                    None => (RoaringBitmap::new(), RoaringBitmap::new()),
                };
                let target = match t {
                    Some(b) => from_bytes(b).ok_or_else(damaged)?,
                    None => &members - &holdout,
                };
                Stored {
                    version: v,
                    as_of: r.as_of,
                    members,
                    holdout,
                    assigned,
                    target,
                }
            }
        };
        let s = Arc::new(s);
        self.decoded
            .lock()
            .expect("not poisoned")
            .insert(key, s.clone());
        Ok(s)
    }

    /// Bytes of each ok version's stored bitmaps (full or changes), oldest first.
    pub fn stored_bytes(&self, segment: &str, generation: &str) -> Vec<(u64, bool, usize)> {
        self.of(segment, generation)
            .filter_map(|r| {
                let v = r.version?;
                let (m, h, t, d) = &self.bitmaps[r.bitmaps];
                let n = [m, h, t, d]
                    .iter()
                    .map(|x| x.as_ref().map_or(0, Vec::len))
                    .sum();
                Some((v, r.base_version.is_none(), n))
            })
            .collect()
    }
}

/// A version stored as its changes against the previous version: what entered and left each
/// bitmap (members, holdout, assigned, target).
pub struct Delta {
    parts: [RoaringBitmap; 8],
}

impl Delta {
    /// The changes from `base` to the given bitmaps.
    pub fn between(
        base: &Stored,
        members: &RoaringBitmap,
        holdout: &RoaringBitmap,
        assigned: &RoaringBitmap,
        target: &RoaringBitmap,
    ) -> Delta {
        Delta {
            parts: [
                members - &base.members,
                &base.members - members,
                holdout - &base.holdout,
                &base.holdout - holdout,
                assigned - &base.assigned,
                &base.assigned - assigned,
                target - &base.target,
                &base.target - target,
            ],
        }
    }

    /// Each part as a portable bitmap prefixed by its length (u32, little endian).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.parts {
            let b = crate::bitmap::codec::to_bytes(p);
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Delta> {
        let mut at = 0usize;
        let mut parts: [RoaringBitmap; 8] = Default::default();
        for p in &mut parts {
            let n = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
            *p = from_bytes(bytes.get(at + 4..at + 4 + n)?)?;
            at += 4 + n;
        }
        (at == bytes.len()).then_some(Delta { parts })
    }

    fn apply(&self, base: &Stored, version: u64, as_of: i64) -> Stored {
        let p = &self.parts;
        let step = |b: &RoaringBitmap, add: &RoaringBitmap, del: &RoaringBitmap| (b - del) | add;
        Stored {
            version,
            as_of,
            members: step(&base.members, &p[0], &p[1]),
            holdout: step(&base.holdout, &p[2], &p[3]),
            assigned: step(&base.assigned, &p[4], &p[5]),
            target: step(&base.target, &p[6], &p[7]),
        }
    }
}

/// The holdout column holds two portable bitmaps — the holdout and every ordinal ever assigned —
/// each prefixed by its length (u32, little endian).
pub fn encode_groups(holdout: &RoaringBitmap, assigned: &RoaringBitmap) -> Vec<u8> {
    let a = crate::bitmap::codec::to_bytes(holdout);
    let b = crate::bitmap::codec::to_bytes(assigned);
    let mut out = Vec::with_capacity(8 + a.len() + b.len());
    out.extend_from_slice(&(a.len() as u32).to_le_bytes());
    out.extend_from_slice(&a);
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(&b);
    out
}

fn decode_groups(bytes: &[u8]) -> Option<(RoaringBitmap, RoaringBitmap)> {
    let take = |at: usize| -> Option<(RoaringBitmap, usize)> {
        let n = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let bm = from_bytes(bytes.get(at + 4..at + 4 + n)?)?;
        Some((bm, at + 4 + n))
    };
    let (h, next) = take(0)?;
    let (a, _) = take(next)?;
    Some((h, a))
}

/// The holdout among `members`: a member already assigned (in `prior`: holdout, assigned) keeps
/// its group; a new one is in the holdout when the keyed hash of (segment, pseudonym) falls in
/// the first `pct` % of the hash space.
pub fn assign_holdout(
    keyring: &Keyring,
    segment: &str,
    members: &RoaringBitmap,
    ids: &IdentityMap,
    pct: u8,
    prior: Option<(&RoaringBitmap, &RoaringBitmap)>,
) -> RoaringBitmap {
    let h = Pseudonymizer::new(keyring, HOLDOUT_DOMAIN);
    let threshold = (u128::from(u64::MAX) + 1) * u128::from(pct) / 100;
    let mut out = RoaringBitmap::new();
    let mut key = String::new();
    for u in members.iter() {
        if let Some((held, assigned)) = prior
            && assigned.contains(u)
        {
            if held.contains(u) {
                out.insert(u);
            }
            continue;
        }
        let Some(p) = ids.pseudonym(u) else { continue };
        key.clear();
        key.push_str(segment);
        key.push('\0');
        key.push_str(p);
        if u128::from(h.keyed_u64(&key)) < threshold {
            out.insert(u);
        }
    }
    out
}
