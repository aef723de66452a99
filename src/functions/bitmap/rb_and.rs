//! `rb_and(a, b)` → Binary: a ∩ b. Its fused count is `rb_and_cardinality(a, b)`.

use roaring::RoaringBitmap;

use super::setop::{RbSetOp, RbSetOpCardinality, SetOp};

/// The operation.
#[derive(Debug)]
pub struct And;

impl SetOp for And {
    const NAME: &'static str = "rb_and";
    const CARDINALITY_NAME: &'static str = "rb_and_cardinality";
    fn apply(a: &RoaringBitmap, b: &RoaringBitmap) -> RoaringBitmap {
        a & b
    }
    fn cardinality(a: &RoaringBitmap, b: &RoaringBitmap) -> u64 {
        a.intersection_len(b)
    }
}

/// `rb_and`.
pub fn udf() -> RbSetOp<And> {
    RbSetOp::new()
}

/// `rb_and_cardinality`.
pub fn cardinality_udf() -> RbSetOpCardinality<And> {
    RbSetOpCardinality::new()
}
