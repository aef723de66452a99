//! Helpers for the SQL-level function tests: a session with every segdb function, and the first
//! column of a query as strings.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;

use crate::privacy::Keyring;

/// A session with every segdb function registered (test key: 32 bytes of 7).
pub(crate) fn ctx() -> SessionContext {
    let ctx = SessionContext::new();
    let ring = Arc::new(Keyring::from_keys([("user".to_string(), [7u8; 32])]).unwrap());
    crate::functions::register_all(&ctx, ring);
    ctx
}

/// Run a query and return its first column as strings (NULL as "NULL").
pub(crate) async fn col(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| {
            if c.is_null(i) {
                "NULL".to_string()
            } else {
                c.value(i).to_string()
            }
        }));
    }
    out
}
