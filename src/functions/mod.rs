//! SQL functions, one file each, grouped by area. `register_all` is the one place they are added
//! to a session; a test guards against two functions sharing a name.

pub mod privacy;

use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;

use crate::privacy::Keyring;

/// Every scalar function segdb adds.
pub fn scalar_functions(keyring: Arc<Keyring>) -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(privacy::pseudonymize::Pseudonymize::new(keyring))]
}

/// Register every segdb function on `ctx`.
pub fn register_all(ctx: &SessionContext, keyring: Arc<Keyring>) {
    for f in scalar_functions(keyring) {
        ctx.register_udf(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let ring = Arc::new(Keyring::from_keys([("user".to_string(), [1u8; 32])]).unwrap());
        let mut names: Vec<String> = scalar_functions(ring).iter().map(|f| f.name().to_string()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "two functions share a name");
    }
}
