//! `in_segment('name', user_id)` → Boolean: is this user (a stored pseudonym, or a `uid`
//! ordinal) a member? NULL user gives NULL; an unknown pseudonym is not a member. The planner
//! evaluates the segment and replaces the call with a probe over its members.

use arrow::datatypes::DataType;
use datafusion::logical_expr::{ScalarUDF, Signature, Volatility};

pub fn udf() -> ScalarUDF {
    super::Planned::udf(
        "in_segment",
        Signature::any(2, Volatility::Volatile),
        DataType::Boolean,
    )
}
