//! Interests (DESIGN §17): category maps from event properties to IAB taxonomy nodes
//! ([`maps`]) and the decayed per-(category, day) index that answers them ([`index`]). What reads
//! it — the `INTERESTED IN` leaf, `interests(user_id [, n])` and the `interests` table — is in
//! `segment` (`segment::interests`).
//! A user's score for a category is Σ 0.5^(age / half_life) over their mapped events in the
//! window (age = as_of − ts in fractional days); the half-life is the database setting
//! `ALTER DATABASE SET INTERESTS HALF LIFE '…'` (default 7 days).

pub mod index;
pub mod maps;

use std::collections::HashMap;

use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::taxonomy::taxonomy;
use index::InterestIndex;

/// The default window of an interest: the 30 days before `as_of`.
pub const DEFAULT_DAYS: i64 = 30;

/// A duration in the largest whole unit: `7 days`, `36 hours`, `90 minutes`.
pub fn duration_text(us: i64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let (day, hour, minute) = (86_400_000_000, 3_600_000_000, 60_000_000);
    if us % day == 0 {
        plural(us / day, "day")
    } else if us % hour == 0 {
        plural(us / hour, "hour")
    } else if us % minute == 0 {
        plural(us / minute, "minute")
    } else {
        format!("{:.3} seconds", us as f64 / 1e6)
    }
}

/// A category as a user names it (id, path or name) → its taxonomy position.
pub fn resolve(s: &str) -> Result<u32> {
    let t = taxonomy();
    let c = t.resolve(s).map_err(Error::NotFound)?;
    Ok(t.position(&c.id).expect("resolved ids exist") as u32)
}

/// Per-user scores of every category (or of `cat`) for `who` (`None`: everyone) in `[lo, hi)`
/// at `as_of`, summed per profile through `profile` (the canonical id of an ordinal) when
/// segments are stitched.
pub fn scores(
    idx: &InterestIndex,
    cat: Option<u32>,
    who: Option<&RoaringBitmap>,
    lo: i64,
    hi: i64,
    as_of: i64,
    profile: Option<&dyn Fn(u32) -> u32>,
) -> HashMap<(u32, u32), f64> {
    let mut out: HashMap<(u32, u32), f64> = HashMap::new();
    idx.visit(cat, who, lo, hi, as_of, |u, c, s| {
        let u = profile.map_or(u, |k| k(u));
        *out.entry((u, c)).or_insert(0.0) += s;
    });
    out
}
