//! The TCF decision functions share one shape: `(tc_string, n) → Boolean`, decoding each distinct
//! string once per batch and failing closed (NULL, malformed or out-of-range input gives false,
//! never an error, and nothing echoes the input). Each SQL function is a [`Decision`] in its own
//! file; this is the UDF around it.

use std::marker::PhantomData;

use arrow::array::{ArrayRef, BooleanBuilder};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::common::{Args, int_at, str_at};
use crate::privacy::tcf::{TcString, decode};

/// One TCF decision: its SQL name and the rule.
pub trait Decision: Send + Sync + 'static {
    /// The SQL name.
    const NAME: &'static str;
    /// Does `tc` grant `n`?
    fn decide(tc: &TcString, n: i64) -> bool;
}

/// The UDF for a [`Decision`].
pub struct TcfDecision<D> {
    signature: Signature,
    _d: PhantomData<D>,
}

impl<D: Decision> TcfDecision<D> {
    pub fn new() -> Self {
        TcfDecision {
            signature: Signature::any(2, Volatility::Immutable),
            _d: PhantomData,
        }
    }
}

impl<D: Decision> Default for TcfDecision<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D> std::fmt::Debug for TcfDecision<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TcfDecision")
    }
}
impl<D: Decision> PartialEq for TcfDecision<D> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<D: Decision> Eq for TcfDecision<D> {}
impl<D: Decision> std::hash::Hash for TcfDecision<D> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        D::NAME.hash(state);
    }
}

impl<D: Decision> ScalarUDFImpl for TcfDecision<D> {
    fn name(&self) -> &str {
        D::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let tc = a.text(0)?;
        let n = a.int(1)?;
        let mut out = BooleanBuilder::with_capacity(a.rows);
        let mut last: Option<(String, Option<TcString>)> = None;
        for i in 0..a.rows {
            let (Some(s), Some(n)) = (str_at(&tc, i), int_at(&n, i)) else {
                out.append_value(false);
                continue;
            };
            if last.as_ref().is_none_or(|(k, _)| k != s) {
                last = Some((s.to_string(), decode(s).ok()));
            }
            let decided = last
                .as_ref()
                .and_then(|(_, d)| d.as_ref())
                .is_some_and(|d| D::decide(d, n));
            out.append_value(decided);
        }
        let arr: ArrayRef = std::sync::Arc::new(out.finish());
        a.finish(arr)
    }
}
