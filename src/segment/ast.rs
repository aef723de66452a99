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
    /// Calendar months (windows only: a month has no fixed length for `WITHIN`).
    Month,
}

impl Unit {
    /// Its length (`None` for a month, whose length depends on where it starts).
    pub fn micros(self) -> Option<i64> {
        match self {
            Unit::Minute => Some(60_000_000),
            Unit::Hour => Some(3_600_000_000),
            Unit::Day => Some(86_400_000_000),
            Unit::Week => Some(7 * 86_400_000_000),
            Unit::Month => None,
        }
    }
    pub fn span(self) -> crate::time::Span {
        use crate::time::Span;
        match self {
            Unit::Minute => Span::Minutes,
            Unit::Hour => Span::Hours,
            Unit::Day => Span::Days,
            Unit::Week => Span::Weeks,
            Unit::Month => Span::Months,
        }
    }
    pub fn word(self) -> &'static str {
        match self {
            Unit::Minute => "MINUTES",
            Unit::Hour => "HOURS",
            Unit::Day => "DAYS",
            Unit::Week => "WEEKS",
            Unit::Month => "MONTHS",
        }
    }
}

/// Time window of a DID leaf. Timestamps are epoch microseconds UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// `[as_of - n unit, as_of)` (months: calendar months, the day clamped to the month's end)
    Last(u64, Unit),
    /// `[ts, as_of)`
    Since(crate::time::Ts),
    /// `[a, b)`
    Between(crate::time::Ts, crate::time::Ts),
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
    /// `TRAIT predicate`: a predicate over the computed traits (the `traits` table's columns).
    Trait(Sql),
    /// `LOOKALIKE OF seed …` (DESIGN §17): the whole of a definition, never inside AND/OR.
    Lookalike(Box<Lookalike>),
    /// `INTERESTED IN 'category' [MIN SCORE x] [window]` (DESIGN §17).
    Interested {
        /// The category as written (an id, a path or a name).
        category: String,
        /// `MIN SCORE x` as written (a non-negative number; kept as text so leaves compare).
        min_score: Option<String>,
        window: Option<Window>,
        pos: Pos,
    },
}

/// How many users a look-alike takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookalikeSize {
    /// `SIZE n`.
    Size(u64),
    /// `TOP p PERCENT` (of the eligible), as written.
    TopPercent(String),
    /// `MIN SCORE s` (a probability in [0, 1]), as written.
    MinScore(String),
}

/// `LOOKALIKE OF seed [WITHIN seg_expr] (SIZE n | TOP p PERCENT | MIN SCORE s) [EXCLUDING SEED]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookalike {
    pub seed: String,
    pub within: Option<Expr>,
    pub size: LookalikeSize,
    pub excluding_seed: bool,
    pub pos: Pos,
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
    /// `REFRESH EVERY 'interval'`: the text as written and its length in microseconds.
    Every(String, i64),
    /// `REFRESH CRON 'm h dom mon dow' [TIMEZONE 'Area/City']`.
    Cron { expr: String, tz: Option<String> },
    /// `REFRESH MANUAL`: only `REFRESH SEGMENT` (or `segdb refresh NAME`) refreshes it.
    Manual,
    /// `REFRESH LIVE`: `segdb serve` refreshes it after each commit to a table it reads, and at
    /// least every `[live] tick` (DESIGN §15).
    Live,
}

impl Refresh {
    /// The clause as `SHOW SEGMENTS` prints it and the catalog stores it.
    pub fn text(&self) -> String {
        match self {
            Refresh::Every(s, _) => format!("EVERY '{}'", s.replace('\'', "''")),
            Refresh::Cron { expr, tz: None } => format!("CRON '{expr}'"),
            Refresh::Cron { expr, tz: Some(z) } => format!("CRON '{expr}' TIMEZONE '{z}'"),
            Refresh::Manual => "MANUAL".into(),
            Refresh::Live => "LIVE".into(),
        }
    }
}

/// `CREATE [OR REPLACE] [MATERIALIZED] SEGMENT …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSegment {
    pub name: String,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub materialized: bool,
    pub refresh: Option<Refresh>,
    pub holdout_percent: Option<u8>,
    pub keep_versions: Option<u64>,
    pub purposes: Vec<String>,
    pub comment: Option<String>,
    /// The text after AS, as written.
    pub definition: String,
    pub expr: Expr,
}

/// `ALTER SEGMENT name SET …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlterSegment {
    Refresh(Refresh),
    Keep(u64),
}

/// Export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Parquet,
    Csv,
    /// Signed JSON change batches POSTed to a URL (Standard Webhooks v1).
    Webhook,
    /// Segment-spec identify + track messages POSTed to a `…/v1/batch` endpoint.
    Segment,
}

impl ExportFormat {
    pub fn ext(self) -> &'static str {
        match self {
            ExportFormat::Parquet => "parquet",
            ExportFormat::Csv => "csv",
            ExportFormat::Webhook => "webhook",
            ExportFormat::Segment => "segment",
        }
    }
}

