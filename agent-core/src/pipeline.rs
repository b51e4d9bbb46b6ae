//! From a source's output to the spool: the bounded channel that sources
//! write to, and the task that encodes, splits, numbers and spools what
//! each send carries (one send: one batch, or several when it is larger
//! than [`BATCH_LIMIT`]), then wakes the transport.
//!
//! Invariants:
//! - The channel is bounded ([`OUTPUT_CAPACITY`]): a source that outruns the
//!   disk waits instead of growing memory. With [`SpoolFull::Block`] the
//!   pipeline itself waits for room, so the source waits; the wait ends
//!   when the agent stops.
//! - Every send gets a [`Receipt`] that resolves; every loss is counted and
//!   ends up in a `spool.overflow` event: one report in flight at a time,
//!   carrying every drop the collector has not acknowledged a report of
//!   (see [`crate::spool`]), including what was still queued at shutdown.
//! - No batch is ever spooled that the collector would refuse for its size:
//!   sends are split below [`BATCH_LIMIT`], and a product payload that
//!   cannot be split is refused to the source before it is spooled.
//! - Spool IO runs on the blocking pool, never on the async workers; what
//!   needs no IO (the index, the cache of recent batches, the in-flight
//!   marks) is used in place when the lock is free, without a thread hop.
//! - With zstd on the wire ([`SharedSpool::compressed`]), a batch's
//!   payloads are compressed on the blocking pool before the spool is
//!   locked, and the spool holds the batch as it goes on the wire
//!   ([`wire::encode_compressed_batch`]): the transport's thread sends it
//!   as it is, so compressing and sending use two cores, and the spool
//!   writes (and checksums) a seventh of the bytes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::domain::{Event, Payload, Severity, event_names};
use crate::health::{AgentCounters, Records};
use crate::receipt::{DropReason, Receipt, Tracker};
use crate::spool::{BatchMeta, Dropped, Spool, SpoolError, SpoolFull};
use crate::transport::wire;

/// Sends a source may have queued before it waits.
pub const OUTPUT_CAPACITY: usize = 64;
/// The most bytes one batch may hold: well under the collector's 4 MiB
/// message limit, so a batch is never refused for size after it was spooled.
pub const BATCH_LIMIT: usize = 1 << 20;
/// Room kept in a batch for its number, time and health. (A health
/// listing hundreds of sources may take more; the batch then exceeds
/// [`BATCH_LIMIT`] by that much, still far below what the collector takes.)
const BATCH_HEAD_ROOM: usize = 8 << 10;

/// The spool, shared by the pipeline (appends) and the transport (reads and
/// settles), with a wake-up for the transport on every append and one for
/// a blocked pipeline whenever room is freed.
#[derive(Clone, Debug)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    appended: Arc<Notify>,
    freed: Arc<Notify>,
    counters: Arc<AgentCounters>,
    /// Whether batches are spooled compressed.
    compress: bool,
}

impl SharedSpool {
    /// Shares `spool`, keeping `counters`' spool depth up to date.
    pub fn new(spool: Spool, counters: Arc<AgentCounters>) -> SharedSpool {
        let shared = SharedSpool {
            inner: Arc::new(Mutex::new(spool)),
            appended: Arc::new(Notify::new()),
            freed: Arc::new(Notify::new()),
            counters,
            compress: false,
        };
        if let Ok(spool) = shared.inner.lock() {
            shared.publish_depth(&spool, u64::MAX);
        }
        shared
    }

    /// The pipeline spools batches zstd-compressed when `compress` (the
    /// wire's compression is zstd): see [`wire::encode_compressed_batch`].
    #[must_use]
    pub fn compressed(mut self, compress: bool) -> SharedSpool {
        self.compress = compress;
        self
    }

