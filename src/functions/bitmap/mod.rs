//! Plain bitmap functions over portable Roaring bytes (Binary, LargeBinary or BinaryView in).

pub mod agg;
pub mod binary;
pub mod rb_and;
pub mod rb_and_agg;
pub mod rb_andnot;
pub mod rb_build_agg;
pub mod rb_cardinality;
pub mod rb_contains;
pub mod rb_or;
pub mod rb_or_agg;
pub mod rb_to_array;
pub mod rb_xor;
pub mod setop;
#[cfg(test)]
mod tests;
