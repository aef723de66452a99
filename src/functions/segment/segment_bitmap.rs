//! `segment_bitmap('name' [, as_of])` → Binary: the members' ordinals as a portable Roaring bitmap
//! (CRoaring, Java and Go read it; the `rb_*` functions combine it).

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::{Prefetched, as_of_arg, literal_name};
use crate::index::codec::to_bytes;

#[derive(Debug)]
pub struct SegmentBitmap {
    signature: Signature,
    cache: Arc<Prefetched>,
}

impl SegmentBitmap {
    pub fn new(cache: Arc<Prefetched>) -> Self {
        SegmentBitmap {
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Stable,
            ),
            cache,
        }
    }
}

impl PartialEq for SegmentBitmap {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.cache, &o.cache)
    }
}
impl Eq for SegmentBitmap {}
impl std::hash::Hash for SegmentBitmap {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

impl ScalarUDFImpl for SegmentBitmap {
    fn name(&self) -> &str {
        "segment_bitmap"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = literal_name(self.name(), &args.args[0])?;
        let as_of = as_of_arg(self.name(), args.args.get(1))?;
        let bm = self.cache.get(self.name(), &name, as_of)?;
        Ok(ColumnarValue::Scalar(ScalarValue::Binary(Some(to_bytes(
            &bm,
        )))))
    }
}
