//! Exports. (Being built.)

use std::sync::Arc;

use crate::engine::QueryResult;
use crate::error::{Error, Result};
use crate::segment::EvalCtx;
use crate::segment::ast::ExportSpec;
use crate::session::Shared;

pub async fn run_statement(
    _: &Arc<Shared>,
    _: &EvalCtx,
    _: &ExportSpec,
    _: &str,
) -> Result<QueryResult> {
    Err(Error::invalid("EXPORT: TODO"))
}
pub async fn create(
    _: &Arc<Shared>,
    _: &EvalCtx,
    _: &str,
    _: bool,
    _: &ExportSpec,
    _: &str,
) -> Result<QueryResult> {
    Err(Error::invalid("CREATE EXPORT: TODO"))
}
pub async fn drop(_: &Arc<Shared>, _: &str, _: bool) -> Result<QueryResult> {
    Err(Error::invalid("DROP EXPORT: TODO"))
}
pub async fn show(_: &Arc<Shared>, _: &EvalCtx) -> Result<QueryResult> {
    Err(Error::invalid("SHOW EXPORTS: TODO"))
}
