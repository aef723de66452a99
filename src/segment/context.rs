//! What a segment evaluation reads: the statement's snapshot, its segdb settings, and a
//! DataFusion session for the SQL embedded in segments. Embedded SQL is an expression, never a
//! statement: it is planned with DDL, DML and statements disallowed, whatever the caller's role.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::execution::SessionState;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};

use super::options::{self, SegdbOptions};
use crate::error::{Error, Result};
use crate::storage::{Database, Snapshot};

/// A session-config marker: plans of a state carrying it never leave the process (segment
/// evaluation, refreshes, exports — the work DESIGN §12 keeps on a cluster's client).
#[derive(Debug, Default)]
pub struct LocalOnly;

/// The segments being evaluated around a nested evaluation (to refuse cycles through SQL, e.g.
/// `USERS IN (SELECT user_id FROM segments.x)` inside `x`).
#[derive(Debug, Default, Clone)]
pub struct EvalStack(pub Vec<String>);

/// Options under which embedded SQL is planned.
pub fn expression_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// The context of one evaluation.
#[derive(Clone)]
pub struct EvalCtx {
    /// A session over the statement's snapshot, for embedded SQL.
    pub df: SessionContext,
    pub snap: Arc<Snapshot>,
    pub opts: SegdbOptions,
    /// The reference time of windows: an explicit `as_of`, the session's, or the statement's
    /// start.
    pub as_of: i64,
    /// Whether `as_of` was given (per call or by `SET segdb.as_of`): a materialised segment is
    /// then read from its latest snapshot at or before it, otherwise from its latest.
    pub as_of_explicit: bool,
    pub stack: Vec<String>,
}

impl std::fmt::Debug for EvalCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalCtx")
            .field("as_of", &self.as_of)
            .field("stack", &self.stack)
            .finish()
    }
}

impl EvalCtx {
    /// The context of a statement running in `state` (pinning a snapshot if the state has none).
    pub async fn from_state(state: &SessionState, db: &Database) -> Result<EvalCtx> {
        let snap = match crate::storage::provider::statement_snapshot(state) {
            Some(s) => s,
            None => db.pin().await?,
        };
        let opts = options::of(state.config().options());
        let stack = state
            .config()
            .get_extension::<EvalStack>()
            .map(|s| s.0.clone())
            .unwrap_or_default();
        let mut st = state.clone();
        st.config_mut().set_extension(snap.clone());
        // Segment evaluation runs here, never on a cluster (DESIGN §12).
        st.config_mut().set_extension(Arc::new(LocalOnly));
        // A relative as_of ('today', '-7 days') is resolved at each statement's start.
        let as_of = opts
            .as_of
            .map_or(snap.pinned_at, |t| t.resolve(snap.pinned_at));
        Ok(EvalCtx {
            df: SessionContext::new_with_state(st),
            as_of_explicit: opts.as_of.is_some(),
            snap,
            opts,
            as_of,
            stack,
        })
    }

    /// The same context over a freshly pinned snapshot (to read what this statement committed).
    pub async fn repin(&self) -> Result<EvalCtx> {
        let snap = self.snap.db().pin().await?;
        let mut c = self.clone();
        let mut st = c.df.state();
        st.config_mut().set_extension(snap.clone());
        c.df = SessionContext::new_with_state(st);
        c.snap = snap;
        Ok(c)
    }

    /// The same context at another reference time (`None`: unchanged).
    pub fn at(&self, as_of: Option<i64>) -> EvalCtx {
        let mut c = self.clone();
        if let Some(t) = as_of {
            c.as_of = t;
            c.as_of_explicit = true;
        }
        c
    }

    /// "Now" for this statement: when its snapshot was pinned.
    pub fn now(&self) -> i64 {
        self.snap.pinned_at
    }

    /// A context for evaluating segment `name` inside this one; refuses a cycle.
    pub fn nested(&self, name: &str) -> Result<EvalCtx> {
        if self.stack.iter().any(|s| s == name) {
            return Err(Error::invalid(format!(
                "segment '{name}' refers to itself ({} → {name})",
                self.stack.join(" → ")
            )));
        }
        let mut c = self.clone();
        c.stack.push(name.to_string());
        let mut st = c.df.state();
        st.config_mut()
            .set_extension(Arc::new(EvalStack(c.stack.clone())));
        c.df = SessionContext::new_with_state(st);
        Ok(c)
    }

    /// Plan embedded SQL (an expression or a query; never DDL, DML or a statement).
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        crate::limits::check_sql_text(sql)?;
        Ok(self.df.sql_with_options(sql, expression_only()).await?)
    }

    /// Run embedded SQL and collect it.
    pub async fn query(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.plan(sql).await?.collect().await?)
    }
}
