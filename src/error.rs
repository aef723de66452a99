//! The crate error type. Every module folds its failures into [`Error`]; messages say what was
//! wrong and what to do about it, and never contain a raw identifier or a key.

use thiserror::Error;

/// Everything that can go wrong in segdb, by area.
#[derive(Debug, Error)]
pub enum Error {
    /// The database location could not be opened or is not a segdb database.
    #[error("storage: {0}")]
    Storage(String),
    /// The keyring file is missing, unreadable or malformed.
    #[error("keyring: {0}")]
    Keyring(String),
    /// An input file could not be read or does not meet the ingest contract.
    #[error("ingest: {0}")]
    Ingest(String),
    /// A strict load (`--strict`, Flight SQL bulk ingest) had rejected rows; nothing was
    /// committed.
    #[error("ingest: {0}")]
    Rejected(String),
    /// A user-facing argument was invalid.
    #[error("{0}")]
    Invalid(String),
    /// The caller's role may not run this statement (or nobody may, e.g. reading the keyring).
    #[error("{0}")]
    Denied(String),
    /// A query failed to plan or run.
    #[error("{}", datafusion_message(.0))]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A Delta Lake operation failed.
    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),
    /// An Arrow operation failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Parquet file could not be read or written.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A local file operation failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("cluster: {0}")]
    Cluster(String),
    /// A statement ran longer than `segdb.statement_timeout` and was cancelled.
    #[error("{0}")]
    Timeout(String),
    /// Something named does not exist (a user asked about by id).
    #[error("{0}")]
    NotFound(String),
    /// The command line was used wrongly (flags that do not go together, a missing argument).
    #[error("{0}")]
    Usage(String),
    /// A commit lost to other writers after its retries; nothing of it is visible.
    #[error("{0}")]
    Conflict(String),
}

/// The message of a DataFusion error. segdb's own errors raised inside a plan (segment
/// functions, scans) travel wrapped as DataFusion's "External error: …"; they are shown as
/// segdb wrote them.
pub fn datafusion_message(e: &datafusion::error::DataFusionError) -> String {
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::External(inner) => match inner.downcast_ref::<Error>() {
            Some(ours) => ours.to_string(),
            None => e.to_string(),
        },
        _ => e.to_string(),
    }
}

/// The kinds of failure of DESIGN §19's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Invalid input: syntax, a bad value or type.
    Invalid,
    NotFound,
    /// The caller's role may not do this.
    Denied,
    /// Cancelled after `segdb.statement_timeout`.
    Timeout,
    /// A commit lost to other writers after its retries.
    Conflict,
    /// Storage or another dependency could not be reached.
    Unavailable,
    /// A bug.
    Internal,
}

/// Is `e` a lost race for a Delta version (another writer committed it first)?
pub fn delta_conflict(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    matches!(
        e,
        deltalake::DeltaTableError::VersionAlreadyExists(_)
            | deltalake::DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
                    | TransactionError::CommitConflict(_)
            }
    )
}

/// The kind of a DataFusion error (segdb's own errors raised inside a plan keep theirs).
pub fn datafusion_kind(e: &datafusion::error::DataFusionError) -> ErrorKind {
    use datafusion::error::DataFusionError as D;
    match e.find_root() {
        D::SQL(..)
        | D::Plan(_)
        | D::SchemaError(..)
        | D::NotImplemented(_)
        | D::Configuration(_) => ErrorKind::Invalid,
        // EXECUTE of an unknown name.
        D::Execution(m)
            if m.starts_with("Prepared statement '") && m.ends_with("' does not exist") =>
        {
            ErrorKind::NotFound
        }
        D::External(inner) => match inner.downcast_ref::<Error>() {
            Some(ours) => ours.kind(),
            None => ErrorKind::Internal,
        },
        D::ObjectStore(_) | D::IoError(_) => ErrorKind::Unavailable,
        // A value the query computes on is at fault (a cast, a division by zero, an overflow).
        D::ArrowError(a, _)
            if matches!(
                a.as_ref(),
                arrow::error::ArrowError::CastError(_)
                    | arrow::error::ArrowError::ParseError(_)
                    | arrow::error::ArrowError::DivideByZero
                    | arrow::error::ArrowError::ArithmeticOverflow(_)
                    | arrow::error::ArrowError::ComputeError(_)
                    | arrow::error::ArrowError::InvalidArgumentError(_)
            ) =>
        {
            ErrorKind::Invalid
        }
        _ => ErrorKind::Internal,
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn storage(msg: impl Into<String>) -> Self {
        Error::Storage(msg.into())
    }
    pub(crate) fn ingest(msg: impl Into<String>) -> Self {
        Error::Ingest(msg.into())
    }
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub(crate) fn denied(msg: impl Into<String>) -> Self {
        Error::Denied(msg.into())
    }
    /// A statement cancelled after `limit` (`segdb.statement_timeout`).
    pub(crate) fn timed_out(limit: std::time::Duration) -> Self {
        Error::Timeout(format!(
            "statement cancelled: it ran longer than segdb.statement_timeout ({}); an admin may raise it with SET segdb.statement_timeout = '…'",
            humantime::format_duration(limit)
        ))
    }

    /// What kind of failure this is (DESIGN §19): every interface (Flight SQL status, Python
    /// exception class) maps the kind, not the message.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_)
            | Error::Usage(_)
            | Error::Ingest(_)
            | Error::Rejected(_)
            | Error::Keyring(_) => ErrorKind::Invalid,
            Error::Denied(_) => ErrorKind::Denied,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Storage(_) | Error::Io(_) | Error::Cluster(_) => ErrorKind::Unavailable,
            Error::Delta(e) if delta_conflict(e) => ErrorKind::Conflict,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Delta(deltalake::DeltaTableError::ObjectStore { .. }) => ErrorKind::Unavailable,
            Error::DataFusion(e) => datafusion_kind(e),
            Error::Delta(_) | Error::Arrow(_) | Error::Parquet(_) => ErrorKind::Internal,
        }
    }

    /// The process exit code for this error (DESIGN §19): 2 for a command-line usage error,
    /// 3 for a strict load's rejected rows, 1 otherwise (a bad statement or value included;
    /// a panic exits 4).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Rejected(_) => 3,
            _ => 1,
        }
    }
}
