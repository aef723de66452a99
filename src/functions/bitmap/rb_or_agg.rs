//! `rb_or_agg(x)` → Binary (portable Roaring): the union of each group's bitmaps. A group without input
//! gives the empty bitmap.

use arrow::array::ArrayRef;
use datafusion::common::Result;
use roaring::RoaringBitmap;

#[allow(unused_imports)]
use super::agg::{AggKind, RbAgg, merge_and, merge_or, update_bitmaps, update_build};

/// The rule of `rb_or_agg`.
#[derive(Debug)]
pub struct OrAgg;

impl AggKind for OrAgg {
    const NAME: &'static str = "rb_or_agg";
    fn update(
        groups: &mut [Option<RoaringBitmap>],
        values: &ArrayRef,
        group_of: impl Fn(usize) -> Option<usize>,
    ) -> Result<()> {
        update_bitmaps(Self::NAME, groups, values, group_of, merge_or)
    }
    fn merge(into: &mut Option<RoaringBitmap>, other: RoaringBitmap) {
        merge_or(into, other)
    }
}

/// The UDAF.
pub fn udaf() -> RbAgg<OrAgg> {
    RbAgg::new()
}
