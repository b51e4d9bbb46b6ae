//! The agent's own counters: how its delivery pipeline is doing, as a
//! whole and per source. Sent with every batch, so the collector shows an
//! agent's health next to its data. Never blocks: counters are atomics,
//! and the per-source table is a small map behind a lock held for a copy.

use std::collections::BTreeMap;
use std::sync::Mutex;
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
    /// Batches dropped because the spool was full (or unreadable, or at
    /// shutdown before they could be spooled).
    pub batches_dropped: AtomicU64,
    /// Bytes dropped with them.
    pub bytes_dropped: AtomicU64,
    /// Batches the collector refused for good (never resent).
    pub batches_rejected: AtomicU64,
    /// Records by source name.
    sources: Mutex<BTreeMap<String, SourceHealth>>,
}

/// What one source read and what became of it, in records (lines, rows,
/// samples: the source says what a record is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceHealth {
    /// The source's name (the product's, or one of its named inputs).
    pub name: String,
    /// Records the source read, before filtering (counted by the source).
    pub records_read: u64,
    /// Records handed to the spool.
    pub records_sent: u64,
    /// Records the collector acknowledged.
    pub records_acked: u64,
    /// Records dropped (spool full, refused, too large, shutdown).
    pub records_dropped: u64,
}

/// Which per-source counter to add to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Records {
    /// See [`SourceHealth::records_read`].
    Read,
    /// See [`SourceHealth::records_sent`].
    Sent,
    /// See [`SourceHealth::records_acked`].
    Acked,
    /// See [`SourceHealth::records_dropped`].
    Dropped,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Per source, by name.
    pub sources: Vec<SourceHealth>,
}

impl AgentCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> Health {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sources = self
            .sources
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        Health {
            spool_batches: get(&self.spool_batches),
            spool_bytes: get(&self.spool_bytes),
            batches_sent: get(&self.batches_sent),
            batches_acked: get(&self.batches_acked),
            reconnects: get(&self.reconnects),
            batches_dropped: get(&self.batches_dropped),
            bytes_dropped: get(&self.bytes_dropped),
            sources,
        }
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n` records to `source`'s `which` counter.
    pub fn records(&self, source: &str, which: Records, n: u64) {
        if n == 0 {
            return;
        }
        let mut sources = self
            .sources
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = match sources.get_mut(source) {
            Some(e) => e,
            None => sources.entry(source.to_string()).or_insert(SourceHealth {
                name: source.to_string(),
                ..SourceHealth::default()
            }),
        };
        let counter = match which {
            Records::Read => &mut entry.records_read,
            Records::Sent => &mut entry.records_sent,
            Records::Acked => &mut entry.records_acked,
            Records::Dropped => &mut entry.records_dropped,
        };
        *counter += n;
    }

    /// One source's counters (zero when it has counted nothing).
    pub fn source(&self, name: &str) -> SourceHealth {
        self.sources
            .lock()
            .ok()
            .and_then(|s| s.get(name).cloned())
            .unwrap_or_else(|| SourceHealth {
                name: name.to_string(),
                ..SourceHealth::default()
            })
    }
}
