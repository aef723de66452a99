//! Bit-sliced counts: per user a small integer (how often they did something), stored as one
//! bitmap per binary digit. Slices add with ripple-carry bitmap algebra, so the per-day counts of
//! the index sum over any window without touching individual users, and `count >= n` is a
//! comparison over slices.

use roaring::RoaringBitmap;

/// Counts per user, one bitmap per bit (slice 0 = least significant).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bsi {
    pub slices: Vec<RoaringBitmap>,
}

impl Bsi {
    /// Build from (user, count) pairs; zero counts are absent. Pairs in ascending user order
    /// (the usual case) are appended per slice; others are inserted.
    pub fn from_counts(counts: impl IntoIterator<Item = (u32, u64)>) -> Bsi {
        let mut cols: Vec<Vec<u32>> = Vec::new();
        let mut ascending = true;
        let mut last: Option<u32> = None;
        for (u, mut c) in counts {
            if c == 0 {
                continue;
            }
            ascending &= last.is_none_or(|l| u > l);
            last = Some(u);
            let mut k = 0;
            while c > 0 {
                if cols.len() <= k {
                    cols.push(Vec::new());
                }
                if c & 1 == 1 {
                    cols[k].push(u);
                }
                c >>= 1;
                k += 1;
            }
        }
        let slices = cols
            .into_iter()
            .map(|v| match ascending {
                true => RoaringBitmap::from_sorted_iter(v).expect("ascending users"),
                false => v.into_iter().collect(),
            })
            .collect();
        Bsi { slices }
    }

    /// The sum of all counts.
    pub fn total(&self) -> u64 {
        self.slices
            .iter()
            .enumerate()
            .map(|(k, s)| s.len() << k)
            .sum()
    }

    /// Users with a non-zero count.
    pub fn present(&self) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        for s in &self.slices {
            out |= s;
        }
        out
    }

    /// `self += other`, ripple carry: per slice `sum = a ^ b ^ carry`,
    /// `carry' = (a & b) | (carry & (a ^ b))`, computed in place with `a ^ b` once, and stopping
    /// as soon as `other` has no more slices and nothing is carried.
    pub fn add(&mut self, other: &Bsi) {
        let mut carry = RoaringBitmap::new();
        let mut k = 0;
        while k < other.slices.len() || !carry.is_empty() {
            if self.slices.len() <= k {
                self.slices.push(RoaringBitmap::new());
            }
            let a = &mut self.slices[k];
            match other.slices.get(k).filter(|b| !b.is_empty()) {
                Some(b) => {
                    let mut next = &*a & b;
                    *a ^= b; // a ^ b
                    if !carry.is_empty() {
                        next |= &carry & &*a;
                        *a ^= &carry; // a ^ b ^ carry
                    }
                    carry = next;
                }
                None => {
                    // a + carry: sum a ^ carry, carry' a & carry.
                    let next = &*a & &carry;
                    *a ^= &carry;
                    carry = next;
                }
            }
            k += 1;
        }
    }

    /// Users whose count is at least `n` (n ≥ 1).
    pub fn at_least(&self, n: u64) -> RoaringBitmap {
        if n == 0 {
            return self.present();
        }
        // count >= n  ⇔  count > n - 1
        self.greater_than(n - 1)
    }

    /// Users whose count is greater than `n`.
    pub fn greater_than(&self, n: u64) -> RoaringBitmap {
        let bits = self.slices.len();
        if bits < 64 && n >> bits != 0 {
            return RoaringBitmap::new();
        }
        // Scan from the most significant slice: gt = users already known greater,
        // eq = users equal so far (start: everyone present).
        let mut gt = RoaringBitmap::new();
        let mut eq = self.present();
        for k in (0..bits).rev() {
            let s = &self.slices[k];
            if (n >> k) & 1 == 1 {
                eq &= s;
            } else {
                gt |= &eq & s;
                eq -= s;
            }
        }
        gt
    }

    /// Users whose count is exactly `n` (n ≥ 1).
    pub fn equals(&self, n: u64) -> RoaringBitmap {
        let mut out = self.at_least(n);
        out -= self.greater_than(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn counts(b: &Bsi, users: u32) -> HashMap<u32, u64> {
        (0..users)
            .map(|u| {
                (
                    u,
                    b.slices
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.contains(u))
                        .map(|(k, _)| 1u64 << k)
                        .sum(),
                )
            })
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    #[test]
    fn add_and_compare_match_plain_arithmetic() {
        // Deterministic pseudo-random counts for 500 users over 6 "days".
        let mut total: HashMap<u32, u64> = HashMap::new();
        let mut acc = Bsi::default();
        let mut x: u64 = 12345;
        for _day in 0..6 {
            let mut day = Vec::new();
            for u in 0..500u32 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let c = (x >> 59) % 7; // 0..6
                if c > 0 {
                    day.push((u, c));
                    *total.entry(u).or_default() += c;
                }
            }
            acc.add(&Bsi::from_counts(day));
        }
        assert_eq!(counts(&acc, 500), total);
        for n in 0..45u64 {
            let want_ge: RoaringBitmap = total
                .iter()
                .filter(|(_, c)| **c >= n.max(1))
                .map(|(u, _)| *u)
                .collect();
            assert_eq!(acc.at_least(n), want_ge, "at_least {n}");
            let want_gt: RoaringBitmap = total
                .iter()
                .filter(|(_, c)| **c > n)
                .map(|(u, _)| *u)
                .collect();
            assert_eq!(acc.greater_than(n), want_gt, "greater_than {n}");
            if n > 0 {
                let want_eq: RoaringBitmap = total
                    .iter()
                    .filter(|(_, c)| **c == n)
                    .map(|(u, _)| *u)
                    .collect();
                assert_eq!(acc.equals(n), want_eq, "equals {n}");
            }
        }
        assert!(acc.greater_than(u64::MAX).is_empty());
    }

    #[test]
    fn add_of_mixed_widths_and_sparse_slices_is_plain_addition() {
        let mut x: u64 = 99;
        let mut next = |m: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % m
        };
        for round in 0..40 {
            let mut total: HashMap<u32, u64> = HashMap::new();
            let mut acc = Bsi::default();
            for _ in 0..(1 + next(6)) {
                // Widths from one slice to eleven; some parts hold only even counts (an empty
                // slice 0) or only a few users.
                let max = [2, 3, 8, 1024, 2048][next(5) as usize];
                let even = next(3) == 0;
                let users = [5, 300, 70_000][next(3) as usize] as u32;
                let mut part = Vec::new();
                for u in (0..users).step_by(1 + next(4) as usize) {
                    let mut c = next(max);
                    if even {
                        c &= !1;
                    }
                    if c > 0 {
                        part.push((u, c));
                        *total.entry(u).or_default() += c;
                    }
                }
                acc.add(&Bsi::from_counts(part));
            }
            assert_eq!(counts(&acc, 70_000), total, "round {round}");
        }
        // Adding nothing changes nothing; adding to nothing copies.
        let a = Bsi::from_counts([(1, 5), (7, 2)]);
        let mut b = a.clone();
        b.add(&Bsi::default());
        assert_eq!(b, a);
        let mut c = Bsi::default();
        c.add(&a);
        assert_eq!(c, a);
    }
}
