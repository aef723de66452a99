//! The front door: every statement — from the CLI, the library, Flight SQL or the scheduler — is
//! parsed once here into a [`Statement`], and its [`Kind`] decides who may run it. segdb's own
//! statements are read by the segment grammar (`segment::parser`), everything else by
//! DataFusion's parser; nothing is recognised by sniffing keywords afterwards. A kind the
//! classifier does not know is a write (deny by default).

mod classify;
pub mod setting;

use datafusion::sql::parser::Statement as DfStatement;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::{Error, Result};
use crate::segment::ast;

pub use classify::sql_kind;

/// One parsed statement.
#[derive(Debug, Clone)]
pub enum Statement {
    /// One of segdb's statements (segments, traits, exports, refreshes, FORGET, VACUUM, …).
    Segdb(ast::Statement),
    /// A statement for DataFusion.
    Sql(Box<DfStatement>),
}

/// A statement with its text and kind.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The statement's own text (without the separating `;`).
    pub text: String,
    pub statement: Statement,
    pub kind: Kind,
}

/// What a statement does, as far as permissions are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Reads only: queries, SHOW, DESCRIBE, EXPLAIN (not ANALYZE of a write), the segment
    /// listings and explanations.
    Query,
    /// Changes the caller's own session only: SET, RESET, DEALLOCATE, transaction statements.
    Setting,
    /// `PREPARE name AS …`, with the kind of the prepared statement.
    Prepare(Box<Kind>),
    /// `EXECUTE name(…)`: checked against the prepared statement's own kind.
    Execute(String),
    /// Segment and trait DDL, ALTER SEGMENT, REFRESH SEGMENT.
    SegmentDdl,
    /// EXPORT SEGMENT, CREATE / DROP EXPORT.
    Export,
    /// FORGET USER / FORGET USERS IN.
    Erasure,
    /// VACUUM, OPTIMIZE, ALTER TABLE … SET PII / RETENTION, CREATE / ALTER / DROP SOURCE.
    Maintenance,
    /// What the collector saw: SHOW SOURCES, `collector_rejects()` (analysts and admins).
    Monitor,
    /// Views, tables, schemas, external tables, functions.
    Ddl,
    /// INSERT, UPDATE, DELETE, COPY, SELECT … INTO, CTAS, and anything not recognised.
    Write,
}

impl Kind {
    /// Short lower-case name for logs and refusals.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Query => "query",
            Kind::Setting => "setting",
            Kind::Prepare(_) => "prepare",
            Kind::Execute(_) => "execute",
            Kind::SegmentDdl => "segment_ddl",
            Kind::Export => "export",
            Kind::Erasure => "erasure",
            Kind::Maintenance => "maintenance",
            Kind::Monitor => "monitor",
            Kind::Ddl => "ddl",
            Kind::Write => "write",
        }
    }

    /// Whether it only reads (or only changes the caller's session).
    pub fn is_read_only(&self) -> bool {
        match self {
            Kind::Query | Kind::Setting | Kind::Monitor => true,
            Kind::Prepare(inner) => inner.is_read_only(),
            _ => false,
        }
    }
}

