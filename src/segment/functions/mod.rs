//! Segment functions usable in any SQL.
//!
//! Scalars (`segment_size`, `segment_bitmap`, `in_segment`, `has_consent`, `identity_of`):
//! evaluating a segment is asynchronous work that a scalar function cannot do mid-row, so the
//! functions registered here only declare their signature; segdb's query planner
//! (`session::planner`) evaluates every call before the plan runs — with the statement's
//! snapshot, at the statement's `as_of` — and replaces it with its value (a literal, or a probe
//! over the members). That also happens for views and prepared statements, at every run.
//!
//! Table functions (`segment_members`, `segment_overlap`, `segment_history`, …) return tables
//! whose scan evaluates, again with the scanning statement's snapshot.

pub mod export_history;
pub mod has_consent;
pub mod identity_of;
pub mod in_segment;
pub mod interests;
pub mod lazy;
pub mod lookalike;
pub mod probe;
pub mod segment_bitmap;
pub mod segment_changes;
pub mod segment_history;
pub mod segment_holdout;
pub mod segment_members;
pub mod segment_overlap;
pub mod segment_recommendations;
pub mod segment_size;

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::catalog::TableFunctionImpl;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use crate::segment::Segments;

/// The scalar functions the planner evaluates (their names).
pub const PLANNED: [&str; 7] = [
    "segment_size",
    "segment_size_of",
    "segment_bitmap",
    "in_segment",
    "has_consent",
    "identity_of",
    "lookalike_score",
];

/// A scalar function evaluated by segdb's planner: it carries the signature, return type and
/// readable output name; running it unplanned is an error.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Planned {
    name: &'static str,
    signature: Signature,
    ret: DataType,
}

impl Planned {
    pub(crate) fn udf(name: &'static str, signature: Signature, ret: DataType) -> ScalarUDF {
        ScalarUDF::from(Planned {
            name,
            signature,
            ret,
        })
    }
}

/// How an argument reads in an output column name: literals as SQL (`'x'`), everything else as
/// DataFusion names it. `segment_size('x')` instead of `segment_size(Utf8("x"))`.
pub fn arg_text(e: &Expr) -> Result<String> {
    Ok(match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)) => format!("'{}'", s.replace('\'', "''")),
            ScalarValue::Null => "NULL".into(),
            other if other.is_null() => "NULL".into(),
            other => other.to_string(),
        },
        Expr::Cast(c) => arg_text(&c.expr)?,
        other => other.schema_name().to_string(),
    })
}

/// `name(arg, …)` with [`arg_text`] arguments.
pub fn call_name(name: &str, args: &[Expr]) -> Result<String> {
    let a = args.iter().map(arg_text).collect::<Result<Vec<_>>>()?;
    Ok(format!("{name}({})", a.join(", ")))
}

impl ScalarUDFImpl for Planned {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.ret.clone())
    }
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        call_name(self.name, args)
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{} is evaluated by segdb's planner before a query runs; it cannot run in a plan built elsewhere",
            self.name
        )
    }
}

/// Every planned scalar.
pub fn scalars() -> Vec<ScalarUDF> {
    vec![
        segment_size::udf(),
        segment_size::size_of_udf(),
        segment_bitmap::udf(),
        in_segment::udf(),
        has_consent::udf(),
        identity_of::udf(),
        Planned::udf(
            "lookalike_score",
            Signature::any(2, datafusion::logical_expr::Volatility::Volatile),
            DataType::Float64,
        ),
    ]
}

/// Every segment table function, over the engine's segment service.
pub fn table_functions(
    segments: &Arc<Segments>,
) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    vec![
        ("segment_members", segment_members::udtf(segments)),
        ("segment_holdout", segment_holdout::udtf(segments)),
        ("segment_overlap", segment_overlap::udtf(segments)),
        (
            "segment_recommendations",
            segment_recommendations::udtf(segments),
        ),
        ("segment_history", segment_history::udtf(segments)),
        ("segment_changes", segment_changes::udtf(segments)),
        ("export_history", export_history::udtf(segments)),
        ("segment_lift", crate::segment::lift::udtf(segments)),
        ("interests", interests::udtf(segments)),
        ("lookalike_report", lookalike::report_udtf(segments)),
        ("lookalike_features", lookalike::features_udtf(segments)),
    ]
}

/// A literal argument, looking through casts (`TIMESTAMP '…'`).
pub(crate) fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => {
            let inner = literal(&c.expr)?;
            inner
                .cast_to(&c.field.data_type().clone())
                .ok()
                .or(Some(inner))
        }
        Expr::TryCast(c) => literal(&c.expr),
        Expr::Alias(a) => literal(&a.expr),
        _ => None,
    }
}

/// A literal string argument (segment names, purposes).
pub(crate) fn string_arg(f: &str, what: &str, e: &Expr) -> Result<String> {
    match literal(e) {
        Some(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => Ok(s),
        _ => plan_err!("{f}: the {what} must be a string literal"),
    }
}

/// A literal whole-number argument.
pub(crate) fn int_arg(f: &str, what: &str, e: &Expr) -> Result<i64> {
    match literal(e).map(|v| v.cast_to(&DataType::Int64)) {
        Some(Ok(ScalarValue::Int64(Some(n)))) => Ok(n),
        _ => plan_err!("{f}: {what} must be a whole-number literal"),
    }
}

/// An `as_of` value: an ISO-8601 string or a timestamp, as epoch microseconds.
pub(crate) fn as_of_value(f: &str, v: &ScalarValue) -> Result<Option<i64>> {
    match v {
        ScalarValue::Null => Ok(None),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => match crate::time::parse_micros(s) {
            Some(t) => Ok(Some(t)),
            None => plan_err!("{f}: as_of '{s}' is not an ISO-8601 timestamp"),
        },
        other if other.is_null() => Ok(None),
        other => {
            let t = other.cast_to(&arrow::datatypes::DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                None,
            ))?;
            match t {
                ScalarValue::TimestampMicrosecond(Some(v), _) => Ok(Some(v)),
                _ => plan_err!("{f}: as_of must be a timestamp or an ISO-8601 string"),
            }
        }
    }
}

/// An optional literal `as_of` argument.
pub(crate) fn as_of_arg(f: &str, e: Option<&Expr>) -> Result<Option<i64>> {
    match e {
        None => Ok(None),
        Some(e) => match literal(e) {
            Some(v) => as_of_value(f, &v),
            None => plan_err!("{f}: as_of must be a literal"),
        },
    }
}
