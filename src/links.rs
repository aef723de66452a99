//! Identity links: pairs of user ordinals known to be the same person (a web id and a CRM id, an
//! anonymous id and the id it logged in as). Linked ordinals form connected components
//! (union-find); a component's canonical ordinal is its smallest. Links are kept in
//! `_segdb/links` as ordinal pairs (never pseudonyms), appended by loads and deleted by FORGET;
//! the canonical map is derived from one version of that table, so it is never ahead of it.
//!
//! Guards: placeholder values (`''`, `'null'`, `'undefined'`, `'anonymous'`, `'0'`, `'-1'`, …)
//! never link, and a link that would make a component hold more than `max_ids_per_profile` ids
//! is refused (and counted by the load that tried it).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};

use crate::error::Result;
use crate::storage::{Snapshot, Table, snapshot_column};

/// Ids a profile may hold unless `[identity] max_ids_per_profile` says otherwise.
pub const DEFAULT_MAX_IDS: usize = 50;

/// Values that are placeholders, not ids (compared trimmed and case-insensitively).
const JUNK: [&str; 13] = [
    "",
    "null",
    "nil",
    "none",
    "undefined",
    "anonymous",
    "unknown",
    "n/a",
    "nan",
    "0",
    "-1",
    "[object object]",
    "guest",
];

/// Is `raw` a placeholder rather than an id?
pub fn is_junk(raw: &str) -> bool {
    let t = raw.trim().to_ascii_lowercase();
    JUNK.contains(&t.as_str())
}

/// Union-find over ordinals; the root of a component is its smallest ordinal.
#[derive(Debug, Clone, Default)]
pub struct Components {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl Components {
    fn grow(&mut self, u: u32) {
        let n = u as usize + 1;
        while self.parent.len() < n {
            let i = self.parent.len() as u32;
            self.parent.push(i);
            self.size.push(1);
        }
    }

    /// The canonical ordinal of `u`.
    pub fn find(&mut self, u: u32) -> u32 {
        if u as usize >= self.parent.len() {
            return u;
        }
        let mut r = u;
        while self.parent[r as usize] != r {
            r = self.parent[r as usize];
        }
        // Path compression.
        let mut x = u;
        while self.parent[x as usize] != r {
            let next = self.parent[x as usize];
            self.parent[x as usize] = r;
            x = next;
        }
        r
    }

    /// How many ids the component of `u` holds.
    pub fn size_of(&mut self, u: u32) -> usize {
        let r = self.find(u);
        self.size.get(r as usize).copied().unwrap_or(1) as usize
    }

    /// Link `a` and `b` unless that would make a component hold more than `max` ids. Returns
    /// false when refused (already linked counts as done).
    pub fn link(&mut self, a: u32, b: u32, max: usize) -> bool {
        self.grow(a.max(b));
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return true;
        }
        let total = self.size[ra as usize] as usize + self.size[rb as usize] as usize;
        if total > max {
            return false;
        }
        let (root, child) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[child as usize] = root;
        self.size[root as usize] = total as u32;
        true
    }

    /// canonical[u] for every ordinal below `n`.
    pub fn canonical(&mut self, n: usize) -> Vec<u32> {
        (0..n as u32).map(|u| self.find(u)).collect()
    }

    /// How many ordinals it covers (ordinals beyond are their own component).
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Whether it covers no ordinal.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// Whether any link exists.
    pub fn is_trivial(&self) -> bool {
        self.parent
            .iter()
            .enumerate()
            .all(|(i, p)| *p as usize == i)
    }
}

/// The link pairs of some batches of `_segdb/links`.
pub fn pairs(batches: &[RecordBatch]) -> Result<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for b in batches {
        let a = snapshot_column(b, "a", &DataType::Int64)?;
        let a = a.as_primitive::<Int64Type>();
        let c = snapshot_column(b, "b", &DataType::Int64)?;
        let c = c.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if a.is_valid(i) && c.is_valid(i) {
                out.push((a.value(i) as u32, c.value(i) as u32));
            }
        }
    }
    Ok(out)
}

/// The components of a snapshot's links (no cap: what is stored was accepted).
pub async fn components(snap: &Snapshot) -> Result<Components> {
    let mut c = Components::default();
    for (a, b) in pairs(&snap.read(Table::Links).await?)? {
        c.link(a, b, usize::MAX);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_take_the_smallest_ordinal_and_respect_the_cap() {
        let mut c = Components::default();
        assert!(c.link(5, 3, 50));
        assert!(c.link(3, 9, 50));
        assert!(c.link(7, 8, 50));
        assert_eq!(c.find(9), 3);
        assert_eq!(c.find(5), 3);
        assert_eq!(c.find(8), 7);
        assert!(c.link(9, 8, 50));
        assert_eq!(c.find(7), 3);
        assert_eq!(c.size_of(8), 5);
        // A cap of 5 refuses a sixth id, and keeps the rest as it was.
        assert!(!c.link(1, 8, 5));
        assert_eq!(c.find(1), 1);
        assert!(c.link(1, 2, 5));
        assert_eq!(c.canonical(10), vec![0, 1, 1, 3, 4, 3, 6, 3, 3, 3]);
    }

    #[test]
    fn placeholders_are_not_ids() {
        for j in ["", " ", "NULL", "undefined", "Anonymous", "0", "-1"] {
            assert!(is_junk(j), "{j:?}");
        }
        for id in ["a@b.c", "42", "user-0"] {
            assert!(!is_junk(id), "{id:?}");
        }
    }
}
