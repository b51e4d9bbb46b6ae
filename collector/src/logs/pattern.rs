//! Record shapes for pattern analysis: a record's text with its variable
//! parts masked, so that `GET /api/users/17 HTTP/1.1 200` and `GET
//! /api/users/42 HTTP/1.1 404` share the template `GET /api/users/<num>
//! HTTP/1.1 <num>`.
//!
//! Masked: UUIDs (`<uuid>`), IPv4 addresses (`<ip>`), dates and times
//! (ISO 8601, nginx's `24/Nov/2026:01:10:22 +0000`, `01:10:22.5`:
//! `<ts>`), hex ids of 8 or more characters with a digit (`<hex>`), and
//! numbers (`<num>`, also a number glued to a unit: `12ms` is `<num>ms`).
//! Words, punctuation and quoted strings are kept; `HTTP/1.1` is kept as
//! written. Templates are cut at [`MAX_TEMPLATE_BYTES`].
//!
//! Pure and single-pass; never allocates beyond the output.

/// The longest template kept, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 512;

/// The template hash ([`super::text::bytes_hash`], case kept). Stored:
/// changing it changes the block format.
pub fn template_hash(template: &str) -> u64 {
    super::text::bytes_hash(template.as_bytes(), 0)
}

fn digits(b: &[u8], at: usize) -> usize {
    b[at.min(b.len())..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count()
}

fn hex_run(b: &[u8], at: usize) -> usize {
    b[at.min(b.len())..]
        .iter()
        .take_while(|c| c.is_ascii_hexdigit())
        .count()
}

fn byte_is(b: &[u8], at: usize, want: &[u8]) -> bool {
    b.get(at).is_some_and(|c| want.contains(c))
}

fn word_end(b: &[u8], at: usize) -> bool {
    b.get(at).is_none_or(|c| !c.is_ascii_alphanumeric())
}

/// `8-4-4-4-12` hex digits.
fn uuid_len(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    for (k, &want) in [8usize, 4, 4, 4, 12].iter().enumerate() {
        if k > 0 {
            if !byte_is(b, i, b"-") {
                return None;
            }
            i += 1;
        }
        if hex_run(b, i) != want {
            return None;
        }
        i += want;
    }
    word_end(b, i).then_some(i - at)
}

/// `d.d.d.d`, each 1 to 3 digits.
fn ipv4_len(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    for k in 0..4 {
        if k > 0 {
            if !byte_is(b, i, b".") {
                return None;
            }
            i += 1;
        }
        let d = digits(b, i);
        if !(1..=3).contains(&d) {
            return None;
        }
        i += d;
    }
    (word_end(b, i) && !(byte_is(b, i, b".") && digits(b, i + 1) > 0)).then_some(i - at)
}

/// `hh:mm[:ss[.frac]]`, then an optional zone.
fn clock_len(b: &[u8], at: usize) -> Option<usize> {
    if digits(b, at) != 2 || !byte_is(b, at + 2, b":") || digits(b, at + 3) != 2 {
        return None;
    }
    let mut i = at + 5;
    if byte_is(b, i, b":") && digits(b, i + 1) == 2 {
        i += 3;
        if byte_is(b, i, b".,") && digits(b, i + 1) > 0 {
            i += 1 + digits(b, i + 1);
        }
    }
    if byte_is(b, i, b"Z") {
        i += 1;
    } else if byte_is(b, i, b"+-") && digits(b, i + 1) == 2 {
        if byte_is(b, i + 3, b":") && digits(b, i + 4) == 2 {
            i += 6;
        } else if digits(b, i + 1) == 4 {
            i += 5;
        }
    }
    word_end(b, i).then_some(i - at)
}

/// `yyyy-mm-dd[(T| )clock]` or `dd/Mon/yyyy:clock[ +zzzz]`.
fn date_len(b: &[u8], at: usize) -> Option<usize> {
    if digits(b, at) == 4
        && byte_is(b, at + 4, b"-")
        && digits(b, at + 5) == 2
        && byte_is(b, at + 7, b"-")
        && digits(b, at + 8) == 2
    {
        let i = at + 10;
        if byte_is(b, i, b"T ")
            && let Some(c) = clock_len(b, i + 1)
        {
            return Some(i + 1 + c - at);
        }
        return word_end(b, i).then_some(i - at);
    }
    if digits(b, at) == 2
        && byte_is(b, at + 2, b"/")
        && b.get(at + 3..at + 6)
            .is_some_and(|m| m.iter().all(u8::is_ascii_alphabetic))
        && byte_is(b, at + 6, b"/")
        && digits(b, at + 7) == 4
        && byte_is(b, at + 11, b":")
    {
        let c = clock_len(b, at + 12)?;
        let mut i = at + 12 + c;
        if byte_is(b, i, b" ") && byte_is(b, i + 1, b"+-") && digits(b, i + 2) == 4 {
            i += 6;
        }
        return Some(i - at);
    }
    None
}

/// What a byte is, for the scanner.
const OTHER: u8 = 0;
const DIGIT: u8 = 1;
const HEX_LETTER: u8 = 2;
const LETTER: u8 = 3;

static CLASS: [u8; 256] = {
    let mut t = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_hexdigit() {
            HEX_LETTER
        } else if c.is_ascii_alphabetic() {
            LETTER
        } else {
            OTHER
        };
        b += 1;
    }
    t
};

