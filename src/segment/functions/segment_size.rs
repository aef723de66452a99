//! `segment_size('name' [, as_of])` → UInt64: how many users are in the segment (consent,
//! erasure and holdout applied). Evaluated by segdb's planner.

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