    /// Runs `f` on the spool on the blocking pool: for anything that
    /// touches the disk.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> R + Send + 'static,
    ) -> Result<R, SpoolError> {
        self.with_prepared(|| (), move |s, ()| f(s)).await
    }

    /// Runs `prepare` on the blocking pool, then `f` on the spool with what
    /// it made: the spool is locked for `f` only.
    pub async fn with_prepared<P: Send + 'static, R: Send + 'static>(
        &self,
        prepare: impl FnOnce() -> P + Send + 'static,
        f: impl FnOnce(&mut Spool, P) -> R + Send + 'static,
    ) -> Result<R, SpoolError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let prepared = prepare();
            let mut spool = this
                .inner
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let before = spool.bytes();
            let result = f(&mut spool, prepared);
            this.publish_depth(&spool, before);
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
    /// [`Spool::mark_in_flight`], [`Spool::resume`]), on the blocking pool
    /// when the lock is held, so the async thread never waits behind disk IO.
    pub async fn in_memory<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> R + Send + 'static,
    ) -> Result<R, SpoolError> {
        match self.inner.try_lock() {
            Ok(mut spool) => return Ok(f(&mut spool)),
            Err(std::sync::TryLockError::Poisoned(p)) => return Ok(f(&mut p.into_inner())),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        self.with(f).await
    }

    fn publish_depth(&self, spool: &Spool, bytes_before: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.counters
            .spool_batches
            .store(spool.len() as u64, Relaxed);
        self.counters.spool_bytes.store(spool.bytes(), Relaxed);
        if spool.bytes() < bytes_before {
            // One waiter (the pipeline); a permit stored while it is not
            // waiting yet is what makes a wake-up between its room check
            // and its wait impossible to lose.
            self.freed.notify_one();
        }
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

/// What a source sends: payloads that travel (and are stored) together,
/// with the source's position after them and how many records they hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutBatch {
    /// The payloads.
    pub payloads: Vec<Payload>,
    /// The source's opaque position after these records (a file offset,
    /// say), kept with the spooled batch; see [`crate::spool::Resume`].
    pub cursor: Option<Vec<u8>>,
    /// How many of the source's records this holds, for its counters.
    pub records: u64,
}

impl OutBatch {
    /// Payloads with no cursor, counting no records.
    pub fn new(payloads: Vec<Payload>) -> OutBatch {
        OutBatch {
            payloads,
            cursor: None,
            records: 0,
        }
    }
}

struct Queued {
    source: Arc<str>,
    batch: OutBatch,
    tracker: Arc<Tracker>,
}

/// Where a source sends what it collected.
#[derive(Clone, Debug)]
pub struct Output {
    tx: mpsc::Sender<Queued>,
    source: Arc<str>,
    counters: Arc<AgentCounters>,
}

/// The pipeline's receiving end.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Queued>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The pipeline has stopped (the agent is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the agent's output pipeline has stopped")]
pub struct OutputClosed;

impl Output {
    /// An output for source `source` and the pipeline's receiving end.
    pub fn channel(source: &str, counters: Arc<AgentCounters>) -> (Output, Inbox) {
        let (tx, rx) = mpsc::channel(OUTPUT_CAPACITY);
        let out = Output {
            tx,
            source: Arc::from(source),
            counters,
        };
        (out, Inbox { rx })
    }

    /// The output of another source sharing this pipeline (a log file
    /// group, say): its batches carry its name, its cursor and counters.
    pub fn named(&self, source: &str) -> Output {
        Output {
            tx: self.tx.clone(),
            source: Arc::from(source),
            counters: self.counters.clone(),
        }
    }

    /// This output's source name.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Counts records the source read (before any filtering).
    pub fn records_read(&self, n: u64) {
        self.counters.records(&self.source, Records::Read, n);
    }

    /// Queues one send; waits while the pipeline is behind. The receipt
    /// tells what became of it (drop it if that does not matter). A
    /// product payload larger than [`BATCH_LIMIT`] is refused here: the
    /// receipt resolves at once as dropped for [`DropReason::TooLarge`].
    pub async fn send(&self, batch: OutBatch) -> Result<Receipt, OutputClosed> {
        let (tracker, receipt) = Tracker::new();
        if let Some(bytes) = batch.payloads.iter().find_map(|p| match p {
            Payload::Encoded(w) if w.len() + BATCH_HEAD_ROOM > BATCH_LIMIT => Some(w.len()),
            _ => None,
        }) {
            tracing::error!(
                source = %self.source,
                bytes,
                limit = BATCH_LIMIT - BATCH_HEAD_ROOM,
                "A payload is larger than a batch may be; refused before spooling."
            );
            self.counters
                .records(&self.source, Records::Dropped, batch.records);
            tracker.part_dropped_unspooled(DropReason::TooLarge);
            return Ok(receipt);
        }
        let queued = Queued {
            source: self.source.clone(),
            batch,
            tracker,
        };
        self.tx.send(queued).await.map_err(|_| OutputClosed)?;
        Ok(receipt)
    }

    /// Queues what one collection cycle produced, as one batch, not
    /// waiting for its fate.
    pub async fn send_all(&self, payloads: Vec<Payload>) -> Result<(), OutputClosed> {
        if payloads.is_empty() {
            return Ok(());
        }
        self.send(OutBatch::new(payloads)).await.map(drop)
    }

    /// Queues one event; the receipt says when it is spooled.
    pub async fn event(&self, event: Event) -> Result<Receipt, OutputClosed> {
        self.send(OutBatch::new(vec![Payload::Events(vec![event])]))
            .await
    }
}

/// A send being spooled: its parts not yet appended.
struct Spooling {
    source: Arc<str>,
    records: u64,
    cursor: Option<Vec<u8>>,
    tracker: Arc<Tracker>,
    time: SystemTime,
    /// Each part: the payloads of one batch.
    parts: VecDeque<Part>,
}

/// The payloads of one batch.
enum Part {
    /// Each encoded.
    Plain(Vec<Vec<u8>>),
    /// Framed as in the batch and compressed ([`wire::compress_payloads`]).
    Compressed(Vec<u8>),
}

impl Spooling {
    /// Encodes and splits a send into parts below [`BATCH_LIMIT`].
    fn new(queued: Queued) -> Spooling {
        let Queued {
            source,
            batch,
            tracker,
        } = queued;
        let time = batch
            .payloads
            .first()
            .map_or_else(SystemTime::now, Payload::time);
        let room = BATCH_LIMIT - BATCH_HEAD_ROOM;
        let mut parts: VecDeque<Vec<Vec<u8>>> = VecDeque::new();
        let mut current: Vec<Vec<u8>> = Vec::new();
        let mut used = 0;
        for payload in batch.payloads {
            let chunks = match payload {
                // Already encoded: moved, not copied. Over the limit, it
                // was refused in `send`.
                Payload::Encoded(w) => vec![w.into_bytes()],
                other => wire::encode_payload(&other, room).unwrap_or_default(),
            };
            for chunk in chunks {
                let len = wire::framed_len(&chunk);
                if !current.is_empty() && used + len > room {
                    parts.push_back(std::mem::take(&mut current));
                    used = 0;
                }
                used += len;
                current.push(chunk);
            }
        }
        parts.push_back(current);
        tracker.expect_parts(parts.len());
        Spooling {
            source,
            records: batch.records,
            cursor: batch.cursor,
            tracker,
            time,
            parts: parts.into_iter().map(Part::Plain).collect(),
        }
    }

    /// Compresses the parts not compressed yet (one that zstd fails on
    /// stays plain: it is spooled, and sent, as it is).
    fn compress(mut self) -> Spooling {
        for part in &mut self.parts {
            if let Part::Plain(payloads) = part
                && let Ok(compressed) = wire::compress_payloads(payloads)
            {
                *part = Part::Compressed(compressed);
            }
        }
        self
    }

    /// Appends parts while there is room (with [`SpoolFull::Block`]) or
    /// always (dropping the oldest); what is left waits for room.
    fn append(
        mut self,
        spool: &mut Spool,
        policy: SpoolFull,
        counters: &AgentCounters,
    ) -> Result<Option<Spooling>, SpoolError> {
        while let Some(part) = self.parts.pop_front() {
            let last = self.parts.is_empty();
            let meta = BatchMeta {
                source: self.source.clone(),
                records: if last { self.records } else { 0 },
                cursor: if last { self.cursor.clone() } else { None },
            };
            // The number `append` gives next: known here, under the same
            // lock, so the exact size can be checked for room before
            // appending (checked again when the number is handed over).
            let seq = spool.last_seq() + 1;
            let health = counters.snapshot();
            let bytes = match &part {
                Part::Plain(payloads) => wire::encode_batch(seq, self.time, &health, payloads),
                Part::Compressed(body) => {
                    wire::encode_compressed_batch(seq, self.time, &health, body)
                }
            };
            if policy == SpoolFull::Block && !spool.has_room(Spool::file_len(bytes.len(), &meta)) {
                self.parts.push_front(part);
                return Ok(Some(self));
            }
            let appended = spool.append(meta, Some(self.tracker.clone()), |assigned| {
                assert_eq!(assigned, seq, "the spool numbered the batch as announced");
                bytes
            });
            if let Err(e) = appended {
                // The rest of this send is lost with the failed part.
                let rest = self.parts.len() as u64;
                for _ in 0..rest {
                    self.tracker.part_dropped_unspooled(DropReason::Damaged);
                }
                if !last {
                    counters.records(&self.source, Records::Dropped, self.records);
                }
                let _ = spool.count_unspooled(rest, 0);
                return Err(e);
            }
        }
        Ok(None)
    }

    /// The agent stopped before these parts could be spooled.
    fn abandon(self, counters: &AgentCounters) -> u64 {
        let n = self.parts.len() as u64;
        for _ in 0..n {
            self.tracker.part_dropped_unspooled(DropReason::Shutdown);
        }
        counters.records(&self.source, Records::Dropped, self.records);
        n
    }
}

/// Spools everything received until every output is dropped, or `stop`
/// fires (the agent's drain time is over): what is still queued then is
/// counted as dropped, and reported by this run or the next. After each
/// send, if drops are waiting to be reported and no report is in flight,
/// appends one.
pub async fn run(
    mut inbox: Inbox,
    spool: SharedSpool,
    counters: Arc<AgentCounters>,
    policy: SpoolFull,
    product: &'static str,
    stop: CancellationToken,
) {
    let mut abandoned = 0u64;
    loop {
        let queued = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            q = inbox.rx.recv() => match q {
                Some(q) => q,
                None => break,
            },
        };
        let mut pending = Some(Spooling::new(queued));
        while let Some(sending) = pending.take() {
            let c = counters.clone();
            let compress = spool.compress;
            let appended = spool.with_prepared(
                move || {
                    if compress {
                        sending.compress()
                    } else {
                        sending
                    }
                },
                move |s, sending| sending.append(s, policy, &c),
            );
            match appended.await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(blocked))) => {
                    spool.wake();
                    tokio::select! {
                        () = stop.cancelled() => abandoned += blocked.abandon(&counters),
                        () = spool.freed.notified() => pending = Some(blocked),
                    }
                }
                Ok(Err(e)) | Err(e) => {
                    tracing::error!(error = %e, "Cannot write to the spool; the batch is lost.");
                }
            }
        }
        spool.wake();
        let due = spool.in_memory(|s| s.report_due().is_some()).await;
        if matches!(due, Ok(true))
            && let Err(e) = report_overflow(&spool, &counters, product).await
        {
            tracing::error!(error = %e, "Cannot record the spool overflow.");
        }
    }
    inbox.rx.close();
    while let Ok(queued) = inbox.rx.try_recv() {
        abandoned += 1;
        queued.tracker.part_dropped_unspooled(DropReason::Shutdown);
        counters.records(&queued.source, Records::Dropped, queued.batch.records);
    }
    if abandoned > 0 {
        tracing::warn!(
            batches = abandoned,
            "Stopped before everything queued could be spooled; counted as dropped, to be reported."
        );
        match spool.with(move |s| s.count_unspooled(abandoned, 0)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => {
                tracing::error!(error = %e, "Cannot record what was dropped at shutdown.");
            }
        }
    }
}

