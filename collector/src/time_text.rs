//! Times as the API reads and writes them: unix milliseconds or RFC 3339.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix milliseconds (`1700000000000`) or RFC 3339
/// (`2026-11-22T18:00:00Z`, `2026-11-23T03:00:00+09:00`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        format!(
            "expected unix milliseconds or an RFC 3339 time like 2026-11-22T18:00:00Z, got '{text}'"
        )
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("out of range: '{text}'"))
}

/// RFC 3339 in UTC with milliseconds: `2026-11-22T18:00:00.123Z`.
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_millis_and_rfc3339_with_offsets() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert_eq!(
            parse_time("2023-11-15T07:13:20+09:00"),
            Ok(1_700_000_000_000)
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn writes_utc_rfc3339() {
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
