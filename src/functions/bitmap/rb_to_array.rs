//! `rb_to_array(bitmap)` → List<UInt32>: the members in ascending order. NULL gives NULL.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, ListBuilder, UInt32Builder};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::binary::as_binary;
use crate::bitmap::codec::from_bytes;
use crate::functions::privacy::common::udf_identity;

#[derive(Debug)]
pub struct RbToArray {
    signature: Signature,
}

impl RbToArray {
    pub fn new() -> Self {
        RbToArray {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for RbToArray {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(RbToArray);

impl ScalarUDFImpl for RbToArray {
    fn name(&self) -> &str {
        "rb_to_array"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new(
            "item",
            DataType::UInt32,
            true,
        ))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let rows = if scalar { 1 } else { args.number_rows };
        let bins = as_binary(&args.args[0].to_array(rows)?)?;
        let mut out = ListBuilder::new(UInt32Builder::new());
        for i in 0..rows {
            if bins.is_null(i) {
                out.append(false);
                continue;
            }
            let Some(bm) = from_bytes(bins.value(i)) else {
                return exec_err!("rb_to_array: row {i} is not a portable Roaring bitmap");
            };
            out.values().append_slice(&bm.iter().collect::<Vec<_>>());
            out.append(true);
        }
        let arr: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
        } else {
            Ok(ColumnarValue::Array(arr))
        }
    }
}
