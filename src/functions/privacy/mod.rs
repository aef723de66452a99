//! Privacy functions: pseudonyms (and, later, hashing and consent-string decoders).

pub mod pseudonymize;
