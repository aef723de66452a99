//! The client side of a cluster: the physical planner segdb's own planner hands plans to once
//! segment functions are evaluated. A plan that reads base tables and calls only functions every
//! node has is frozen (base tables → [`FrozenTable`] at the statement's snapshot, every other
//! table → its rows, [`Collected`]) and submitted to the Ballista scheduler; anything else runs
//! here: plans that read no base table (there is nothing to distribute), segment evaluation
//! (marked [`LocalOnly`]), plans with a probe over evaluated members (`in_segment`,
//! `has_consent`, `identity_of`: their member sets live in this process), DML, COPY,
//! `information_schema` (the client's catalog), and any plan in which a raw personal value is
//! still a literal argument of `pseudonymize` / `hash_*` (so it never leaves the process).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::config::BallistaConfig;
use ballista_core::planner::BallistaQueryPlanner;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{TableProvider, provider_as_source, source_as_provider};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{Expr, LogicalPlan, TableScan, TableScanBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_proto::protobuf::LogicalPlanNode;

use super::tables::{Collected, FrozenTable};
use crate::segment::context::LocalOnly;
use crate::storage::provider::{BaseTable, statement_snapshot, store_url};

/// Where one plan runs, and why (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Cluster,
    /// Reads no base table.
    NoBaseTable,
    /// Segment evaluation and other client-side work.
    ClientWork,
    /// Calls a function that is not registered by name on every node (a member probe).
    LocalFunction,
    /// Writes (DML, COPY) or reads the client's information_schema.
    LocalStatement,
    /// A function of a personal value still has a constant argument. The front door replaces
    /// `pseudonymize('raw id')` in SQL text by its pseudonym and the optimizer folds what is
    /// left, so this is a last guard (plans built through the DataFrame API with folding off):
    /// a raw value never travels in a plan.
    PersonalLiteral,
}

/// Functions whose arguments are personal values (raw ids, emails, phone numbers).
const PERSONAL_INPUT: [&str; 3] = ["pseudonymize", "hash_email", "hash_phone"];

/// Is `e` a call of a [`PERSONAL_INPUT`] function whose personal value (the first argument; a
/// second one names a key domain) is a constant — a literal, a cast of one, anything that reads
/// no column?
fn carries_personal_literal(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(f)
        if PERSONAL_INPUT.contains(&f.func.name())
            && f.args.first().is_some_and(|a| a.column_refs().is_empty()))
}

pub struct ClusterPlanner {
    remote: BallistaQueryPlanner<LogicalPlanNode>,
    local: DefaultPhysicalPlanner,
    pub url: String,
    submitted: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for ClusterPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPlanner")
            .field("url", &self.url)
            .finish()
    }
}

impl ClusterPlanner {
    /// A planner submitting to the scheduler at `url` (`http://host:port`).
    pub fn new(
        url: String,
        submitted: Arc<std::sync::atomic::AtomicU64>,
        config: BallistaConfig,
    ) -> ClusterPlanner {
        ClusterPlanner {
            remote: BallistaQueryPlanner::with_extension(
                url.clone(),
                config,
                Arc::new(super::codec::SegdbLogicalCodec::default()),
            ),
            local: DefaultPhysicalPlanner::default(),
            url,
            submitted,
        }
    }
}

