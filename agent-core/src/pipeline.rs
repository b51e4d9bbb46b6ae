//! From a collection loop's output to the spool: the bounded channel that
//! sources write to, and the task that numbers, encodes and spools what each
//! send carries (one collection cycle: one batch), then wakes the transport.
//!
//! Invariants:
//! - The channel is bounded ([`OUTPUT_CAPACITY`]): a source that outruns the
//!   disk waits instead of growing memory.
//! - Every overflow of the spool ends up in an `SpoolOverflow` event, at most
//!   one every [`OVERFLOW_REPORT_EVERY`], carrying the counts since the last
//!   report and the total since start.
//! - Spool IO runs on the blocking pool, never on the async workers; what
//!   needs no IO (the index of sequence numbers, the cache of recent
//!   batches) is read in place, without a thread hop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::domain::{Event, EventKind, Payload, Severity};
use crate::health::AgentCounters;
use crate::spool::{Dropped, Spool, SpoolError};
use crate::transport::wire;

/// Payloads a source may have queued before it waits.
pub const OUTPUT_CAPACITY: usize = 64;

/// The least time between two spool-overflow events.
pub const OVERFLOW_REPORT_EVERY: Duration = Duration::from_secs(30);

/// The spool, shared by the pipeline (appends) and the transport (reads and
/// removes), with a wake-up for the transport on every append.
#[derive(Clone, Debug)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    appended: Arc<Notify>,
    counters: Arc<AgentCounters>,
}

impl SharedSpool {
    /// Shares `spool`, keeping `counters`' spool depth up to date.
    pub fn new(spool: Spool, counters: Arc<AgentCounters>) -> SharedSpool {
        let shared = SharedSpool {
            inner: Arc::new(Mutex::new(spool)),
            appended: Arc::new(Notify::new()),
            counters,
        };
        if let Ok(spool) = shared.inner.lock() {
            shared.publish_depth(&spool);
        }
        shared
    }

    /// Runs `f` on the spool on the blocking pool: for anything that
    /// touches the disk.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> R + Send + 'static,
    ) -> Result<R, SpoolError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut spool = this
                .inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let result = f(&mut spool);
            this.publish_depth(&spool);
            result
        })
        .await
        .map_err(|e| SpoolError::Io {
            path: "spool".into(),
            source: std::io::Error::other(format!("spool task failed: {e}")),
        })
    }

    /// Runs `f` on the spool right here: only for what is held in memory
    /// ([`Spool::next_after`], [`Spool::cached`], [`Spool::unreported`]).
    /// The lock is short: IO under it happens only on the blocking pool.
    pub fn peek<R>(&self, f: impl FnOnce(&Spool) -> R) -> R {
        let spool = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&spool)
    }

    fn publish_depth(&self, spool: &Spool) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counters
            .spool_batches
            .store(spool.len() as u64, Relaxed);
        self.counters.spool_bytes.store(spool.bytes(), Relaxed);
    }

    /// Resolves after the next append (or at once if one happened since the
    /// last wait).
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    fn wake(&self) {
        self.appended.notify_one();
    }
}

/// Where a collection loop sends what it collected.
#[derive(Clone, Debug)]
pub struct Output {
    tx: mpsc::Sender<Vec<Payload>>,
}

/// The pipeline has stopped (the agent is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the agent's output pipeline has stopped")]
pub struct OutputClosed;

impl Output {
    /// A connected output and the pipeline's receiving end.
    pub fn channel() -> (Output, mpsc::Receiver<Vec<Payload>>) {
        let (tx, rx) = mpsc::channel(OUTPUT_CAPACITY);
        (Output { tx }, rx)
    }

    /// Queues what one collection cycle produced, as one batch; waits while
    /// the pipeline is behind.
    pub async fn send_all(&self, payloads: Vec<Payload>) -> Result<(), OutputClosed> {
        if payloads.is_empty() {
            return Ok(());
        }
        self.tx.send(payloads).await.map_err(|_| OutputClosed)
    }

