//! Personal columns at the door. (Being built.)

use crate::error::{Error, Result};
use crate::storage::Database;
use crate::storage::settings::PiiRule;

pub async fn declare(_: &Database, _: &str, _: &[(String, PiiRule)]) -> Result<()> {
    Err(Error::invalid("SET PII: TODO"))
}
