//! Rewrites of the syntax tree before DataFusion plans it.
//!
//! Private literals are computed before planning: `pseudonymize('raw id' [, 'domain'])`,
//! `hash_email('…')` and `hash_phone('…' [, 'CC'])` with literal arguments become the literal
//! result in the syntax tree, so the raw value never reaches a logical plan, a plan dump in the
//! logs, an EXPLAIN, a plan sent to a cluster, or an output column name (an unnamed select item
//! is named after the function).
//!
//! Table functions are looked up by their name as SQL resolves identifiers (unquoted names are
//! case-insensitive: `SEGMENT_MEMBERS('x')` is `segment_members('x')`), and bound parameters in
//! their arguments become literals (a table function's arguments decide its table).

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, Query, SelectItem, SetExpr,
    Statement, Value, visit_expressions_mut,
};

use crate::privacy::Keyring;
use crate::privacy::hashing::{normalize_email, normalize_phone, sha256_hex};
use crate::privacy::keyring::USER_DOMAIN;
use crate::privacy::pseudonym::Pseudonymizer;

const PRIVATE: [&str; 3] = ["pseudonymize", "hash_email", "hash_phone"];

fn literal_args(f: &sqlparser::ast::Function) -> Option<Vec<Option<String>>> {
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if !list.clauses.is_empty() || list.duplicate_treatment.is_some() {
        return None;
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                Value::SingleQuotedString(s) => Some(Some(s.clone())),
                Value::Null => Some(None),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn private_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Function(f) if f.name.0.len() == 1 => {
            let n = f.name.to_string().to_ascii_lowercase();
            (PRIVATE.contains(&n.as_str()) && literal_args(f).is_some()).then_some(n)
        }
        _ => None,
    }
}

fn compute(name: &str, args: &[Option<String>], keyring: &Keyring) -> Option<Option<String>> {
    Some(match (name, args) {
        ("pseudonymize", [v]) => v
            .as_ref()
            .map(|v| Pseudonymizer::new(keyring, USER_DOMAIN).pseudonymize(v)),
        ("pseudonymize", [v, Some(domain)]) => v
            .as_ref()
            .map(|v| Pseudonymizer::new(keyring, domain).pseudonymize(v)),
        ("hash_email", [v]) => v
            .as_deref()
            .and_then(normalize_email)
            .map(|e| sha256_hex(e.as_bytes())),
        ("hash_phone", [v]) => v
            .as_deref()
            .and_then(|p| normalize_phone(p, None))
            .map(|e| sha256_hex(e.as_bytes())),
        ("hash_phone", [v, cc]) => v
            .as_deref()
            .and_then(|p| normalize_phone(p, cc.as_deref()))
            .map(|e| sha256_hex(e.as_bytes())),
        // Other arities: leave the call to the function (which reports the error).
        _ => return None,
    })
}

fn name_select_items(q: &mut Query) {
    fn body(e: &mut SetExpr) {
        match e {
            SetExpr::Select(s) => {
                // The column is named after the function, never after its argument (a raw
                // value); a second call in one projection is numbered (`pseudonymize_2`), as
                // the folded literals would otherwise collide.
                let mut seen: std::collections::HashMap<String, usize> = Default::default();
                for item in s.projection.iter_mut() {
                    if let SelectItem::UnnamedExpr(e) = item
                        && let Some(n) = private_name(e)
                    {
                        let k = seen.entry(n.to_string()).or_insert(0);
                        *k += 1;
                        let alias = if *k == 1 {
                            n.to_string()
                        } else {
                            format!("{n}_{k}")
                        };
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: Ident::new(alias),
                        };
                    }
                }
            }
            SetExpr::Query(q) => name_select_items(q),
            SetExpr::SetOperation { left, right, .. } => {
                body(left);
                body(right);
            }
            _ => {}
        }
    }
    body(&mut q.body);
}

