//! Bitmaps over dense user ordinals: the portable Roaring codec, bit-sliced counts, and the
//! per-(event, day) event index persisted under `_segdb/`. Nothing here knows of the server or
//! the segment language.

pub mod bsi;
pub mod codec;
pub mod store;
