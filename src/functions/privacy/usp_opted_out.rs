//! `usp_opted_out(us_privacy)` → Boolean: true when a valid US Privacy string records an opt-out
//! of sale (`1?Y?`). Fails closed as DESIGN.md §6 states: NULL or malformed input gives false.
//! (The consent policy treats a malformed string as no consent for `sale`.)

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::common::{Args, str_at, udf_identity};
use crate::privacy::usp;

#[derive(Debug)]
pub struct UspOptedOut {
    signature: Signature,
}

impl UspOptedOut {
    pub fn new() -> Self {
        UspOptedOut {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for UspOptedOut {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(UspOptedOut);

impl ScalarUDFImpl for UspOptedOut {
    fn name(&self) -> &str {
        "usp_opted_out"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let v = a.text(0)?;
        let mut out = BooleanBuilder::new();
        for i in 0..a.rows {
            out.append_value(str_at(&v, i).is_some_and(usp::opted_out));
        }
        let arr: ArrayRef = Arc::new(out.finish());
        a.finish(arr)
    }
}
