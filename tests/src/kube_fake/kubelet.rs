//! The kubelet's `/stats/summary` document (stats/v1alpha1 `Summary`),
//! the part the Kubernetes agent reads: node and pod CPU and memory, and
//! each container's. Tests set the values; the fake kubelets and the API
//! server's node proxy serve them as the kubelet does.
//!
//! Never computes anything: the numbers are the test's.

use serde::{Deserialize, Serialize};

/// `/stats/summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The node.
    pub node: NodeStats,
    /// Its pods.
    pub pods: Vec<PodStats>,
}

/// A node's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// Node name.
    pub node_name: String,
    /// When the node started (RFC 3339).
    pub start_time: String,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
}

/// A pod and its containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// Which pod.
    pub pod_ref: PodRef,
    /// When it started.
    pub start_time: String,
    /// Its containers.
    pub containers: Vec<ContainerStats>,
    /// The pod's CPU (its cgroup).
    pub cpu: CpuStats,
    /// The pod's memory (its cgroup).
    pub memory: MemoryStats,
}

/// A pod's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// One container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// Container name.
    pub name: String,
    /// When it started.
    pub start_time: String,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
}

/// CPU as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// Sample time.
    pub time: String,
    /// Nanocores in use (1e9 is one core), averaged over the last window.
    pub usage_nano_cores: u64,
    /// Cumulative CPU time, nanoseconds.
    pub usage_core_nano_seconds: u64,
}

/// Memory as the kubelet reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// Sample time.
    pub time: String,
    /// Working set (what the OOM killer and `kubectl top` look at).
    pub working_set_bytes: u64,
    /// Total usage, page cache included.
    pub usage_bytes: u64,
    /// Anonymous and swap cache.
    pub rss_bytes: u64,
    /// Left before the limit or the node's capacity (absent when unbounded).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub available_bytes: Option<u64>,
}

impl CpuStats {
    /// Usage `nano_cores` now, `total_ns` so far, at `time`.
    pub fn new(time: &str, nano_cores: u64, total_ns: u64) -> CpuStats {
        CpuStats {
            time: time.to_string(),
            usage_nano_cores: nano_cores,
            usage_core_nano_seconds: total_ns,
        }
    }
}

impl MemoryStats {
    /// A working set of `working_set` bytes (usage a quarter above it, RSS
    /// nine tenths of it), at `time`.
    pub fn new(time: &str, working_set: u64) -> MemoryStats {
        MemoryStats {
            time: time.to_string(),
            working_set_bytes: working_set,
            usage_bytes: working_set + working_set / 4,
            rss_bytes: working_set / 10 * 9,
            available_bytes: None,
        }
    }
}
