//! A line's bytes become UTF-8 text: valid UTF-8 is borrowed as it is,
//! invalid sequences are replaced with U+FFFD and counted, UTF-16 is
//! decoded; a byte-order mark is recognised. Never allocates when the
//! line is valid UTF-8 (the common case); otherwise writes into the
//! caller's reused buffer.

use super::Encoding;

/// The byte-order mark at the start of `head` and its length, or `None`
/// when `head` starts with none. `Some((_, 0))` is never returned.
pub(crate) fn bom(head: &[u8]) -> Option<(Encoding, usize)> {
    match head {
        [0xEF, 0xBB, 0xBF, ..] => Some((Encoding::Utf8, 3)),
        [0xFF, 0xFE, ..] => Some((Encoding::Utf16Le, 2)),
        [0xFE, 0xFF, ..] => Some((Encoding::Utf16Be, 2)),
        _ => None,
    }
}

/// Whether `head` could still grow into a byte-order mark.
pub(crate) fn may_be_bom(head: &[u8]) -> bool {
    matches!(head, [] | [0xEF] | [0xEF, 0xBB] | [0xFF] | [0xFE])
}

/// Decodes `raw` (a line without its `\n`) and returns its text, with a
/// trailing `\r` removed and at most `max` bytes long (cut on a character
/// boundary). `cut` says the raw bytes were already cut, so an incomplete
/// character at their end is dropped rather than replaced. Returns the
/// text, whether it was cut here, and how many invalid sequences were
/// replaced.
pub(crate) fn decode<'a>(
    encoding: Encoding,
    raw: &'a [u8],
    cut: bool,
    max: usize,
    scratch: &'a mut String,
) -> (&'a str, bool, u64) {
    let (text, invalid): (&str, u64) = match encoding {
        Encoding::Utf8 => {
            let raw = if cut { trim_incomplete_utf8(raw) } else { raw };
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            match std::str::from_utf8(raw) {
                Ok(text) => (text, 0),
                Err(_) => {
                    let invalid = utf8_lossy_into(raw, scratch);
                    (scratch.as_str(), invalid)
                }
            }
        }
        Encoding::Utf16Le | Encoding::Utf16Be => {
            let raw = if cut {
                trim_high_surrogate(encoding, raw)
            } else {
                raw
            };
            let invalid = utf16_into(encoding, raw, scratch);
            if scratch.ends_with('\r') {
                scratch.pop();
            }
            (scratch.as_str(), invalid)
        }
    };
    if text.len() > max {
        (floor_char(text, max), true, invalid)
    } else {
        (text, false, invalid)
    }
}

/// The longest prefix of `text` at most `max` bytes long that ends on a
/// character boundary.
pub(crate) fn floor_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `raw` without an incomplete UTF-8 sequence at its end (one cut by a
/// length limit).
fn trim_incomplete_utf8(raw: &[u8]) -> &[u8] {
    // A sequence is at most 4 bytes: look back at most 3 for its lead.
    for back in 1..=raw.len().min(3) {
        let byte = raw[raw.len() - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte
        }
        let needs = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needs > back {
            &raw[..raw.len() - back]
        } else {
            raw
        };
    }
    raw
}

/// UTF-16 `raw` without a high surrogate at its end (its pair cut away by
/// a length limit).
fn trim_high_surrogate(encoding: Encoding, raw: &[u8]) -> &[u8] {
    let whole = &raw[..raw.len() & !1];
    let last = match (encoding, whole) {
        (Encoding::Utf16Be, [.., hi, lo]) => u16::from_be_bytes([*hi, *lo]),
        (_, [.., lo, hi]) => u16::from_le_bytes([*lo, *hi]),
        _ => return whole,
    };
    if (0xD800..0xDC00).contains(&last) {
        &whole[..whole.len() - 2]
    } else {
        whole
    }
}

/// Writes `raw` into `out` with each invalid sequence replaced by U+FFFD;
/// returns how many were replaced.
fn utf8_lossy_into(raw: &[u8], out: &mut String) -> u64 {
    out.clear();
    let mut invalid = 0;
    for chunk in raw.utf8_chunks() {
        out.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
            invalid += 1;
        }
    }
    invalid
}

