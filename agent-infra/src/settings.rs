//! The server agent's keys and their resolved settings.

use std::path::PathBuf;
use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec, Origin};

/// Filesystem types skipped by default: they hold no user data.
pub const FS_EXCLUDE_TYPES: &str = "autofs,binfmt_misc,bpf,cgroup,cgroup2,configfs,debugfs,devpts,devtmpfs,efivarfs,fusectl,fuse.gvfsd-fuse,fuse.lxcfs,fuse.portal,hugetlbfs,iso9660,mqueue,nsfs,overlay,proc,pstore,ramfs,rpc_pipefs,securityfs,selinuxfs,squashfs,sysfs,tmpfs,tracefs";
/// Mount points skipped by default: kernel interfaces, container layers.
pub const FS_EXCLUDE_MOUNTS: &str = "/proc,/proc/*,/sys,/sys/*,/dev,/dev/*,/run/credentials/*,/var/lib/docker/*,/var/lib/containers/storage/*,/var/lib/kubelet/pods/*,/snap/*";
/// Block devices skipped by default: RAM disks, loop devices, floppies, CD drives.
pub const DISK_EXCLUDE: &str = "loop*,ram*,zram*,fd*,sr*";

/// The keys `infra.conf` holds besides the common ones.
pub const INFRA_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "interval",
        default: Some("5s"),
        doc: "How often the host is read and reported.",
    },
    KeySpec {
        key: "host.proc",
        default: Some("/proc"),
        doc: "Where the host's procfs is (`/host/proc` in a container).",
    },
    KeySpec {
        key: "host.sys",
        default: Some("/sys"),
        doc: "Where the host's sysfs is (`/host/sys` in a container).",
    },
    KeySpec {
        key: "host.etc",
        default: Some("/etc"),
        doc: "Where the host's `/etc` is, for user names (`/host/etc` in a container).",
    },
    KeySpec {
        key: "host.root",
        default: Some("/"),
        doc: "Where the host's root filesystem is, for filesystem use (`/host/root` in a container).",
    },
    KeySpec {
        key: "process.top",
        default: Some("5"),
        doc: "How many processes to report by CPU and by memory each interval.",
    },
    KeySpec {
        key: "process.cmdline.max",
        default: Some("256"),
        doc: "Longest command line reported, in bytes.",
    },
    KeySpec {
        key: "fs.exclude.types",
        default: Some(FS_EXCLUDE_TYPES),
        doc: "Filesystem types not reported (comma-separated; replaces the default).",
    },
    KeySpec {
        key: "fs.exclude.mounts",
        default: Some(FS_EXCLUDE_MOUNTS),
        doc: "Mount points not reported (comma-separated, `*` wildcards; replaces the default).",
    },
    KeySpec {
        key: "fs.timeout",
        default: Some("2s"),
        doc: "How long a network or FUSE filesystem may take to answer `statfs` before it is reported unresponsive.",
    },
    KeySpec {
        key: "disk.exclude",
        default: Some(DISK_EXCLUDE),
        doc: "Block devices not reported (`*` wildcards). Partitions are never reported; their disk is.",
    },
    KeySpec {
        key: "net.include",
        default: None,
        doc: "Interfaces reported even if virtual or excluded (`*` wildcards), e.g. `br0,lo`.",
    },
    KeySpec {
        key: "net.exclude",
        default: None,
        doc: "Interfaces not reported (`*` wildcards).",
    },
    KeySpec {
        key: "net.virtual",
        default: Some("false"),
        doc: "Report virtual interfaces (loopback, veth, bridges, tunnels) too.",
    },
    KeySpec {
        key: "net.tcp",
        default: Some("true"),
        doc: "Report TCP connections: in use, established, time-wait, orphans (cheap kernel counters, every interval).",
    },
    KeySpec {
        key: "net.tcp.states.interval",
        default: Some("30s"),
        doc: "How often to count TCP connections by each state; this walks the kernel's whole connection table (about 1 ms on a 24 GiB host), so it has its own cadence. `0s` turns it off.",
    },
    KeySpec {
        key: "threshold.cpu",
        default: Some("90"),
        doc: "CPU usage % that raises an event with a process snapshot (0 turns it off).",
    },
    KeySpec {
        key: "threshold.mem",
        default: Some("90"),
        doc: "Memory used % that raises an event with a process snapshot (0 turns it off).",
    },
    KeySpec {
        key: "threshold.disk",
        default: Some("90"),
        doc: "Filesystem used % that raises an event (0 turns it off).",
    },
    KeySpec {
        key: "threshold.for",
        default: Some("15s"),
        doc: "How long a threshold must stay crossed (and then clear) before an event.",
    },
    KeySpec {
        key: "threshold.cooldown",
        default: Some("10m"),
        doc: "Least time between two process snapshots for the same threshold.",
    },
];

/// Threshold settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdSettings {
    /// CPU usage %, if on.
    pub cpu: Option<f64>,
    /// Memory used %, if on.
    pub mem: Option<f64>,
    /// Filesystem used %, if on.
    pub disk: Option<f64>,
    /// How long crossed (or cleared) before an event.
    pub hold: Duration,
    /// Least time between two snapshots of one threshold.
    pub cooldown: Duration,
}

