//! The segment language's syntax tree (DESIGN.md §5). Embedded SQL (predicates, queries) is kept
//! as text with its position; DataFusion parses and type-checks it when the segment compiles.

use std::fmt;

/// Where something is in the statement text (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A piece of embedded SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql {
    pub text: String,
    pub pos: Pos,
}

/// `'name'` or `ANY EVENT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventRef {
    Named(String),
    Any,
}

impl fmt::Display for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventRef::Named(n) => write!(f, "'{}'", n.replace('\'', "''")),
            EventRef::Any => f.write_str("ANY EVENT"),
        }
    }
}

/// Frequency constraint on a DID leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Freq {
    AtLeast(u64),
    AtMost(u64),
    Exactly(u64),
    Between(u64, u64),
}

/// Time unit of windows and WITHIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Minute,
    Hour,
    Day,
    Week,
}

impl Unit {
    pub fn micros(self) -> i64 {
        match self {
            Unit::Minute => 60_000_000,
            Unit::Hour => 3_600_000_000,
            Unit::Day => 86_400_000_000,
            Unit::Week => 7 * 86_400_000_000,
        }
    }
    pub fn word(self) -> &'static str {
        match self {
            Unit::Minute => "MINUTES",
            Unit::Hour => "HOURS",
            Unit::Day => "DAYS",
            Unit::Week => "WEEKS",
        }
    }
}

/// Time window of a DID leaf. Timestamps are epoch microseconds UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// `[as_of - n unit, as_of)`
    Last(u64, Unit),
    /// `[ts, as_of)`
    Since(i64),
    /// `[a, b)`
    Between(i64, i64),
}

/// One side of a DID leaf: an event and an optional predicate over its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSpec {
    pub event: EventRef,
    pub filter: Option<Sql>,
}

/// A leaf of a segment expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    Profile(Sql),
    Did {
        what: EventSpec,
        freq: Option<Freq>,
        window: Option<Window>,
        pos: Pos,
    },
    Sequence {
        first: EventSpec,
        then: EventSpec,
        within: Option<(u64, Unit)>,
        window: Option<Window>,
        pos: Pos,
    },
    InSegment(String, Pos),
    UsersIn(Sql),
    AllUsers,
}

/// A segment expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Leaf(Leaf),
}

/// How a materialised segment refreshes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    Every(String),
    Cron(String),
}

/// A segment statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Create {
        name: String,
        or_replace: bool,
        if_not_exists: bool,
        materialized: bool,
        refresh: Option<Refresh>,
        purposes: Vec<String>,
        comment: Option<String>,
        /// The text after AS, as written.
        definition: String,
        expr: Expr,
    },
    Drop {
        name: String,
        if_exists: bool,
    },
    Show,
    Describe(String),
    Explain(String),
}
