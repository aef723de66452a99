//! `segment_size('name' [, as_of])` → UInt64: how many users are in the segment (consent and
//! erasure applied).

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::{Prefetched, as_of_arg, literal_name};

#[derive(Debug)]
pub struct SegmentSize {
    signature: Signature,
    cache: Arc<Prefetched>,
}

impl SegmentSize {
    pub fn new(cache: Arc<Prefetched>) -> Self {
        SegmentSize {
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Stable,
            ),
            cache,
        }
    }
}

impl PartialEq for SegmentSize {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.cache, &o.cache)
    }
}
impl Eq for SegmentSize {}
impl std::hash::Hash for SegmentSize {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for SegmentSize {
    fn name(&self) -> &str {
        "segment_size"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = literal_name(self.name(), &args.args[0])?;
        let as_of = as_of_arg(self.name(), args.args.get(1))?;
        let bm = self.cache.get(self.name(), &name, as_of)?;
        Ok(ColumnarValue::Scalar(ScalarValue::UInt64(Some(bm.len()))))
    }
}