/// Everything the server agent reads from its config.
#[derive(Debug, Clone)]
pub struct InfraSettings {
    /// Reporting interval.
    pub interval: Duration,
    /// procfs root.
    pub proc_root: PathBuf,
    /// sysfs root.
    pub sys_root: PathBuf,
    /// `/etc` of the host.
    pub etc_root: PathBuf,
    /// Root filesystem of the host.
    pub host_root: PathBuf,
    /// Top-N processes.
    pub process_top: usize,
    /// Longest command line.
    pub cmdline_max: usize,
    /// Filesystem types skipped.
    pub fs_exclude_types: Vec<String>,
    /// Mount points skipped.
    pub fs_exclude_mounts: Vec<String>,
    /// `statfs` bound for remote filesystems.
    pub fs_timeout: Duration,
    /// Block devices skipped.
    pub disk_exclude: Vec<String>,
    /// Interfaces always reported.
    pub net_include: Vec<String>,
    /// Interfaces never reported.
    pub net_exclude: Vec<String>,
    /// Report virtual interfaces.
    pub net_virtual: bool,
    /// Report TCP counters.
    pub net_tcp: bool,
    /// Count TCP connections by state this often (`None`: never).
    pub tcp_states_every: Option<Duration>,
    /// Thresholds.
    pub thresholds: ThresholdSettings,
}

fn list(config: &Config, key: &str) -> Vec<String> {
    config
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn percent(config: &Config, key: &str) -> Result<Option<f64>, ConfigError> {
    let value: f64 = config.number(key, "a percentage from 0 to 100")?;
    if !(0.0..=100.0).contains(&value) {
        return Err(ConfigError::Invalid {
            origin: config.value(key).map_or(Origin::Default, |v| v.origin),
            key: key.into(),
            reason: format!("expected a percentage from 0 to 100, got {value}"),
        });
    }
    Ok((value > 0.0).then_some(value))
}

impl InfraSettings {
    /// Reads and checks every key.
    pub fn from_config(config: &Config) -> Result<InfraSettings, ConfigError> {
        let interval = config.duration("interval")?;
        if interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                origin: config
                    .value("interval")
                    .map_or(Origin::Default, |v| v.origin),
                key: "interval".into(),
                reason: "must be at least 1s".into(),
            });
        }
        let path = |key: &str, default: &str| {
            PathBuf::from(config.get(key).unwrap_or_else(|| default.into()))
        };
        Ok(InfraSettings {
            interval,
            proc_root: path("host.proc", "/proc"),
            sys_root: path("host.sys", "/sys"),
            etc_root: path("host.etc", "/etc"),
            host_root: path("host.root", "/"),
            process_top: config.number("process.top", "a number of processes")?,
            cmdline_max: config.number("process.cmdline.max", "a number of bytes")?,
            fs_exclude_types: list(config, "fs.exclude.types"),
            fs_exclude_mounts: list(config, "fs.exclude.mounts"),
            fs_timeout: config.duration("fs.timeout")?,
            disk_exclude: list(config, "disk.exclude"),
            net_include: list(config, "net.include"),
            net_exclude: list(config, "net.exclude"),
            net_virtual: config.bool("net.virtual")?,
            net_tcp: config.bool("net.tcp")?,
            tcp_states_every: Some(config.duration("net.tcp.states.interval")?)
                .filter(|d| !d.is_zero()),
            thresholds: ThresholdSettings {
                cpu: percent(config, "threshold.cpu")?,
                mem: percent(config, "threshold.mem")?,
                disk: percent(config, "threshold.disk")?,
                hold: config.duration("threshold.for")?,
                cooldown: config.duration("threshold.cooldown")?,
            },
        })
    }

    /// The deadline of each sensor in a cycle: half the interval, at most
    /// two seconds more than the filesystem timeout.
    pub fn read_deadline(&self) -> Duration {
        (self.interval / 2).min(self.fs_timeout + Duration::from_secs(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(text: &str) -> Result<InfraSettings, ConfigError> {
        let keys: Vec<KeySpec> = agent_core::settings::COMMON_KEYS
            .iter()
            .chain(INFRA_KEYS)
            .copied()
            .collect();
        InfraSettings::from_config(&Config::from_text(Path::new("infra.conf"), text, &keys)?)
    }

    #[test]
    fn defaults_are_sensible() {
        let s = settings("").expect("defaults");
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.process_top, 5);
        assert!(s.fs_exclude_types.contains(&"tmpfs".to_string()));
        assert!(s.disk_exclude.contains(&"loop*".to_string()));
        assert_eq!(s.thresholds.cpu, Some(90.0));
        assert_eq!(s.read_deadline(), Duration::from_millis(2500));
    }

    #[test]
    fn zero_turns_a_threshold_off_and_nonsense_is_refused() {
        let s = settings("threshold.cpu=0\nnet.include=lo, br0\n").expect("parses");
        assert_eq!(s.thresholds.cpu, None);
        assert_eq!(s.net_include, ["lo", "br0"]);
        let err = settings("threshold.mem=150\n").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "infra.conf:1: threshold.mem: expected a percentage from 0 to 100, got 150"
        );
        assert!(settings("interval=500ms\n").is_err());
    }
}
