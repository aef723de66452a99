//! `has_consent(user_id, 'purpose' [, at])` → Boolean: does this user (a stored pseudonym or a
//! `uid`) hold consent for the purpose at `at` (default: `segdb.as_of`, else now)? Same rules as
//! `FOR PURPOSE`: `'tcf:N'`, `'sale'`, or an explicit purpose; no record means false. The purpose
//! (and `at`) must be literals: consent is evaluated before the statement is planned.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::{Prefetched, as_of_arg, literal_name, membership};

/// Key under which a purpose's holders are prefetched (never a valid segment name).
pub fn cache_key(purpose: &str) -> String {
    format!("\u{0}consent:{purpose}")
}

#[derive(Debug)]
pub struct HasConsent {
    signature: Signature,
    cache: Arc<Prefetched>,
}

impl HasConsent {
    pub fn new(cache: Arc<Prefetched>) -> Self {
        HasConsent {
            signature: Signature::one_of(
                vec![TypeSignature::Any(2), TypeSignature::Any(3)],
                Volatility::Stable,
            ),
            cache,
        }
    }
}

impl PartialEq for HasConsent {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.cache, &o.cache)
    }
}
impl Eq for HasConsent {}
impl std::hash::Hash for HasConsent {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for HasConsent {
    fn name(&self) -> &str {
        "has_consent"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let purpose = literal_name(self.name(), &args.args[1])?;
        let at = as_of_arg(self.name(), args.args.get(2))?;
        let holders = self.cache.get(self.name(), &cache_key(&purpose), at)?;
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let rows = if scalar { 1 } else { args.number_rows };
        let users = args.args[0].to_array(rows)?;
        let out = membership(&self.cache, &users, &holders, Some(false))?;
        let arr: ArrayRef = Arc::new(out);
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
        } else {
            Ok(ColumnarValue::Array(arr))
        }
    }
}
