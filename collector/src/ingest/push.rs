//! One agent's open `Push` stream: batches in, acks out, in order.
//!
//! Batches are pipelined: the stream submits a batch to the group writer
//! and reads the next one while the first is being stored (at most
//! [`IN_FLIGHT`] at once), so one agent's batches share transactions and
//! their encoding runs beside the commit; acks still leave in order.
//!
//! A log chunk's block (compression, bloom filter, patterns) is encoded
//! here, on the blocking pool, before the batch is submitted: while the
//! writer commits one batch, the stream encodes the next.
//!
//! Invariants: a batch's ack leaves only after the group holding it was
//! committed; batches of a stream are submitted, and so stored, in the
//! order they came; a liveness signal (`seq` 0 with `liveness`) updates the
//! agent's last-seen time and health, stores nothing, and is never acked;
//! the stream ends on shutdown even if the agent stops reading acks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sightline_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::convert::{self, SampleLimits};
use crate::store::group::GroupWriter;
use crate::store::{BatchToStore, Stored, Touch};

/// A batch that took longer than this to store (queueing for the writer
/// included) asks the agent to slow down by as long as it took.
const SLOW_STORE: Duration = Duration::from_millis(500);
/// The most a slow-down asks for.
const MAX_SLOW_DOWN: Duration = Duration::from_secs(5);
/// Batches of one stream submitted and not yet acked, at most.
const IN_FLIGHT: usize = 8;

/// A batch on its way to its ack.
enum Pending {
    /// Answered without storing (refused for good).
    Ready(pb::Ack),
    /// Submitted to the writer.
    Stored {
        seq: u64,
        started: Instant,
        refused: convert::Refusals,
        answer: std::pin::Pin<
            Box<dyn Future<Output = Result<Stored, crate::store::group::GroupError>> + Send>,
        >,
    },
}

/// One agent's open `Push` stream.
pub(super) struct PushStream {
    pub(super) writer: GroupWriter,
    pub(super) liveness: Arc<super::liveness::Liveness>,
    pub(super) project_id: i64,
    pub(super) oid: i64,
    pub(super) instance: String,
    pub(super) limits: SampleLimits,
    /// The store's series cap, for the partial success's message.
    pub(super) series_per_agent: u64,
}

