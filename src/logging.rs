//! Logging set-up, in one place: `tracing` to stderr, filtered by `--log` / `SEGDB_LOG`.

/// Always off, whatever the filter says:
/// - `sqlparser`: its debug output echoes SQL text, and so any literal a user wrote, raw ids
///   included (`FORGET USER '…'`, `pseudonymize('…')`).
/// - Exact-version commits (a refresh, a catalog rewrite, an export run) are made with no
/// retries on purpose: losing the race to another commit is expected, and segdb re-reads and
/// retries itself (`storage::commit`). delta-rs still logs each lost race as an ERROR
/// ("exceeded maximum commit attempts max_retries=0"), which reads as a failure when nothing
/// failed; those events, and only those (their span has `max_retries=0`), are silenced.
const SILENCED: &str =
    "sqlparser=off,deltalake_core::kernel::transaction[commit_with_retries{max_retries=0}]=off";

/// Install the global subscriber. Unknown directives fall back to `warn`.
pub fn init(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},{SILENCED}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,{SILENCED}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only on a terminal: log files and collectors get plain `key=value` lines.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
