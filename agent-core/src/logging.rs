//! Logs to stderr through `tracing`: one line per event, key=value fields
//! (a Windows service, which has no stderr, to a file in `data.dir`).
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

/// A log file is set aside (`.old`, replacing the previous one) when it is
/// larger than this at start.
const LOG_FILE_MAX: u64 = 10 << 20;

/// Installs the subscriber writing to `path` (appended; a file over 10 MiB
/// is renamed to `<path>.old` first). Falls back to stderr when the file
/// cannot be opened.
pub fn init_file(level: &str, path: &std::path::Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_FILE_MAX) {
        let _ = std::fs::rename(path, path.with_extension("log.old"));
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => file,
        Err(_) => return init(level),
    };
    let filter = tracing_subscriber::EnvFilter::new(level);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// Appends one line to the log file `path` (before logging is set up: a
/// service's config error).
pub fn append_line(path: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}
