//! The server agent's own kind of data: the processes of a host at one
//! moment, as plain Rust. Converted to the wire only in [`crate::wire`];
//! nothing here knows the wire format.

use std::collections::BTreeMap;
use std::time::SystemTime;

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
    pub state: &'static str,
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
