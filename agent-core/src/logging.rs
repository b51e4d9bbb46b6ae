//! Logs to stderr through `tracing`: one line per event, key=value fields.
//! Secrets never reach a log: the license type masks itself.

use std::io::IsTerminal;

/// Installs the subscriber. `level` is `error`..`trace`; `RUST_LOG`, when
/// set, wins (for debugging one module).
pub fn init(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
