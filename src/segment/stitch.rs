//! Stitched profiles: segments evaluated over connected components of linked ids instead of raw
//! ids. [`Canon`] is the canonical map of one version of `_segdb/links` (each ordinal → the
//! smallest ordinal of its component). Bitmaps of ids become bitmaps of canonical ordinals by
//! taking their image; per-user counts (the event index) are summed per canonical ordinal; the
//! scan paths read `events`, `profiles` and `consent` through `segdb_canonical(uid)`, so "a
//! profile did an event if any of its ids did", the most recently updated profile row of a
//! component decides `PROFILE`, and the latest consent record across its ids decides a purpose.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::snapshots::Stored;
use crate::bitmap::bsi::Bsi;
use crate::links::Components;

/// Name of the function the scan paths map `uid` through.
pub const CANONICAL_FN: &str = "segdb_canonical";

/// The canonical map of one links version.
#[derive(Debug)]
pub struct Canon {
    /// Version of `_segdb/links` it was derived from.
    pub links_version: u64,
    /// `map[u]` for every ordinal below its length; ordinals beyond are their own profile.
    map: Arc<Vec<u32>>,
    /// Every ordinal in a component of two or more ids.
    pub linked: RoaringBitmap,
}

impl Canon {
    /// The canonical map of some components.
    pub fn new(mut c: Components, links_version: u64) -> Canon {
        let n = c.len();
        let map = c.canonical(n);
        let mut linked = RoaringBitmap::new();
        for (u, r) in map.iter().enumerate() {
            if *r as usize != u {
                linked.insert(u as u32);
                linked.insert(*r);
            }
        }
        Canon {
            links_version,
            map: Arc::new(map),
            linked,
        }
    }

    /// Whether any two ids are linked.
    pub fn is_trivial(&self) -> bool {
        self.linked.is_empty()
    }

    /// The canonical ordinal of `u`.
    pub fn of(&self, u: u32) -> u32 {
        self.map.get(u as usize).copied().unwrap_or(u)
    }

    /// The map as a vector (for the planner's probes).
    pub fn map(&self) -> Arc<Vec<u32>> {
        self.map.clone()
    }

    /// The canonical ordinals of a set of ids.
    pub fn image(&self, b: &RoaringBitmap) -> RoaringBitmap {
        if self.linked.is_empty() {
            return b.clone();
        }
        let inter = b & &self.linked;
        if inter.is_empty() {
            return b.clone();
        }
        let mut out = b - &self.linked;
        let mut roots: Vec<u32> = inter.iter().map(|u| self.of(u)).collect();
        roots.sort_unstable();
        roots.dedup();
        out |= RoaringBitmap::from_sorted_iter(roots).expect("sorted");
        out
    }

    /// Every id of the components that a set of ids touches.
    pub fn expand(&self, b: &RoaringBitmap) -> RoaringBitmap {
        let inter = b & &self.linked;
        if inter.is_empty() {
            return b.clone();
        }
        let roots: std::collections::HashSet<u32> = inter.iter().map(|u| self.of(u)).collect();
        let mut out = b.clone();
        for u in self.linked.iter() {
            if roots.contains(&self.of(u)) {
                out.insert(u);
            }
        }
        out
    }

    /// Per-id counts summed per canonical ordinal.
    pub fn bsi(&self, b: &Bsi) -> Bsi {
        if self.linked.is_empty() {
            return b.clone();
        }
        let mut rest = Bsi {
            slices: b.slices.iter().map(|s| s - &self.linked).collect(),
        };
        let mut parts: Vec<(u32, u64)> = Vec::new();
        for (k, s) in b.slices.iter().enumerate() {
            for u in (s & &self.linked).iter() {
                parts.push((self.of(u), 1u64 << k));
            }
        }
        if parts.is_empty() {
            return rest;
        }
        parts.sort_unstable_by_key(|p| p.0);
        let mut sums: Vec<(u32, u64)> = Vec::new();
        for (u, v) in parts {
            match sums.last_mut() {
                Some((lu, lv)) if *lu == u => *lv += v,
                _ => sums.push((u, v)),
            }
        }
        // Canonical ordinals of linked components are disjoint from `rest`'s users, so adding is
        // a union.
        rest.add(&Bsi::from_counts(sums));
        rest
    }

    /// A stored snapshot read through this map: members, targets and assignments become
    /// canonical ordinals, and a merged profile takes the group of its smallest stored id (its
    /// canonical id's, when that id was stored).
    pub fn stored(&self, s: &Stored) -> Stored {
        if self.linked.is_empty() || (&s.assigned | &s.members).is_disjoint(&self.linked) {
            return Stored {
                version: s.version,
                as_of: s.as_of,
                members: s.members.clone(),
                holdout: s.holdout.clone(),
                assigned: s.assigned.clone(),
                target: s.target.clone(),
            };
        }
        let mut decided = std::collections::HashMap::new();
        let source = &s.assigned | &s.members;
        for u in source.iter() {
            decided
                .entry(self.of(u))
                .or_insert_with(|| s.holdout.contains(u));
        }
        let mut held: Vec<u32> = decided
            .iter()
            .filter(|(_, h)| **h)
            .map(|(c, _)| *c)
            .collect();
        held.sort_unstable();
        let holdout = RoaringBitmap::from_sorted_iter(held).expect("sorted");
        let members = self.image(&s.members);
        Stored {
            version: s.version,
            as_of: s.as_of,
            holdout: &holdout & &members,
            assigned: self.image(&s.assigned),
            target: &self.image(&s.target) - &holdout,
            members,
        }
    }