/// Who may run what (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Only the profile API of the HTTP listener (DESIGN §15): no statement at all.
    Lookup,
    /// Queries, session settings, prepared queries, every segment/history/lift/trait function.
    Reader,
    /// Also segment and trait DDL, ALTER / REFRESH SEGMENT, exports.
    Analyst,
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role> {
        match s.to_ascii_lowercase().as_str() {
            "lookup" => Ok(Role::Lookup),
            "reader" => Ok(Role::Reader),
            "analyst" => Ok(Role::Analyst),
            "admin" => Ok(Role::Admin),
            other => Err(Error::invalid(format!(
                "unknown role {other:?}; roles are lookup, reader, analyst and admin"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Lookup => "lookup",
            Role::Reader => "reader",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// May this role run a statement of `kind`? (`Execute` is checked by the session against
    /// the prepared statement's kind.)
    pub fn allows(self, kind: &Kind) -> bool {
        match (self, kind) {
            (Role::Admin, _) => true,
            (Role::Lookup, _) => false,
            (_, Kind::Query | Kind::Setting | Kind::Execute(_)) => true,
            (_, Kind::Prepare(inner)) => self.allows(inner),
            (Role::Analyst, Kind::SegmentDdl | Kind::Export | Kind::Monitor) => true,
            _ => false,
        }
    }

    /// Whether metadata should call this role's session read-only.
    pub fn is_read_only(self) -> bool {
        self != Role::Admin
    }
}

/// Split `sql` into statements at top-level `;` (outside quotes and comments). Empty
/// statements are dropped.
pub fn split(sql: &str) -> Vec<String> {
    let dialect = sqlparser::dialect::GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        // The parser reports the error on the whole text.
        return if sql.trim().is_empty() {
            Vec::new()
        } else {
            vec![sql.trim().to_string()]
        };
    };
    let mut offsets = crate::segment::parser::Offsets::new(sql);
    let mut out = Vec::new();
    let mut start = 0usize;
    for t in &tokens {
        if t.token == Token::SemiColon {
            let at = offsets.of(t.span.start.line, t.span.start.column);
            out.push(sql[start..at].to_string());
            start = at + 1;
        }
    }
    out.push(sql[start.min(sql.len())..].to_string());
    out.into_iter()
        .filter(|s| !is_blank(s))
        .map(|s| s.trim().to_string())
        .collect()
}

/// Only whitespace and comments?
fn is_blank(s: &str) -> bool {
    let dialect = sqlparser::dialect::GenericDialect {};
    match Tokenizer::new(&dialect, s).tokenize() {
        Ok(t) => t.iter().all(|t| matches!(t, Token::Whitespace(_))),
        Err(_) => s.trim().is_empty(),
    }
}

/// Parse one statement. `dialect` is DataFusion's `sql_parser.dialect` of the session.
pub fn parse_one(text: &str, dialect: &str, recursion_limit: usize) -> Result<Parsed> {
    let text = text.trim().trim_end_matches(';').trim().to_string();
    if crate::segment::parser::starts_statement(&text) {
        let stmt = crate::segment::parser::parse_statement(&text)
            .map_err(|e| Error::invalid(e.to_string()))?;
        let kind = segdb_kind(&stmt);
        return Ok(Parsed {
            text,
            statement: Statement::Segdb(stmt),
            kind,
        });
    }
    crate::limits::check_tokens(&text)?;
    let d = datafusion::sql::sqlparser::dialect::dialect_from_str(dialect)
        .ok_or_else(|| Error::invalid(format!("unsupported SQL dialect {dialect}")))?;
    let mut stmts = datafusion::sql::parser::DFParserBuilder::new(text.as_str())
        .with_dialect(d.as_ref())
        .with_recursion_limit(recursion_limit)
        .build()?
        .parse_statements()
        .map_err(|e| {
            use datafusion::sql::sqlparser::parser::ParserError;
            match e.find_root() {
                datafusion::error::DataFusionError::SQL(p, _)
                    if matches!(**p, ParserError::RecursionLimitExceeded) =>
                {
                    Error::invalid(format!(
                        "statement is too deeply nested: parentheses and subqueries may nest at most {recursion_limit} levels (datafusion.sql_parser.recursion_limit)"
                    ))
                }
                _ => Error::from(e),
            }
        })?;
    if stmts.len() != 1 {
        return Err(Error::invalid(if stmts.is_empty() {
            "no statement was given".to_string()
        } else {
            "one statement at a time: separate statements with ';'".to_string()
        }));
    }
    let mut stmt = stmts.pop_front().expect("one statement");
    crate::limits::check_statement(&mut stmt)?;
    let kind = sql_kind(&stmt);
    Ok(Parsed {
        text,
        statement: Statement::Sql(Box::new(stmt)),
        kind,
    })
}

/// Parse every statement of `sql`.
pub fn parse(sql: &str, dialect: &str, recursion_limit: usize) -> Result<Vec<Parsed>> {
    split(sql)
        .iter()
        .map(|s| parse_one(s, dialect, recursion_limit))
        .collect()
}

/// The kind of a segdb statement.
pub fn segdb_kind(s: &ast::Statement) -> Kind {
    use ast::Statement as S;
    match s {
        S::ShowSegments
        | S::DescribeSegment(_)
        | S::ExplainSegment(_)
        | S::ExplainForUser { .. }
        | S::ShowTraits
        | S::ShowExports
        | S::ShowCategoryMaps => Kind::Query,
        S::ShowSources => Kind::Monitor,
        S::CreateSegment(_)
        | S::DropSegment { .. }
        | S::AlterSegment { .. }
        | S::RefreshSegment { .. }
        | S::CreateTrait(_)
        | S::DropTrait { .. }
        | S::CreateCategoryMap { .. }
        | S::DropCategoryMap { .. } => Kind::SegmentDdl,
        S::Export(_) | S::CreateExport { .. } | S::DropExport { .. } | S::ResumeExport(_) => {
            Kind::Export
        }
        S::Forget(_) => Kind::Erasure,
        S::Vacuum
        | S::SetRetention { .. }
        | S::SetPii { .. }
        | S::SetHalfLife(_)
        | S::AlterColumnType { .. }
        | S::CreateSource { .. }
        | S::RotateSourceKey(_)
        | S::DropSource { .. }
        | S::Optimize(_) => Kind::Maintenance,
    }
}

/// `?` placeholders (ODBC/JDBC style) become DataFusion's `$1, $2, …`.
pub fn number_placeholders(sql: &str) -> String {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let dialect = sqlparser::dialect::GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return sql.to_string();
    };
    if !tokens
        .iter()
        .any(|t| matches!(t, Token::Placeholder(p) if p == "?"))
    {
        return sql.to_string();
    }
    let mut n = 0;
    tokens
        .into_iter()
        .map(|t| match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                format!("${n}")
            }
            other => other.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
