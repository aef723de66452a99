//! Bounds on the shape of a statement. Planning, optimising and dropping a syntax tree all
//! recurse over it, so a tree that is deep enough overflows a thread's stack and aborts the
//! whole process, taking every session of a server with it. A left-deep chain such as
//! `1 + 1 + … + 1` or `a OR b OR …` is as deep as it is long, although it has no parentheses,
//! so the parser's own recursion limit does not catch it. Every statement is measured here
//! right after parsing, before the role check or anything else looks at it, and a statement
//! over a bound is refused with an error that says which bound and how to stay under it.
//!
//! The walk that measures depth stops as soon as it passes the bound, so it never recurses
//! deeper than the bound itself; statements run on threads with large stacks (`main.rs`), so
//! everything below the bound has room.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Query, SetExpr, Value, Values, VisitMut, VisitorMut};

use crate::error::{Error, Result};

/// The deepest nesting of expressions and subqueries a SQL statement may have. A chain of
/// `n` binary operators counts `n` levels.
pub const MAX_SQL_DEPTH: usize = 1_000;

/// The deepest nesting of brackets opened right after a word (function calls, `CAST(`,
/// `ARRAY[`, `IN (`, `FROM (`). sqlparser retries a failed special form (`CAST(…)`,
/// `CEIL(…)`, `SUBSTRING(…)`, …) as a plain function call, so a syntax error inside n nested
/// ones costs 2^n attempts: 16 levels bound that to a fraction of a second, where 24 take
/// minutes and 48 would never end. The parser's own recursion limit does not help (its error
/// is retried the same way).
pub const MAX_CALL_DEPTH: usize = 16;

/// Refuse SQL text whose word-prefixed brackets nest deeper than [`MAX_CALL_DEPTH`], from its
/// tokens, before any parser sees it. Text that does not tokenize passes (the parser reports
/// it, in time linear in its length).
pub fn check_tokens(sql: &str) -> Result<()> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = sqlparser::dialect::GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return Ok(());
    };
    // For each open bracket: whether it follows a word.
    let mut open: Vec<bool> = Vec::new();
    let mut calls = 0usize;
    let mut after_word = false;
    for t in tokens {
        match t {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket => {
                open.push(after_word);
                if after_word {
                    calls += 1;
                    if calls > MAX_CALL_DEPTH {
                        return Err(Error::invalid(format!(
                            "statement is too deeply nested: function calls, casts and bracketed clauses (CAST(…), f(…), IN (…), FROM (…)) may nest at most {MAX_CALL_DEPTH} levels"
                        )));
                    }
                }
            }
            Token::RParen | Token::RBracket => {
                if open.pop() == Some(true) {
                    calls -= 1;
                }
            }
            _ => {}
        }
        after_word = matches!(t, Token::Word(_));
    }
    Ok(())
}

/// Measures depth and cuts off what lies below the bound, so that the rest of the tree (which
/// is dropped recursively like any tree) is never deeper than the bound.
struct Depth {
    now: usize,
    cut: Vec<Expr>,
}

