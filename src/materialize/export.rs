//! Exports. (Being built.)

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::result::QueryResult;
use crate::segment::EvalCtx;
use crate::segment::Segments;
use crate::segment::ast::ExportSpec;

pub async fn run_statement(
    _: &Arc<Segments>,
    _: &EvalCtx,
    _: &ExportSpec,
    _: &str,
) -> Result<QueryResult> {
    Err(Error::invalid("EXPORT: TODO"))
}
pub async fn create(
    _: &Arc<Segments>,
    _: &EvalCtx,
    _: &str,
    _: bool,
    _: &ExportSpec,
    _: &str,
) -> Result<QueryResult> {
    Err(Error::invalid("CREATE EXPORT: TODO"))
}
pub async fn drop(_: &Arc<Segments>, _: &str, _: bool) -> Result<QueryResult> {
    Err(Error::invalid("DROP EXPORT: TODO"))
}
pub async fn show(_: &Arc<Segments>, _: &EvalCtx) -> Result<QueryResult> {
    Err(Error::invalid("SHOW EXPORTS: TODO"))
}
