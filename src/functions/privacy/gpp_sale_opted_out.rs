//! `gpp_sale_opted_out(gpp)` → Boolean: true when any US section of a GPP string (usnat, the state
//! sections, or an embedded US Privacy string) records a sale opt-out. NULL or malformed: false.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::common::{Args, str_at, udf_identity};
use crate::privacy::gpp;

#[derive(Debug)]
pub struct GppSaleOptedOut {
    signature: Signature,
}

impl GppSaleOptedOut {
    pub fn new() -> Self {
        GppSaleOptedOut {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for GppSaleOptedOut {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(GppSaleOptedOut);

impl ScalarUDFImpl for GppSaleOptedOut {
    fn name(&self) -> &str {
        "gpp_sale_opted_out"
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
            out.append_value(str_at(&v, i).is_some_and(gpp::sale_opted_out));
        }
        let arr: ArrayRef = Arc::new(out.finish());
        a.finish(arr)
    }
}
