//! `rb_or(a, b)` → Binary: a ∪ b. Its fused count is `rb_or_cardinality(a, b)`.

use roaring::RoaringBitmap;

use super::setop::{RbSetOp, RbSetOpCardinality, SetOp};

/// The operation.
#[derive(Debug)]
pub struct Or;

impl SetOp for Or {
    const NAME: &'static str = "rb_or";
    const CARDINALITY_NAME: &'static str = "rb_or_cardinality";
    fn apply(a: &RoaringBitmap, b: &RoaringBitmap) -> RoaringBitmap {
        a | b
    }
    fn cardinality(a: &RoaringBitmap, b: &RoaringBitmap) -> u64 {
        a.union_len(b)
    }
}

/// `rb_or`.
pub fn udf() -> RbSetOp<Or> {
    RbSetOp::new()
}

/// `rb_or_cardinality`.
pub fn cardinality_udf() -> RbSetOpCardinality<Or> {
    RbSetOpCardinality::new()
}
