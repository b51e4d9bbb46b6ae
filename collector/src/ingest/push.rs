//! One agent's open `Push` stream: batches in, acks out, in order.
//!
//! Batches are pipelined: the stream submits a batch to the group writer
//! and reads the next one while the first is being stored (at most
//! [`IN_FLIGHT`] at once), so one agent's batches share transactions and
//! their encoding runs beside the commit; acks still leave in order.
//!
//! A log chunk's block (compression, bloom filter, patterns) is encoded
//! here, on the blocking pool, before the batch is submitted: while the
//! writer commits one batch, the stream encodes the next ones, up to
//! [`ENCODING_AHEAD`] + 2 at once (each on its own blocking thread, so one
//! agent's stream uses every core), while the stream reads and decodes
//! the batch after them. A submitter task hands the encoded batches to the
//! writer one by one, in the order they came.
//!
//! Invariants: a batch's ack leaves only after the group holding it was
//! committed; a batch of an agent terminated meanwhile is not acked, the
//! stream ends with `PERMISSION_DENIED` instead; batches of a stream are submitted, and so stored, in the
//! order they came, whatever order their encodings finish in; a liveness signal (`seq` 0 with `liveness`) updates the
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
/// Batches of one stream being encoded (or encoded and waiting for the
/// ones before them) that the submitter has not taken yet, at most. With
/// the one the submitter waits for and the one the stream is handing
/// over, at most `ENCODING_AHEAD + 2` encode at once.
const ENCODING_AHEAD: usize = 2;

/// A batch between the stream and the submitter, in the order it came.
enum Prepared {
    /// Answered without storing (refused for good).
    Ready(pb::Ack),
    /// Its log blocks being encoded on the blocking pool.
    Encoding {
        seq: u64,
        started: Instant,
        refused: convert::Refusals,
        batch: tokio::task::JoinHandle<crate::model::IncomingBatch>,
    },
}

/// The writer's answer for a submitted batch.
type Answer =
    std::pin::Pin<Box<dyn Future<Output = Result<Stored, crate::store::group::GroupError>> + Send>>;

