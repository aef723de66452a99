//! Which settings a role may change (DESIGN §7). `SET` and `RESET` change only the caller's
//! own session, but some options reach outside it: `datafusion.runtime.*` (memory pools, the
//! spill directory), and any option that names a path, directory, URL, file, location or
//! memory limit. Below admin those are refused, and so is setting
//! `segdb.statement_timeout` above its default or lifting it. For every role, the parser's recursion limit stays at most
//! [`MAX_RECURSION_LIMIT`]: parentheses nested deeper than the stack can hold would abort the
//! process before any other check sees the statement.

use datafusion::sql::parser::{ResetStatement, Statement as DfStatement};
use sqlparser::ast::{Expr, Set, Statement as S};

use super::Role;
use crate::error::{Error, Result};

/// The highest `datafusion.sql_parser.recursion_limit` any session may set.
pub const MAX_RECURSION_LIMIT: usize = 500;

/// Name parts that mark an option reaching outside the session.
const OUTSIDE: &[&str] = &[
    "path", "dir", "url", "file", "location", "memory", "spill", "temp",
];

/// Whether a role below admin may change `key` (lower case, as DataFusion stores it).
pub fn reader_may_set(key: &str) -> bool {
    if key.starts_with("datafusion.runtime.") || key.starts_with("datafusion.catalog.") {
        return false;
    }
    !OUTSIDE.iter().any(|w| key.contains(w))
}

/// The variable and value of a `SET`, as DataFusion reads them (`None`: not a plain `SET`).
fn assignment(stmt: &DfStatement) -> Option<(String, Option<String>)> {
    match stmt {
        DfStatement::Statement(s) => match s.as_ref() {
            S::Set(Set::SingleAssignment {
                variable, values, ..
            }) => {
                let mut key = variable.to_string().to_ascii_lowercase();
                if key == "timezone" || key == "time.zone" {
                    key = "datafusion.execution.time_zone".into();
                }
                let value = values.first().map(|v| match v {
                    Expr::Value(v) => v
                        .value
                        .clone()
                        .into_string()
                        .unwrap_or_else(|| v.to_string()),
                    other => other.to_string(),
                });
                Some((key, value))
            }
            S::Set(Set::SetTimeZone { .. }) => {
                Some(("datafusion.execution.time_zone".into(), None))
            }
            _ => None,
        },
        DfStatement::Reset(ResetStatement::Variable(name)) => {
            Some((name.to_string().to_ascii_lowercase(), None))
        }
        _ => None,
    }
}

/// `RESET segdb.x` as the `SET` of its default (DataFusion resets only its own options).
pub fn reset_to_default(stmt: &DfStatement) -> Option<String> {
    use datafusion::common::config::ExtensionOptions;
    let DfStatement::Reset(ResetStatement::Variable(name)) = stmt else {
        return None;
    };
    let key = name.to_string().to_ascii_lowercase();
    if !key.starts_with("segdb.") {
        return None;
    }
    let default = crate::segment::options::SegdbOptions::default()
        .entries()
        .into_iter()
        .find(|e| e.key == key)
        .and_then(|e| e.value)
        // An unknown key: let SET report it, with the list of segdb's settings.
        .unwrap_or_default();
    Some(format!("SET {key} = '{}'", default.replace('\'', "''")))
}

/// Refuse a `SET`/`RESET` that `role` may not run.
pub fn check(stmt: &DfStatement, role: Role) -> Result<()> {
    let Some((key, value)) = assignment(stmt) else {
        return Ok(());
    };
    let is_reset = matches!(stmt, DfStatement::Reset(_));
    if key == "datafusion.sql_parser.recursion_limit"
        && let Some(v) = &value
        && v.trim()
            .parse::<usize>()
            .is_ok_and(|n| n > MAX_RECURSION_LIMIT)
    {
        return Err(Error::invalid(format!(
            "datafusion.sql_parser.recursion_limit may be at most {MAX_RECURSION_LIMIT}: deeper nesting could exhaust the server's stack"
        )));
    }
    if role == Role::Admin {
        return Ok(());
    }
    if !reader_may_set(&key) {
        return Err(Error::denied(format!(
            "role {} may not change {key}: runtime options and options naming a path, directory, URL, file or memory limit are for admins",
            role.name()
        )));
    }
    if key == "segdb.statement_timeout" && !is_reset {
        let new = crate::segment::options::parse_timeout(value.as_deref().unwrap_or(""))
            .map_err(|m| Error::invalid(format!("segdb.statement_timeout: {m}")))?;
        // Up to the default (what every session starts with), never above it, never lifted.
        let cap = crate::segment::options::DEFAULT_STATEMENT_TIMEOUT;
        let raises = match new {
            None => true,
            Some(n) => n > cap,
        };
        if raises {
            return Err(Error::denied(format!(
                "role {} may set segdb.statement_timeout up to {} but not higher, nor lift it (0)",
                role.name(),
                humantime::format_duration(cap)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str) -> DfStatement {
        datafusion::sql::parser::DFParser::parse_sql(sql)
            .unwrap()
            .pop_front()
            .unwrap()
    }

    #[test]
    fn readers_keep_to_their_session() {
        for sql in [
            "SET datafusion.runtime.temp_directory = '/tmp/x'",
            "SET datafusion.runtime.memory_limit = '100G'",
            "SET datafusion.catalog.location = '/tmp'",
            "SET datafusion.execution.parquet.some_file_option = 'x'",
            "RESET datafusion.runtime.temp_directory",
            "SET segdb.statement_timeout = '1 hour'",
            "SET segdb.statement_timeout = 0",
        ] {
            let e = check(&stmt(sql), Role::Reader).unwrap_err();
            assert!(matches!(e, Error::Denied(_)), "{sql}: {e}");
            check(&stmt(sql), Role::Admin).unwrap();
        }
        for sql in [
            "SET datafusion.execution.batch_size = 100",
            "SET segdb.as_of = '2026-01-01'",
            "SET segdb.statement_timeout = '10 seconds'",
            "SET TIME ZONE = '+02:00'",
            "RESET segdb.statement_timeout",
        ] {
            check(&stmt(sql), Role::Reader).unwrap();
        }
    }

    #[test]
    fn nobody_raises_the_parser_recursion_limit_past_the_stack() {
        let big = stmt("SET datafusion.sql_parser.recursion_limit = 100000");
        assert!(check(&big, Role::Admin).is_err());
        let ok = stmt("SET datafusion.sql_parser.recursion_limit = 100");
        check(&ok, Role::Reader).unwrap();
    }
}
