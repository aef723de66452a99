//! `identity_of(user_id)` → Utf8: the canonical pseudonym of the profile a stored pseudonym (or a
//! `uid`) belongs to — itself without identity links. Unknown or forgotten ids give NULL. The
//! planner replaces the call with a lookup over the current canonical map.

use arrow::datatypes::DataType;
use datafusion::logical_expr::{ScalarUDF, Signature, Volatility};

pub fn udf() -> ScalarUDF {
    super::Planned::udf(
        "identity_of",
        Signature::any(1, Volatility::Volatile),
        DataType::Utf8,
    )
}
