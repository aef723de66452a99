//! `rb_build_agg(x)` → Binary (portable Roaring): the bitmap of the (u32) values of each group; NULLs are skipped, values outside 0..=4294967295 are an error. A group without input
//! gives the empty bitmap.

use arrow::array::ArrayRef;
use datafusion::common::Result;
use roaring::RoaringBitmap;

#[allow(unused_imports)]
use super::agg::{AggKind, RbAgg, merge_and, merge_or, update_bitmaps, update_build};

/// The rule of `rb_build_agg`.
#[derive(Debug)]
pub struct BuildAgg;

impl AggKind for BuildAgg {
    const NAME: &'static str = "rb_build_agg";
    fn update(
        groups: &mut [Option<RoaringBitmap>],
        values: &ArrayRef,
        group_of: impl Fn(usize) -> Option<usize>,
    ) -> Result<()> {
        update_build(groups, values, group_of)
    }
    fn merge(into: &mut Option<RoaringBitmap>, other: RoaringBitmap) {
        merge_or(into, other)
    }
}

/// The UDAF.
pub fn udaf() -> RbAgg<BuildAgg> {
    RbAgg::new()
}
