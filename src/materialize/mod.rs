//! Materialised segments: refreshes, schedules, exports. (Being built.)

pub mod export;

use crate::engine::QueryResult;
use crate::error::{Error, Result};
use crate::segment::EvalCtx;
use crate::session::Shared;

pub async fn refresh_statement(
    _shared: &std::sync::Arc<Shared>,
    _ctx: &EvalCtx,
    _name: &str,
    _as_of: Option<i64>,
) -> Result<QueryResult> {
    Err(Error::invalid("REFRESH SEGMENT: TODO"))
}
