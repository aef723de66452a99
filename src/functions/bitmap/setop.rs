//! The pairwise set operations `rb_and / rb_or / rb_andnot / rb_xor(a, b)` → Binary, and their
//! fused cardinalities (`rb_and_cardinality(a, b)` …) that count the result without building it.
//! `rb_cardinality(rb_and(a, b))` is rewritten to the fused form by `rb_cardinality`'s simplify.
//! NULL in either argument gives NULL.

use std::marker::PhantomData;
use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryBuilder, UInt64Builder};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use roaring::RoaringBitmap;

use super::binary::{BitmapArg, DecodeCache};
use crate::bitmap::codec::to_bytes;

/// One set operation.
pub trait SetOp: Send + Sync + 'static {
    const NAME: &'static str;
    const CARDINALITY_NAME: &'static str;
    fn apply(a: &RoaringBitmap, b: &RoaringBitmap) -> RoaringBitmap;
    fn cardinality(a: &RoaringBitmap, b: &RoaringBitmap) -> u64;
}

/// Evaluate `f` over pairs of bitmaps, row by row; a scalar argument is decoded once (through
/// `caches`), and two scalars give one row.
fn pairs<T>(
    args: &ScalarFunctionArgs,
    name: &str,
    caches: &[DecodeCache; 2],
    mut f: impl FnMut(Option<(&RoaringBitmap, &RoaringBitmap)>) -> T,
) -> Result<(Vec<T>, bool)> {
    let all_scalar = args
        .args
        .iter()
        .all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let rows = if all_scalar { 1 } else { args.number_rows };
    let a = BitmapArg::of(&args.args[0], &caches[0], name)?;
    let b = BitmapArg::of(&args.args[1], &caches[1], name)?;
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        match (a.get(i, name)?, b.get(i, name)?) {
            (Some(x), Some(y)) => out.push(f(Some((&x, &y)))),
            _ => out.push(f(None)),
        }
    }
    Ok((out, all_scalar))
}

fn finish(arr: ArrayRef, scalar: bool) -> Result<ColumnarValue> {
    if scalar {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
    } else {
        Ok(ColumnarValue::Array(arr))
    }
}

/// `rb_<op>(a, b)`.
pub struct RbSetOp<O> {
    signature: Signature,
    caches: [DecodeCache; 2],
    _o: PhantomData<O>,
}

/// `rb_<op>_cardinality(a, b)`.
pub struct RbSetOpCardinality<O> {
    signature: Signature,
    caches: [DecodeCache; 2],
    _o: PhantomData<O>,
}

macro_rules! boilerplate {
    ($t:ident, $name:ident) => {
        impl<O: SetOp> $t<O> {
            pub fn new() -> Self {
                $t {
                    signature: Signature::any(2, Volatility::Immutable),
                    caches: Default::default(),
                    _o: PhantomData,
                }
            }
        }
        impl<O: SetOp> Default for $t<O> {
            fn default() -> Self {
                Self::new()
            }
        }
        impl<O> std::fmt::Debug for $t<O> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($t))
            }
        }
        impl<O: SetOp> PartialEq for $t<O> {
            fn eq(&self, _: &Self) -> bool {
                true
            }
        }
        impl<O: SetOp> Eq for $t<O> {}
        impl<O: SetOp> std::hash::Hash for $t<O> {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                O::$name.hash(state);
            }
        }
    };
}
boilerplate!(RbSetOp, NAME);
boilerplate!(RbSetOpCardinality, CARDINALITY_NAME);

impl<O: SetOp> ScalarUDFImpl for RbSetOp<O> {
    fn name(&self) -> &str {
        O::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (vals, scalar) = pairs(&args, O::NAME, &self.caches, |p| {
            p.map(|(a, b)| to_bytes(&O::apply(a, b)))
        })?;
        let mut b = BinaryBuilder::new();
        for v in vals {
            match v {
                Some(x) => b.append_value(x),
                None => b.append_null(),
            }
        }
        finish(Arc::new(b.finish()), scalar)
    }
}

impl<O: SetOp> ScalarUDFImpl for RbSetOpCardinality<O> {
    fn name(&self) -> &str {
        O::CARDINALITY_NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (vals, scalar) = pairs(&args, O::CARDINALITY_NAME, &self.caches, |p| {
            p.map(|(a, b)| O::cardinality(a, b))
        })?;
        let mut b = UInt64Builder::new();
        for v in vals {
            b.append_option(v);
        }
        finish(Arc::new(b.finish()), scalar)
    }
}
