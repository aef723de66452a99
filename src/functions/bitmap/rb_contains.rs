//! `rb_contains(bitmap, u32)` → Boolean: is the value a member? NULL in either gives NULL;
//! values outside the u32 range are never members.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::binary::{BitmapArg, DecodeCache};
use crate::functions::privacy::common::udf_identity;

#[derive(Debug)]
pub struct RbContains {
    signature: Signature,
    cache: DecodeCache,
}

impl RbContains {
    pub fn new() -> Self {
        RbContains {
            signature: Signature::any(2, Volatility::Immutable),
            cache: DecodeCache::default(),
        }
    }
}

impl Default for RbContains {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(RbContains);

impl ScalarUDFImpl for RbContains {
    fn name(&self) -> &str {
        "rb_contains"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        // A scalar bitmap (the usual case: a literal) is decoded once, not copied per row.
        let bins = BitmapArg::of(&args.args[0], &self.cache, "rb_contains")?;
        let vals = arrow::compute::cast(&args.args[1].to_array(rows)?, &DataType::Int64)?;
        let vals = vals.as_primitive::<Int64Type>();
        let mut out = BooleanBuilder::with_capacity(rows);
        match &bins {
            BitmapArg::Scalar(None) => out.append_nulls(rows),
            BitmapArg::Scalar(Some(bm)) => {
                for v in vals.iter() {
                    out.append_option(v.map(|v| u32::try_from(v).is_ok_and(|v| bm.contains(v))));
                }
            }
            BitmapArg::Column(_) => {
                for i in 0..rows {
                    let bm = bins.get(i, "rb_contains")?;
                    match (bm, vals.is_valid(i)) {
                        (Some(bm), true) => out.append_value(
                            u32::try_from(vals.value(i)).is_ok_and(|v| bm.contains(v)),
                        ),
                        _ => out.append_null(),
                    }
                }
            }
        }
        let arr: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
        } else {
            Ok(ColumnarValue::Array(arr))
        }
    }
}
