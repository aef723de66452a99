//! segdb: an embedded analytical database for audience segments.
//!
//! ```text
//!  files ──► ingest (read → validate → pseudonymise → identity ordinals, event index) ──► Delta
//!            tables on a local path, file:// or s3:// (events, profiles, consent, identity,
//!            links; segments, snapshots, traits, exports, audit under _segdb/)
//!
//!  SQL / Flight SQL ──► front door (statement kind, role, one pinned snapshot per statement)
//!     ──► DataFusion session: segdb functions, segment language → roaring-bitmap plans,
//!         consent and erasure applied at scan time; embedded or on a Ballista cluster
//!
//!  schedules ──► refreshes (versioned snapshots, entered/exited, holdouts) ──► exports
//! ```
//!
//! Raw user identifiers stop at the ingest door: only keyed pseudonyms (`p1_…`) and dense user
//! ordinals (`uid`) are stored. See `ARCHITECTURE.md` for the walk-through and `DESIGN.md`
//! (shared with the acceptance checks) for the contract.

#![deny(unreachable_pub, clippy::dbg_macro, clippy::todo)]

pub mod bitmap;
pub mod cli;
pub mod cluster;
pub mod collector;
pub mod config;
pub mod datagen;
pub mod engine;
pub mod erasure;
pub mod error;
pub mod functions;
pub mod http;
pub mod index;
pub mod ingest;
pub mod interests;
pub mod limits;
pub mod links;
pub mod logging;
pub mod lookalike;
pub mod materialize;
pub mod privacy;
pub mod result;
pub mod segment;
pub mod server;
pub mod session;
pub mod statement;
pub mod storage;
pub mod taxonomy;
pub mod time;

pub use engine::{Config, Engine};
pub use error::{Error, Result};
pub use result::QueryResult;
