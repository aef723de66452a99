//! Day timelines: per (event, UTC day) every occurrence as (ts, uid), sorted by time. They answer
//! what per-day counts cannot: a window that starts or ends inside a day (the default `as_of` is
//! *now*), and `DID 'a' THEN 'b' [WITHIN d]` sequences without a self-join. They are derived
//! from one events version, built by one scan for every missing key, and kept in memory under a
//! byte budget (`SEGDB_TIMELINE_CACHE_MB`, default 512); they are never persisted.

use std::collections::HashMap;
use std::sync::Arc;

use roaring::RoaringBitmap;

use super::DAY_US;
use crate::bitmap::bsi::Bsi;

/// One (event, day)'s occurrences, sorted by `ts`.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    pub ts: Vec<i64>,
    pub uid: Vec<u32>,
}

impl Timeline {
    /// Sort by time (ties by uid, so the order is deterministic).
    pub fn from_pairs(mut pairs: Vec<(i64, u32)>) -> Timeline {
        pairs.sort_unstable();
        Timeline {
            ts: pairs.iter().map(|p| p.0).collect(),
            uid: pairs.iter().map(|p| p.1).collect(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.ts.len() * 12 + 64
    }

    /// The positions with `lo <= ts < hi`.
    pub fn range(&self, lo: i64, hi: i64) -> std::ops::Range<usize> {
        let a = self.ts.partition_point(|t| *t < lo);
        let b = self.ts.partition_point(|t| *t < hi);
        a..b.max(a)
    }
}

/// (event, day) → timeline.
pub type Timelines = HashMap<(String, i32), Arc<Timeline>>;

/// Per-user counts of occurrences in `[lo, hi)` over some timelines: the users are put in order
/// with a radix sort (a piece of a day holds up to hundreds of thousands of occurrences, and
/// two or three counting passes over them beat a comparison sort; `cargo bench --bench
/// bitmaps` compares both), then runs are counted.
pub fn counts_in(timelines: &[&Timeline], lo: i64, hi: i64) -> Bsi {
    let mut uids: Vec<u32> = Vec::new();
    for t in timelines {
        uids.extend_from_slice(&t.uid[t.range(lo, hi)]);
    }
    radix_sort(&mut uids);
    Bsi::from_counts(runs(uids))
}

/// (value, how many times) of a sorted list.
pub fn runs(sorted: Vec<u32>) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::new();
    for u in sorted {
        match out.last_mut() {
            Some((x, c)) if *x == u => *c += 1,
            _ => out.push((u, 1)),
        }
    }
    out
}

/// Least-significant-digit radix sort, 11 bits a pass, as many passes as the largest value
/// needs (two for ordinals below 4M).
pub fn radix_sort(v: &mut Vec<u32>) {
    const BITS: u32 = 11;
    const MASK: u32 = (1 << BITS) - 1;
    if v.len() < 256 {
        v.sort_unstable();
        return;
    }
    let max = v.iter().copied().max().unwrap_or(0);
    let width = u32::BITS - max.leading_zeros();
    let mut buf = vec![0u32; v.len()];
    let mut shift = 0;
    while shift < width {
        let mut at = [0usize; 1 << BITS];
        for &x in v.iter() {
            at[((x >> shift) & MASK) as usize] += 1;
        }
        let mut sum = 0;
        for a in at.iter_mut() {
            let n = *a;
            *a = sum;
            sum += n;
        }
        for &x in v.iter() {
            let d = ((x >> shift) & MASK) as usize;
            buf[at[d]] = x;
            at[d] += 1;
        }
        std::mem::swap(v, &mut buf);
        shift += BITS;
    }
}

/// The days `[from, to)` a window `[lo, hi)` touches.
pub fn days_of(lo: i64, hi: i64) -> std::ops::Range<i32> {
    let from = lo.div_euclid(DAY_US) as i32;
    let to = if hi <= lo {
        from
    } else {
        (hi - 1).div_euclid(DAY_US) as i32 + 1
    };
    from..to
}

/// A window `[lo, hi)` split into whole days `[d0, d1)` and the partial pieces at either edge
/// (each inside one day). `lo = None` is unbounded below (whole days from the first).
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub whole: Option<(i32, i32)>,
    pub partial: Vec<(i64, i64)>,
}

pub fn split(lo: Option<i64>, hi: i64) -> Split {
    let top_day = hi.div_euclid(DAY_US);
    let top_start = top_day * DAY_US;
    let mut partial = Vec::new();
    match lo {
        None => {
            if hi > top_start {
                partial.push((top_start, hi));
            }
            Split {
                whole: Some((i32::MIN, top_day as i32)),
                partial,
            }
        }
        Some(lo) if lo >= hi => Split {
            whole: None,
            partial,
        },
        Some(lo) => {
            let lo_day = lo.div_euclid(DAY_US);
            if lo_day == top_day {
                partial.push((lo, hi));
                return Split {
                    whole: None,
                    partial,
                };
            }
            let mut first_whole = lo_day;
            if lo > lo_day * DAY_US {
                partial.push((lo, (lo_day + 1) * DAY_US));
                first_whole = lo_day + 1;
            }
            if hi > top_start {
                partial.push((top_start, hi));
            }
            Split {
                whole: (first_whole < top_day).then_some((first_whole as i32, top_day as i32)),
                partial,
            }
        }
    }
}

