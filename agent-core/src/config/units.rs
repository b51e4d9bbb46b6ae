//! Durations, sizes and booleans as operators write them.

use std::time::Duration;

/// `5s`, `1m`, `500ms`, `1h30m`, `7d`. A bare number is refused: the unit is
/// what tells a reader whether `5` meant seconds or minutes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "expected a duration with a unit like 5s or 1m, got '{text}'"
        ));
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("expected a duration like 5s, 1m or 7d, got '{text}'"))
}

/// `64MiB`, `512KiB`, `1GB`, `4096` (bytes). Binary units (KiB, MiB, GiB)
/// are powers of 1024, decimal ones (KB, MB, GB) powers of 1000.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("expected a size like 64MiB or 512KiB, got '{text}'");
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0`.
pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("expected true or false, got '{text}'")),
    }
}
