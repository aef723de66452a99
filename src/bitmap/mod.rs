//! Bitmaps over dense user ordinals, as plain Rust: the portable Roaring codec and bit-sliced
//! counts. No DataFusion, no storage: the SQL functions, the event index and the segment
//! evaluator all build on these.

pub mod bsi;
pub mod codec;
