//! From a collection loop's output to the spool: the bounded channel that
//! sources write to, and the task that numbers, encodes and spools what each
//! send carries (one collection cycle: one batch), then wakes the transport.
//!
//! Invariants:
//! - The channel is bounded ([`OUTPUT_CAPACITY`]): a source that outruns the
//!   disk waits instead of growing memory.
//! - Every overflow of the spool ends up in a `SpoolOverflow` event: one
//!   report in flight at a time, carrying every drop the collector has not
//!   acknowledged a report of (see [`crate::spool`]).
//! - Spool IO runs on the blocking pool, never on the async workers; what
//!   needs no IO (the index of sequence numbers, the cache of recent
//!   batches) is read in place when the lock is free, without a thread hop.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use crate::domain::{Event, EventKind, Payload, Severity};
use crate::health::AgentCounters;
use crate::spool::{Dropped, Spool, SpoolError};
use crate::transport::wire;

/// Payloads a source may have queued before it waits.
pub const OUTPUT_CAPACITY: usize = 64;

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

    /// Runs `f` on the spool: here and now when the lock is free (for
    /// what is held in memory: [`Spool::next_after`], [`Spool::cached`],
    /// [`Spool::report_due`]), on the blocking pool when the lock is held,
    /// so the async thread never waits behind disk IO.
    pub async fn look<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Spool) -> R + Send + 'static,
    ) -> Result<R, SpoolError> {
        match self.inner.try_lock() {
            Ok(spool) => return Ok(f(&spool)),
            Err(std::sync::TryLockError::Poisoned(p)) => return Ok(f(&p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        self.with(move |s| f(s)).await
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

/// Spools everything received until all outputs are dropped. After each
/// append, if drops are waiting to be reported and no report is in flight,
/// appends one.
pub async fn run(
    mut rx: mpsc::Receiver<Vec<Payload>>,
    spool: SharedSpool,
    counters: Arc<AgentCounters>,
) {
    while let Some(payloads) = rx.recv().await {
        if let Err(e) = append(&spool, &counters, payloads).await {
            tracing::error!(error = %e, "Cannot write to the spool; the batch is lost.");
            AgentCounters::add(&counters.batches_dropped, 1);
            continue;
        }
        let due = spool.look(|s| s.report_due().is_some()).await;
        if matches!(due, Ok(true))
            && let Err(e) = report_overflow(&spool, &counters).await
        {
            tracing::error!(error = %e, "Cannot record the spool overflow.");
        }
    }
}

async fn append(
    spool: &SharedSpool,
    counters: &Arc<AgentCounters>,
    payloads: Vec<Payload>,
) -> Result<(), SpoolError> {
    let health = counters.snapshot();
    let appended = spool
        .with(move |s| s.append(|seq| wire::encode_batch(seq, &payloads, health)))
        .await??;
    count_drops(counters, appended.dropped);
    spool.wake();
    Ok(())
}

fn count_drops(counters: &AgentCounters, dropped: Dropped) {
    if !dropped.is_empty() {
        AgentCounters::add(&counters.batches_dropped, dropped.batches);
        AgentCounters::add(&counters.bytes_dropped, dropped.bytes);
    }
}

/// Appends the report of the drops not yet reported.
async fn report_overflow(
    spool: &SharedSpool,
    counters: &Arc<AgentCounters>,
) -> Result<(), SpoolError> {
    let total = counters.snapshot().batches_dropped;
    let health = counters.snapshot();
    let appended = spool
        .with(move |s| {
            s.append_report(|seq, covers| {
                tracing::warn!(
                    dropped_batches = covers.batches,
                    dropped_bytes = covers.bytes,
                    first_seq = covers.first_seq,
                    last_seq = covers.last_seq,
                    "Spool full; dropped the oldest batches."
                );
                let event = overflow_event(covers, total);
                wire::encode_batch(seq, &[Payload::Events(vec![event])], health)
            })
        })
        .await??;
    count_drops(counters, appended.dropped);
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
