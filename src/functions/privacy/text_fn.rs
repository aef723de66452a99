//! Two shapes shared by one-argument text functions, so each SQL function file holds only its
//! rule: [`TextDecision`] (`text → Boolean`, failing closed: NULL or malformed gives false) and
//! [`TextMap`] (`text → Utf8`, NULL when the rule has no answer).

use std::marker::PhantomData;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::common::{Args, str_at};

/// A `text → Boolean` rule.
pub trait DecisionRule: Send + Sync + 'static {
    const NAME: &'static str;
    fn decide(s: &str) -> bool;
}

/// A `text → text` rule; `on_null` is the answer for a NULL input.
pub trait MapRule: Send + Sync + 'static {
    const NAME: &'static str;
    fn map(s: &str) -> Option<String>;
    fn on_null() -> Option<String> {
        None
    }
}

macro_rules! shape {
    ($t:ident, $bound:ident) => {
        /// The UDF around a rule.
        pub struct $t<R> {
            signature: Signature,
            _r: PhantomData<R>,
        }
        impl<R: $bound> $t<R> {
            pub fn new() -> Self {
                $t {
                    signature: Signature::any(1, Volatility::Immutable),
                    _r: PhantomData,
                }
            }
        }
        impl<R: $bound> Default for $t<R> {
            fn default() -> Self {
                Self::new()
            }
        }
        impl<R> std::fmt::Debug for $t<R> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($t))
            }
        }
        impl<R: $bound> PartialEq for $t<R> {
            fn eq(&self, _: &Self) -> bool {
                true
            }
        }
        impl<R: $bound> Eq for $t<R> {}
        impl<R: $bound> std::hash::Hash for $t<R> {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                R::NAME.hash(state);
            }
        }
    };
}
shape!(TextDecision, DecisionRule);
shape!(TextMap, MapRule);

impl<R: DecisionRule> ScalarUDFImpl for TextDecision<R> {
    fn name(&self) -> &str {
        R::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let v = a.text(0)?;
        let mut out = BooleanBuilder::with_capacity(a.rows);
        for i in 0..a.rows {
            out.append_value(str_at(&v, i).is_some_and(R::decide));
        }
        let arr: ArrayRef = Arc::new(out.finish());
        a.finish(arr)
    }
}

impl<R: MapRule> ScalarUDFImpl for TextMap<R> {
    fn name(&self) -> &str {
        R::NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let a = Args::new(&args)?;
        let v = a.text(0)?;
        let mut out = StringBuilder::with_capacity(a.rows, a.rows * 64);
        for i in 0..a.rows {
            out.append_option(match str_at(&v, i) {
                Some(s) => R::map(s),
                None => R::on_null(),
            });
        }
        let arr: ArrayRef = Arc::new(out.finish());
        a.finish(arr)
    }
}
