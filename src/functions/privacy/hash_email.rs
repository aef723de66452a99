//! `hash_email(text)` → Utf8: lowercase hex SHA-256 of the trimmed, lowercased address, for
//! ad-platform matching (export only). NULL for NULL or for text that is not an address.

use super::text_fn::{MapRule, TextMap};
use crate::privacy::hashing::{normalize_email, sha256_hex};

/// The rule of `hash_email`.
#[derive(Debug)]
pub struct HashEmail;

impl MapRule for HashEmail {
    const NAME: &'static str = "hash_email";
    fn map(s: &str) -> Option<String> {
        normalize_email(s).map(|e| sha256_hex(e.as_bytes()))
    }
}

/// The UDF.
pub fn udf() -> TextMap<HashEmail> {
    TextMap::new()
}
