//! `rb_cardinality(bitmap)` → UInt64: how many members. NULL gives NULL. When its argument is
//! `rb_and / rb_or / rb_andnot / rb_xor(a, b)`, the call is rewritten to the fused
//! `rb_<op>_cardinality(a, b)`, which counts without building the intermediate bitmap.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt64Builder};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::binary::as_binary;
use crate::bitmap::codec::from_bytes;
use crate::functions::privacy::common::udf_identity;

#[derive(Debug)]
pub struct RbCardinality {
    signature: Signature,
}

impl RbCardinality {
    pub fn new() -> Self {
        RbCardinality {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for RbCardinality {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(RbCardinality);

fn fused(op: &str) -> Option<ScalarUDF> {
    Some(match op {
        "rb_and" => ScalarUDF::from(super::rb_and::cardinality_udf()),
        "rb_or" => ScalarUDF::from(super::rb_or::cardinality_udf()),
        "rb_andnot" => ScalarUDF::from(super::rb_andnot::cardinality_udf()),
        "rb_xor" => ScalarUDF::from(super::rb_xor::cardinality_udf()),
        _ => return None,
    })
}

impl ScalarUDFImpl for RbCardinality {
    fn name(&self) -> &str {
        "rb_cardinality"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }
    fn simplify(&self, mut args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        if let [Expr::ScalarFunction(inner)] = args.as_slice() {
            if let Some(f) = fused(inner.func.name()) {
                let Expr::ScalarFunction(inner) = args.remove(0) else {
                    unreachable!("matched above")
                };
                return Ok(ExprSimplifyResult::Simplified(Expr::ScalarFunction(
                    ScalarFunction::new_udf(Arc::new(f), inner.args),
                )));
            }
        }
        Ok(ExprSimplifyResult::Original(args))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let rows = if scalar { 1 } else { args.number_rows };
        let bins = as_binary(&args.args[0].to_array(rows)?)?;
        let mut out = UInt64Builder::with_capacity(rows);
        for i in 0..rows {
            if bins.is_null(i) {
                out.append_null();
                continue;
            }
            let Some(bm) = from_bytes(bins.value(i)) else {
                return exec_err!("rb_cardinality: row {i} is not a portable Roaring bitmap");
            };
            out.append_value(bm.len());
        }
        let arr: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
        } else {
            Ok(ColumnarValue::Array(arr))
        }
    }
}