/// Decodes UTF-16 `raw` into `out`, unpaired surrogates (and an odd last
/// byte) replaced by U+FFFD; returns how many were replaced.
fn utf16_into(encoding: Encoding, raw: &[u8], out: &mut String) -> u64 {
    out.clear();
    let units = raw.chunks_exact(2).map(|pair| {
        let pair = [pair[0], pair[1]];
        if encoding == Encoding::Utf16Be {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        }
    });
    let mut invalid = 0;
    for unit in char::decode_utf16(units) {
        out.push(unit.unwrap_or_else(|_| {
            invalid += 1;
            char::REPLACEMENT_CHARACTER
        }));
    }
    if raw.len() % 2 == 1 {
        out.push(char::REPLACEMENT_CHARACTER);
        invalid += 1;
    }
    invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf8(raw: &[u8], cut: bool, max: usize) -> (String, bool, u64) {
        let mut scratch = String::new();
        let (text, cut, invalid) = decode(Encoding::Utf8, raw, cut, max, &mut scratch);
        (text.to_string(), cut, invalid)
    }

    #[test]
    fn valid_utf8_passes_and_a_carriage_return_goes() {
        assert_eq!(
            utf8(b"caf\xc3\xa9\r", false, 100),
            ("café".into(), false, 0)
        );
        assert_eq!(utf8(b"", false, 100), ("".into(), false, 0));
        assert_eq!(utf8(b"\r", false, 100), ("".into(), false, 0));
    }

    #[test]
    fn invalid_bytes_are_replaced_and_counted() {
        assert_eq!(
            utf8(b"a\xffb\xc3(c\xed\xa0\x80", false, 100),
            (
                "a\u{fffd}b\u{fffd}(c\u{fffd}\u{fffd}\u{fffd}".into(),
                false,
                5
            )
        );
    }

    #[test]
    fn a_cut_line_loses_its_incomplete_last_character_not_to_a_replacement() {
        // "é" is C3 A9; the limit took only C3.
        assert_eq!(utf8(b"abc\xc3", true, 100), ("abc".into(), false, 0));
        // A complete character at the end stays.
        assert_eq!(utf8(b"ab\xc3\xa9", true, 100), ("abé".into(), false, 0));
        // 4-byte character cut after 3 bytes.
        assert_eq!(utf8(b"a\xf0\x9f\x98", true, 100), ("a".into(), false, 0));
    }

    #[test]
    fn text_longer_than_the_limit_is_cut_on_a_character_boundary() {
        assert_eq!(utf8("ééé".as_bytes(), false, 5), ("éé".into(), true, 0));
        // Replacements make text longer than the raw bytes.
        assert_eq!(utf8(b"\xff\xff", false, 4), ("\u{fffd}".into(), true, 2));
    }

    #[test]
    fn utf16_both_orders_and_bad_surrogates() {
        let mut scratch = String::new();
        let le: Vec<u8> = "hé\r".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let (text, _, invalid) = decode(Encoding::Utf16Le, &le, false, 100, &mut scratch);
        assert_eq!((text, invalid), ("hé", 0));
        let be: Vec<u8> = "😀x".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let (text, _, invalid) = decode(Encoding::Utf16Be, &be, false, 100, &mut scratch);
        assert_eq!((text, invalid), ("😀x", 0));
        let lone = [0x00, 0xD8, b'a', 0];
        let (text, _, invalid) = decode(Encoding::Utf16Le, &lone, false, 100, &mut scratch);
        assert_eq!((text, invalid), ("\u{fffd}a", 1));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_within_the_limit(
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            cut in proptest::bool::ANY,
            max in 1usize..40,
        ) {
            let mut scratch = String::new();
            for encoding in [Encoding::Utf8, Encoding::Utf16Le, Encoding::Utf16Be] {
                let (text, _, invalid) = decode(encoding, &raw, cut, max, &mut scratch);
                proptest::prop_assert!(text.len() <= max);
                if encoding == Encoding::Utf8 && std::str::from_utf8(&raw).is_ok() {
                    proptest::prop_assert_eq!(invalid, 0);
                }
            }
        }
    }

    #[test]
    fn byte_order_marks() {
        assert_eq!(bom(b"\xef\xbb\xbfx"), Some((Encoding::Utf8, 3)));
        assert_eq!(bom(b"\xff\xfex"), Some((Encoding::Utf16Le, 2)));
        assert_eq!(bom(b"\xfe\xff"), Some((Encoding::Utf16Be, 2)));
        assert_eq!(bom(b"\xef\xbb"), None);
        assert!(may_be_bom(b"\xef\xbb"));
        assert!(may_be_bom(b"\xff"));
        assert!(!may_be_bom(b"\xef\xbc"));
        assert!(!may_be_bom(b"\xffx"));
        assert!(!may_be_bom(b"x"));
    }
}
