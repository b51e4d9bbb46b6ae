//! What the `/proc` parsers share: their error and field helpers.

/// A `/proc` or `/sys` file did not look as expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {reason}")]
pub struct ParseError {
    /// The file, relative to the proc root (`stat`, `meminfo`).
    pub file: &'static str,
    /// 1-based line.
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(file: &'static str, line: usize, reason: impl Into<String>) -> ParseError {
        ParseError {
            file,
            line,
            reason: reason.into(),
        }
    }
}

/// Parses whitespace-separated unsigned fields.
pub(crate) fn u64_fields<'a>(
    file: &'static str,
    line: usize,
    fields: impl Iterator<Item = &'a str>,
) -> Result<Vec<u64>, ParseError> {
    fields
        .map(|f| {
            f.parse::<u64>()
                .map_err(|_| ParseError::new(file, line, format!("'{f}' is not a number")))
        })
        .collect()
}
