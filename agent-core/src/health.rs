//! The agent's own counters: how its delivery pipeline is doing. Sent with
//! every batch, so the collector shows an agent's health next to its data.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the pipeline, the spool and the transport.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Batches waiting in the spool.
    pub spool_batches: AtomicU64,
    /// Bytes waiting in the spool.
    pub spool_bytes: AtomicU64,
    /// Batches written to the wire (a batch resent counts again).
    pub batches_sent: AtomicU64,
    /// Batches the collector acknowledged.
    pub batches_acked: AtomicU64,
    /// Connections re-established after a failure.
    pub reconnects: AtomicU64,
    /// Batches dropped because the spool was full (or unreadable).
    pub batches_dropped: AtomicU64,
    /// Bytes dropped with them.
    pub bytes_dropped: AtomicU64,
    /// Batches the collector refused for good (never resent).
    pub batches_rejected: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// See [`AgentCounters::spool_batches`].
    pub spool_batches: u64,
    /// See [`AgentCounters::spool_bytes`].
    pub spool_bytes: u64,
    /// See [`AgentCounters::batches_sent`].
    pub batches_sent: u64,
    /// See [`AgentCounters::batches_acked`].
    pub batches_acked: u64,
    /// See [`AgentCounters::reconnects`].
    pub reconnects: u64,
    /// See [`AgentCounters::batches_dropped`].
    pub batches_dropped: u64,
    /// See [`AgentCounters::bytes_dropped`].
    pub bytes_dropped: u64,
}

impl AgentCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> Health {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Health {
            spool_batches: get(&self.spool_batches),
            spool_bytes: get(&self.spool_bytes),
            batches_sent: get(&self.batches_sent),
            batches_acked: get(&self.batches_acked),
            reconnects: get(&self.reconnects),
            batches_dropped: get(&self.batches_dropped),
            bytes_dropped: get(&self.bytes_dropped),
        }
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