/// A word (a run of ASCII letters and digits) at `at`: its length,
/// whether it is all hex digits, and how many digits it starts with.
fn word_at(b: &[u8], at: usize) -> (usize, bool, usize) {
    let mut i = at;
    let mut all_hex = true;
    let mut lead = 0;
    let mut leading = true;
    while i < b.len() {
        match CLASS[b[i] as usize] {
            DIGIT => {
                if leading {
                    lead += 1;
                }
            }
            HEX_LETTER => leading = false,
            LETTER => {
                leading = false;
                all_hex = false;
            }
            _ => break,
        }
        i += 1;
    }
    (i - at, all_hex, lead)
}

/// The mask for the word of digits at `at` (it starts with `lead`
/// digits), and how many bytes it covers.
fn mask_at(b: &[u8], at: usize, word: usize, all_hex: bool, lead: usize) -> (usize, &'static str) {
    let next = b.get(at + lead).copied().unwrap_or(b' ');
    let special = match (lead, next) {
        (4, b'-') | (2, b'/') => date_len(b, at).map(|n| (n, "<ts>")),
        (2, b':') => clock_len(b, at).map(|n| (n, "<ts>")),
        (1..=3, b'.') => ipv4_len(b, at).map(|n| (n, "<ip>")),
        _ => None,
    };
    if let Some(found) = special {
        return found;
    }
    if word >= 8 && all_hex && word > lead {
        return (word, "<hex>");
    }
    let mut n = lead;
    if next == b'.' && digits(b, at + n + 1) > 0 {
        n += 1 + digits(b, at + n + 1);
    }
    (n, "<num>")
}

/// Writes `text`'s template to `out`.
pub fn template(text: &str, out: &mut String) {
    let b = text.as_bytes();
    let n = b.len();
    let mut i = 0;
    let mut plain_from = 0;
    // `out` only ever receives whole pieces of `text` (cut at ASCII
    // bytes) and ASCII masks, so it stays valid UTF-8.
    let flush = |out: &mut String, from: usize, to: usize| {
        out.push_str(text.get(from..to).unwrap_or_default());
    };
    while i < n && out.len() < MAX_TEMPLATE_BYTES {
        // To the start of the next word.
        while i < n && CLASS[b[i] as usize] == OTHER {
            i += 1;
        }
        if i >= n {
            break;
        }
        let (word, all_hex, lead) = word_at(b, i);
        let uuid = (word == 8 && all_hex && byte_is(b, i + 8, b"-"))
            .then(|| uuid_len(b, i))
            .flatten();
        let (len, mask) = if let Some(len) = uuid {
            (len, "<uuid>")
        } else if lead == 0 {
            if word >= 8 && all_hex && b[i..i + word].iter().any(u8::is_ascii_digit) {
                (word, "<hex>")
            } else {
                // A word such as HTTP: kept, and `HTTP/1.1` with it.
                let mut skip = word;
                if &b[i..i + word] == b"HTTP" && byte_is(b, i + word, b"/") {
                    skip += 1 + b[i + word + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_digit() || **c == b'.')
                        .count();
                }
                i += skip;
                continue;
            }
        } else {
            mask_at(b, i, word, all_hex, lead)
        };
        flush(out, plain_from, i);
        out.push_str(mask);
        i += len;
        plain_from = i;
        // The rest of a word a mask stopped inside (`12ms`) is kept as
        // written.
        while i < n && CLASS[b[i] as usize] != OTHER {
            i += 1;
        }
    }
    if out.len() < MAX_TEMPLATE_BYTES {
        flush(out, plain_from, n);
    }
    if out.len() > MAX_TEMPLATE_BYTES {
        let mut cut = MAX_TEMPLATE_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> String {
        let mut out = String::new();
        template(text, &mut out);
        out
    }

    #[test]
    fn variable_parts_are_masked_and_words_kept() {
        assert_eq!(
            t("GET /api/users/17 HTTP/1.1 200"),
            "GET /api/users/<num> HTTP/1.1 <num>"
        );
        assert_eq!(
            t(
                r#"10.0.0.7 - - [24/Nov/2026:01:10:22 +0000] "GET /x?id=5 HTTP/1.1" 404 153 "-" "curl/8.5.0""#
            ),
            r#"<ip> - - [<ts>] "GET /x?id=<num> HTTP/1.1" <num> <num> "-" "curl/<num>.<num>""#
        );
        assert_eq!(
            t(
                "2026-11-24T01:10:22.123Z req 3f2a9c10de took 12ms user=550e8400-e29b-41d4-a716-446655440000"
            ),
            "<ts> req <hex> took <num>ms user=<uuid>"
        );
        assert_eq!(t("at 01:10:22 v2 é 0.25"), "at <ts> v2 é <num>");
        assert_eq!(t(""), "");
    }

    #[test]
    fn same_shape_same_hash_and_long_text_is_cut_on_a_character() {
        assert_eq!(
            template_hash(&t("took 12ms for 7")),
            template_hash(&t("took 900ms for 70000"))
        );
        let long = "é".repeat(1000);
        let out = t(&long);
        assert!(out.len() <= MAX_TEMPLATE_BYTES && out.starts_with('é'));
    }
}
