//! `hash_phone(text [, default_country])` → Utf8: lowercase hex SHA-256 of the number's E.164
//! digits (country code + number, no `+`). National numbers need `default_country` (ISO
//! alpha-2). NULL when the number cannot be normalised.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::common::{Args, str_at, udf_identity};
use crate::privacy::hashing::{normalize_phone, sha256_hex};

#[derive(Debug)]
pub struct HashPhone {
    signature: Signature,
}

impl HashPhone {
    pub fn new() -> Self {
        HashPhone {
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
        }
    }
}

impl Default for HashPhone {
    fn default() -> Self {
        Self::new()
    }
}

udf_identity!(HashPhone);

impl ScalarUDFImpl for HashPhone {
    fn name(&self) -> &str {
        "hash_phone"
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
        let country = if a.arrays.len() > 1 {
            Some(a.text(1)?)
        } else {
            None
        };
        let mut out = StringBuilder::new();
        for i in 0..a.rows {
            let cc = country.as_ref().and_then(|c| str_at(c, i));
            match str_at(&v, i).and_then(|p| normalize_phone(p, cc)) {
                Some(e) => out.append_value(sha256_hex(e.as_bytes())),
                None => out.append_null(),
            }
        }
        let arr: ArrayRef = Arc::new(out.finish());
        a.finish(arr)
    }
}
