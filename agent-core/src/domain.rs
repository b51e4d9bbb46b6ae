//! What agents produce, as plain Rust. The transport turns these into wire
//! messages at its edge ([`crate::transport::wire`]); nothing else here knows
//! the wire format.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// One metric reading: `cpu.usage{cpu="3"} = 12.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Dotted, lower case, unit in the name where not obvious.
    pub name: Cow<'static, str>,
    /// Sorted by key.
    pub labels: Vec<(Cow<'static, str>, String)>,
    /// The reading.
    pub value: f64,
}

impl Sample {
    /// A sample with no labels.
    pub fn new(name: impl Into<Cow<'static, str>>, value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: Vec::new(),
            value,
        }
    }

    /// Adds a label, keeping labels sorted by key.
    pub fn label(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Sample {
        let key = key.into();
        let at = self.labels.partition_point(|(k, _)| *k < key);
        self.labels.insert(at, (key, value.into()));
        self
    }
}

/// Many samples read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// When they were read.
    pub time: SystemTime,
    /// The readings.
    pub samples: Vec<Sample>,
}

/// Why a process list was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// The periodic top-N by CPU and memory.
    Top,
    /// The full list, taken when a threshold was crossed.
    Threshold,
}

impl SnapshotReason {
    /// The name used on the wire and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotReason::Top => "top",
            SnapshotReason::Threshold => "threshold",
        }
    }
}

/// One process at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    /// Process id.
    pub pid: u32,
    /// Short name (`comm`).
    pub name: String,
    /// Owner's user name (or uid when it has no name).
    pub user: String,
    /// Command line, truncated.
    pub cmdline: String,
    /// Share of one core over the last interval, in percent.
    pub cpu_pct: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// RSS as a share of physical memory, in percent.
    pub mem_pct: f64,
    /// Number of threads.
    pub threads: u32,
    /// `running`, `sleeping`, `disk-sleep`, `zombie`, `stopped`, ...
    pub state: String,
}

/// The processes of a host at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSnapshot {
    /// When.
    pub time: SystemTime,
    /// Why it was taken.
    pub reason: SnapshotReason,
    /// The processes listed (the top-N, or all for a threshold snapshot).
    pub processes: Vec<ProcessInfo>,
    /// How many processes are in each state.
    pub state_counts: BTreeMap<String, u32>,
    /// How many processes exist in all.
    pub total: u32,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The agent process started.
    AgentStarted,
    /// The host booted since the agent last ran.
    HostRebooted,
    /// The configuration has a problem the agent works around.
    ConfigError,
    /// The spool was full and dropped its oldest batches.
    SpoolOverflow,
    /// A threshold was crossed for long enough.
    ThresholdExceeded,
    /// A crossed threshold is no longer crossed.
    ThresholdRecovered,
    /// A mount stopped answering `statfs`.
    MountUnresponsive,
}

/// How bad it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look.
    Warning,
    /// Needs someone now.
    Critical,
}

/// Something an agent noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub time: SystemTime,
    /// What.
    pub kind: EventKind,
    /// How bad.
    pub severity: Severity,
    /// One sentence for people.
    pub message: String,
    /// Details for machines: `dropped_batches=12`.
    pub attrs: BTreeMap<String, String>,
}

impl Event {
    /// An event at the current time with no attributes.
    pub fn now(kind: EventKind, severity: Severity, message: impl Into<String>) -> Event {
        Event {
            time: SystemTime::now(),
            kind,
            severity,
            message: message.into(),
            attrs: BTreeMap::new(),
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, key: impl Into<String>, value: impl ToString) -> Event {
        self.attrs.insert(key.into(), value.to_string());
        self
    }
}

/// One unit of output from a collection loop; becomes one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Metric readings.
    Metrics(Metrics),
    /// A process list.
    Processes(ProcessSnapshot),
    /// Events.
    Events(Vec<Event>),
}

impl Payload {
    /// When the payload was produced.
    pub fn time(&self) -> SystemTime {
        match self {
            Payload::Metrics(m) => m.time,
            Payload::Processes(p) => p.time,
            Payload::Events(events) => events.first().map_or_else(SystemTime::now, |e| e.time),
        }
    }
}