    /// `segdb_canonical(uid)` over this map, for the scan paths.
    pub fn udf(&self) -> ScalarUDF {
        ScalarUDF::from(CanonicalUdf {
            signature: Signature::any(1, Volatility::Immutable),
            map: self.map.clone(),
            version: self.links_version,
        })
    }
}

/// `segdb_canonical(uid)` → the canonical ordinal (Int64) of each ordinal.
#[derive(Debug)]
struct CanonicalUdf {
    signature: Signature,
    map: Arc<Vec<u32>>,
    version: u64,
}

impl PartialEq for CanonicalUdf {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.map, &o.map)
    }
}
impl Eq for CanonicalUdf {}
impl std::hash::Hash for CanonicalUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.version.hash(state);
    }
}

impl CanonicalUdf {
    fn map_array(&self, a: &ArrayRef) -> DfResult<ArrayRef> {
        let a = arrow::compute::cast(a, &DataType::Int64)?;
        let a = a.as_primitive::<Int64Type>();
        let out: Int64Array = a
            .iter()
            .map(|v| {
                v.map(|u| match u32::try_from(u) {
                    Ok(x) => i64::from(self.map.get(x as usize).copied().unwrap_or(x)),
                    Err(_) => u,
                })
            })
            .collect();
        Ok(Arc::new(out))
    }
}

impl ScalarUDFImpl for CanonicalUdf {
    fn name(&self) -> &str {
        CANONICAL_FN
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        crate::functions::map_unary(&args.args[0], |a| self.map_array(a))
    }
}

/// The relations the scan paths read, raw or stitched.
#[derive(Debug, Clone, Copy)]
pub struct Relations {
    pub stitched: bool,
}

impl Relations {
    /// `events`, with `uid` the canonical ordinal when stitched.
    pub fn events(self) -> &'static str {
        if self.stitched {
            "(SELECT * REPLACE (segdb_canonical(uid) AS uid) FROM events) events"
        } else {
            "events"
        }
    }

    /// `consent`, with `uid` the canonical ordinal when stitched (so "the latest record per
    /// uid" is the latest across a profile's ids).
    pub fn consent(self) -> &'static str {
        if self.stitched {
            "(SELECT * REPLACE (segdb_canonical(uid) AS uid) FROM consent) consent"
        } else {
            "consent"
        }
    }

    /// `profiles`, one row per profile: when stitched, the most recently updated row among a
    /// component's ids (ties: the smallest ordinal's row), with `uid` its canonical ordinal.
    pub fn profiles(self) -> &'static str {
        if self.stitched {
            "(SELECT * EXCLUDE (segdb_rn) FROM (SELECT * REPLACE (segdb_canonical(uid) AS uid), \
             row_number() OVER (PARTITION BY segdb_canonical(uid) ORDER BY updated_at DESC NULLS LAST, uid ASC) AS segdb_rn \
             FROM profiles) WHERE segdb_rn = 1) profiles"
        } else {
            "profiles"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(pairs: &[(u32, u32)]) -> Canon {
        let mut c = Components::default();
        for (a, b) in pairs {
            c.link(*a, *b, usize::MAX);
        }
        Canon::new(c, 1)
    }

    #[test]
    fn images_and_sums_are_per_component() {
        let c = canon(&[(5, 2), (2, 9), (7, 8)]);
        assert_eq!(c.of(9), 2);
        assert_eq!(c.of(8), 7);
        assert_eq!(c.of(100), 100);
        let b: RoaringBitmap = [1, 5, 9, 8, 100].into_iter().collect();
        assert_eq!(c.image(&b).iter().collect::<Vec<_>>(), vec![1, 2, 7, 100]);
        let e: RoaringBitmap = [9].into_iter().collect();
        assert_eq!(c.expand(&e).iter().collect::<Vec<_>>(), vec![2, 5, 9]);
        let counts = Bsi::from_counts([(1, 3), (2, 1), (5, 2), (9, 4), (8, 1)]);
        let s = c.bsi(&counts);
        assert_eq!(s.equals(7).iter().collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.equals(3).iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.equals(1).iter().collect::<Vec<_>>(), vec![7]);
        assert_eq!(s.present().len(), 3);
    }

    #[test]
    fn a_merged_profile_takes_its_smallest_stored_ids_group() {
        let c = canon(&[(3, 1), (6, 4)]);
        let members: RoaringBitmap = [3, 4, 6].into_iter().collect();
        let holdout: RoaringBitmap = [3, 6].into_iter().collect();
        let s = Stored {
            version: 1,
            as_of: 0,
            target: &members - &holdout,
            assigned: members.clone(),
            members,
            holdout,
        };
        let m = c.stored(&s);
        assert_eq!(m.members.iter().collect::<Vec<_>>(), vec![1, 4]);
        // 1 was never stored: 3 (holdout) decides; 4 (target) is smaller than 6 (holdout).
        assert_eq!(m.holdout.iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(m.target.iter().collect::<Vec<_>>(), vec![4]);
    }
}
