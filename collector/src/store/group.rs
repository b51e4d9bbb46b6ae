//! Group commit: one writer task takes batches from every `Push` stream
//! through a bounded channel and, under load, stores many of them (whatever
//! is queued, up to [`GroupLimits`]) with one call of
//! [`BatchSink::store_batches`], that is one transaction and one fsync.
//!
//! Invariants:
//! - A stream hears back about its batch only after the group holding it
//!   was stored: the answer is sent after `store_batches` returned.
//! - The queue is bounded; a full queue makes streams wait (backpressure
//!   reaches the agents as slower acks), never grows.
//! - The writer ends when the last handle is dropped or on shutdown; a
//!   batch still queued then is answered with an error, so its stream
//!   ends and the agent resends it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{BatchSink, BatchToStore, StoreError, Stored};

/// How large a group may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Batches queued for the writer, at most.
    pub queue: usize,
    /// Batches per group, at most.
    pub max_batches: usize,
    /// Rows per group, at most (a group always takes at least one batch).
    pub max_rows: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            queue: 4096,
            max_batches: 512,
            max_rows: 100_000,
        }
    }
}

/// Counters of the writer, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Groups stored (one transaction each).
    pub groups: AtomicU64,
    /// Batches stored or recognised as duplicates.
    pub batches: AtomicU64,
    /// Told after a group holding agents' events committed: the alert
    /// evaluator looks at once instead of at its next tick.
    pub events_stored: tokio::sync::Notify,
}

struct Job {
    batch: BatchToStore,
    answer: oneshot::Sender<Result<Stored, GroupError>>,
}

/// Why a batch could not be stored through the writer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    /// The store failed for the group holding the batch.
    #[error("{0}")]
    Store(String),
    /// The writer has stopped (shutdown).
    #[error("the store writer has stopped")]
    Stopped,
}

/// A handle for submitting batches to the writer task.
#[derive(Clone)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Job>,
    stats: Arc<GroupStats>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl GroupWriter {
    /// Starts the writer task over `sink`; it ends on `shutdown` or when
    /// every handle is gone. The join handle lets the caller wait for it.
    pub fn start<S: BatchSink>(
        sink: Arc<S>,
        limits: GroupLimits,
        shutdown: CancellationToken,
    ) -> (GroupWriter, tokio::task::JoinHandle<()>) {
        let (jobs, rx) = mpsc::channel(limits.queue.max(1));
        let stats = Arc::new(GroupStats::default());
        let task = tokio::spawn(run(sink, rx, limits, stats.clone(), shutdown));
        (GroupWriter { jobs, stats }, task)
    }

    /// Stores one batch (grouped with whatever else is queued); returns
    /// once the group holding it is durable.
    pub async fn store(&self, batch: BatchToStore) -> Result<Stored, GroupError> {
        self.submit(batch).await?.await
    }

    /// Queues one batch and returns once it is queued: batches submitted
    /// one after another are stored in that order. The returned future
    /// answers once the group holding it is durable, so a stream can
    /// submit its next batch while this one is being stored.
    pub async fn submit(
        &self,
        batch: BatchToStore,
    ) -> Result<impl Future<Output = Result<Stored, GroupError>> + Send + 'static, GroupError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { batch, answer })
            .await
            .map_err(|_| GroupError::Stopped)?;
        Ok(async move { answered.await.map_err(|_| GroupError::Stopped)? })
    }

    /// The writer's counters.
    pub fn stats(&self) -> &GroupStats {
        &self.stats
    }

    /// The writer's counters, to share (the API shows them).
    pub fn stats_handle(&self) -> Arc<GroupStats> {
        self.stats.clone()
    }
}

