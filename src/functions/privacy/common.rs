//! Shared plumbing for the privacy functions: reading string / integer arguments row by row
//! (scalars broadcast), and turning per-row results back into a scalar when every input was one.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};

/// The arguments of one call as arrays of a common length.
pub(crate) struct Args {
    pub(crate) arrays: Vec<ArrayRef>,
    pub(crate) rows: usize,
    pub(crate) all_scalar: bool,
}

impl Args {
    pub(crate) fn new(args: &ScalarFunctionArgs) -> Result<Args> {
        let rows = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        Ok(Args {
            arrays,
            rows: if all_scalar { 1 } else { rows },
            all_scalar,
        })
    }

    /// Argument `i` as text (NULL stays NULL).
    pub(crate) fn text(&self, i: usize) -> Result<ArrayRef> {
        Ok(cast(&self.arrays[i], &DataType::Utf8)?)
    }

    /// Argument `i` as Int64 (NULL stays NULL).
    pub(crate) fn int(&self, i: usize) -> Result<ArrayRef> {
        Ok(cast(&self.arrays[i], &DataType::Int64)?)
    }

    /// Wrap a result array: a scalar if every argument was a scalar.
    pub(crate) fn finish(&self, out: ArrayRef) -> Result<ColumnarValue> {
        if self.all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// Row `i` of a Utf8 array, `None` for NULL.
pub(crate) fn str_at(a: &ArrayRef, i: usize) -> Option<&str> {
    let s = a.as_string::<i32>();
    s.is_valid(i).then(|| s.value(i))
}

/// Row `i` of an Int64 array, `None` for NULL.
pub(crate) fn int_at(a: &ArrayRef, i: usize) -> Option<i64> {
    let s = a.as_primitive::<arrow::datatypes::Int64Type>();
    s.is_valid(i).then(|| s.value(i))
}

/// Implements `PartialEq`, `Eq` and `Hash` for a function struct by its SQL name (they carry no
/// other state that matters for equality).
macro_rules! udf_identity {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, _other: &Self) -> bool {
                true
            }
        }
        impl Eq for $t {}
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                datafusion::logical_expr::ScalarUDFImpl::name(self).hash(state);
            }
        }
    };
}
pub(crate) use udf_identity;
