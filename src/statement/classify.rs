//! The kind of a DataFusion statement, from its syntax tree. Read-only forms are listed one by
//! one; everything else is a DDL statement or a write. The session checks the plan as well
//! (DataFusion's `SQLOptions`), so a statement this module calls a query cannot create or write
//! anything even if it was classified wrongly.

use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};
use sqlparser::ast::{Query, SetExpr, Statement as S};

use super::Kind;

/// Does the query write a table (`SELECT … INTO t`)?
fn selects_into(q: &Query) -> bool {
    fn body(e: &SetExpr) -> bool {
        match e {
            SetExpr::Select(s) => s.into.is_some(),
            SetExpr::Query(q) => selects_into(q),
            SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
            _ => false,
        }
    }
    body(&q.body)
        || q.with
            .as_ref()
            .is_some_and(|w| w.cte_tables.iter().any(|c| selects_into(&c.query)))
}

/// The kind of a statement DataFusion parsed.
pub fn sql_kind(stmt: &DfStatement) -> Kind {
    match stmt {
        DfStatement::Statement(s) => ast_kind(s),
        DfStatement::CreateExternalTable(_) => Kind::Ddl,
        DfStatement::CopyTo(c) => match &c.source {
            CopyToSource::Relation(_) | CopyToSource::Query(_) => Kind::Write,
        },
        DfStatement::Explain(e) => {
            // EXPLAIN only plans its statement; EXPLAIN ANALYZE runs it.
            if e.options.analyze {
                sql_kind(&e.statement)
            } else {
                Kind::Query
            }
        }
        DfStatement::Reset(_) => Kind::Setting,
    }
}

fn ast_kind(s: &S) -> Kind {
    match s {
        S::Query(q) => {
            if selects_into(q) {
                Kind::Write
            } else if reads_collector(q) {
                Kind::Monitor
            } else {
                Kind::Query
            }
        }
        S::Explain {
            analyze, statement, ..
        } => {
            if *analyze {
                ast_kind(statement)
            } else {
                Kind::Query
            }
        }
        S::ExplainTable { .. }
        | S::ShowFunctions { .. }
        | S::ShowVariable { .. }
        | S::ShowStatus { .. }
        | S::ShowVariables { .. }
        | S::ShowCreate { .. }
        | S::ShowColumns { .. }
        | S::ShowCatalogs { .. }
        | S::ShowDatabases { .. }
        | S::ShowSchemas { .. }
        | S::ShowTables { .. }
        | S::ShowViews { .. }
        | S::ShowObjects { .. }
        | S::ShowCollation { .. }
        | S::ShowCharset { .. } => Kind::Query,
        S::Set(_)
        | S::Reset { .. }
        | S::Deallocate { .. }
        | S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. } => Kind::Setting,
        S::Prepare { statement, .. } => Kind::Prepare(Box::new(ast_kind(statement))),
        S::Execute { name, .. } => Kind::Execute(
            name.as_ref()
                .map(|n| n.to_string())
                .unwrap_or_default()
                .to_ascii_lowercase(),
        ),
        S::CreateView { .. }
        | S::CreateSchema { .. }
        | S::CreateDatabase { .. }
        | S::CreateFunction { .. }
        | S::DropFunction { .. }
        | S::AlterTable { .. }
        | S::AlterView { .. }
        | S::AlterSchema { .. }
        | S::CreateIndex { .. }
        | S::CreateType { .. }
        | S::Drop { .. } => Kind::Ddl,
        S::CreateTable(t) if t.query.is_none() => Kind::Ddl,
        // CTAS, INSERT, UPDATE, DELETE, MERGE, COPY, TRUNCATE, and everything not listed.
        _ => Kind::Write,
    }
}

/// Does a query call `collector_rejects()` (analysts and admins only)? Read from the printed
/// statement, so every way of naming a table function (`FROM f()`, `LATERAL f()`, a subquery)
/// counts; a query that merely mentions the name in a string is refused to readers too.
fn reads_collector(q: &sqlparser::ast::Query) -> bool {
    q.to_string()
        .to_ascii_lowercase()
        .contains("collector_rejects")
}
