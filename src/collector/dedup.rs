//! Which `(source, messageId)` pairs were acknowledged within the dedup window. A pair is kept
//! as a 64-bit keyed hash (domain `collector-dedup`), so 20 million of them take about 400 MB and
//! no message id is held or stored; two different pairs share a hash with a probability of about
//! n²/2⁶⁵ (1 in 100,000 at 20 million), in which case the later one is taken for a duplicate.
//! Persisted in `_segdb/collected` (hash, time) after each commit; see `commit` for the order.

use std::collections::{HashSet, VecDeque};

use crate::privacy::Keyring;
use crate::privacy::pseudonym::Pseudonymizer;

/// The keyring domain of the dedup hashes.
pub const DOMAIN: &str = "collector-dedup";

/// The keyed hash of one pair.
pub fn key(hasher: &Pseudonymizer, source: &str, message_id: &str) -> i64 {
    // A separator no source name contains (names are identifiers).
    let mut s = String::with_capacity(source.len() + message_id.len() + 1);
    s.push_str(source);
    s.push('\u{1}');
    s.push_str(message_id);
    hasher.keyed_u64(&s) as i64
}

/// A hasher for [`key`].
pub fn hasher(keyring: &Keyring) -> Pseudonymizer {
    Pseudonymizer::new(keyring, DOMAIN)
}

/// The acknowledged pairs of the window, oldest first.
#[derive(Debug, Default)]
pub struct Window {
    seen: HashSet<i64>,
    order: VecDeque<(i64, i64)>,
    window_micros: i64,
    max_ids: usize,
}

impl Window {
    pub fn new(window_micros: i64, max_ids: usize) -> Self {
        Window {
            seen: HashSet::new(),
            order: VecDeque::new(),
            window_micros,
            max_ids,
        }
    }

    pub fn contains(&self, key: i64) -> bool {
        self.seen.contains(&key)
    }

    /// Remember `key` as acknowledged at `at` (µs).
    pub fn insert(&mut self, key: i64, at: i64) {
        if self.seen.insert(key) {
            self.order.push_back((at, key));
            while self.order.len() > self.max_ids {
                if let Some((_, k)) = self.order.pop_front() {
                    self.seen.remove(&k);
                }
            }
        }
    }

    /// Forget pairs older than the window.
    pub fn expire(&mut self, now: i64) {
        let oldest = now - self.window_micros;
        while let Some(&(at, k)) = self.order.front() {
            if at >= oldest {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_forgets_by_age_and_by_count() {
        let mut w = Window::new(1_000, 3);
        w.insert(1, 0);
        w.insert(2, 10);
        w.insert(2, 20); // already there: its time stays 10
        assert!(w.contains(1) && w.contains(2));
        w.insert(3, 30);
        w.insert(4, 40); // the fourth pushes the oldest out
        assert!(!w.contains(1));
        assert_eq!(w.len(), 3);
        w.expire(1_015); // 10 is older than 1_015 - 1_000
        assert!(!w.contains(2));
        assert!(w.contains(3) && w.contains(4));
    }

    #[test]
    fn keys_depend_on_source_and_keyring() {
        let ring = Keyring::from_keys([("user".to_string(), [1u8; 32])]).unwrap();
        let other = Keyring::from_keys([("user".to_string(), [2u8; 32])]).unwrap();
        let h = hasher(&ring);
        assert_eq!(key(&h, "web", "m1"), key(&h, "web", "m1"));
        assert_ne!(key(&h, "web", "m1"), key(&h, "app", "m1"));
        assert_ne!(key(&h, "web", "m1"), key(&hasher(&other), "web", "m1"));
    }
}
