//! Privacy primitives that know nothing of DataFusion: the keyring, the pseudonym construction,
//! hashing for activation, and the TCF (decoder and encoder), US Privacy and GPP parsers. The SQL functions in `functions/privacy`
//! are thin wrappers over these.

pub mod enrich;
pub mod gpp;
pub mod hashing;
pub mod keyring;
pub mod pseudonym;
pub mod seal;
pub mod tcf;
pub mod usp;

pub use keyring::Keyring;
