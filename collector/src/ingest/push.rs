//! One agent's open `Push` stream: batches in, acks out, in order.
//!
//! Invariants: a batch's ack leaves only after the group holding it was
//! committed; a liveness signal (`seq` 0 with `liveness`) updates the
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
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = tx.send(Err(Status::unavailable("the collector is shutting down"))).await;
                    return;
                }
                m = inbound.message() => m,
            };
            let batch = match message {
                Ok(Some(batch)) => batch,
                Ok(None) => return,
                Err(status) => {
                    // Too large, undecodable, or the connection broke: say
                    // why, in case the agent is still listening.
                    tracing::warn!(oid = self.oid, error = %status.message(), "Push stream refused or broken.");
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            if batch.seq == 0 && batch.liveness {
                self.alive(batch);
                continue;
            }
            let ack = match self.store_one(batch).await {
                Ok(ack) => ack,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            // A client that stops reading acks must not hold up shutdown.
            tokio::select! {
                () = shutdown.cancelled() => return,
                sent = tx.send(Ok(ack)) => if sent.is_err() { return },
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

    async fn store_one(&self, batch: pb::Batch) -> Result<pb::Ack, Status> {
        let seq = batch.seq;
        let converted = match convert::batch_from_wire(batch, &self.limits) {
            Ok(b) => b,
            Err(reason) => {
                tracing::warn!(oid = self.oid, seq, reason = %reason, "Refused a batch.");
                return Ok(pb::Ack {
                    seq,
                    error: reason,
                    ..pb::Ack::default()
                });
            }
        };
        let started = Instant::now();
        let mut refused = converted.refused;
        let stored = self
            .writer
            .store(BatchToStore {
                project_id: self.project_id,
                oid: self.oid,
                instance: self.instance.clone(),
                batch: converted.batch,
                received_ms: crate::now_ms(),
            })
            .await
            .map_err(|e| {
                tracing::error!(oid = self.oid, seq, error = %e, "Storing a batch failed.");
                Status::unavailable("the collector could not store the batch; send it again")
            })?;
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
        Ok(pb::Ack {
            seq,
            duplicate,
            slow_down_ms,
            error: String::new(),
            partial: refused.to_wire(),
        })
    }
}
