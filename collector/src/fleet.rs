//! The fleet view of the seed's server screens: each server's current CPU,
//! memory, disk and status, the top servers by CPU, memory and disk I/O,
//! and processes aggregated by name across servers. Pure functions over
//! what the store returns, so every rule here is unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::model::{Agent, SnapshotRow};
use crate::store::Latest;

/// One server in the fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerView {
    /// Agent id.
    pub oid: i64,
    /// Agent name.
    pub oname: String,
    /// Host name.
    pub hostname: String,
    /// The agent's product (`infra` for a server; other products carry a
    /// status and no host values).
    pub product: String,
    /// `up` or `no data`.
    pub status: &'static str,
    /// Latest `cpu.usage`.
    pub cpu_pct: Option<f64>,
    /// Latest `mem.used_pct`.
    pub mem_pct: Option<f64>,
    /// The fullest filesystem's `disk.used_pct`.
    pub disk_used_pct: Option<f64>,
    /// Which mount that is.
    pub disk_mount: Option<String>,
    /// Read plus write bytes per second over all block devices.
    pub disk_io_bytes_per_sec: Option<f64>,
    /// When the newest of these values was taken, unix ms.
    pub updated_ms: Option<i64>,
    /// Terminated: its data deleted, refused until enabled.
    pub terminated: bool,
    /// Notifications paused (maintenance): set by the caller, which knows
    /// the pauses.
    pub paused: bool,
    /// Until when (`None`: until resumed, or not paused).
    pub paused_until_ms: Option<i64>,
}

/// The latest values, as the store returns them, per metric.
#[derive(Debug, Default)]
pub struct LatestValues {
    /// `cpu.usage`.
    pub cpu: Vec<Latest>,
    /// `mem.used_pct`.
    pub mem: Vec<Latest>,
    /// `disk.used_pct`.
    pub disk: Vec<Latest>,
    /// `diskio.read_bytes_per_sec`.
    pub io_read: Vec<Latest>,
    /// `diskio.write_bytes_per_sec`.
    pub io_write: Vec<Latest>,
}

impl LatestValues {
    /// The metric names, in the order of the fields.
    pub const NAMES: [&'static str; 5] = [
        "cpu.usage",
        "mem.used_pct",
        "disk.used_pct",
        "diskio.read_bytes_per_sec",
        "diskio.write_bytes_per_sec",
    ];
}

/// One list's values by agent, each agent's in the list's order.
fn by_agent(list: &[Latest]) -> HashMap<i64, Vec<&Latest>> {
    let mut map: HashMap<i64, Vec<&Latest>> = HashMap::new();
    for latest in list {
        map.entry(latest.oid).or_default().push(latest);
    }
    map
}

/// One server per agent, with its latest values. Linear in agents plus
/// values (each list is grouped by agent once), so 1,000 servers cost
/// no more per server than ten.
pub fn servers<'v>(agents: &[Agent], values: &'v LatestValues, now_ms: i64) -> Vec<ServerView> {
    let cpu = by_agent(&values.cpu);
    let mem = by_agent(&values.mem);
    let disk = by_agent(&values.disk);
    let io_read = by_agent(&values.io_read);
    let io_write = by_agent(&values.io_write);
    agents
        .iter()
        .map(|a| {
            let mine = |map: &HashMap<i64, Vec<&'v Latest>>| -> Vec<&'v Latest> {
                map.get(&a.oid).cloned().unwrap_or_default()
            };
            // cpu.usage and mem.used_pct are reported without labels for
            // the whole host (per-core series carry a `cpu` label).
            let unlabelled = |map| mine(map).into_iter().find(|l| l.labels.is_empty());
            let cpu = unlabelled(&cpu);
            let mem = unlabelled(&mem);
            let fullest = mine(&disk)
                .into_iter()
                .max_by(|x, y| x.value.total_cmp(&y.value));
            let io: Vec<&Latest> = mine(&io_read).into_iter().chain(mine(&io_write)).collect();
            let updated = [cpu, mem, fullest]
                .into_iter()
                .flatten()
                .chain(io.iter().copied())
                .map(|l| l.time_ms)
                .max();
            ServerView {
                oid: a.oid,
                oname: a.oname.clone(),
                hostname: a.hostname.clone(),
                product: a.product.clone(),
                status: if a.is_quiet(now_ms) { "no data" } else { "up" },
                cpu_pct: cpu.map(|l| l.value),
                mem_pct: mem.map(|l| l.value),
                disk_used_pct: fullest.map(|l| l.value),
                disk_mount: fullest.and_then(|l| l.labels.get("mount").cloned()),
                disk_io_bytes_per_sec: (!io.is_empty()).then(|| io.iter().map(|l| l.value).sum()),
                updated_ms: updated,
                terminated: a.terminated_ms.is_some(),
                paused: false,
                paused_until_ms: None,
            }
        })
        .collect()
}

