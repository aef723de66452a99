//! `rb_andnot(a, b)` → Binary: a − b. Its fused count is `rb_andnot_cardinality(a, b)`.

use roaring::RoaringBitmap;

use super::setop::{RbSetOp, RbSetOpCardinality, SetOp};

/// The operation.
#[derive(Debug)]
pub struct AndNot;

impl SetOp for AndNot {
    const NAME: &'static str = "rb_andnot";
    const CARDINALITY_NAME: &'static str = "rb_andnot_cardinality";
    fn apply(a: &RoaringBitmap, b: &RoaringBitmap) -> RoaringBitmap {
        a - b
    }
    fn cardinality(a: &RoaringBitmap, b: &RoaringBitmap) -> u64 {
        a.difference_len(b)
    }
}

/// `rb_andnot`.
pub fn udf() -> RbSetOp<AndNot> {
    RbSetOp::new()
}

/// `rb_andnot_cardinality`.
pub fn cardinality_udf() -> RbSetOpCardinality<AndNot> {
    RbSetOpCardinality::new()
}