/// Where `plan` would run in `session`.
pub fn placement(plan: &LogicalPlan, session: &dyn Session) -> Placement {
    if session.config().get_extension::<LocalOnly>().is_some() {
        return Placement::ClientWork;
    }
    let scalars: HashSet<&str> = session
        .scalar_functions()
        .keys()
        .map(String::as_str)
        .collect();
    let aggregates: HashSet<&str> = session
        .aggregate_functions()
        .keys()
        .map(String::as_str)
        .collect();
    let mut base = false;
    let mut out: Option<Placement> = None;
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Dml(_) | LogicalPlan::Copy(_) | LogicalPlan::Ddl(_) => {
                out = Some(Placement::LocalStatement);
            }
            LogicalPlan::TableScan(TableScan {
                table_name, source, ..
            }) => {
                if table_name.schema() == Some("information_schema") {
                    out = Some(Placement::LocalStatement);
                } else if let Ok(p) = source_as_provider(source)
                    && p.downcast_ref::<BaseTable>().is_some()
                {
                    base = true;
                }
            }
            _ => {}
        }
        node.apply_expressions(|e| {
            e.apply(|x| {
                let unknown = match x {
                    Expr::ScalarFunction(f) => !scalars.contains(f.func.name()),
                    Expr::AggregateFunction(f) => !aggregates.contains(f.func.name()),
                    _ => false,
                };
                if unknown {
                    out = Some(Placement::LocalFunction);
                    return Ok(TreeNodeRecursion::Stop);
                }
                if carries_personal_literal(x) {
                    out = Some(Placement::PersonalLiteral);
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if out.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    match out {
        Some(p) => p,
        None if !base => Placement::NoBaseTable,
        None => Placement::Cluster,
    }
}

/// `plan` with every table scan replaced by a provider that carries its own data or file list.
pub async fn freeze(plan: &LogicalPlan, session: &dyn Session) -> Result<LogicalPlan> {
    // Collect the scans first (collecting rows is async), keyed by their position.
    let mut scans: Vec<TableScan> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(s) = node {
            scans.push(s.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let snapshot = statement_snapshot(session);
    let mut replaced: Vec<(TableScan, LogicalPlan)> = Vec::new();
    for s in scans {
        let provider = source_as_provider(&s.source)?;
        let new: Arc<dyn TableProvider> = if let Some(b) = provider.downcast_ref::<BaseTable>() {
            let snap = match &snapshot {
                Some(sn) if sn.db().location().root() == b.db().location().root() => sn.clone(),
                _ => b.db().pin().await.map_err(ext)?,
            };
            Arc::new(FrozenTable {
                table: b.table(),
                store: store_url(b.db()).as_str().to_string(),
                files: snap.files(b.table()).map_err(ext)?,
                schema: b.schema(),
                suppressed: snap.suppression().uids.clone(),
            })
        } else {
            // Filters the provider applies exactly were removed from the plan above it:
            // pass them, so the rows shipped are the rows the plan expects.
            let exec = provider.scan(session, None, &s.filters, None).await?;
            let batches = datafusion::physical_plan::collect(exec, session.task_ctx()).await?;
            Arc::new(Collected {
                schema: provider.schema(),
                batches,
            })
        };
        let scan = TableScanBuilder::new(s.table_name.clone(), provider_as_source(new))
            .with_projection(s.projection.clone())
            .with_filters(s.filters.clone())
            .with_fetch(s.fetch)
            .build()?;
        replaced.push((s, LogicalPlan::TableScan(scan)));
    }
    let out = plan.clone().transform_up_with_subqueries(|node| {
        if let LogicalPlan::TableScan(s) = &node
            && let Some((_, new)) = replaced.iter().find(|(old, _)| old == s)
        {
            return Ok(Transformed::yes(new.clone()));
        }
        Ok(Transformed::no(node))
    })?;
    Ok(out.data)
}

fn ext(e: crate::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let place = placement(logical_plan, session);
        tracing::debug!(target: "segdb::cluster", placement = ?place, "planning");
        if place != Placement::Cluster {
            return self.local.create_physical_plan(logical_plan, session).await;
        }
        let frozen = freeze(logical_plan, session).await?;
        let plan = self.remote.create_physical_plan(&frozen, session).await?;
        self.submitted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{ScalarUDF, cast, col, lit};

    use super::*;

    #[test]
    fn constant_arguments_of_personal_functions_are_caught() {
        let ring = Arc::new(
            crate::privacy::Keyring::from_keys([("user".to_string(), [7u8; 32])]).unwrap(),
        );
        let p = ScalarUDF::from(crate::functions::privacy::pseudonymize::Pseudonymize::new(
            ring,
        ));
        assert!(carries_personal_literal(&p.call(vec![lit("raw@x.com")])));
        assert!(carries_personal_literal(&p.call(vec![cast(
            lit("raw@x.com"),
            arrow::datatypes::DataType::Utf8View
        )])));
        assert!(!carries_personal_literal(&p.call(vec![col("email")])));
        assert!(!carries_personal_literal(
            &p.call(vec![col("user_id"), lit("partner_x")])
        ));
        let contains = ScalarUDF::from(crate::functions::bitmap::rb_contains::RbContains::new());
        assert!(!carries_personal_literal(
            &contains.call(vec![lit(vec![0u8]), col("uid")])
        ));
    }
}
