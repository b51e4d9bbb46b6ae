//! Network interfaces, and TCP connections.
//!
//! TCP comes in two parts. Every cycle, the counters the kernel keeps
//! anyway (`sockstat`, `snmp`): sockets in use, established, time-wait,
//! orphans, for a few microseconds. Every `net.tcp.states.interval`, the
//! exact count by state, which needs the kernel to walk its whole
//! connection hash table (netlink `sock_diag`, or `/proc/net/tcp*` where
//! netlink is refused): measured on a 24 GiB host, 262,144 buckets twice
//! (IPv4, IPv6), about 1 ms of CPU whatever the number of connections, and
//! more on larger hosts. That is why node_exporter ships its tcpstat
//! sensor disabled; here it runs on its own, slower cadence.
//!
//! An interface is virtual when sysfs places it under `devices/virtual`
//! (loopback, veth, bridges, tunnels, ifb); virtual interfaces are skipped
//! unless `net.virtual=true` or `net.include` names them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_core::Sample;

use crate::glob;
use crate::interface::push_rates;
use crate::linux::net::{
    IfCounters, TCP_STATES, TcpSummary, add_sockstat, count_tcp_states, parse_curr_estab,
    parse_net_dev,
};
use crate::linux::sockdiag::SockDiag;
use crate::linux::{KeptFile, ProcFs};
use crate::sensor::{ReadError, Reading, Sensor};

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
pub struct NetSensor {
    proc: ProcFs,
    net_dev: KeptFile,
    sockstat: KeptFile,
    sockstat6: KeptFile,
    snmp: KeptFile,
    sys_class_net: PathBuf,
    filter: NetFilter,
    tcp: Option<TcpOptions>,
    last_states: Option<Instant>,
    virtual_cache: HashMap<String, bool>,
    prev: Option<(Instant, HashMap<String, IfCounters>)>,
    diag: Diag,
    buf: String,
}

/// The netlink socket for TCP states, opened on first use.
#[derive(Debug)]
enum Diag {
    NotTried,
    Open(SockDiag),
    Unavailable,
}

/// What to read of TCP.
#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    /// How often to count connections by state (`None`: never).
    pub states_every: Option<Duration>,
}

impl NetSensor {
    /// A sensor reading `proc`, classifying interfaces with
    /// `<sys>/class/net`; `tcp` `None` reads nothing of TCP.
    pub fn new(
        proc: ProcFs,
        sys_root: PathBuf,
        filter: NetFilter,
        tcp: Option<TcpOptions>,
    ) -> NetSensor {
        NetSensor {
            net_dev: KeptFile::new(&proc, "net/dev"),
            sockstat: KeptFile::new(&proc, "net/sockstat"),
            sockstat6: KeptFile::new(&proc, "net/sockstat6"),
            snmp: KeptFile::new(&proc, "net/snmp"),
            proc,
            sys_class_net: sys_root.join("class/net"),
            filter,
            tcp,
            last_states: None,
            virtual_cache: HashMap::new(),
            prev: None,
            diag: Diag::NotTried,
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

    /// The kernel's own TCP counters: every cycle.
    fn tcp_summary(&mut self, out: &mut Reading) {
        let mut summary = TcpSummary::default();
        for file in [&mut self.sockstat, &mut self.sockstat6] {
            if let Ok(text) = file.read() {
                add_sockstat(&text, &mut summary);
            }
        }
        out.samples
            .push(Sample::new("net.tcp.inuse", summary.in_use as f64));
        out.samples
            .push(Sample::new("net.tcp.time_wait", summary.time_wait as f64));
        out.samples
            .push(Sample::new("net.tcp.orphans", summary.orphans as f64));
        if let Some(established) = self.snmp.read().ok().and_then(|t| parse_curr_estab(&t)) {
            out.samples
                .push(Sample::new("net.tcp.established", established as f64));
        }
    }

    /// Connections by state: every `states_every`.
    fn tcp_states(&mut self, out: &mut Reading, every: Duration) {
        if self
            .last_states
            .is_some_and(|t| t.elapsed() + Duration::from_millis(100) < every)
        {
            return;
        }
        self.last_states = Some(Instant::now());
        let mut counts = [0u64; 12];
        let counted = match self.sock_diag() {
            Some(diag) => match diag.count_tcp(&mut counts) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "sock_diag failed; reading /proc/net/tcp instead.");
                    self.diag = Diag::Unavailable;
                    counts = [0; 12];
                    false
                }
            },
            None => false,
        };
        let counted = counted || self.tcp_from_proc(&mut counts);
        if counted {
            for (state, count) in TCP_STATES.iter().zip(counts) {
                out.samples
                    .push(Sample::new("net.tcp.connections", count as f64).label("state", *state));
            }
        }
    }

    fn sock_diag(&mut self) -> Option<&mut SockDiag> {
        if let Diag::NotTried = self.diag {
            self.diag = match SockDiag::open(Duration::from_secs(2)) {
                Ok(d) => Diag::Open(d),
                Err(e) => {
                    tracing::info!(error = %e, "No netlink sock_diag; TCP states come from /proc/net/tcp.");
                    Diag::Unavailable
                }
            };
        }
        match &mut self.diag {
            Diag::Open(d) => Some(d),
            _ => None,
        }
    }

    /// The fallback: `/proc/net/tcp` and `tcp6`, in large reads.
    fn tcp_from_proc(&mut self, counts: &mut [u64; 12]) -> bool {
        let mut any = false;
        for file in ["net/tcp", "net/tcp6"] {
            if self.proc.read_into(file, &mut self.buf).is_ok() {
                count_tcp_states(&self.buf, counts);
                any = true;
            }
        }
        // Keep the buffer's memory from growing without bound on a host
        // that once had a connection storm.
        if self.buf.capacity() > 4 << 20 {
            self.buf = String::new();
        }
        any
    }
}

