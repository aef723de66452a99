//! `interests(user_id [, n])`: one user's top `n` (default 10) categories by decayed score over
//! the last 30 days at the statement's `as_of` — `category`, `name`, `score` by score
//! descending, then category id. `user_id` is a stored pseudonym (`pseudonymize('raw')` for a
//! raw id: the literal is folded before planning, so the raw id never reaches a plan).

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::lazy::LazyTable;
use super::{int_arg, string_arg};
use crate::segment::Segments;

#[derive(Debug)]
pub struct Interests {
    segments: Arc<Segments>,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(Interests {
        segments: segments.clone(),
    })
}

impl TableFunctionImpl for Interests {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = "interests";
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!(
                "{f}(user_id [, n]) takes one user's stored pseudonym (or pseudonymize('raw id')) and optionally how many categories"
            );
        }
        let user = string_arg(f, "user id (a stored pseudonym)", &exprs[0])?;
        let n = match exprs.get(1) {
            Some(e) => int_arg(f, "n", e)?,
            None => 10,
        };
        if !(1..=10_000).contains(&n) {
            return plan_err!("{f}: n must be between 1 and 10000");
        }
        Ok(Arc::new(LazyTable {
            schema: crate::segment::interests::user_schema(),
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let user = user.clone();
                Box::pin(async move {
                    Ok(vec![
                        crate::segment::interests::of_user(&segments, &ctx, &user, n as usize)
                            .await?,
                    ])
                })
            }),
        }))
    }
}
