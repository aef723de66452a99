//! `segment_size('name' [, as_of])` → UInt64: how many users are in the segment (consent,
//! erasure and holdout applied); `segment_size_of('expr' [, as_of])`: the same for an unsaved
//! expression. Evaluated by segdb's planner.

use arrow::datatypes::DataType;
use datafusion::logical_expr::{ScalarUDF, Signature, TypeSignature, Volatility};

pub fn udf() -> ScalarUDF {
    super::Planned::udf(
        "segment_size",
        Signature::one_of(
            vec![TypeSignature::Any(1), TypeSignature::Any(2)],
            Volatility::Volatile,
        ),
        DataType::UInt64,
    )
}

/// `segment_size_of('segment expression' [, as_of])` → UInt64: the size of an expression that is
/// not saved as a segment (what an editor holds).
pub fn size_of_udf() -> ScalarUDF {
    super::Planned::udf(
        "segment_size_of",
        Signature::one_of(
            vec![TypeSignature::Any(1), TypeSignature::Any(2)],
            Volatility::Volatile,
        ),
        DataType::UInt64,
    )
}