impl VisitorMut for Depth {
    type Break = ();
    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        self.now += 1;
        if self.now > MAX_SQL_DEPTH {
            self.cut
                .push(std::mem::replace(e, Expr::value(Value::Null)));
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
    fn post_visit_expr(&mut self, _: &mut Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        self.now += 1;
        // A chain of set operations (`SELECT 1 UNION SELECT 2 UNION …`) nests as deep as it is
        // long, inside one query node.
        let chain = set_depth(&q.body);
        if self.now + chain > MAX_SQL_DEPTH {
            let body = std::mem::replace(&mut *q.body, SetExpr::Values(empty_values()));
            dismantle_set(body);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
    fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

/// Drop an expression tree of any depth without recursing: children of the shapes that chain
/// (operators, casts, parentheses, tests) are moved onto a work list before their parent is
/// dropped.
fn dismantle(e: Expr) {
    let mut work = vec![e];
    while let Some(mut e) = work.pop() {
        let mut take =
            |b: &mut Box<Expr>| work.push(std::mem::replace(&mut **b, Expr::value(Value::Null)));
        match &mut e {
            Expr::BinaryOp { left, right, .. } => {
                take(left);
                take(right);
            }
            Expr::UnaryOp { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::Collate { expr, .. }
            | Expr::AtTimeZone {
                timestamp: expr, ..
            } => take(expr),
            Expr::Nested(x)
            | Expr::IsNull(x)
            | Expr::IsNotNull(x)
            | Expr::IsTrue(x)
            | Expr::IsFalse(x)
            | Expr::IsNotTrue(x) => take(x),
            Expr::Between {
                expr, low, high, ..
            } => {
                take(expr);
                take(low);
                take(high);
            }
            Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. } => {
                take(expr);
                take(pattern);
            }
            Expr::InList { expr, list, .. } => {
                take(expr);
                work.append(list);
            }
            _ => {}
        }
        drop(e);
    }
}

/// How deep the set operations of a query body nest (measured without recursion).
fn set_depth(body: &SetExpr) -> usize {
    let mut deepest = 0;
    let mut work = vec![(body, 0usize)];
    while let Some((e, d)) = work.pop() {
        deepest = deepest.max(d);
        if let SetExpr::SetOperation { left, right, .. } = e {
            work.push((left, d + 1));
            work.push((right, d + 1));
        }
    }
    deepest
}

fn empty_values() -> Values {
    Values {
        explicit_row: false,
        value_keyword: false,
        rows: Vec::new(),
    }
}

/// Drop a chain of set operations without recursing (see [`dismantle`]).
fn dismantle_set(body: SetExpr) {
    let mut work = vec![body];
    while let Some(mut e) = work.pop() {
        if let SetExpr::SetOperation { left, right, .. } = &mut e {
            for side in [left, right] {
                work.push(std::mem::replace(
                    &mut **side,
                    SetExpr::Values(empty_values()),
                ));
            }
        }
        drop(e);
    }
}

fn too_deep() -> Error {
    Error::invalid(format!(
        "statement is too deeply nested: expressions and subqueries may nest at most {MAX_SQL_DEPTH} levels, and a chain of n operators (a OR b OR …, 1 + 1 + …) counts n levels; use IN (…) for long lists of alternatives, or split the statement"
    ))
}

/// Refuse a SQL syntax tree nested deeper than [`MAX_SQL_DEPTH`]. A refused tree has its
/// deep part cut off and dismantled here, so that dropping it cannot exhaust the stack.
pub fn check_sql<T: VisitMut>(tree: &mut T) -> Result<()> {
    let mut d = Depth {
        now: 0,
        cut: Vec::new(),
    };
    let flow = tree.visit(&mut d);
    d.cut.into_iter().for_each(dismantle);
    match flow {
        ControlFlow::Break(()) => Err(too_deep()),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Refuse a statement DataFusion parsed if it is nested deeper than [`MAX_SQL_DEPTH`].
pub fn check_statement(stmt: &mut datafusion::sql::parser::Statement) -> Result<()> {
    use datafusion::sql::parser::{CopyToSource, Statement as S};
    match stmt {
        S::Statement(s) => check_sql(s.as_mut()),
        S::CopyTo(c) => match &mut c.source {
            CopyToSource::Query(q) => check_sql(q.as_mut()),
            CopyToSource::Relation(_) => Ok(()),
        },
        S::Explain(e) => check_statement(&mut e.statement),
        S::CreateExternalTable(_) | S::Reset(_) => Ok(()),
    }
}

/// Refuse embedded SQL text (a segment's predicate or query, an export column) nested deeper
/// than [`MAX_SQL_DEPTH`]. Text that does not parse passes: DataFusion reports its error when it
/// plans it, with its own message.
pub fn check_sql_text(sql: &str) -> Result<()> {
    check_tokens(sql)?;
    use sqlparser::dialect::GenericDialect;
    use sqlparser::parser::Parser;
    let dialect = GenericDialect {};
    let Ok(mut p) = Parser::new(&dialect).try_with_sql(sql) else {
        return Ok(());
    };
    if let Ok(mut stmts) = p.parse_statements() {
        return stmts.iter_mut().try_for_each(check_sql);
    }
    let Ok(mut p) = Parser::new(&dialect).try_with_sql(sql) else {
        return Ok(());
    };
    match p.parse_expr() {
        Ok(mut e) => check_sql(&mut e),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(op: &str, n: usize) -> String {
        let terms: Vec<String> = (0..n).map(|i| format!("x = {i}")).collect();
        terms.join(&format!(" {op} "))
    }

    /// Deep trees need more stack than a test thread has, as in the engine (`main.rs`).
    fn on_big_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn long_chains_are_refused_and_short_ones_pass() {
        on_big_stack(long_chains);
    }

    fn long_chains() {
        check_sql_text(&format!("SELECT 1 WHERE {}", chain("OR", 100))).unwrap();
        let e = check_sql_text(&format!("SELECT 1 WHERE {}", chain("OR", 5_000))).unwrap_err();
        assert!(e.to_string().contains("too deeply nested"), "{e}");
        let sum = vec!["1"; 5_000].join(" + ");
        assert!(check_sql_text(&format!("SELECT {sum}")).is_err());
        let sum = vec!["1"; 500].join(" + ");
        check_sql_text(&format!("SELECT {sum}")).unwrap();
    }

    #[test]
    fn a_refused_tree_of_any_depth_is_dropped_without_recursion() {
        // 300,000 terms on an 8 MiB stack: dropping the parsed chain recursively would overflow.
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(|| {
                let sum = vec!["1"; 300_000].join("+");
                let e = check_sql_text(&format!("SELECT {sum}")).unwrap_err();
                assert!(e.to_string().contains("too deeply nested"));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn nested_calls_are_bounded_before_any_parser_runs() {
        // A syntax error inside 48 nested CASTs once took the parser forever (2^48 retries).
        let cast = format!(
            "SELECT {}1 +{}",
            "CAST(".repeat(48),
            " AS BIGINT)".repeat(48)
        );
        let started = std::time::Instant::now();
        let e = check_sql_text(&cast).unwrap_err();
        assert!(e.to_string().contains("at most 16"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let ok = format!("SELECT {}1{}", "CAST(".repeat(16), " AS BIGINT)".repeat(16));
        check_tokens(&ok).unwrap();
        // Plain parentheses do not count; brackets after a word do.
        check_tokens(&format!("SELECT {}1{}", "(".repeat(40), ")".repeat(40))).unwrap();
        assert!(
            check_tokens(&format!(
                "SELECT {}1{}",
                "ARRAY[".repeat(17),
                "]".repeat(17)
            ))
            .is_err()
        );
    }

    #[test]
    fn deep_subqueries_and_expression_text_are_measured() {
        on_big_stack(deep_subqueries);
    }

    fn deep_subqueries() {
        let mut q = "SELECT 1".to_string();
        for _ in 0..12 {
            q = format!("SELECT * FROM ({q}) t");
        }
        check_sql_text(&q).unwrap();
        let expr = vec!["a"; 3_000].join(" AND ");
        assert!(check_sql_text(&expr).is_err());
        let unions = vec!["SELECT 1"; 5_000].join(" UNION ALL ");
        assert!(check_sql_text(&unions).is_err());
        let unions = vec!["SELECT 1"; 50].join(" UNION ALL ");
        check_sql_text(&unions).unwrap();
    }
}
