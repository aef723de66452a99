//! `segment_members('name' [, as_of])` → table (`user_id`): the members' stored pseudonyms (for
//! a segment with a holdout, the target group), in ordinal order.

use std::sync::Arc;

use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, plan_err};

use super::lazy::LazyTable;
use super::{as_of_arg, string_arg};
use crate::segment::Segments;
use crate::segment::table::{members_schema, pseudonyms};

#[derive(Debug)]
pub struct SegmentMembers {
    segments: Arc<Segments>,
    holdout: bool,
}

pub fn udtf(segments: &Arc<Segments>) -> Arc<dyn TableFunctionImpl> {
    Arc::new(SegmentMembers {
        segments: segments.clone(),
        holdout: false,
    })
}

impl SegmentMembers {
    pub(super) fn holdout(segments: &Arc<Segments>) -> Self {
        SegmentMembers {
            segments: segments.clone(),
            holdout: true,
        }
    }
}

impl TableFunctionImpl for SegmentMembers {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let f = if self.holdout {
            "segment_holdout"
        } else {
            "segment_members"
        };
        let exprs = args.exprs();
        if exprs.is_empty() || exprs.len() > 2 {
            return plan_err!("{f}('name' [, as_of]) takes one or two arguments");
        }
        let name = string_arg(f, "segment name", &exprs[0])?;
        let as_of = as_of_arg(f, exprs.get(1))?;
        let holdout = self.holdout;
        Ok(Arc::new(LazyTable {
            schema: members_schema(),
            segments: self.segments.clone(),
            produce: Arc::new(move |segments, ctx| {
                let name = name.clone();
                Box::pin(async move {
                    let ctx = ctx.at(as_of);
                    let m = segments.membership(&ctx, &name).await?;
                    let set = if holdout {
                        m.holdout.clone()
                    } else {
                        m.target()
                    };
                    Ok(vec![pseudonyms(&segments, &ctx, &set).await?])
                })
            }),
        }))
    }
}
