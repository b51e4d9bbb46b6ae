//! From a collection loop's output to the spool: the bounded channel that
//! sources write to, and the task that numbers, encodes and spools each
//! payload, then wakes the transport.
//!
//! Invariants:
//! - The channel is bounded ([`OUTPUT_CAPACITY`]): a source that outruns the
//!   disk waits instead of growing memory.
//! - Every overflow of the spool ends up in an `SpoolOverflow` event, at most
//!   one every [`OVERFLOW_REPORT_EVERY`], carrying the counts since the last
//!   report and the total since start.
//! - Spool IO runs on the blocking pool, never on the async workers.

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

    /// Runs `f` on the spool on the blocking pool.
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
    tx: mpsc::Sender<Payload>,
}

/// The pipeline has stopped (the agent is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the agent's output pipeline has stopped")]
pub struct OutputClosed;

impl Output {
    /// A connected output and the pipeline's receiving end.
    pub fn channel() -> (Output, mpsc::Receiver<Payload>) {
        let (tx, rx) = mpsc::channel(OUTPUT_CAPACITY);
        (Output { tx }, rx)
    }

    /// Queues a payload; waits while the pipeline is behind.
    pub async fn send(&self, payload: Payload) -> Result<(), OutputClosed> {
        self.tx.send(payload).await.map_err(|_| OutputClosed)
    }

    /// Queues one event.
    pub async fn event(&self, event: Event) -> Result<(), OutputClosed> {
        self.send(Payload::Events(vec![event])).await
    }
}

/// Spools every payload received until all outputs are dropped.
pub async fn run(
    mut rx: mpsc::Receiver<Payload>,
    spool: SharedSpool,
    counters: Arc<AgentCounters>,
) {
    let mut last_report: Option<Instant> = None;
    while let Some(payload) = rx.recv().await {
        if let Err(e) = append(&spool, &counters, payload).await {
            tracing::error!(error = %e, "Cannot write to the spool; the batch is lost.");
            AgentCounters::add(&counters.batches_dropped, 1);
            continue;
        }
        let due = last_report.is_none_or(|t| t.elapsed() >= OVERFLOW_REPORT_EVERY);
        if due {
            match report_overflow(&spool, &counters).await {
                Ok(true) => last_report = Some(Instant::now()),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "Cannot record the spool overflow."),
            }
        }
    }
}

async fn append(
    spool: &SharedSpool,
    counters: &Arc<AgentCounters>,
    payload: Payload,
) -> Result<(), SpoolError> {
    let health = counters.snapshot();
    let appended = spool
        .with(move |s| s.append(|seq| wire::encode_batch(seq, &payload, health)))
        .await??;
    if !appended.dropped.is_empty() {
        AgentCounters::add(&counters.batches_dropped, appended.dropped.batches);
        AgentCounters::add(&counters.bytes_dropped, appended.dropped.bytes);
    }
    spool.wake();
    Ok(())
}

/// Appends an overflow event for the drops not yet reported, if any.
async fn report_overflow(
    spool: &SharedSpool,
    counters: &Arc<AgentCounters>,
) -> Result<bool, SpoolError> {
    let pending = spool.with(|s| s.unreported()).await?;
    if pending.is_empty() {
        return Ok(false);
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
    let payload = Payload::Events(vec![event]);
    spool
        .with(move |s| -> Result<(), SpoolError> {
            s.append(|seq| wire::encode_batch(seq, &payload, health))?;
            s.clear_unreported()
        })
        .await??;
    spool.wake();
    Ok(true)
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
