//! Privacy primitives that know nothing of DataFusion: the keyring, the pseudonym construction
//! and the TCF encoder used by the dataset generator. The SQL functions in `functions/privacy`
//! are thin wrappers over these.

pub mod keyring;
pub mod pseudonym;
pub mod tcf;

pub use keyring::Keyring;
