//! The `key=value` line syntax. Pure: text in, lines out, no IO.
//!
//! Never echoes a line or key unredacted: a secret pasted on the wrong line
//! (a license without `license=`) must not end up in an error.

use std::path::Path;

use super::ConfigError;
use crate::license::redact;

/// One `key=value` line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) number: usize,
    pub(super) key: String,
    pub(super) value: String,
}

/// Splits `text` into `key=value` lines. Blank lines and lines starting
/// with `#` are skipped; anything else that is not `key=value` with a valid
/// key is an error naming `path` and the line.
pub(super) fn parse_text(path: &Path, text: &str) -> Result<Vec<Line>, ConfigError> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let error = |reason: String| ConfigError::Syntax {
            path: path.to_path_buf(),
            line: number,
            reason,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(error(format!(
                "expected key=value, got '{}'",
                shorten(line)
            )));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(error("missing key before '='".to_string()));
        }
        if let Some(bad) = key.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(error(format!(
                "invalid character '{bad}' in key '{}': keys are lower-case words joined by dots",
                shorten(key)
            )));
        }
        if key.starts_with('.') || key.ends_with('.') || key.contains("..") {
            return Err(error(format!("empty segment in key '{}'", shorten(key))));
        }
        lines.push(Line {
            number,
            key: key.to_string(),
            value: unquote(value.trim()).to_string(),
        });
    }
    Ok(lines)
}

/// `"a b"` becomes `a b`; anything else is kept as written.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

/// Keeps error messages to one readable line, and never echoes anything
/// shaped like a secret ([`redact`]): it may be a key pasted on the wrong
/// line. Redacts before cutting, so a cut never turns a key into something
/// that no longer looks like one.
fn shorten(text: &str) -> String {
    const MAX: usize = 24;
    let text = redact(text);
    if text.chars().count() <= MAX {
        text
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}
