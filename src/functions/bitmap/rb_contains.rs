//! `rb_contains(bitmap, u32)` → Boolean: is the value a member? NULL in either gives NULL;
//! values outside the u32 range are never members.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::binary::as_binary;
use crate::bitmap::codec::from_bytes;
use crate::functions::privacy::common::udf_identity;

#[derive(Debug)]
pub struct RbContains {
    signature: Signature,
}

impl RbContains {
    pub fn new() -> Self {
        RbContains {
            signature: Signature::any(2, Volatility::Immutable),
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
        let bins = as_binary(&args.args[0].to_array(rows)?)?;
        let vals = arrow::compute::cast(&args.args[1].to_array(rows)?, &DataType::Int64)?;
        let vals = vals.as_primitive::<Int64Type>();
        let mut out = BooleanBuilder::with_capacity(rows);
        // Bitmap arguments are usually one scalar: decode each distinct value once.
        let mut last: Option<(Vec<u8>, RoaringBitmap)> = None;
        for i in 0..rows {
            if bins.is_null(i) || vals.is_null(i) {
                out.append_null();
                continue;
            }
            let bytes = bins.value(i);
            if last.as_ref().is_none_or(|(k, _)| k.as_slice() != bytes) {
                let Some(bm) = from_bytes(bytes) else {
                    return exec_err!("rb_contains: row {i} is not a portable Roaring bitmap");
                };
                last = Some((bytes.to_vec(), bm));
            }
            let bm = &last.as_ref().expect("set above").1;
            out.append_value(u32::try_from(vals.value(i)).is_ok_and(|v| bm.contains(v)));
        }
        let arr: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
        } else {
            Ok(ColumnarValue::Array(arr))
        }
    }
}
