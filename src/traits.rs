//! Computed traits. (Being built.)

use std::sync::Arc;

use crate::engine::QueryResult;
use crate::error::{Error, Result};
use crate::segment::EvalCtx;
use crate::segment::ast::CreateTrait;
use crate::session::Shared;

pub async fn create(_: &Arc<Shared>, _: &EvalCtx, _: &CreateTrait) -> Result<QueryResult> {
    Err(Error::invalid("CREATE TRAIT: TODO"))
}
pub async fn drop(_: &Arc<Shared>, _: &str, _: bool) -> Result<QueryResult> {
    Err(Error::invalid("DROP TRAIT: TODO"))
}
pub async fn show(_: &Arc<Shared>, _: &EvalCtx) -> Result<QueryResult> {
    Err(Error::invalid("SHOW TRAITS: TODO"))
}