fn rewrite_ast(s: &mut Statement, keyring: &Keyring) {
    if let Statement::Query(q) = s {
        name_select_items(q);
    }
    let _ = visit_expressions_mut(s, |e| {
        if let Some(n) = private_name(e)
            && let Expr::Function(f) = &*e
            && let Some(args) = literal_args(f)
            && let Some(v) = compute(&n, &args, keyring)
        {
            *e = match v {
                Some(s) => Expr::Value(Value::SingleQuotedString(s).into()),
                None => Expr::Cast {
                    kind: sqlparser::ast::CastKind::Cast,
                    expr: Box::new(Expr::Value(Value::Null.into())),
                    data_type: sqlparser::ast::DataType::Varchar(None),
                    array: false,
                    format: None,
                },
            };
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Apply `f` to every sqlparser statement inside a DataFusion statement.
fn each_statement(stmt: &mut DfStatement, f: &mut dyn FnMut(&mut Statement)) {
    match stmt {
        DfStatement::Statement(s) => f(s),
        DfStatement::Explain(e) => each_statement(&mut e.statement, f),
        DfStatement::CopyTo(c) => {
            if let CopyToSource::Query(q) = &mut c.source {
                let mut s = Statement::Query(q.clone());
                f(&mut s);
                if let Statement::Query(nq) = s {
                    *q = nq;
                }
            }
        }
        DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => {}
    }
}

struct TableFunctions<'a> {
    params: Option<&'a [datafusion::common::ScalarValue]>,
    /// Describing a prepared statement: unbound parameters become '' (the table's columns do
    /// not depend on them).
    blank: bool,
}

fn sql_literal(v: &datafusion::common::ScalarValue) -> Expr {
    use datafusion::common::ScalarValue as S;
    let value = match v {
        v if v.is_null() => Value::Null,
        S::Int8(Some(_))
        | S::Int16(Some(_))
        | S::Int32(Some(_))
        | S::Int64(Some(_))
        | S::UInt8(Some(_))
        | S::UInt16(Some(_))
        | S::UInt32(Some(_))
        | S::UInt64(Some(_))
        | S::Float32(Some(_))
        | S::Float64(Some(_)) => Value::Number(v.to_string(), false),
        S::Utf8(Some(s)) | S::Utf8View(Some(s)) | S::LargeUtf8(Some(s)) => {
            Value::SingleQuotedString(s.clone())
        }
        other => Value::SingleQuotedString(other.to_string()),
    };
    Expr::Value(value.into())
}

impl sqlparser::ast::VisitorMut for TableFunctions<'_> {
    type Break = ();

    fn pre_visit_table_factor(
        &mut self,
        t: &mut sqlparser::ast::TableFactor,
    ) -> ControlFlow<Self::Break> {
        if let sqlparser::ast::TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = t
        {
            if let [sqlparser::ast::ObjectNamePart::Identifier(id)] = name.0.as_mut_slice() {
                if id.quote_style.is_none() {
                    id.value = id.value.to_ascii_lowercase();
                }
                id.quote_style = None;
            }
            for a in args.args.iter_mut() {
                if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = a
                    && let Expr::Value(v) = e
                    && let Value::Placeholder(p) = &v.value
                {
                    let i = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
                    match (self.params, i.and_then(|i| i.checked_sub(1))) {
                        (Some(params), Some(i)) if i < params.len() => *e = sql_literal(&params[i]),
                        _ if self.blank => {
                            *e = Expr::Value(Value::SingleQuotedString(String::new()).into())
                        }
                        _ => {}
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Normalise table-function names and bind `params` into their arguments (`blank`: unbound
/// ones become '', for describing a prepared statement).
pub fn table_functions(
    stmt: &mut DfStatement,
    params: Option<&[datafusion::common::ScalarValue]>,
    blank: bool,
) {
    each_statement(stmt, &mut |s| {
        let _ = sqlparser::ast::VisitMut::visit(s, &mut TableFunctions { params, blank });
    });
}

/// Compute the private literals of a statement in place.
pub fn private_literals(stmt: &mut DfStatement, keyring: &Keyring) {
    match stmt {
        DfStatement::Statement(s) => rewrite_ast(s, keyring),
        DfStatement::Explain(e) => private_literals(&mut e.statement, keyring),
        DfStatement::CopyTo(c) => {
            if let CopyToSource::Query(q) = &mut c.source {
                let mut s = Statement::Query(q.clone());
                rewrite_ast(&mut s, keyring);
                if let Statement::Query(nq) = s {
                    *q = nq;
                }
            }
        }
        DfStatement::CreateExternalTable(_) | DfStatement::Reset(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> DfStatement {
        let mut s = datafusion::sql::parser::DFParser::parse_sql(sql).unwrap();
        s.pop_front().unwrap()
    }

    #[test]
    fn table_functions_are_case_insensitive_and_take_parameters() {
        let mut s =
            parse("SELECT * FROM SEGMENT_MEMBERS($1) JOIN \"segment_overlap\"('a', 'b') ON true");
        let p = vec![datafusion::common::ScalarValue::from("buyers")];
        table_functions(&mut s, Some(&p), false);
        let t = s.to_string();
        assert!(t.contains("segment_members('buyers')"), "{t}");
        assert!(t.contains("segment_overlap('a', 'b')"), "{t}");
    }

    #[test]
    fn private_literals_are_computed_and_named() {
        let ring = Keyring::from_keys([("user".to_string(), [7u8; 32])]).unwrap();
        let mut s = parse(
            "SELECT pseudonymize('ceo@example.com'), hash_email(' A@B.c ') AS h FROM t WHERE user_id = pseudonymize('x')",
        );
        private_literals(&mut s, &ring);
        let text = s.to_string();
        assert!(!text.contains("ceo@example.com"), "{text}");
        assert!(!text.contains("A@B.c"), "{text}");
        let p = Pseudonymizer::new(&ring, USER_DOMAIN);
        assert!(text.contains(&p.pseudonymize("ceo@example.com")), "{text}");
        assert!(text.contains("AS pseudonymize"), "{text}");
        assert!(text.contains(&sha256_hex(b"a@b.c")), "{text}");
        // Two calls in one projection get two names.
        let mut s = parse(
            "SELECT pseudonymize('a'), pseudonymize('b'), hash_email('x@y.z'), hash_email('q@y.z')",
        );
        private_literals(&mut s, &ring);
        let text = s.to_string();
        for name in [
            "AS pseudonymize,",
            "AS pseudonymize_2",
            "AS hash_email,",
            "AS hash_email_2",
        ] {
            assert!(text.contains(name), "{name}: {text}");
        }
        // Columns are left to the function.
        let mut s = parse("SELECT pseudonymize(user_id, 'partner') FROM t");
        private_literals(&mut s, &ring);
        assert!(s.to_string().contains("pseudonymize(user_id, 'partner')"));
    }
}