/// A server in a top list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    /// Agent id.
    pub oid: i64,
    /// Agent name.
    pub oname: String,
    /// The value ranked by.
    pub value: f64,
}

/// The `n` servers that are up with the highest `value`.
pub fn top(
    servers: &[ServerView],
    n: usize,
    value: impl Fn(&ServerView) -> Option<f64>,
) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = servers
        .iter()
        .filter(|s| s.status == "up")
        .filter_map(|s| {
            Some(Ranked {
                oid: s.oid,
                oname: s.oname.clone(),
                value: value(s)?,
            })
        })
        .collect();
    ranked.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.oname.cmp(&b.oname)));
    ranked.truncate(n);
    ranked
}

/// One process name across the fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessGroup {
    /// Process name.
    pub name: String,
    /// How many processes of that name are listed.
    pub count: usize,
    /// The servers they run on.
    pub servers: Vec<String>,
    /// Highest CPU share (of one core), %.
    pub cpu_max: f64,
    /// Mean CPU share, %.
    pub cpu_avg: f64,
    /// Highest share of its server's memory, %.
    pub mem_max_pct: f64,
    /// Mean share of memory, %.
    pub mem_avg_pct: f64,
    /// Largest resident set, bytes.
    pub rss_max_bytes: u64,
}

/// Groups the processes of each server's latest top snapshot by name.
pub fn group_processes(snapshots: &[(String, SnapshotRow)]) -> Vec<ProcessGroup> {
    #[derive(Default)]
    struct Acc {
        count: usize,
        servers: BTreeSet<String>,
        cpu_max: f64,
        cpu_sum: f64,
        mem_max: f64,
        mem_sum: f64,
        rss_max: u64,
    }
    let mut groups: BTreeMap<&str, Acc> = BTreeMap::new();
    for (server, snapshot) in snapshots {
        for p in &snapshot.processes {
            let acc = groups.entry(&p.name).or_default();
            acc.count += 1;
            acc.servers.insert(server.clone());
            acc.cpu_max = acc.cpu_max.max(p.cpu_pct);
            acc.cpu_sum += p.cpu_pct;
            acc.mem_max = acc.mem_max.max(p.mem_pct);
            acc.mem_sum += p.mem_pct;
            acc.rss_max = acc.rss_max.max(p.rss_bytes);
        }
    }
    groups
        .into_iter()
        .map(|(name, a)| ProcessGroup {
            name: name.to_string(),
            count: a.count,
            servers: a.servers.into_iter().collect(),
            cpu_max: a.cpu_max,
            cpu_avg: a.cpu_sum / a.count as f64,
            mem_max_pct: a.mem_max,
            mem_avg_pct: a.mem_sum / a.count as f64,
            rss_max_bytes: a.rss_max,
        })
        .collect()
}

/// One process on one server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopProcess {
    /// The server's agent id.
    pub oid: i64,
    /// The server's name.
    pub oname: String,
    /// When its snapshot was taken, unix ms.
    pub time_ms: i64,
    /// The process.
    #[serde(flatten)]
    pub process: crate::model::ProcessRow,
}

/// The `n` processes with the highest CPU share across every server's
/// latest snapshot (ties: larger resident set first).
pub fn top_processes(snapshots: &[(i64, String, SnapshotRow)], n: usize) -> Vec<TopProcess> {
    let mut all: Vec<TopProcess> = snapshots
        .iter()
        .flat_map(|(oid, oname, s)| {
            s.processes.iter().map(move |p| TopProcess {
                oid: *oid,
                oname: oname.clone(),
                time_ms: s.time_ms,
                process: p.clone(),
            })
        })
        .collect();
    all.sort_by(|a, b| {
        b.process
            .cpu_pct
            .total_cmp(&a.process.cpu_pct)
            .then(b.process.rss_bytes.cmp(&a.process.rss_bytes))
    });
    all.truncate(n);
    all
}

