//! `tcf_error(tc_string)` → Utf8: NULL when the string decodes and is valid for use under TCF
//! v2.2 (policy version 4 or later), else the reason. The reason never quotes the input. NULL in
//! gives 'missing TC string'.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::common::{Args, str_at, udf_identity};
use crate::privacy::tcf::decode;

/// Oldest TCF policy version accepted as valid today (TCF v2.2).
pub const MIN_POLICY_VERSION: u8 = 4;

/// Why a TC string cannot be relied on, or `None`.
pub fn reason(s: &str) -> Option<String> {
    match decode(s) {
        Err(e) => Some(e.to_string()),
        Ok(tc) if tc.core.tcf_policy_version < MIN_POLICY_VERSION => Some(format!(
            "TCF policy version {} is outdated: TCF v2.2 requires policy version {MIN_POLICY_VERSION} or later",
            tc.core.tcf_policy_version
        )),
        Ok(_) => None,
    }
}

#[derive(Debug)]
pub struct TcfError {
    signature: Signature,
}

impl TcfError {
    pub fn new() -> Self {
        TcfError {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for TcfError {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(TcfError);

impl ScalarUDFImpl for TcfError {
    fn name(&self) -> &str {
        "tcf_error"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let tc = a.text(0)?;
        let mut out = StringBuilder::new();
        for i in 0..a.rows {
            match str_at(&tc, i) {
                None => out.append_value("missing TC string"),
                Some(s) => match reason(s) {
                    Some(r) => out.append_value(r),
                    None => out.append_null(),
                },
            }
        }
        let arr: ArrayRef = Arc::new(out.finish());
        a.finish(arr)
    }
}
