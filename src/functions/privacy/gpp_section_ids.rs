//! `gpp_section_ids(gpp)` → List<Int32>: the section ids a GPP string's header lists
//! (2 = TCF EU v2, 6 = US Privacy, 7 = usnat, 8–12 US states, …). NULL for NULL or malformed.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Builder, ListBuilder};
use arrow::datatypes::{DataType, Field};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::common::{Args, str_at, udf_identity};
use crate::privacy::gpp;

#[derive(Debug)]
pub struct GppSectionIds {
    signature: Signature,
}

impl GppSectionIds {
    pub fn new() -> Self {
        GppSectionIds {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for GppSectionIds {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(GppSectionIds);

impl ScalarUDFImpl for GppSectionIds {
    fn name(&self) -> &str {
        "gpp_section_ids"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Int32,
            true,
        ))))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let v = a.text(0)?;
        let mut out = ListBuilder::new(Int32Builder::new());
        for i in 0..a.rows {
            match str_at(&v, i).and_then(gpp::section_ids) {
                Some(ids) => {
                    for id in ids {
                        out.values().append_value(i32::from(id));
                    }
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        let arr: ArrayRef = Arc::new(out.finish());
        a.finish(arr)
    }
}