impl Sensor for NetSensor {
    fn name(&self) -> &'static str {
        "network"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let lines = parse_net_dev(&self.net_dev.read()?)?;
        let present: std::collections::HashSet<String> =
            lines.iter().map(|l| l.name.clone()).collect();
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
                push_rates(&mut out.samples, &line.name, &line.counters, before, secs);
            }
            current.insert(line.name, line.counters);
        }
        // Interfaces come and go (a veth per container): forget the gone.
        self.virtual_cache.retain(|name, _| present.contains(name));
        self.prev = Some((now, current));
        if let Some(tcp) = self.tcp {
            self.tcp_summary(out);
            if let Some(every) = tcp.states_every {
                self.tcp_states(out, every);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interfaces(filter: NetFilter) -> Vec<String> {
        let root = std::env::temp_dir().join(format!(
            "sl-net-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        let (proc, net) = (root.join("proc"), root.join("sys/class/net"));
        std::fs::create_dir_all(proc.join("net")).expect("proc");
        std::fs::create_dir_all(&net).expect("sysfs");
        for (name, target) in [
            (
                "eth0",
                "../../devices/pci0000:00/0000:00:03.0/virtio2/net/eth0",
            ),
            ("lo", "../../devices/virtual/net/lo"),
            ("veth9", "../../devices/virtual/net/veth9"),
            ("br0", "../../devices/virtual/net/br0"),
        ] {
            std::os::unix::fs::symlink(target, net.join(name)).expect("link");
        }
        let write = |n: u64| {
            let mut text = String::from("Inter-|\n face |\n");
            for name in ["lo", "eth0", "veth9", "br0"] {
                text.push_str(&format!(
                    "{name}: {n} {n} 0 0 0 0 0 0 {n} {n} 0 0 0 0 0 0\n"
                ));
            }
            std::fs::write(proc.join("net/dev"), text).expect("net/dev");
        };
        let mut sensor = NetSensor::new(ProcFs::new(&proc), root.join("sys"), filter, None);
        write(100);
        sensor.read(&mut Reading::default()).expect("first");
        write(300);
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("second");
        std::fs::remove_dir_all(&root).expect("cleanup");
        let mut names: Vec<String> = reading
            .samples
            .iter()
            .filter(|s| s.name == "net.rx_bytes_per_sec")
            .filter_map(|s| {
                s.labels
                    .iter()
                    .find(|(k, _)| k == "iface")
                    .map(|(_, v)| v.clone())
            })
            .collect();
        names.sort();
        names
    }

    fn fastrand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn virtual_interfaces_are_skipped_unless_asked_for() {
        assert_eq!(interfaces(NetFilter::default()), ["eth0"]);
        let include = NetFilter {
            include: vec!["lo".into(), "br*".into()],
            ..NetFilter::default()
        };
        assert_eq!(interfaces(include), ["br0", "eth0", "lo"]);
        let all = NetFilter {
            virtual_too: true,
            exclude: vec!["veth*".into()],
            ..NetFilter::default()
        };
        assert_eq!(interfaces(all), ["br0", "eth0", "lo"]);
    }
}
