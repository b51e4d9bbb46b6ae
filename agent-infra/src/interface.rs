//! A network interface's cumulative counters and the `net.*_per_sec`
//! rates between two readings of them: the same names on every OS, so the
//! console and alert rules read Linux and Windows hosts alike.
//!
//! Invariant: OS-neutral; `linux/` and `windows/` fill [`IfCounters`] from
//! their own sources and never spell the metric names themselves.

use agent_core::Sample;

/// Cumulative counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_drops: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets dropped on send.
    pub tx_drops: u64,
}

/// Pushes `iface`'s eight `net.*_per_sec` rates from `before` to `now`,
/// `secs` apart; nothing when no time passed. A counter that went back
/// (a driver reset) counts as zero.
pub fn push_rates(
    samples: &mut Vec<Sample>,
    iface: &str,
    now: &IfCounters,
    before: &IfCounters,
    secs: f64,
) {
    if secs <= 0.0 {
        return;
    }
    let rate = |cur: u64, prev: u64| cur.saturating_sub(prev) as f64 / secs;
    for (name, value) in [
        ("net.rx_bytes_per_sec", rate(now.rx_bytes, before.rx_bytes)),
        ("net.tx_bytes_per_sec", rate(now.tx_bytes, before.tx_bytes)),
        (
            "net.rx_packets_per_sec",
            rate(now.rx_packets, before.rx_packets),
        ),
        (
            "net.tx_packets_per_sec",
            rate(now.tx_packets, before.tx_packets),
        ),
        (
            "net.rx_errors_per_sec",
            rate(now.rx_errors, before.rx_errors),
        ),
        (
            "net.tx_errors_per_sec",
            rate(now.tx_errors, before.tx_errors),
        ),
        ("net.rx_drops_per_sec", rate(now.rx_drops, before.rx_drops)),
        ("net.tx_drops_per_sec", rate(now.tx_drops, before.tx_drops)),
    ] {
        samples.push(Sample::new(name, value).label("iface", iface.to_string()));
    }
}
