//! What a statement does, from its first keywords: the Flight SQL server checks it against the
//! caller's role before running anything. Unknown statements count as writes (deny by default).

use sqlparser::tokenizer::{Token, Tokenizer};

/// The kind of a statement, as far as permissions are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// Reads only: SELECT, WITH, VALUES, SHOW, DESCRIBE, EXPLAIN (not ANALYZE of a write),
    /// SHOW SEGMENTS, DESCRIBE / EXPLAIN SEGMENT.
    Query,
    /// `SET …`: changes the caller's own session only.
    Setting,
    /// CREATE [OR REPLACE] [MATERIALIZED] SEGMENT, DROP SEGMENT, REFRESH SEGMENT.
    SegmentDdl,
    /// FORGET USER / FORGET USERS IN.
    Erasure,
    /// VACUUM, ALTER TABLE … RETENTION.
    Maintenance,
    /// CREATE / DROP of views and (external) tables.
    Ddl,
    /// INSERT, COPY, UPDATE, DELETE and anything not recognised.
    Write,
}

impl StatementKind {
    /// Short lower-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            StatementKind::Query => "query",
            StatementKind::Setting => "setting",
            StatementKind::SegmentDdl => "segment_ddl",
            StatementKind::Erasure => "erasure",
            StatementKind::Maintenance => "maintenance",
            StatementKind::Ddl => "ddl",
            StatementKind::Write => "write",
        }
    }

    /// Whether it only reads (a query or a session setting).
    pub fn is_read_only(self) -> bool {
        matches!(self, StatementKind::Query | StatementKind::Setting)
    }
}

/// Classify one statement by its leading keywords (comments skipped).
pub fn classify(sql: &str) -> StatementKind {
    let dialect = sqlparser::dialect::GenericDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().unwrap_or_default();
    let words: Vec<String> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .take(8)
        .map(|t| match t {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect();
    classify_words(&words)
}

fn classify_words(w: &[String]) -> StatementKind {
    let at = |i: usize| w.get(i).map(String::as_str).unwrap_or("");
    match at(0) {
        "SELECT" | "WITH" | "VALUES" | "(" | "SHOW" | "DESCRIBE" | "DESC" => StatementKind::Query,
        "EXPLAIN" => {
            // EXPLAIN ANALYZE runs its statement; plain EXPLAIN only plans it.
            let mut i = 1;
            let mut analyze = false;
            while matches!(at(i), "ANALYZE" | "VERBOSE" | "FORMAT") {
                analyze |= at(i) == "ANALYZE";
                i += if at(i) == "FORMAT" { 2 } else { 1 };
            }
            if at(1) == "SEGMENT" || !analyze {
                StatementKind::Query
            } else {
                classify_words(&w[i.min(w.len())..])
            }
        }
        "SET" => StatementKind::Setting,
        "CREATE" => {
            let mut i = 1;
            if at(i) == "OR" && at(i + 1) == "REPLACE" {
                i += 2;
            }
            if at(i) == "MATERIALIZED" {
                i += 1;
            }
            if at(i) == "SEGMENT" {
                StatementKind::SegmentDdl
            } else {
                StatementKind::Ddl
            }
        }
        "DROP" => {
            if at(1) == "SEGMENT" {
                StatementKind::SegmentDdl
            } else {
                StatementKind::Ddl
            }
        }
        "REFRESH" if at(1) == "SEGMENT" => StatementKind::SegmentDdl,
        "FORGET" => StatementKind::Erasure,
        "VACUUM" | "ALTER" => StatementKind::Maintenance,
        _ => StatementKind::Write,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_leading_keywords() {
        use StatementKind::*;
        let cases = [
            ("select 1", Query),
            ("  -- note\n  WITH a AS (SELECT 1) SELECT * FROM a", Query),
            ("/* x */ show tables", Query),
            ("SHOW SEGMENTS", Query),
            ("DESCRIBE SEGMENT s", Query),
            ("EXPLAIN SEGMENT s", Query),
            ("EXPLAIN SELECT 1", Query),
            ("EXPLAIN ANALYZE SELECT 1", Query),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", Write),
            ("EXPLAIN ANALYZE VERBOSE COPY t TO 'x'", Write),
            ("SET segdb.as_of = '2026-01-01'", Setting),
            ("create segment s AS DID 'view'", SegmentDdl),
            ("CREATE OR REPLACE SEGMENT s AS DID 'view'", SegmentDdl),
            ("CREATE MATERIALIZED SEGMENT s AS DID 'view'", SegmentDdl),
            ("DROP SEGMENT s", SegmentDdl),
            ("FORGET USER 'x'", Erasure),
            ("VACUUM", Maintenance),
            ("ALTER TABLE events SET RETENTION 30 DAYS", Maintenance),
            ("CREATE VIEW v AS SELECT 1", Ddl),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/x'",
                Ddl,
            ),
            ("DROP VIEW v", Ddl),
            ("INSERT INTO t VALUES (1)", Write),
            ("COPY events TO '/tmp/x.parquet'", Write),
            ("PREPARE p AS SELECT 1", Write),
            ("", Write),
        ];
        for (sql, want) in cases {
            assert_eq!(classify(sql), want, "{sql}");
        }
    }
}
