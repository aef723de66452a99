//! `pseudonymize(value [, domain])` → Utf8: the pseudonym ingest stores for a raw id (domain
//! `user`), or a partner-facing id over a stored pseudonym (`pseudonymize(user_id, 'partner_x')`).
//! The key comes from the keyring, never from SQL; NULL in gives NULL out.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use crate::privacy::Keyring;
use crate::privacy::keyring::USER_DOMAIN;
use crate::privacy::pseudonym::Pseudonymizer;

/// The `pseudonymize` scalar function.
#[derive(Debug)]
pub struct Pseudonymize {
    signature: Signature,
    keyring: Arc<Keyring>,
}

impl Pseudonymize {
    pub fn new(keyring: Arc<Keyring>) -> Self {
        Pseudonymize {
            signature: Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::String(2)],
                Volatility::Immutable,
            ),
            keyring,
        }
    }
}

impl PartialEq for Pseudonymize {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.keyring, &other.keyring)
    }
}
impl Eq for Pseudonymize {}
impl Hash for Pseudonymize {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

fn to_array(v: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    let a = v.to_array(rows)?;
    Ok(cast(&a, &DataType::Utf8)?)
}

impl ScalarUDFImpl for Pseudonymize {
    fn name(&self) -> &str {
        "pseudonymize"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn documentation(&self) -> Option<&Documentation> {
        None
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let scalar_in = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let values = to_array(&args.args[0], rows)?;
        let values = values.as_string::<i32>();
        let domains = match args.args.get(1) {
            Some(d) => Some(to_array(d, rows)?),
            None => None,
        };
        let mut cache: HashMap<String, Pseudonymizer> = HashMap::new();
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 25);
        let mut buf = String::with_capacity(32);
        for i in 0..values.len() {
            if values.is_null(i) {
                out.append_null();
                continue;
            }
            let domain = match &domains {
                Some(d) => {
                    let d = d.as_string::<i32>();
                    if d.is_null(i) {
                        out.append_null();
                        continue;
                    }
                    d.value(i)
                }
                None => USER_DOMAIN,
            };
            if domain.is_empty() {
                return exec_err!("pseudonymize: the domain must not be empty");
            }
            let p = cache
                .entry(domain.to_string())
                .or_insert_with(|| Pseudonymizer::new(&self.keyring, domain));
            buf.clear();
            p.pseudonymize_into(values.value(i), &mut buf);
            out.append_value(&buf);
        }
        let arr: ArrayRef = Arc::new(out.finish());
        if scalar_in {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
        } else {
            Ok(ColumnarValue::Array(arr))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn run(sql: &str) -> Vec<Option<String>> {
        let ring = Arc::new(Keyring::from_keys([("user".to_string(), [7u8; 32])]).unwrap());
        let ctx = SessionContext::new();
        ctx.register_udf(datafusion::logical_expr::ScalarUDF::from(
            Pseudonymize::new(ring),
        ));
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = Vec::new();
        for b in batches {
            let c = cast(b.column(0), &DataType::Utf8).unwrap();
            let c = c.as_string::<i32>();
            out.extend((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())));
        }
        out
    }

    #[tokio::test]
    async fn scalars_arrays_nulls_domains() {
        // Expected value from the DESIGN.md formula, computed independently (see pseudonym.rs).
        assert_eq!(
            run("SELECT pseudonymize('alice@example.com')").await,
            vec![Some("p1_6jhT6dieD04NGp3JJssJBQ".into())]
        );
        assert_eq!(
            run("SELECT pseudonymize('alice@example.com', 'user')").await,
            vec![Some("p1_6jhT6dieD04NGp3JJssJBQ".into())]
        );
        assert_eq!(run("SELECT pseudonymize(NULL)").await, vec![None]);
        let col =
            run("SELECT pseudonymize(v) FROM (VALUES ('alice@example.com'), (NULL), ('b')) t(v)")
                .await;
        assert_eq!(col[0].as_deref(), Some("p1_6jhT6dieD04NGp3JJssJBQ"));
        assert_eq!(col[1], None);
        assert!(col[2].as_deref().unwrap().starts_with("p1_"));
        let partner = run("SELECT pseudonymize('alice@example.com', 'partner_x')").await;
        assert_ne!(partner[0].as_deref(), Some("p1_6jhT6dieD04NGp3JJssJBQ"));
    }
}
