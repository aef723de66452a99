//! Logging set-up, in one place: `tracing` to stderr, filtered by `--log` / `SEGDB_LOG`.

/// Targets whose debug output echoes SQL text — and so any literal a user wrote, raw ids
/// included (`FORGET USER '…'`, `pseudonymize('…')`): always off, whatever the filter says.
const SILENCED: &str = "sqlparser=off";

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
