//! Memory and swap from `/proc/meminfo`.
//!
//! "Used" is total minus available (`MemAvailable`, the kernel's own
//! estimate of what can be handed out without swapping), as `free` prints
//! it. Kernels older than 3.14 have no `MemAvailable`; there it is
//! approximated as free + buffers + cached + reclaimable slab.

use super::parse::ParseError;

const FILE: &str = "meminfo";

/// A reading of `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// Physical memory.
    pub total: u64,
    /// Unused.
    pub free: u64,
    /// Can be handed out without swapping.
    pub available: u64,
    /// Block device buffers.
    pub buffers: u64,
    /// Page cache (without swap cache).
    pub cached: u64,
    /// Swap space.
    pub swap_total: u64,
    /// Unused swap.
    pub swap_free: u64,
}

impl MemInfo {
    /// Total minus available.
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }

    /// Swap in use.
    pub fn swap_used(&self) -> u64 {
        self.swap_total.saturating_sub(self.swap_free)
    }
}

/// Parses `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ParseError> {
    let mut info = MemInfo::default();
    let mut available = None;
    let mut reclaimable = 0;
    let mut saw_total = false;
    for (index, line) in text.lines().enumerate() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let Some(value) = fields.next() else { continue };
        let value: u64 = value.parse().map_err(|_| {
            ParseError::new(FILE, index + 1, format!("{key}: '{value}' is not a number"))
        })?;
        let bytes = match fields.next() {
            Some("kB") => value * 1024,
            _ => value,
        };
        match key {
            "MemTotal" => {
                info.total = bytes;
                saw_total = true;
            }
            "MemFree" => info.free = bytes,
            "MemAvailable" => available = Some(bytes),
            "Buffers" => info.buffers = bytes,
            "Cached" => info.cached = bytes,
            "SReclaimable" => reclaimable = bytes,
            "SwapTotal" => info.swap_total = bytes,
            "SwapFree" => info.swap_free = bytes,
            _ => {}
        }
    }
    if !saw_total {
        return Err(ParseError::new(FILE, 1, "no MemTotal line"));
    }
    info.available = available
        .unwrap_or(info.free + info.buffers + info.cached + reclaimable)
        .min(info.total);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = include_str!("../../tests/fixtures/vm-2cpu/meminfo");

    #[test]
    fn parses_a_real_file() {
        let m = parse_meminfo(VM).expect("parses");
        assert_eq!(m.total, 24_684_096 * 1024);
        assert_eq!(m.available, 24_339_908 * 1024);
        assert_eq!(m.used(), (24_684_096 - 24_339_908) * 1024);
        assert_eq!(m.swap_total, 0);
    }

    #[test]
    fn old_kernels_without_memavailable_are_approximated() {
        let text = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\nSReclaimable: 25 kB\n";
        let m = parse_meminfo(text).expect("parses");
        assert_eq!(m.available, 375 * 1024);
    }

    #[test]
    fn garbage_is_an_error_not_a_zero() {
        assert!(parse_meminfo("MemTotal: lots kB\n").is_err());
        assert!(parse_meminfo("MemFree: 5 kB\n").is_err());
    }
}
