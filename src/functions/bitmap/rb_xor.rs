//! `rb_xor(a, b)` → Binary: a △ b (in exactly one). Its fused count is `rb_xor_cardinality(a, b)`.

use roaring::RoaringBitmap;

use super::setop::{RbSetOp, RbSetOpCardinality, SetOp};

/// The operation.
#[derive(Debug)]
pub struct Xor;

impl SetOp for Xor {
    const NAME: &'static str = "rb_xor";
    const CARDINALITY_NAME: &'static str = "rb_xor_cardinality";
    fn apply(a: &RoaringBitmap, b: &RoaringBitmap) -> RoaringBitmap {
        a ^ b
    }
    fn cardinality(a: &RoaringBitmap, b: &RoaringBitmap) -> u64 {
        a.symmetric_difference_len(b)
    }
}

/// `rb_xor`.
pub fn udf() -> RbSetOp<Xor> {
    RbSetOp::new()
}

/// `rb_xor_cardinality`.
pub fn cardinality_udf() -> RbSetOpCardinality<Xor> {
    RbSetOpCardinality::new()
}
