//! segdb's query planner: before DataFusion builds a physical plan — for every statement, view,
//! prepared statement and subquery — it evaluates the segment scalars the plan calls
//! (`segment_size`, `segment_bitmap`, `in_segment`, `has_consent`, `identity_of`) with the
//! running statement's snapshot and settings, and replaces each call by its value: a literal, or
//! a probe over the evaluated members. Arguments naming segments, purposes and times must be
//! literals. Output column names are kept.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::segment::functions::probe::{CanonicalLookup, MemberProbe};
use crate::segment::functions::{PLANNED, as_of_arg, call_name, string_arg};
use crate::segment::{EvalCtx, Segments};

/// The planner installed in every segdb session.
#[derive(Debug)]
pub struct SegdbPlanner {
    pub(crate) segments: Arc<Segments>,
    /// The planner that builds the physical plan afterwards (DataFusion's, or a cluster's).
    pub(crate) inner: Option<Arc<dyn QueryPlanner + Send + Sync>>,
}

fn is_planned(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(f) if PLANNED.contains(&f.func.name()))
}

/// Does the plan (or a subquery of it) call a planned scalar?
pub fn calls_planned(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                if is_planned(x) {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

fn ext(e: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Evaluate one planned call into the expression that replaces it.
async fn evaluate(segments: &Segments, ctx: &EvalCtx, f: &ScalarFunction) -> Result<Expr> {
    let name = f.func.name();
    let args = &f.args;
    let label = call_name(name, args)?;
    match name {
        "segment_size" | "segment_bitmap" => {
            let seg = string_arg(name, "segment name", &args[0])?;
            let at = as_of_arg(name, args.get(1))?;
            let members = segments.members(&ctx.at(at), &seg).await.map_err(ext)?;
            Ok(if name == "segment_size" {
                lit(ScalarValue::UInt64(Some(members.len())))
            } else {
                lit(ScalarValue::Binary(Some(crate::bitmap::codec::to_bytes(
                    &members,
                ))))
            })
        }
        "segment_size_of" => {
            let src = string_arg(name, "segment expression", &args[0])?;
            let at = as_of_arg(name, args.get(1))?;
            let n = segments
                .size_of_expr(&ctx.at(at), &src)
                .await
                .map_err(ext)?;
            Ok(lit(ScalarValue::UInt64(Some(n))))
        }
        "in_segment" => {
            let seg = string_arg(name, "segment name", &args[0])?;
            let members = segments.members(ctx, &seg).await.map_err(ext)?;
            let ids = segments.identity(ctx).await.map_err(ext)?;
            let canonical = segments.canonical(ctx).await.map_err(ext)?.map(|c| c.map());
            Ok(MemberProbe::udf(label, Arc::new(members), ids, canonical)
                .call(vec![args[1].clone()]))
        }
        "lookalike_score" => {
            let seg = string_arg(name, "segment name", &args[0])?;
            let scores = segments.lookalike_scores(ctx, &seg).await.map_err(ext)?;
            let ids = segments.identity(ctx).await.map_err(ext)?;
            let canonical = segments.canonical(ctx).await.map_err(ext)?.map(|c| c.map());
            Ok(crate::segment::functions::probe::ScoreProbe::udf(
                label,
                Arc::new(scores),
                ids,
                canonical,
            )
            .call(vec![args[1].clone()]))
        }
        "has_consent" => {
            let purpose = string_arg(name, "purpose", &args[1])?;
            let at = as_of_arg(name, args.get(2))?.unwrap_or(ctx.as_of);
            let holders = segments
                .consent_of_profiles(ctx, &purpose, at)
                .await
                .map_err(ext)?;
            let ids = segments.identity(ctx).await.map_err(ext)?;
            let canonical = segments.canonical(ctx).await.map_err(ext)?.map(|c| c.map());
            Ok(MemberProbe::udf(label, holders, ids, canonical).call(vec![args[0].clone()]))
        }
        "identity_of" => {
            let ids = segments.identity(ctx).await.map_err(ext)?;
            let canonical = segments.canonical(ctx).await.map_err(ext)?.map(|c| c.map());
            let universe = segments.raw_universe(ctx).await.map_err(ext)?;
            Ok(CanonicalLookup::udf(ids, canonical, universe).call(vec![args[0].clone()]))
        }
        other => Err(DataFusionError::Internal(format!("{other} is not planned"))),
    }
}

/// `plan` with every planned call evaluated.
pub async fn rewrite(
    segments: &Segments,
    plan: &LogicalPlan,
    state: &SessionState,
) -> Result<LogicalPlan> {
    // Collect the distinct calls (by their display form) first: evaluation is async.
    let mut calls: Vec<(String, ScalarFunction)> = Vec::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::ScalarFunction(f) = x
                    && PLANNED.contains(&f.func.name())
                {
                    let key = x.to_string();
                    if !calls.iter().any(|(k, _)| *k == key) {
                        calls.push((key, f.clone()));
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    if calls.is_empty() {
        return Ok(plan.clone());
    }
    let ctx = EvalCtx::from_state(state, segments.db())
        .await
        .map_err(ext)?;
    let mut values: HashMap<String, Expr> = HashMap::new();
    for (key, f) in &calls {
        values.insert(key.clone(), evaluate(segments, &ctx, f).await?);
    }
    let out = plan.clone().transform_up_with_subqueries(|node| {
        let preserver = NamePreserver::new(&node);
        node.map_expressions(|e| {
            let saved = preserver.save(&e);
            let t = e.transform_up(|x| {
                if is_planned(&x)
                    && let Some(v) = values.get(&x.to_string())
                {
                    return Ok(Transformed::yes(v.clone()));
                }
                Ok(Transformed::no(x))
            })?;
            Ok(t.update_data(|e| saved.restore(e)))
        })
    })?;
    Ok(out.data)
}

#[async_trait]
impl QueryPlanner for SegdbPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = if calls_planned(logical_plan) {
            let state = session
                .as_any()
                .downcast_ref::<SessionState>()
                .ok_or_else(|| DataFusionError::Internal("not a SessionState".into()))?;
            rewrite(&self.segments, logical_plan, state).await?
        } else {
            logical_plan.clone()
        };
        match &self.inner {
            Some(p) => p.create_physical_plan(&plan, session).await,
            None => {
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(&plan, session)
                    .await
            }
        }
    }
}