    /// Queues one payload as a batch of its own.
    pub async fn send(&self, payload: Payload) -> Result<(), OutputClosed> {
        self.send_all(vec![payload]).await
    }

    /// Queues one event.
    pub async fn event(&self, event: Event) -> Result<(), OutputClosed> {
        self.send(Payload::Events(vec![event])).await
    }
}

/// Spools everything received until all outputs are dropped.
pub async fn run(
    mut rx: mpsc::Receiver<Vec<Payload>>,
    spool: SharedSpool,
    counters: Arc<AgentCounters>,
) {
    let mut last_report: Option<Instant> = None;
    // Drops from before a restart are still to be reported.
    let mut report_pending = spool.peek(|s| !s.unreported().is_empty());
    while let Some(payloads) = rx.recv().await {
        match append(&spool, &counters, payloads).await {
            Ok(dropped) => report_pending |= dropped,
            Err(e) => {
                tracing::error!(error = %e, "Cannot write to the spool; the batch is lost.");
                AgentCounters::add(&counters.batches_dropped, 1);
                continue;
            }
        }
        if report_pending && last_report.is_none_or(|t| t.elapsed() >= OVERFLOW_REPORT_EVERY) {
            match report_overflow(&spool, &counters).await {
                Ok(()) => {
                    last_report = Some(Instant::now());
                    report_pending = false;
                }
                Err(e) => tracing::error!(error = %e, "Cannot record the spool overflow."),
            }
        }
    }
}

/// Appends one batch; tells whether older batches were dropped for it.
async fn append(
    spool: &SharedSpool,
    counters: &Arc<AgentCounters>,
    payloads: Vec<Payload>,
) -> Result<bool, SpoolError> {
    let health = counters.snapshot();
    let appended = spool
        .with(move |s| s.append(|seq| wire::encode_batch(seq, &payloads, health)))
        .await??;
    if !appended.dropped.is_empty() {
        AgentCounters::add(&counters.batches_dropped, appended.dropped.batches);
        AgentCounters::add(&counters.bytes_dropped, appended.dropped.bytes);
    }
    spool.wake();
    Ok(!appended.dropped.is_empty())
}

/// Appends an overflow event for the drops not yet reported.
async fn report_overflow(
    spool: &SharedSpool,
    counters: &Arc<AgentCounters>,
) -> Result<(), SpoolError> {
    let pending = spool.peek(Spool::unreported);
    if pending.is_empty() {
        return Ok(());
    }
    let total = counters.snapshot().batches_dropped;
    let event = overflow_event(pending, total);
    tracing::warn!(
        dropped_batches = pending.batches,
        dropped_bytes = pending.bytes,
        first_seq = pending.first_seq,
        last_seq = pending.last_seq,
        "Spool full; dropped the oldest batches."
    );
    let health = counters.snapshot();
    let payloads = vec![Payload::Events(vec![event])];
    spool
        .with(move |s| -> Result<(), SpoolError> {
            s.append(|seq| wire::encode_batch(seq, &payloads, health))?;
            s.clear_unreported()
        })
        .await??;
    spool.wake();
    Ok(())
}

fn overflow_event(dropped: Dropped, total_since_start: u64) -> Event {
    Event::now(
        EventKind::SpoolOverflow,
        Severity::Warning,
        format!(
            "Spool full: dropped the {} oldest batches ({} bytes, seq {} to {}) that the collector had not acknowledged.",
            dropped.batches, dropped.bytes, dropped.first_seq, dropped.last_seq
        ),
    )
    .attr("dropped_batches", dropped.batches)
    .attr("dropped_bytes", dropped.bytes)
    .attr("first_seq", dropped.first_seq)
    .attr("last_seq", dropped.last_seq)
    .attr("dropped_batches_since_start", total_since_start)
}
