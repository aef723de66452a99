//! SQL functions, one file each, grouped by area. `register_all` is the one place they are added
//! to a session; a test guards against two functions sharing a name.

pub mod bitmap;
pub mod privacy;
#[cfg(test)]
pub(crate) mod test_util;

use std::sync::Arc;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

use crate::privacy::Keyring;

/// Every scalar function segdb adds.
pub fn scalar_functions(keyring: Arc<Keyring>) -> Vec<ScalarUDF> {
    use privacy::*;
    vec![
        ScalarUDF::from(pseudonymize::Pseudonymize::new(keyring)),
        ScalarUDF::from(hash_email::udf()),
        ScalarUDF::from(hash_phone::HashPhone::new()),
        ScalarUDF::from(tcf_purpose_consent::udf()),
        ScalarUDF::from(tcf_purpose_li::udf()),
        ScalarUDF::from(tcf_vendor_consent::udf()),
        ScalarUDF::from(tcf_vendor_li::udf()),
        ScalarUDF::from(tcf_special_feature::udf()),
        ScalarUDF::from(tcf_decode::TcfDecode::new()),
        ScalarUDF::from(tcf_error::udf()),
        ScalarUDF::from(usp_opted_out::udf()),
        ScalarUDF::from(gpp_section_ids::GppSectionIds::new()),
        ScalarUDF::from(gpp_sale_opted_out::udf()),
        ScalarUDF::from(bitmap::rb_and::udf()),
        ScalarUDF::from(bitmap::rb_or::udf()),
        ScalarUDF::from(bitmap::rb_andnot::udf()),
        ScalarUDF::from(bitmap::rb_xor::udf()),
        ScalarUDF::from(bitmap::rb_and::cardinality_udf()),
        ScalarUDF::from(bitmap::rb_or::cardinality_udf()),
        ScalarUDF::from(bitmap::rb_andnot::cardinality_udf()),
        ScalarUDF::from(bitmap::rb_xor::cardinality_udf()),
        ScalarUDF::from(bitmap::rb_cardinality::RbCardinality::new()),
        ScalarUDF::from(bitmap::rb_contains::RbContains::new()),
        ScalarUDF::from(bitmap::rb_to_array::RbToArray::new()),
    ]
}

/// Every aggregate function segdb adds.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(bitmap::rb_build_agg::udaf()),
        AggregateUDF::from(bitmap::rb_or_agg::udaf()),
        AggregateUDF::from(bitmap::rb_and_agg::udaf()),
    ]
}

/// Apply `f` (array in, array out) to the one argument of a call, keeping a scalar a scalar —
/// the body of every one-argument probe (`in_segment`'s member probe, `identity_of`, the
/// canonical map, the session tables' suppression check).
pub fn map_unary(
    arg: &datafusion::logical_expr::ColumnarValue,
    f: impl Fn(&arrow::array::ArrayRef) -> datafusion::common::Result<arrow::array::ArrayRef>,
) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
    use datafusion::logical_expr::ColumnarValue;
    match arg {
        ColumnarValue::Array(a) => Ok(ColumnarValue::Array(f(a)?)),
        ColumnarValue::Scalar(s) => {
            let a = f(&s.to_array()?)?;
            Ok(ColumnarValue::Scalar(
                datafusion::scalar::ScalarValue::try_from_array(&a, 0)?,
            ))
        }
    }
}

/// Register every segdb function on `ctx`.
pub fn register_all(ctx: &SessionContext, keyring: Arc<Keyring>) {
    for f in scalar_functions(keyring) {
        ctx.register_udf(f);
    }
    for f in aggregate_functions() {
        ctx.register_udaf(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let ring = Arc::new(Keyring::from_keys([("user".to_string(), [1u8; 32])]).unwrap());
        let mut names: Vec<String> = scalar_functions(ring)
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        names.extend(aggregate_functions().iter().map(|f| f.name().to_string()));
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "two functions share a name");
    }
}
