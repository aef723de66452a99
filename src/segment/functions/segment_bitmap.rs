//! `segment_bitmap('name' [, as_of])` → Binary: the members' ordinals as a portable Roaring bitmap
//! (CRoaring, Java and Go read it; the `rb_*` functions combine it). Evaluated by segdb's planner.

use arrow::datatypes::DataType;
use datafusion::logical_expr::{ScalarUDF, Signature, TypeSignature, Volatility};

pub fn udf() -> ScalarUDF {
    super::Planned::udf(
        "segment_bitmap",
        Signature::one_of(
            vec![TypeSignature::Any(1), TypeSignature::Any(2)],
            Volatility::Volatile,
        ),
        DataType::Binary,
    )
}
