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
