//! Computed traits. (Being built.)

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::result::QueryResult;
use crate::segment::EvalCtx;
use crate::segment::Segments;
use crate::segment::ast::CreateTrait;

pub async fn create(_: &Arc<Segments>, _: &EvalCtx, _: &CreateTrait) -> Result<QueryResult> {
    Err(Error::invalid("CREATE TRAIT: TODO"))
}
pub async fn drop(_: &Arc<Segments>, _: &str, _: bool) -> Result<QueryResult> {
    Err(Error::invalid("DROP TRAIT: TODO"))
}
pub async fn show(_: &Arc<Segments>, _: &EvalCtx) -> Result<QueryResult> {
    Err(Error::invalid("SHOW TRAITS: TODO"))
}
