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