/// Ad-platform presets of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Google,
    Meta,
    Tiktok,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Google => "google",
            Preset::Meta => "meta",
            Preset::Tiktok => "tiktok",
        }
    }
}

/// What `EXPORT SEGMENT` and `CREATE EXPORT` share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSpec {
    pub segment: String,
    pub url: String,
    pub format: Option<ExportFormat>,
    pub preset: Option<Preset>,
    /// `COLUMNS (expr AS alias, …)`.
    pub columns: Vec<(Sql, String)>,
    /// `CHANGES FROM VERSION a [TO VERSION b]`.
    pub changes: Option<(u64, Option<u64>)>,
    pub purposes: Vec<String>,
    pub max_rows_per_file: Option<u64>,
    /// `SECRET 'whsec_…'` of a webhook or `WRITE KEY 'k'` of a Segment-spec export (never part
    /// of `text`).
    pub secret: Option<String>,
    /// The statement text from `SEGMENT` on, without the secret (stored by `CREATE EXPORT`).
    pub text: String,
}

impl ExportFormat {
    /// Delivered to an HTTP endpoint rather than written as files.
    pub fn is_http(self) -> bool {
        matches!(self, ExportFormat::Webhook | ExportFormat::Segment)
    }
}

/// Aggregates of a computed trait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraitAgg {
    Count,
    Sum(Sql),
    Min(Sql),
    Max(Sql),
    First(Sql),
    Last(Sql),
    MostFrequent(Sql),
    CountDistinct(Sql),
}

/// `CREATE TRAIT name AS agg OF EVENT 'e' [WHERE pred] [window]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateTrait {
    pub name: String,
    pub or_replace: bool,
    pub if_not_exists: bool,
    pub agg: TraitAgg,
    pub event: EventRef,
    pub filter: Option<Sql>,
    pub window: Option<Window>,
    /// The text after AS, as written.
    pub definition: String,
}

/// Who `FORGET` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgetTarget {
    /// A raw id or a stored pseudonym.
    User(String),
    /// A query returning `user_id`.
    Users(Sql),
}

/// A segdb statement (everything segdb adds to DataFusion's SQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    CreateSegment(CreateSegment),
    DropSegment {
        name: String,
        if_exists: bool,
    },
    ShowSegments,
    DescribeSegment(String),
    ExplainSegment(String),
    /// `EXPLAIN SEGMENT name FOR USER 'id'` (a raw id or a stored pseudonym).
    ExplainForUser {
        name: String,
        id: String,
    },
    AlterSegment {
        name: String,
        change: AlterSegment,
    },
    RefreshSegment {
        name: String,
        as_of: Option<i64>,
    },
    Export(ExportSpec),
    CreateExport {
        name: String,
        if_not_exists: bool,
        spec: ExportSpec,
    },
    DropExport {
        name: String,
        if_exists: bool,
    },
    ShowExports,
    CreateTrait(CreateTrait),
    DropTrait {
        name: String,
        if_exists: bool,
    },
    ShowTraits,
    Forget(ForgetTarget),
    Vacuum,
    /// `CREATE SOURCE [IF NOT EXISTS] name [COMMENT '…']`.
    CreateSource {
        name: String,
        if_not_exists: bool,
        comment: Option<String>,
    },
    /// `ALTER SOURCE name ROTATE KEY`.
    RotateSourceKey(String),
    /// `ALTER EXPORT name RESUME`: a failed or disabled webhook/segment export delivers again.
    ResumeExport(String),
    /// `DROP SOURCE [IF EXISTS] name`.
    DropSource {
        name: String,
        if_exists: bool,
    },
    ShowSources,
    /// `CREATE CATEGORY MAP [IF NOT EXISTS] name FROM EVENT PROPERTY col`.
    CreateCategoryMap {
        name: String,
        property: String,
        if_not_exists: bool,
    },
    DropCategoryMap {
        name: String,
        if_exists: bool,
    },
    ShowCategoryMaps,
    /// `ALTER DATABASE SET INTERESTS HALF LIFE '7 days'` (`None`: `RESET INTERESTS HALF LIFE`).
    SetHalfLife(Option<String>),
    /// `OPTIMIZE [table]`: compact small files and write a checkpoint.
    Optimize(Option<String>),
    SetRetention {
        table: String,
        days: Option<u32>,
    },
    SetPii {
        table: String,
        rules: Vec<(String, crate::storage::settings::PiiRule)>,
    },
    /// `ALTER TABLE t ALTER [COLUMN] c [SET DATA] TYPE ty`: widen a column by rewriting the table.
    AlterColumnType {
        table: String,
        column: String,
        to: WideType,
    },
}

/// What `ALTER … SET DATA TYPE` can widen a column to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WideType {
    Double,
    /// DECIMAL(precision, scale).
    Decimal(u8, i8),
    Varchar,
}

impl std::fmt::Display for WideType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WideType::Double => write!(f, "DOUBLE"),
            WideType::Decimal(p, s) => write!(f, "DECIMAL({p},{s})"),
            WideType::Varchar => write!(f, "VARCHAR"),
        }
    }
}
