//! Paging counters from `/proc/vmstat`.

use super::parse::ParseError;

const FILE: &str = "vmstat";

/// Cumulative paging counters since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmStat {
    /// Page faults (minor and major).
    pub page_faults: u64,
    /// Major page faults (needed a read from disk).
    pub major_faults: u64,
    /// Pages swapped in.
    pub swap_in: u64,
    /// Pages swapped out.
    pub swap_out: u64,
}

/// Parses `/proc/vmstat` (`name value` lines; unknown names are skipped).
pub fn parse_vmstat(text: &str) -> Result<VmStat, ParseError> {
    let mut v = VmStat::default();
    for (index, line) in text.lines().enumerate() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let slot = match key {
            "pgfault" => &mut v.page_faults,
            "pgmajfault" => &mut v.major_faults,
            "pswpin" => &mut v.swap_in,
            "pswpout" => &mut v.swap_out,
            _ => continue,
        };
        *slot = value.trim().parse().map_err(|_| {
            ParseError::new(FILE, index + 1, format!("{key}: '{value}' is not a number"))
        })?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_file() {
        let v = parse_vmstat(include_str!("../../tests/fixtures/vm-2cpu/vmstat")).expect("parses");
        assert!(v.page_faults > 0);
        assert!(v.major_faults <= v.page_faults);
        assert!(parse_vmstat("pgfault many\n").is_err());
    }
}
