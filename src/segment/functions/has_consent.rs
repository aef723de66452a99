//! `has_consent(user_id, 'purpose' [, at])` → Boolean: does this user (a stored pseudonym or a
//! `uid`) hold consent for the purpose at `at` (default: the statement's `as_of`)? Same rules as
//! `FOR PURPOSE`: `'tcf:N'`, `'sale'`, or an explicit purpose; no record means false. The
//! planner derives the holders and replaces the call with a probe over them.

use arrow::datatypes::DataType;
use datafusion::logical_expr::{ScalarUDF, Signature, TypeSignature, Volatility};

pub fn udf() -> ScalarUDF {
    super::Planned::udf(
        "has_consent",
        Signature::one_of(
            vec![TypeSignature::Any(2), TypeSignature::Any(3)],
            Volatility::Volatile,
        ),
        DataType::Boolean,
    )
}
