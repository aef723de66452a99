//! `segment_members('name' [, as_of])` → table (`user_id`): the members' stored pseudonyms, in
//! ordinal order.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;

use super::{Prefetched, as_of_value};

/// A literal argument of a table function, looking through casts (`TIMESTAMP '…'`).
pub(crate) fn literal(e: &Expr) -> Option<ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v.clone()),
        Expr::Cast(c) => literal(&c.expr),
        Expr::TryCast(c) => literal(&c.expr),
        _ => None,
    }
}

pub(crate) fn name_arg(f: &str, e: &Expr) -> Result<String> {
    match literal(e) {
        Some(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
        ) => Ok(s),
        _ => plan_err!("{f}: segment names must be string literals"),
    }
}

#[derive(Debug)]
pub struct SegmentMembers {
    cache: Arc<Prefetched>,
}

impl SegmentMembers {
    pub fn new(cache: Arc<Prefetched>) -> Self {
        SegmentMembers { cache }
    }
}

impl TableFunctionImpl for SegmentMembers {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "segment_members";
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!("{f}('name' [, as_of]) takes one or two arguments");
        }
        let name = name_arg(f, &exprs[0])?;
        let as_of = match exprs.get(1) {
            None => None,
            Some(e) => match literal(e) {
                Some(v) => as_of_value(f, &v)?,
                None => return plan_err!("{f}: as_of must be a literal"),
            },
        };
        let bm = self.cache.get(f, &name, as_of)?;
        let ids = self.cache.identity()?;
        let mut b = StringBuilder::with_capacity(bm.len() as usize, bm.len() as usize * 25);
        for u in bm.iter() {
            match ids.by_uid.get(u as usize).and_then(|p| p.as_deref()) {
                Some(p) => b.append_value(p),
                None => continue,
            }
        }
        let schema = Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(b.finish())])?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
