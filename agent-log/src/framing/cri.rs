//! The Kubernetes CRI container log line: `<RFC 3339 time> <stream>
//! <tags> <text>`, the first tag `P` (partial: the line continues in the
//! next one) or `F` (full). Parsing only: never allocates, never decides
//! what a malformed line becomes (the framer keeps it as a plain record).

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One parsed CRI line; `text` borrows from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CriLine<'a> {
    pub(crate) time_ms: i64,
    pub(crate) stream: Stream,
    /// True for a `P` line: the text continues in the next line.
    pub(crate) partial: bool,
    pub(crate) text: &'a str,
}

/// Parses `line` (its line end removed), or `None` when it is not a CRI
/// line.
pub(crate) fn parse_line(line: &str) -> Option<CriLine<'_>> {
    let (time, rest) = line.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let stream = match stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    // The tags end at the next space; a full line with empty text may end
    // right after them.
    let (tags, text) = rest.split_once(' ').unwrap_or((rest, ""));
    let partial = match tags.split(':').next() {
        Some("P") => true,
        Some("F") => false,
        _ => return None,
    };
    Some(CriLine {
        time_ms: parse_rfc3339_ms(time)?,
        stream,
        partial,
        text,
    })
}

/// `2024-01-01T00:00:00.123456789Z` (or with a `+hh:mm`/`-hh:mm` offset,
/// as CRI-O writes) as unix milliseconds; the fraction is truncated.
pub(crate) fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second (60) is read as the last second of its minute.
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        i += 1;
        let first = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - first < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == first {
            return None;
        }
        for _ in (i - first)..3 {
            millis *= 10;
        }
    }
    let offset_s = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_s;
    Some(secs * 1000 + millis)
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_lines_parse() {
        let line = parse_line("2024-01-01T00:00:00.123456789Z stdout F hello world").expect("cri");
        assert_eq!(line.time_ms, 1_704_067_200_123);
        assert_eq!(line.stream, Stream::Stdout);
        assert!(!line.partial);
        assert_eq!(line.text, "hello world");
        let line = parse_line("2024-01-01T00:00:00Z stderr P part").expect("cri");
        assert_eq!(line.time_ms, 1_704_067_200_000);
        assert_eq!(line.stream, Stream::Stderr);
        assert!(line.partial);
        assert_eq!(line.text, "part");
    }

    #[test]
    fn empty_text_and_extra_tags_parse() {
        assert_eq!(
            parse_line("2024-01-01T00:00:00Z stdout F")
                .expect("cri")
                .text,
            ""
        );
        assert_eq!(
            parse_line("2024-01-01T00:00:00Z stdout F ")
                .expect("cri")
                .text,
            ""
        );
        let line = parse_line("2024-01-01T00:00:00Z stdout P:x  two spaces").expect("cri");
        assert!(line.partial);
        assert_eq!(line.text, " two spaces");
    }

    #[test]
    fn cri_o_offsets_are_applied() {
        let utc = parse_rfc3339_ms("2024-01-01T02:00:00.5+02:00").expect("time");
        assert_eq!(utc, 1_704_067_200_500);
        let west = parse_rfc3339_ms("2023-12-31T19:00:00-05:00").expect("time");
        assert_eq!(west, 1_704_067_200_000);
    }

    #[test]
    fn malformed_lines_are_not_cri() {
        for line in [
            "",
            "hello world",
            "2024-01-01T00:00:00Z stdout",
            "2024-01-01T00:00:00Z stdin F x",
            "2024-01-01T00:00:00Z stdout X x",
            "2024-13-01T00:00:00Z stdout F x",
            "2024-01-01T00:00:00 stdout F x",
            "2024-01-01T00:00:00.Z stdout F x",
            "2024-01-01T00:00:00Zjunk stdout F x",
            "2024-01-01T0a:00:00Z stdout F x",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_a_panic(line in "\\PC{0,80}") {
            let _ = parse_line(&line);
            let _ = parse_rfc3339_ms(&line);
        }

        #[test]
        fn a_cri_line_gives_back_its_text(
            ms in 0i64..4_102_444_800_000,
            stderr in proptest::bool::ANY,
            partial in proptest::bool::ANY,
            text in "[^\n]{0,40}",
        ) {
            let secs = ms / 1000;
            let (days, rest) = (secs / 86_400, secs % 86_400);
            // Back from days to a date (Hinnant's civil_from_days).
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let day = doy - (153 * mp + 2) / 5 + 1;
            let month = if mp < 10 { mp + 3 } else { mp - 9 };
            let year = yoe + era * 400 + i64::from(month <= 2);
            let line = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}456789Z {} {} {text}",
                rest / 3600,
                rest / 60 % 60,
                rest % 60,
                ms % 1000,
                if stderr { "stderr" } else { "stdout" },
                if partial { "P" } else { "F" },
            );
            let parsed = parse_line(&line).expect("a CRI line");
            proptest::prop_assert_eq!(parsed.time_ms, ms);
            proptest::prop_assert_eq!(parsed.partial, partial);
            proptest::prop_assert_eq!(parsed.stream == Stream::Stderr, stderr);
            proptest::prop_assert_eq!(parsed.text, text.as_str());
        }
    }

    #[test]
    fn dates_before_and_after_leap_days() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T23:59:59.999Z"),
            Some(1_709_251_199_999)
        );
    }
}