/// A batch on its way to its ack.
enum Pending {
    /// Answered without storing (refused for good).
    Ready(pb::Ack),
    /// Submitted to the writer.
    Stored {
        seq: u64,
        started: Instant,
        refused: convert::Refusals,
        answer: Answer,
    },
    /// Could not be submitted: the stream ends with this status.
    Failed(Status),
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

/// Waits until agent `oid` is terminated (forever when no one can say).
async fn terminated(terminations: &mut tokio::sync::broadcast::Receiver<i64>, oid: i64) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match terminations.recv().await {
            Ok(gone) if gone == oid => return,
            // Missed ones: the sink still refuses this agent's batches.
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

impl PushStream {
    /// Runs the stream until the agent ends it, a store or stream error,
    /// shutdown, or the agent's termination (heard on `terminations`).
    pub(super) async fn run(
        self,
        mut inbound: Streaming<pb::Batch>,
        tx: mpsc::Sender<Result<pb::Ack, Status>>,
        mut terminations: tokio::sync::broadcast::Receiver<i64>,
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
        let (prepared, prepared_rx) = mpsc::channel::<Prepared>(ENCODING_AHEAD);
        let submitter = tokio::spawn(this.clone().submit_in_order(
            prepared_rx,
            pending,
            shutdown.clone(),
        ));
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("the collector is shutting down"))).await;
                    break;
                }
                () = acks_done.cancelled() => break,
                () = terminated(&mut terminations, this.oid) => {
                    tracing::info!(oid = this.oid, "Ended the stream of a terminated agent.");
                    let _ = tx.send(Err(super::terminated_status(this.oid))).await;
                    break;
                }
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
            let next = this.prepare(batch);
            // Waits while ENCODING_AHEAD batches are being encoded (and,
            // behind them, IN_FLIGHT unacked); fails once the submitter
            // has stopped (a failed submission, the ack side gone).
            let sent = tokio::select! {
                () = shutdown.cancelled() => break,
                () = acks_done.cancelled() => break,
                sent = prepared.send(next) => sent,
            };
            if sent.is_err() {
                break;
            }
        }
        // What was read is still submitted, and acked once stored (the
        // submitter and the ack side stop on shutdown by themselves).
        drop(prepared);
        let _ = submitter.await;
        let _ = acks.await;
    }

    /// Hands the prepared batches to the writer in the order they came,
    /// each once its encoding is done, and passes them on to the ack side.
    /// Stops after a submission fails (the ack side ends the stream with
    /// its status), when the ack side is gone, and on shutdown.
    async fn submit_in_order(
        self: Arc<Self>,
        mut prepared: mpsc::Receiver<Prepared>,
        pending: mpsc::Sender<Pending>,
        shutdown: CancellationToken,
    ) {
        while let Some(next) = prepared.recv().await {
            let next = match next {
                Prepared::Ready(ack) => Pending::Ready(ack),
                Prepared::Encoding {
                    seq,
                    started,
                    refused,
                    batch,
                } => {
                    let batch = tokio::select! {
                        () = shutdown.cancelled() => return,
                        batch = batch => batch,
                    };
                    match batch {
                        Ok(batch) => {
                            let submitted = tokio::select! {
                                () = shutdown.cancelled() => return,
                                submitted = self.submit(seq, batch) => submitted,
                            };
                            match submitted {
                                Ok(answer) => Pending::Stored {
                                    seq,
                                    started,
                                    refused,
                                    answer,
                                },
                                Err(status) => Pending::Failed(status),
                            }
                        }
                        Err(e) => {
                            tracing::error!(oid = self.oid, seq, error = %e, "Encoding a batch failed.");
                            Pending::Failed(Status::internal(
                                "the collector could not encode the batch",
                            ))
                        }
                    }
                }
            };
            let failed = matches!(next, Pending::Failed(_));
            // Waits while IN_FLIGHT batches are unacked; fails once the
            // ack side has stopped (a failed store, a client gone).
            let sent = tokio::select! {
                () = shutdown.cancelled() => return,
                sent = pending.send(next) => sent,
            };
            if sent.is_err() || failed {
                return;
            }
        }
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
                    match stored {
                        Ok(Stored::Terminated) => {
                            tracing::info!(
                                oid = self.oid,
                                seq,
                                "Ended the stream of a terminated agent."
                            );
                            Err(super::terminated_status(self.oid))
                        }
                        Ok(stored) => Ok(self.ack(seq, started, refused, stored)),
                        Err(e) => {
                            tracing::error!(oid = self.oid, seq, error = %e, "Storing a batch failed.");
                            Err(Status::unavailable(
                                "the collector could not store the batch; send it again",
                            ))
                        }
                    }
                }
                Pending::Failed(status) => Err(status),
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

    /// Converts a batch and starts encoding its log blocks on the
    /// blocking pool.
    fn prepare(&self, batch: pb::Batch) -> Prepared {
        let seq = batch.seq;
        let converted = match convert::batch_from_wire(batch, &self.limits) {
            Ok(b) => b,
            Err(reason) => {
                tracing::warn!(oid = self.oid, seq, reason = %reason, "Refused a batch.");
                return Prepared::Ready(pb::Ack {
                    seq,
                    error: reason,
                    ..pb::Ack::default()
                });
            }
        };
        let started = Instant::now();
        let mut batch = converted.batch;
        let batch = tokio::task::spawn_blocking(move || {
            encode_log_blocks(&mut batch);
            batch
        });
        Prepared::Encoding {
            seq,
            started,
            refused: converted.refused,
            batch,
        }
    }

    /// Queues a batch for the writer: its answer, once stored.
    async fn submit(&self, seq: u64, batch: crate::model::IncomingBatch) -> Result<Answer, Status> {
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
        Ok(Box::pin(answer))
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
            // Never acked (the stream ends instead, in `send_acks`).
            Stored::Duplicate | Stored::Terminated => {
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
/// [`crate::model::LogPayload::block`]); one that fails is left to the
/// store. Blocking: CPU for a while.
fn encode_log_blocks(batch: &mut crate::model::IncomingBatch) {
    for payload in &mut batch.payloads {
        if let crate::model::BatchPayload::Logs(logs) = payload
            && logs.block.is_none()
        {
            logs.block = crate::logs::block::encode(&logs.chunk, 0).map(Arc::new);
        }
    }
}
