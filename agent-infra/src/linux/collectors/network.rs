//! Network interfaces and TCP connections by state.
//!
//! An interface is virtual when sysfs places it under `devices/virtual`
//! (loopback, veth, bridges, tunnels, ifb); virtual interfaces are skipped
//! unless `net.virtual=true` or `net.include` names them.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use agent_core::Sample;

use crate::collect::{Collect, ReadError, Reading};
use crate::glob;
use crate::linux::ProcFs;
use crate::linux::net::{IfCounters, TCP_STATES, count_tcp_states, parse_net_dev};

/// Which interfaces to report.
#[derive(Debug, Clone, Default)]
pub struct NetFilter {
    /// Always reported.
    pub include: Vec<String>,
    /// Never reported (unless included).
    pub exclude: Vec<String>,
    /// Report virtual interfaces.
    pub virtual_too: bool,
}

/// Reads `/proc/net/dev` and `/proc/net/tcp*`.
#[derive(Debug)]
pub struct NetCollector {
    proc: ProcFs,
    sys_class_net: PathBuf,
    filter: NetFilter,
    tcp: bool,
    virtual_cache: HashMap<String, bool>,
    prev: Option<(Instant, HashMap<String, IfCounters>)>,
    buf: String,
}

impl NetCollector {
    /// A collector reading `proc`, classifying interfaces with `<sys>/class/net`.
    pub fn new(proc: ProcFs, sys_root: PathBuf, filter: NetFilter, tcp: bool) -> NetCollector {
        NetCollector {
            proc,
            sys_class_net: sys_root.join("class/net"),
            filter,
            tcp,
            virtual_cache: HashMap::new(),
            prev: None,
            buf: String::new(),
        }
    }

    fn wanted(&mut self, name: &str) -> bool {
        if glob::any(&self.filter.include, name) {
            return true;
        }
        if glob::any(&self.filter.exclude, name) {
            return false;
        }
        if self.filter.virtual_too {
            return true;
        }
        let link = &self.sys_class_net;
        let is_virtual = *self
            .virtual_cache
            .entry(name.to_string())
            .or_insert_with(|| {
                std::fs::read_link(link.join(name))
                    .is_ok_and(|target| target.to_string_lossy().contains("/virtual/"))
            });
        !is_virtual
    }

    fn tcp_states(&mut self, out: &mut Reading) {
        let mut counts = [0u64; 12];
        let mut any = false;
        for file in ["net/tcp", "net/tcp6"] {
            self.buf.clear();
            let path = self.proc.root().join(file);
            if std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_string(&mut self.buf))
                .is_ok()
            {
                count_tcp_states(&self.buf, &mut counts);
                any = true;
            }
        }
        // Keep the buffer's memory from growing without bound on a host
        // that once had a connection storm.
        if self.buf.capacity() > 4 << 20 {
            self.buf = String::new();
        }
        if any {
            for (state, count) in TCP_STATES.iter().zip(counts) {
                out.samples
                    .push(Sample::new("net.tcp.connections", count as f64).label("state", *state));
            }
        }
    }
}

impl Collect for NetCollector {
    fn name(&self) -> &'static str {
        "network"
    }

    fn collect(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let lines = parse_net_dev(&self.proc.read("net/dev")?)?;
        let now = Instant::now();
        let mut current = HashMap::new();
        for line in lines {
            if !self.wanted(&line.name) {
                continue;
            }
            if let Some((then, prev)) = &self.prev
                && let Some(before) = prev.get(&line.name)
            {
                let secs = now.duration_since(*then).as_secs_f64();
                if secs > 0.0 {
                    let c = &line.counters;
                    let rate = |cur: u64, p: u64| cur.saturating_sub(p) as f64 / secs;
                    for (name, value) in [
                        ("net.rx_bytes_per_sec", rate(c.rx_bytes, before.rx_bytes)),
                        ("net.tx_bytes_per_sec", rate(c.tx_bytes, before.tx_bytes)),
                        (
                            "net.rx_packets_per_sec",
                            rate(c.rx_packets, before.rx_packets),
                        ),
                        (
                            "net.tx_packets_per_sec",
                            rate(c.tx_packets, before.tx_packets),
                        ),
                        ("net.rx_errors_per_sec", rate(c.rx_errors, before.rx_errors)),
                        ("net.tx_errors_per_sec", rate(c.tx_errors, before.tx_errors)),
                        ("net.rx_drops_per_sec", rate(c.rx_drops, before.rx_drops)),
                        ("net.tx_drops_per_sec", rate(c.tx_drops, before.tx_drops)),
                    ] {
                        out.samples
                            .push(Sample::new(name, value).label("iface", line.name.clone()));
                    }
                }
            }
            current.insert(line.name, line.counters);
        }
        self.prev = Some((now, current));
        if self.tcp {
            self.tcp_states(out);
        }
        Ok(())
    }
}
