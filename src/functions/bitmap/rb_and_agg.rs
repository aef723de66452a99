//! `rb_and_agg(x)` → Binary (portable Roaring): the intersection of each group's (non-NULL) bitmaps. A group without input
//! gives the empty bitmap.

use arrow::array::ArrayRef;
use datafusion::common::Result;
use roaring::RoaringBitmap;

#[allow(unused_imports)]
use super::agg::{AggKind, RbAgg, merge_and, merge_or, update_bitmaps, update_build};

/// The rule of `rb_and_agg`.
#[derive(Debug)]
pub struct AndAgg;

impl AggKind for AndAgg {
    const NAME: &'static str = "rb_and_agg";
    fn update(
        groups: &mut [Option<RoaringBitmap>],
        values: &ArrayRef,
        group_of: impl Fn(usize) -> Option<usize>,
    ) -> Result<()> {
        update_bitmaps(Self::NAME, groups, values, group_of, merge_and)
    }
    fn merge(into: &mut Option<RoaringBitmap>, other: RoaringBitmap) {
        merge_and(into, other)
    }
}

/// The UDAF.
pub fn udaf() -> RbAgg<AndAgg> {
    RbAgg::new()
}
