//! `segment_holdout('name' [, as_of])` → table (`user_id`): the holdout group of a materialised
//! segment with `HOLDOUT n PERCENT` — members who are never activated, so that their conversion
//! can be compared with the target group's (`segment_lift`). Empty for other segments.

use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;

use crate::segment::Segments;

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(super::segment_members::SegmentMembers::holdout(segments))
}