/// Names agents by id, for the process view.
pub fn onames(agents: &[Agent]) -> HashMap<i64, String> {
    agents.iter().map(|a| (a.oid, a.oname.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProcessRow;

    fn agent(oid: i64, oname: &str, last_seen_ms: i64) -> Agent {
        Agent {
            oid,
            project_id: 1,
            product: "infra".into(),
            oname: oname.into(),
            hostname: oname.into(),
            os: "linux".into(),
            version: "0".into(),
            boot_time_ms: 0,
            interval_ms: 5000,
            first_seen_ms: 0,
            last_seen_ms,
            health: None,
            instance: String::new(),
            boot_id: String::new(),
            terminated_ms: None,
        }
    }

    fn latest(oid: i64, labels: &[(&str, &str)], value: f64) -> Latest {
        Latest {
            oid,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_ms: 1000,
            value,
        }
    }

    #[test]
    fn servers_take_host_totals_the_fullest_disk_and_summed_io() {
        let agents = [
            agent(1, "web-1", 100_000),
            agent(2, "db-1", 100_000),
            agent(3, "old", 0),
        ];
        let values = LatestValues {
            cpu: vec![
                latest(1, &[], 40.0),
                latest(1, &[("cpu", "0")], 99.0),
                latest(2, &[], 80.0),
                latest(3, &[], 99.9),
            ],
            mem: vec![latest(1, &[], 30.0), latest(2, &[], 90.0)],
            disk: vec![
                latest(1, &[("mount", "/")], 50.0),
                latest(1, &[("mount", "/var")], 70.0),
            ],
            io_read: vec![
                latest(2, &[("device", "sda")], 1000.0),
                latest(2, &[("device", "sdb")], 500.0),
            ],
            io_write: vec![latest(2, &[("device", "sda")], 250.0)],
        };
        let servers = servers(&agents, &values, 101_000);
        assert_eq!(servers[0].cpu_pct, Some(40.0), "the host total, not a core");
        assert_eq!(
            (servers[0].disk_used_pct, servers[0].disk_mount.as_deref()),
            (Some(70.0), Some("/var"))
        );
        assert_eq!(servers[1].disk_io_bytes_per_sec, Some(1750.0));
        assert_eq!(servers[2].status, "no data");
        let by_cpu = top(&servers, 5, |s| s.cpu_pct);
        let names: Vec<&str> = by_cpu.iter().map(|r| r.oname.as_str()).collect();
        assert_eq!(
            names,
            ["db-1", "web-1"],
            "servers without data are not ranked"
        );
        assert_eq!(top(&servers, 1, |s| s.mem_pct)[0].oname, "db-1");
    }

    #[test]
    fn processes_are_grouped_by_name_across_servers() {
        let p = |name: &str, cpu, mem| ProcessRow {
            pid: 1,
            name: name.into(),
            user: "u".into(),
            cmdline: String::new(),
            cpu_pct: cpu,
            rss_bytes: (mem * 10.0) as u64,
            mem_pct: mem,
            threads: 1,
            state: "running".into(),
        };
        let snap = |processes| SnapshotRow {
            time_ms: 0,
            reason: "top".into(),
            total: 0,
            state_counts: BTreeMap::new(),
            processes,
        };
        let groups = group_processes(&[
            (
                "web-1".into(),
                snap(vec![
                    p("nginx", 10.0, 1.0),
                    p("nginx", 30.0, 3.0),
                    p("java", 90.0, 40.0),
                ]),
            ),
            ("web-2".into(), snap(vec![p("nginx", 20.0, 2.0)])),
        ]);
        let nginx = groups.iter().find(|g| g.name == "nginx").expect("nginx");
        assert_eq!(nginx.count, 3);
        assert_eq!(nginx.servers, ["web-1", "web-2"]);
        assert_eq!((nginx.cpu_max, nginx.cpu_avg), (30.0, 20.0));
        assert_eq!((nginx.mem_max_pct, nginx.mem_avg_pct), (3.0, 2.0));
        let snapshots: Vec<(i64, String, SnapshotRow)> = vec![
            (
                1,
                "web-1".into(),
                snap(vec![p("nginx", 10.0, 1.0), p("java", 90.0, 40.0)]),
            ),
            (2, "web-2".into(), snap(vec![p("nginx", 20.0, 2.0)])),
        ];
        let top = top_processes(&snapshots, 2);
        let top: Vec<(&str, &str)> = top
            .iter()
            .map(|t| (t.oname.as_str(), t.process.name.as_str()))
            .collect();
        assert_eq!(top, [("web-1", "java"), ("web-2", "nginx")]);
        assert_eq!(
            groups
                .iter()
                .find(|g| g.name == "java")
                .map(|g| g.servers.len()),
            Some(1)
        );
    }
}