impl PushStream {
    pub(super) async fn run(
        self,
        mut inbound: Streaming<pb::Batch>,
        tx: mpsc::Sender<Result<pb::Ack, Status>>,
        shutdown: CancellationToken,
    ) {
        let this = Arc::new(self);
        let (pending, pending_rx) = mpsc::channel::<Pending>(IN_FLIGHT);
        // Cancelled when the ack side stops (a failed store, a client
        // gone), which ends the stream.
        let acks_done = CancellationToken::new();
        let acks = tokio::spawn(this.clone().send_acks(
            pending_rx,
            tx.clone(),
            shutdown.clone(),
            acks_done.clone(),
        ));
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("the collector is shutting down"))).await;
                    break;
                }
                () = acks_done.cancelled() => break,
                m = inbound.message() => m,
            };
            let batch = match message {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(status) => {
                    // Too large, undecodable, or the connection broke: say
                    // why, in case the agent is still listening.
                    tracing::warn!(oid = this.oid, error = %status.message(), "Push stream refused or broken.");
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            if batch.seq == 0 && batch.liveness {
                this.alive(batch);
                continue;
            }
            let next = tokio::select! {
                () = shutdown.cancelled() => break,
                next = this.submit(batch) => next,
            };
            let next = match next {
                Ok(next) => next,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            };
            // Waits while IN_FLIGHT batches are unacked; fails once the
            // ack side has stopped (a failed store, a client gone).
            let sent = tokio::select! {
                () = shutdown.cancelled() => break,
                sent = pending.send(next) => sent,
            };
            if sent.is_err() {
                break;
            }
        }
        // Acks for what was submitted still go out (the ack side stops on
        // shutdown by itself).
        drop(pending);
        let _ = acks.await;
    }

    /// Acks batches in the order they were submitted, each once stored.
    async fn send_acks(
        self: Arc<Self>,
        mut pending: mpsc::Receiver<Pending>,
        tx: mpsc::Sender<Result<pb::Ack, Status>>,
        shutdown: CancellationToken,
        done: CancellationToken,
    ) {
        let _done = done.drop_guard();
        while let Some(next) = pending.recv().await {
            let ack = match next {
                Pending::Ready(ack) => Ok(ack),
                Pending::Stored {
                    seq,
                    started,
                    refused,
                    answer,
                } => {
                    let stored = tokio::select! {
                        () = shutdown.cancelled() => return,
                        stored = answer => stored,
                    };
                    stored
                        .map(|stored| self.ack(seq, started, refused, stored))
                        .map_err(|e| {
                            tracing::error!(oid = self.oid, seq, error = %e, "Storing a batch failed.");
                            Status::unavailable("the collector could not store the batch; send it again")
                        })
                }
            };
            let failed = ack.is_err();
            // A client that stops reading acks must not hold up shutdown.
            tokio::select! {
                () = shutdown.cancelled() => return,
                sent = tx.send(ack) => if sent.is_err() { return },
            }
            if failed {
                return;
            }
        }
    }

    /// A liveness signal: the agent is there with nothing to send.
    fn alive(&self, batch: pb::Batch) {
        self.liveness.note(Touch {
            project_id: self.project_id,
            oid: self.oid,
            health: batch.health.map(convert::health_from_wire),
            seen_ms: crate::now_ms(),
        });
    }

    /// Converts a batch and queues it for the writer.
    async fn submit(&self, batch: pb::Batch) -> Result<Pending, Status> {
        let seq = batch.seq;
        let converted = match convert::batch_from_wire(batch, &self.limits) {
            Ok(b) => b,
            Err(reason) => {
                tracing::warn!(oid = self.oid, seq, reason = %reason, "Refused a batch.");
                return Ok(Pending::Ready(pb::Ack {
                    seq,
                    error: reason,
                    ..pb::Ack::default()
                }));
            }
        };
        let started = Instant::now();
        let mut batch = converted.batch;
        encode_log_blocks(&mut batch).await;
        let answer = self
            .writer
            .submit(BatchToStore {
                project_id: self.project_id,
                oid: self.oid,
                instance: self.instance.clone(),
                batch,
                received_ms: crate::now_ms(),
            })
            .await
            .map_err(|e| {
                tracing::error!(oid = self.oid, seq, error = %e, "Storing a batch failed.");
                Status::unavailable("the collector could not store the batch; send it again")
            })?;
        Ok(Pending::Stored {
            seq,
            started,
            refused: converted.refused,
            answer: Box::pin(answer),
        })
    }

    /// The ack of a stored batch.
    fn ack(
        &self,
        seq: u64,
        started: Instant,
        mut refused: convert::Refusals,
        stored: Stored,
    ) -> pb::Ack {
        let took = started.elapsed();
        let slow_down_ms = if took > SLOW_STORE {
            u32::try_from(took.min(MAX_SLOW_DOWN).as_millis()).unwrap_or(u32::MAX)
        } else {
            0
        };
        let duplicate = match stored {
            Stored::Duplicate => {
                // What a duplicate would have refused was told the first time.
                refused = convert::Refusals::default();
                true
            }
            Stored::New { samples_refused } => {
                refused.add_many(samples_refused, || {
                    format!(
                        "samples of new series over limit.agent.series={}",
                        self.series_per_agent
                    )
                });
                false
            }
        };
        if refused.count > 0 {
            tracing::debug!(oid = self.oid, seq, refused = refused.count, reasons = ?refused.reasons, "Stored a batch in part.");
        }
        pb::Ack {
            seq,
            duplicate,
            slow_down_ms,
            error: String::new(),
            partial: refused.to_wire(),
        }
    }
}

/// Encodes the block of each log chunk of `batch` ahead of the store (see
/// [`crate::model::LogPayload::block`]); one that fails is left to the store.
async fn encode_log_blocks(batch: &mut crate::model::IncomingBatch) {
    for payload in &mut batch.payloads {
        if let crate::model::BatchPayload::Logs(logs) = payload
            && logs.block.is_none()
        {
            let chunk = logs.chunk.clone();
            logs.block = tokio::task::spawn_blocking(move || crate::logs::block::encode(&chunk, 0))
                .await
                .ok()
                .flatten()
                .map(Arc::new);
        }
    }
}
