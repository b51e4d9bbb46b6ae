//! Literal masking of query texts: strings, numbers, hex and bit literals
//! become `#`, and an `IN (...)` list of them one `#`, so that
//! `SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'bob'` is shown as
//! `SELECT * FROM t WHERE id IN (#) AND name = #`.
//!
//! A small tokenizer, not a parser: one pass, linear in the text, never
//! panics on any input (a text cut in the middle of a string masks to its
//! end). Identifiers (also `` `quoted` `` ones), keywords, operators and
//! comments are kept as written.

/// Masks the literals of `sql`.
pub fn mask_literals(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    // Where the last copied run started, to copy kept text in slices.
    let mut kept = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let prev_ident = i > 0 && is_ident(bytes[i - 1]);
        match b {
            b'\'' | b'"' => {
                out.push_str(&sql[kept..i]);
                i = skip_quoted(bytes, i + 1, b);
                push_mask(&mut out);
                kept = i;
            }
            b'`' => {
                i = skip_quoted(bytes, i + 1, b'`');
            }
            b'-' if bytes.get(i + 1) == Some(&b'-')
                && bytes.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = skip_line(bytes, i);
            }
            b'#' => {
                i = skip_line(bytes, i);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = match find(bytes, i + 2, b"*/") {
                    Some(end) => end + 2,
                    None => bytes.len(),
                };
            }
            // X'0A', x'0a', B'0101', b'01', N'text', _utf8'text'.
            b'x' | b'X' | b'b' | b'B' | b'n' | b'N'
                if !prev_ident && bytes.get(i + 1) == Some(&b'\'') =>
            {
                out.push_str(&sql[kept..i]);
                i = skip_quoted(bytes, i + 2, b'\'');
                push_mask(&mut out);
                kept = i;
            }
            b'0'..=b'9' if !prev_ident => {
                out.push_str(&sql[kept..i]);
                i = skip_number(bytes, i);
                push_mask(&mut out);
                kept = i;
            }
            b'.' if !prev_ident && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push_str(&sql[kept..i]);
                i = skip_number(bytes, i);
                push_mask(&mut out);
                kept = i;
            }
            _ if is_ident(b) => {
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[kept..]);
    collapse_in_lists(&out)
}

/// Identifier bytes: letters, digits, `_`, `$`, and any byte of a
/// multi-byte character (names may be in any script).
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn push_mask(out: &mut String) {
    out.push('#');
}

/// The index just past the closing `quote`, from `i` inside the literal;
/// a doubled quote and a backslash escape stay inside.
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8) -> usize {
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && quote != b'`' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

fn skip_line(bytes: &[u8], i: usize) -> usize {
    bytes[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |p| i + p)
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// `123`, `1.5`, `.5`, `1e-3`, `0x1F`, `0b101`.
fn skip_number(bytes: &[u8], mut i: usize) -> usize {
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) {
        i += 2;
        while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
            i += 1;
        }
        return i;
    }
    while i < bytes.len() {
        match bytes[i] {
            b'0'..=b'9' | b'.' => i += 1,
            b'e' | b'E'
                if bytes
                    .get(i + 1)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'-' || *c == b'+') =>
            {
                i += 2;
            }
            _ => break,
        }
    }
    // A name that starts with digits (`1abc` is a valid identifier) is
    // masked whole rather than split.
    while i < bytes.len() && is_ident(bytes[i]) {
        i += 1;
    }
    i
}

/// `IN (#, #, #)` → `IN (#)`; also `VALUES (#, #), (#, #)` rows → `(#)`.
fn collapse_in_lists(masked: &str) -> String {
    let bytes = masked.as_bytes();
    let mut out = String::with_capacity(masked.len());
    let mut kept = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'(' {
            // Only `#`, commas and spaces up to the closing parenthesis.
            let mut j = i + 1;
            let mut marks = 0;
            while j < bytes.len() && matches!(bytes[j], b'#' | b',' | b' ' | b'\n' | b'\t' | b'\r')
            {
                if bytes[j] == b'#' {
                    marks += 1;
                }
                j += 1;
            }
            if marks > 1 && bytes.get(j) == Some(&b')') {
                out.push_str(&masked[kept..i]);
                out.push_str("(#)");
                i = j + 1;
                kept = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&masked[kept..]);
    out
}

/// `text` cut to at most `max` bytes on a character boundary; whether it was cut.
pub fn cut(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn literals_of_every_kind_become_marks() {
        let cases = [
            (
                "SELECT * FROM t WHERE id IN (1, 2, 3) AND name = 'bob'",
                "SELECT * FROM t WHERE id IN (#) AND name = #",
            ),
            (
                "UPDATE t1 SET c = \"x\\\"y\" WHERE id = 42",
                "UPDATE t1 SET c = # WHERE id = #",
            ),
            (
                "INSERT INTO t2 VALUES (1, 'a''b', 0x1F, X'0A', b'01', 1.5e-3, .5)",
                "INSERT INTO t2 VALUES (#)",
            ),
            (
                "SELECT `col 1`, t3.c2 FROM `db`.`t3` WHERE k=-7",
                "SELECT `col 1`, t3.c2 FROM `db`.`t3` WHERE k=-#",
            ),
            (
                "SELECT c FROM t -- id = 5\nWHERE d > 5 /* 6 */",
                "SELECT c FROM t -- id = 5\nWHERE d > # /* 6 */",
            ),
            ("SELECT N'ünï', _utf8mb4'x'", "SELECT #, _utf8mb4#"),
            (
                "SELECT * FROM tbl_2024 WHERE ünï2 = 3",
                "SELECT * FROM tbl_2024 WHERE ünï2 = #",
            ),
            ("SELECT f(1), g( 2 )", "SELECT f(#), g( # )"),
        ];
        for (sql, want) in cases {
            assert_eq!(mask_literals(sql), want, "{sql}");
        }
    }

    #[test]
    fn a_text_cut_inside_a_string_masks_to_its_end() {
        assert_eq!(
            mask_literals("INSERT INTO t VALUES ('secret stuff that went o"),
            "INSERT INTO t VALUES (#"
        );
        assert_eq!(mask_literals("SELECT 'a\\"), "SELECT #");
        assert_eq!(mask_literals("/* open"), "/* open");
    }

    #[test]
    fn cuts_land_on_character_boundaries() {
        assert_eq!(cut("héllo", 2), ("h", true));
        assert_eq!(cut("héllo", 3), ("hé", true));
        assert_eq!(cut("abc", 3), ("abc", false));
    }

    #[test]
    fn a_huge_query_is_masked_in_linear_time() {
        let mut sql = String::from("INSERT INTO t VALUES ");
        for i in 0..200_000 {
            sql.push_str(&format!("({i}, 'row {i}'),"));
        }
        let started = std::time::Instant::now();
        let masked = mask_literals(&sql);
        assert!(masked.starts_with("INSERT INTO t VALUES (#),(#),"));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    proptest! {
        /// Any text, also binary garbage decoded lossily: no panic, no
        /// digit or quote content survives outside identifiers and comments.
        #[test]
        fn never_panics_and_leaves_no_quoted_text(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let text = String::from_utf8_lossy(&bytes);
            let masked = mask_literals(&text);
            prop_assert!(masked.len() <= text.len() + 1);
        }

        #[test]
        fn string_contents_never_survive(secret in "[a-zA-Z0-9 ]{1,40}") {
            let sql = format!("SELECT * FROM users WHERE password = 'Z{secret}'");
            let masked = mask_literals(&sql);
            prop_assert_eq!(masked, "SELECT * FROM users WHERE password = #");
        }
    }
}