/// Appends the report of the drops not yet reported.
async fn report_overflow(
    spool: &SharedSpool,
    counters: &Arc<AgentCounters>,
    product: &'static str,
) -> Result<(), SpoolError> {
    let health = counters.snapshot();
    let total = health.batches_dropped;
    spool
        .with(move |s| {
            let meta = BatchMeta {
                source: Arc::from(product),
                records: 0,
                cursor: None,
            };
            s.append_report(meta, |seq, covers| {
                tracing::warn!(
                    dropped_batches = covers.batches,
                    dropped_bytes = covers.bytes,
                    first_seq = covers.first_seq,
                    last_seq = covers.last_seq,
                    "Spool full; dropped the oldest batches."
                );
                let event = overflow_event(covers, total);
                let payloads = wire::encode_payload(&Payload::Events(vec![event]), BATCH_LIMIT)
                    .unwrap_or_default();
                wire::encode_batch(seq, SystemTime::now(), &health, &payloads)
            })
        })
        .await??;
    spool.wake();
    Ok(())
}

fn overflow_event(dropped: Dropped, total_since_start: u64) -> Event {
    let message = if dropped.last_seq == 0 {
        format!(
            "Dropped {} batches that could not be spooled before the agent stopped.",
            dropped.batches
        )
    } else {
        format!(
            "Spool full: dropped {} batches ({} bytes, seq {} to {}) that the collector had not acknowledged.",
            dropped.batches, dropped.bytes, dropped.first_seq, dropped.last_seq
        )
    };
    Event::now(event_names::SPOOL_OVERFLOW, Severity::Warning, message)
        .attr("dropped_batches", dropped.batches)
        .attr("dropped_bytes", dropped.bytes)
        .attr("first_seq", dropped.first_seq)
        .attr("last_seq", dropped.last_seq)
        .attr("dropped_batches_since_start", total_since_start)
}

#[cfg(test)]
mod tests;
