//! `hash_email(text)` → Utf8: lowercase hex SHA-256 of the trimmed, lowercased address, for
//! ad-platform matching (export only). NULL for NULL or for text that is not an address.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::common::{Args, str_at, udf_identity};
use crate::privacy::hashing::{normalize_email, sha256_hex};

#[derive(Debug)]
pub struct HashEmail {
    signature: Signature,
}

impl HashEmail {
    pub fn new() -> Self {
        HashEmail {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl Default for HashEmail {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(HashEmail);

impl ScalarUDFImpl for HashEmail {
    fn name(&self) -> &str {
        "hash_email"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let v = a.text(0)?;
        let mut out = StringBuilder::new();
        for i in 0..a.rows {
            match str_at(&v, i).and_then(normalize_email) {
                Some(e) => out.append_value(sha256_hex(e.as_bytes())),
                None => out.append_null(),
            }
        }
        let arr: ArrayRef = Arc::new(out.finish());
        a.finish(arr)
    }
}
