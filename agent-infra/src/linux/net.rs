//! Network interfaces from `/proc/net/dev`, TCP connections by state from
//! `/proc/net/tcp` and `/proc/net/tcp6`.

use super::parse::{ParseError, u64_fields};

const DEV: &str = "net/dev";

pub use crate::interface::IfCounters;

/// One interface line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfLine {
    /// Interface name.
    pub name: String,
    /// Its counters.
    pub counters: IfCounters,
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`).
pub fn parse_net_dev(text: &str) -> Result<Vec<IfLine>, ParseError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let v = u64_fields(DEV, index + 1, rest.split_ascii_whitespace())?;
        if v.len() < 16 {
            return Err(ParseError::new(
                DEV,
                index + 1,
                format!("{} counters, expected 16", v.len()),
            ));
        }
        out.push(IfLine {
            name: name.trim().to_string(),
            counters: IfCounters {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_drops: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_drops: v[11],
            },
        });
    }
    Ok(out)
}

/// The TCP counters the kernel keeps anyway: cheap to read every cycle,
/// unlike a walk of every connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSummary {
    /// Sockets in use, IPv4 and IPv6 (`sockstat` `inuse`, time-wait excluded).
    pub in_use: u64,
    /// Connections in TIME-WAIT (`sockstat` `tw`).
    pub time_wait: u64,
    /// Orphaned sockets (`sockstat` `orphan`).
    pub orphans: u64,
}

/// Adds one `sockstat` file's TCP line to `summary` (`TCP:` in `sockstat`,
/// `TCP6:` in `sockstat6`, which has only `inuse`).
pub fn add_sockstat(text: &str, summary: &mut TcpSummary) {
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("TCP:")
            .or_else(|| line.strip_prefix("TCP6:"))
        else {
            continue;
        };
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        for pair in fields.chunks(2) {
            let [key, value] = pair else { continue };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            match *key {
                "inuse" => summary.in_use += value,
                "tw" => summary.time_wait += value,
                "orphan" => summary.orphans += value,
                _ => {}
            }
        }
    }
}

/// `CurrEstab` from `/proc/net/snmp`: connections in ESTABLISHED or
/// CLOSE-WAIT (RFC 1213's tcpCurrEstab).
pub fn parse_curr_estab(text: &str) -> Option<u64> {
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let header = tcp.next()?;
    let values = tcp.next()?;
    let at = header
        .split_ascii_whitespace()
        .position(|f| f == "CurrEstab")?;
    values.split_ascii_whitespace().nth(at)?.parse().ok()
}

/// TCP states as the kernel numbers them (`include/net/tcp_states.h`), in
/// the names `ss` prints.
pub const TCP_STATES: [&str; 12] = [
    "established",
    "syn-sent",
    "syn-recv",
    "fin-wait-1",
    "fin-wait-2",
    "time-wait",
    "close",
    "close-wait",
    "last-ack",
    "listen",
    "closing",
    "new-syn-recv",
];

/// Adds the connections of one `/proc/net/tcp*` file to `counts`, indexed
/// as [`TCP_STATES`]. Reads only the state column.
pub fn count_tcp_states(text: &str, counts: &mut [u64; 12]) {
    for line in text.lines().skip(1) {
        let Some(state) = line.split_ascii_whitespace().nth(3) else {
            continue;
        };
        if let Ok(n) = u8::from_str_radix(state, 16)
            && (1..=12).contains(&n)
        {
            counts[usize::from(n - 1)] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_net_dev() {
        let ifs =
            parse_net_dev(include_str!("../../tests/fixtures/vm-2cpu/net_dev")).expect("parses");
        let names: Vec<&str> = ifs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lo", "ifb0", "ifb1", "eth0"]);
        let eth0 = &ifs[3].counters;
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.tx_bytes,
                eth0.tx_packets
            ),
            (131_452_719, 7934, 553_716, 4845)
        );
    }

    #[test]
    fn reads_the_kernels_tcp_counters() {
        let mut summary = TcpSummary::default();
        add_sockstat(
            include_str!("../../tests/fixtures/vm-2cpu/net_sockstat"),
            &mut summary,
        );
        add_sockstat(
            include_str!("../../tests/fixtures/vm-2cpu/net_sockstat6"),
            &mut summary,
        );
        assert!(summary.in_use >= 1);
        let mut s = TcpSummary::default();
        add_sockstat(
            "sockets: used 9\nTCP: inuse 7 orphan 1 tw 12 alloc 9 mem 3\nUDP: inuse 2\n",
            &mut s,
        );
        add_sockstat("TCP6: inuse 3\nUDP6: inuse 1\n", &mut s);
        assert_eq!(
            s,
            TcpSummary {
                in_use: 10,
                time_wait: 12,
                orphans: 1
            }
        );
        assert!(parse_curr_estab(include_str!("../../tests/fixtures/vm-2cpu/net_snmp")).is_some());
        let snmp = "Tcp: RtoAlgorithm RtoMin CurrEstab InSegs\nTcp: 1 200 42 1000\nUdp: InDatagrams\nUdp: 5\n";
        assert_eq!(parse_curr_estab(snmp), Some(42));
    }

    #[test]
    fn counts_tcp_states() {
        let mut counts = [0u64; 12];
        count_tcp_states(
            include_str!("../../tests/fixtures/vm-2cpu/net_tcp"),
            &mut counts,
        );
        assert!(counts[9] >= 1, "something listens: {counts:?}");
        let mut counts = [0u64; 12];
        let text = "  sl  local rem st\n 0: A:1 B:2 01 x\n 1: A:1 B:2 01 x\n 2: A:1 B:2 06 x\n 3: A:1 B:2 0A x\n";
        count_tcp_states(text, &mut counts);
        assert_eq!((counts[0], counts[5], counts[9]), (2, 1, 1));
    }
}