/// Whether some occurrence of `a` at t1 and of `b` at t2 have t1 < t2 (≤ t1 + within), per user,
/// over per-user time-sorted lists. Returns the users for whom it holds.
///
/// `a` and `b` are (user, ts) lists in any order; they are grouped by user with a counting sort
/// (users are dense ordinals), keeping time order within a user when the input is in time order
/// per user, and sorted per user otherwise.
pub fn sequences(
    a: &[(u32, i64)],
    b: &[(u32, i64)],
    within: Option<i64>,
    time_ordered: bool,
) -> RoaringBitmap {
    let n = a
        .iter()
        .chain(b.iter())
        .map(|p| p.0 as usize + 1)
        .max()
        .unwrap_or(0);
    let group = |xs: &[(u32, i64)]| -> (Vec<u32>, Vec<i64>) {
        let mut start = vec![0u32; n + 1];
        for (u, _) in xs {
            start[*u as usize + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut pos = start.clone();
        let mut ts = vec![0i64; xs.len()];
        for (u, t) in xs {
            let p = &mut pos[*u as usize];
            ts[*p as usize] = *t;
            *p += 1;
        }
        if !time_ordered {
            for u in 0..n {
                let (s, e) = (start[u] as usize, start[u + 1] as usize);
                if e - s > 1 {
                    ts[s..e].sort_unstable();
                }
            }
        }
        (start, ts)
    };
    let (sa, ta) = group(a);
    let (sb, tb) = group(b);
    let mut out = RoaringBitmap::new();
    for u in 0..n {
        let ra = &ta[sa[u] as usize..sa[u + 1] as usize];
        let rb = &tb[sb[u] as usize..sb[u + 1] as usize];
        if ra.is_empty() || rb.is_empty() {
            continue;
        }
        let hit = match within {
            None => ra[0] < rb[rb.len() - 1],
            Some(d) => {
                // For each b, the latest a strictly before it.
                let mut i = 0;
                let mut found = false;
                for t2 in rb {
                    while i < ra.len() && ra[i] < *t2 {
                        i += 1;
                    }
                    if i > 0 && *t2 <= ra[i - 1].saturating_add(d) {
                        found = true;
                        break;
                    }
                }
                found
            }
        };
        if hit {
            out.insert(u as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;

    #[test]
    fn windows_split_into_whole_days_and_edges() {
        let d = DAY_US;
        // Midnight to midnight: whole days only.
        assert_eq!(
            split(Some(10 * d), 17 * d),
            Split {
                whole: Some((10, 17)),
                partial: vec![]
            }
        );
        // 14:00 to 14:00 a week later.
        assert_eq!(
            split(Some(10 * d + 14 * H), 17 * d + 14 * H),
            Split {
                whole: Some((11, 17)),
                partial: vec![(10 * d + 14 * H, 11 * d), (17 * d, 17 * d + 14 * H)]
            }
        );
        // Inside one day.
        assert_eq!(
            split(Some(10 * d + H), 10 * d + 3 * H),
            Split {
                whole: None,
                partial: vec![(10 * d + H, 10 * d + 3 * H)]
            }
        );
        // Unbounded below, ending at 14:00.
        assert_eq!(
            split(None, 17 * d + 14 * H),
            Split {
                whole: Some((i32::MIN, 17)),
                partial: vec![(17 * d, 17 * d + 14 * H)]
            }
        );
        assert_eq!(split(Some(5), 5).partial, vec![]);
        assert_eq!(days_of(10 * d + H, 12 * d), 10..12);
        assert_eq!(days_of(10 * d, 12 * d + 1), 10..13);
    }

    #[test]
    fn radix_sort_sorts() {
        let mut x: u64 = 3;
        for (n, m) in [
            (0usize, 1u64),
            (10, 5),
            (300, 7),
            (5_000, 1 << 11),
            (70_000, 1 << 22),
            (20_000, 1 << 32),
        ] {
            let mut v: Vec<u32> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((x >> 20) % m) as u32
                })
                .collect();
            let mut want = v.clone();
            want.sort_unstable();
            radix_sort(&mut v);
            assert_eq!(v, want, "{n} values below {m}");
        }
    }

    #[test]
    fn counts_and_sequences_over_timelines() {
        let t = Timeline::from_pairs(vec![(30, 2), (10, 1), (20, 1), (40, 3)]);
        assert_eq!(t.range(10, 40), 0..3);
        assert_eq!(counts_in(&[&t], 10, 35), Bsi::from_counts([(1, 2), (2, 1)]));
        assert_eq!(
            counts_in(&[&t, &t], 10, 35),
            Bsi::from_counts([(1, 4), (2, 2)])
        );
        assert_eq!(counts_in(&[&t], 35, 35), Bsi::default());
        let a = [(1, 10), (2, 50), (3, 10)];
        let b = [(1, 15), (2, 40), (3, 100)];
        let all: Vec<u32> = sequences(&a, &b, None, true).iter().collect();
        assert_eq!(all, vec![1, 3]);
        let within: Vec<u32> = sequences(&a, &b, Some(10), true).iter().collect();
        assert_eq!(within, vec![1]);
        // A strictly later b is needed: equal times do not count.
        assert!(sequences(&[(7, 5)], &[(7, 5)], None, true).is_empty());
        // Unordered input per user is sorted.
        let a = [(4, 90), (4, 10)];
        let b = [(4, 12)];
        assert!(sequences(&a, &b, Some(5), false).contains(4));
    }
}
