//! Reading bitmap arguments: Binary, LargeBinary and BinaryView (what Parquet hands back) all
//! arrive as Binary here.

use arrow::array::{ArrayRef, AsArray, BinaryArray};
use arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};

/// Any binary-like array as a `BinaryArray`.
pub fn as_binary(a: &ArrayRef) -> Result<BinaryArray> {
    match a.data_type() {
        DataType::Binary => Ok(a.as_binary::<i32>().clone()),
        DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_)
        | DataType::Null => Ok(arrow::compute::cast(a, &DataType::Binary)?
            .as_binary::<i32>()
            .clone()),
        other => exec_err!("expected a bitmap (Binary), got {other}"),
    }
}

/// The last scalar bitmap a function decoded, kept while the same bytes keep coming: a literal
/// bitmap argument (the suppression list, a segment bitmap) arrives once per batch, and is then
/// decoded once per query instead of once per row. The bytes are compared whole, so a different
/// bitmap is never mistaken for the cached one.
#[derive(Debug, Default)]
pub struct DecodeCache(std::sync::Mutex<Option<(Vec<u8>, std::sync::Arc<roaring::RoaringBitmap>)>>);

impl DecodeCache {
    pub fn decode(&self, bytes: &[u8]) -> Option<std::sync::Arc<roaring::RoaringBitmap>> {
        let mut c = self.0.lock().expect("not poisoned");
        if let Some((b, bm)) = c.as_ref()
            && b.as_slice() == bytes
        {
            return Some(bm.clone());
        }
        let bm = std::sync::Arc::new(crate::bitmap::codec::from_bytes(bytes)?);
        *c = Some((bytes.to_vec(), bm.clone()));
        Some(bm)
    }
}

/// A bitmap argument: one decoded bitmap (or NULL) for a scalar, or a column decoded per row.
pub enum BitmapArg {
    Scalar(Option<std::sync::Arc<roaring::RoaringBitmap>>),
    Column(BinaryArray),
}

impl BitmapArg {
    /// Read argument `v` of function `name` (a scalar through `cache`).
    pub fn of(
        v: &datafusion::logical_expr::ColumnarValue,
        cache: &DecodeCache,
        name: &str,
    ) -> Result<BitmapArg> {
        use datafusion::logical_expr::ColumnarValue;
        match v {
            ColumnarValue::Scalar(s) => {
                if s.is_null() {
                    return Ok(BitmapArg::Scalar(None));
                }
                let a = as_binary(&s.to_array()?)?;
                match cache.decode(a.value(0)) {
                    Some(bm) => Ok(BitmapArg::Scalar(Some(bm))),
                    None => exec_err!("{name}: the argument is not a portable Roaring bitmap"),
                }
            }
            ColumnarValue::Array(a) => Ok(BitmapArg::Column(as_binary(a)?)),
        }
    }

    /// The bitmap of row `i` (`None` for NULL).
    pub fn get(
        &self,
        i: usize,
        name: &str,
    ) -> Result<Option<std::sync::Arc<roaring::RoaringBitmap>>> {
        use arrow::array::Array;
        match self {
            BitmapArg::Scalar(b) => Ok(b.clone()),
            BitmapArg::Column(c) => {
                if c.is_null(i) {
                    return Ok(None);
                }
                match crate::bitmap::codec::from_bytes(c.value(i)) {
                    Some(bm) => Ok(Some(std::sync::Arc::new(bm))),
                    None => exec_err!("{name}: row {i} is not a portable Roaring bitmap"),
                }
            }
        }
    }
}
