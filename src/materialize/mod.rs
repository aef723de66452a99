//! Materialised segments: refreshes, schedules, exports. (Being built.)

pub mod export;

use crate::error::{Error, Result};
use crate::result::QueryResult;
use crate::segment::EvalCtx;
use crate::segment::Segments;

pub async fn refresh_statement(
    _segments: &std::sync::Arc<Segments>,
    _ctx: &EvalCtx,
    _name: &str,
    _as_of: Option<i64>,
) -> Result<QueryResult> {
    Err(Error::invalid("REFRESH SEGMENT: TODO"))
}
