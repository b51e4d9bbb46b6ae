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

/// A log file is set aside (`.old`, replacing the previous one) when it
/// grows past this, at start or while running.
const LOG_FILE_MAX: u64 = 10 << 20;

/// An appended log file set aside as `<name>.log.old` (replacing the
/// previous one) once it would grow past `max` bytes; then a new one.
pub struct RotatingFile {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    len: u64,
    max: u64,
}

impl RotatingFile {
    /// Opens (appends to) `path`, set aside first when already past `max`.
    pub fn open(path: &std::path::Path, max: u64) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut file = RotatingFile {
            path: path.to_path_buf(),
            file: None,
            len: std::fs::metadata(path).map_or(0, |m| m.len()),
            max,
        };
        if file.len > max {
            file.rotate()?;
        } else {
            file.file = Some(file.reopen()?);
        }
        Ok(file)
    }

    fn reopen(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        // Closed before the rename: Windows renames no file held open
        // without FILE_SHARE_DELETE.
        self.file = None;
        let _ = std::fs::rename(&self.path, self.path.with_extension("log.old"));
        self.len = 0;
        self.file = Some(self.reopen()?);
        Ok(())
    }
}

impl std::io::Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(self.reopen()?),
        };
        let n = file.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), std::io::Write::flush)
    }
}

/// Installs the subscriber writing to `path` (appended; set aside as
/// `<path>.old` past 10 MiB, at start or while running). Falls back to
/// stderr when the file cannot be opened.
pub fn init_file(level: &str, path: &std::path::Path) {
    let file = match RotatingFile::open(path, LOG_FILE_MAX) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_log_file_is_set_aside_when_it_grows_past_its_limit() {
        let dir = std::env::temp_dir().join(format!("sightline-logrotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("agent.log");
        let old = dir.join("agent.log.old");
        let mut log = RotatingFile::open(&path, 100).expect("open");
        log.write_all(&[b'a'; 60]).expect("write");
        assert!(!old.exists(), "under the limit: kept");
        log.write_all(&[b'b'; 60]).expect("write");
        assert_eq!(std::fs::read(&old).expect(".old"), vec![b'a'; 60]);
        assert_eq!(std::fs::read(&path).expect("new log"), vec![b'b'; 60]);
        log.write_all(&[b'c'; 60]).expect("write");
        assert_eq!(
            std::fs::read(&old).expect(".old"),
            vec![b'b'; 60],
            "replaced"
        );
        assert_eq!(std::fs::read(&path).expect("new log"), vec![b'c'; 60]);
        drop(log);
        // Reopened past the limit: set aside at start.
        std::fs::write(&path, [b'd'; 150]).expect("grow");
        let log = RotatingFile::open(&path, 100).expect("reopen");
        assert_eq!(std::fs::read(&old).expect(".old").len(), 150);
        assert_eq!(std::fs::metadata(&path).expect("log").len(), 0);
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