async fn run<S: BatchSink>(
    sink: Arc<S>,
    mut rx: mpsc::Receiver<Job>,
    limits: GroupLimits,
    stats: Arc<GroupStats>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            job = rx.recv() => match job { Some(j) => j, None => return },
        };
        let mut rows = first.batch.rows();
        let mut group = vec![first];
        // Whatever else is queued, up to the limits: under load the queue
        // fills while the previous group commits.
        while group.len() < limits.max_batches && rows < limits.max_rows {
            match rx.try_recv() {
                Ok(job) => {
                    rows += job.batch.rows();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        store_group(&*sink, group, &stats).await;
    }
    // Shutdown: answer what is queued so no stream waits forever.
    rx.close();
    while let Ok(job) = rx.try_recv() {
        let _ = job.answer.send(Err(GroupError::Stopped));
    }
}

async fn store_group<S: BatchSink>(sink: &S, group: Vec<Job>, stats: &GroupStats) {
    let (batches, answers): (Vec<BatchToStore>, Vec<_>) =
        group.into_iter().map(|j| (j.batch, j.answer)).unzip();
    match sink.store_batches(&batches).await {
        Ok(results) => {
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats
                .batches
                .fetch_add(results.len() as u64, Ordering::Relaxed);
            let events = batches.iter().zip(&results).any(|(b, r)| {
                *r != Stored::Duplicate
                    && b.batch
                        .payloads
                        .iter()
                        .any(|p| matches!(p, crate::model::BatchPayload::Events(_)))
            });
            if events {
                stats.events_stored.notify_one();
            }
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(Ok(result));
            }
        }
        Err(e) if batches.len() > 1 => {
            // One batch may be what fails the group: store each alone so
            // the others are not held back by it.
            tracing::warn!(error = %e, batches = batches.len(), "Storing a group failed; storing its batches one by one.");
            for (batch, answer) in batches.into_iter().zip(answers) {
                let one = std::slice::from_ref(&batch);
                let result = match sink.store_batches(one).await {
                    Ok(mut r) => {
                        stats.groups.fetch_add(1, Ordering::Relaxed);
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                        r.pop().ok_or_else(|| GroupError::Store("no answer".into()))
                    }
                    Err(e) => Err(failed(&e)),
                };
                let _ = answer.send(result);
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(failed(&e)));
            }
        }
    }
}

fn failed(e: &StoreError) -> GroupError {
    GroupError::Store(e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::IncomingBatch;

    /// A sink that fails every call holding sequence number 13, and
    /// records the sizes of the calls it gets.
    #[derive(Default)]
    struct Picky {
        calls: Mutex<Vec<usize>>,
    }

    impl BatchSink for Picky {
        async fn store_batches(&self, group: &[BatchToStore]) -> Result<Vec<Stored>, StoreError> {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(group.len());
            }
            if group.iter().any(|b| b.batch.seq == 13) {
                return Err(StoreError::Corrupt("thirteen".into()));
            }
            Ok(vec![Stored::NEW; group.len()])
        }
    }

    fn job(seq: u64) -> (Job, oneshot::Receiver<Result<Stored, GroupError>>) {
        let (answer, answered) = oneshot::channel();
        let batch = BatchToStore {
            project_id: 1,
            oid: 1,
            instance: "i".into(),
            batch: IncomingBatch {
                seq,
                time_ms: 0,
                health: None,
                payloads: vec![],
            },
            received_ms: 0,
        };
        (Job { batch, answer }, answered)
    }

    #[tokio::test]
    async fn a_failing_group_is_stored_one_by_one_so_one_batch_holds_back_no_other() {
        let sink = Picky::default();
        let stats = GroupStats::default();
        let (jobs, answers): (Vec<_>, Vec<_>) = [1, 13, 2].into_iter().map(job).unzip();
        store_group(&sink, jobs, &stats).await;
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.expect("answered"));
        }
        assert!(matches!(results[0], Ok(Stored::New { .. })));
        assert!(matches!(results[1], Err(GroupError::Store(_))));
        assert!(matches!(results[2], Ok(Stored::New { .. })));
        assert_eq!(*sink.calls.lock().expect("calls"), [3, 1, 1, 1]);
        assert_eq!(stats.batches.load(Ordering::Relaxed), 2);
        assert_eq!(stats.groups.load(Ordering::Relaxed), 2);
    }
}
