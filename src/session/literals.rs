//! Private literals are computed before planning: `pseudonymize('raw id' [, 'domain'])`,
//! `hash_email('…')` and `hash_phone('…' [, 'CC'])` with literal arguments become the literal
//! result in the syntax tree, so the raw value never reaches a logical plan, a plan dump in the
//! logs, an EXPLAIN, a plan sent to a cluster, or an output column name (an unnamed select item
//! is named after the function).

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
                for item in s.projection.iter_mut() {
                    if let SelectItem::UnnamedExpr(e) = item
                        && let Some(n) = private_name(e)
                    {
                        *item = SelectItem::ExprWithAlias {
                            expr: e.clone(),
                            alias: Ident::new(n),
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

/// Compute the private literals of a statement in place.
pub fn rewrite(stmt: &mut DfStatement, keyring: &Keyring) {
    match stmt {
        DfStatement::Statement(s) => rewrite_ast(s, keyring),
        DfStatement::Explain(e) => rewrite(&mut e.statement, keyring),
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
    fn private_literals_are_computed_and_named() {
        let ring = Keyring::from_keys([("user".to_string(), [7u8; 32])]).unwrap();
        let mut s = parse(
            "SELECT pseudonymize('ceo@example.com'), hash_email(' A@B.c ') AS h FROM t WHERE user_id = pseudonymize('x')",
        );
        rewrite(&mut s, &ring);
        let text = s.to_string();
        assert!(!text.contains("ceo@example.com"), "{text}");
        assert!(!text.contains("A@B.c"), "{text}");
        let p = Pseudonymizer::new(&ring, USER_DOMAIN);
        assert!(text.contains(&p.pseudonymize("ceo@example.com")), "{text}");
        assert!(text.contains("AS pseudonymize"), "{text}");
        assert!(text.contains(&sha256_hex(b"a@b.c")), "{text}");
        // Columns are left to the function.
        let mut s = parse("SELECT pseudonymize(user_id, 'partner') FROM t");
        rewrite(&mut s, &ring);
        assert!(s.to_string().contains("pseudonymize(user_id, 'partner')"));
    }
}
