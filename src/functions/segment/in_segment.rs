//! `in_segment('name', user_id)` → Boolean: is this user (a stored pseudonym, or a `uid`
//! ordinal) a member? NULL user gives NULL; an unknown pseudonym is not a member.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{Prefetched, literal_name, membership};

#[derive(Debug)]
pub struct InSegment {
    signature: Signature,
    cache: Arc<Prefetched>,
}

impl InSegment {
    pub fn new(cache: Arc<Prefetched>) -> Self {
        InSegment {
            signature: Signature::any(2, Volatility::Stable),
            cache,
        }
    }
}

impl PartialEq for InSegment {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.cache, &o.cache)
    }
}
impl Eq for InSegment {}
impl std::hash::Hash for InSegment {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for InSegment {
    fn name(&self) -> &str {
        "in_segment"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = literal_name(self.name(), &args.args[0])?;
        let bm = self.cache.get(self.name(), &name, None)?;
        let scalar = matches!(args.args[1], ColumnarValue::Scalar(_));
        let rows = if scalar { 1 } else { args.number_rows };
        let users = args.args[1].to_array(rows)?;
        let out = membership(&self.cache, &users, &bm, None)?;
        let arr: ArrayRef = Arc::new(out);
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
        } else {
            Ok(ColumnarValue::Array(arr))
        }
    }
}
