//! gRPC ingest: `Hello` registers an agent, `Push` stores its batches and
//! acks each one after the store commits it.
//!
//! Invariants:
//! - Every call is authenticated by its license before anything else; an
//!   unknown license gets `UNAUTHENTICATED` with a message the agent's
//!   `test` shows as is.
//! - An ack leaves only after `Store::store_batch` returned: `Stored` and
//!   `Duplicate` are both acked, a store failure ends the stream with
//!   `UNAVAILABLE` so the agent resends.
//! - A batch that can never be stored (sequence 0, say) is acked with
//!   `Ack.error`, so it cannot block the agent's spool forever.
//! - This module is the collector's only user of prost types: it converts
//!   them to [`crate::model`] rows here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_core::license::License;
use sightline_proto::metadata;
use sightline_proto::v1::{self as pb, ingest_server::Ingest};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{ProjectCache, hash_secret};
use crate::model::{
    AgentHealth, AgentHello, BatchPayload, EventRow, IncomingBatch, ProcessRow, Project, SampleRow,
    SnapshotRow,
};
use crate::store::{Store, Stored};

/// Acks a stream may have queued for the agent.
const ACK_BUFFER: usize = 64;
/// A batch that took longer than this to store (queueing for the writer
/// included) asks the agent to slow down by as long as it took.
const SLOW_STORE: Duration = Duration::from_millis(500);
/// The most a slow-down asks for.
const MAX_SLOW_DOWN: Duration = Duration::from_secs(5);
/// What an agent is told to wait when all stream slots are taken.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(15);
/// Longest accepted name, product or label.
const MAX_NAME: usize = 256;

/// Limits of the ingest service.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// `Push` streams open at once (one per connected agent).
    pub max_streams: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_streams: 10_000,
        }
    }
}

/// The `Ingest` service over a store.
#[derive(Debug)]
pub struct IngestService<S> {
    store: Arc<S>,
    projects: Arc<ProjectCache>,
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl<S: Store> IngestService<S> {
    /// A service storing into `store`, ending its streams on `shutdown`.
    pub fn new(
        store: Arc<S>,
        projects: Arc<ProjectCache>,
        limits: IngestLimits,
        shutdown: CancellationToken,
    ) -> IngestService<S> {
        IngestService {
            store,
            projects,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            shutdown,
        }
    }

    async fn authenticate(&self, meta: &MetadataMap) -> Result<Project, Status> {
        let Some(value) = meta.get(metadata::LICENSE) else {
            return Err(Status::unauthenticated(format!(
                "no license in the request (metadata {})",
                metadata::LICENSE
            )));
        };
        let text = value
            .to_str()
            .map_err(|_| Status::unauthenticated("the license is not text"))?;
        let license = License::parse(text).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let store = self.store.clone();
        let project = self
            .projects
            .get(hash_secret(license.expose()), |hash| async move {
                store.project_by_license(&hash).await
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "License lookup failed.");
                Status::unavailable("the collector's store is unavailable")
            })?;
        project.ok_or_else(|| {
            tracing::warn!(license = %license, "Refused an unknown license.");
            Status::unauthenticated(format!(
                "unknown license {license}: no project on this collector has this key"
            ))
        })
    }
}

fn now_ms() -> i64 {
    crate::now_ms()
}

fn check_name(what: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(Status::invalid_argument(format!(
            "{what} must be 1 to {MAX_NAME} bytes"
        )));
    }
    Ok(())
}

fn is_instance(text: &str) -> bool {
    text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit())
}

#[tonic::async_trait]
impl<S: Store> Ingest for IngestService<S> {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        let project = self.authenticate(request.metadata()).await?;
        let hello = request.into_inner();
        if hello.probe {
            return Ok(Response::new(pb::HelloReply {
                oid: 0,
                project: project.name,
                server_time_ms: now_ms(),
                last_seq: 0,
            }));
        }
        check_name("product", &hello.product)?;
        check_name("oname", &hello.oname)?;
        if !is_instance(&hello.instance) {
            return Err(Status::invalid_argument("instance must be 32 hex digits"));
        }
        let row = AgentHello {
            product: hello.product,
            oname: hello.oname,
            hostname: hello.hostname,
            os: hello.os,
            version: hello.agent_version,
            boot_time_ms: hello.boot_time_ms,
            created_time: hello.created_time,
            instance: hello.instance,
            interval_ms: i64::from(hello.interval_ms),
        };
        let registered = self
            .store
            .register_agent(project.id, &row, now_ms())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "Agent registration failed.");
                Status::unavailable("the collector's store is unavailable")
            })?;
        tracing::info!(
            project = %project.name,
            oid = registered.oid,
            oname = %row.oname,
            product = %row.product,
            last_seq = registered.last_seq,
            "Agent said hello."
        );
        Ok(Response::new(pb::HelloReply {
            oid: u64::try_from(registered.oid).unwrap_or(0),
            project: project.name,
            server_time_ms: now_ms(),
            last_seq: registered.last_seq,
        }))
    }

    type PushStream = ReceiverStream<Result<pb::Ack, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let project = self.authenticate(request.metadata()).await?;
        let meta = request.metadata();
        let oid: i64 = meta
            .get(metadata::OID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Status::invalid_argument(format!("missing or bad {}", metadata::OID)))?;
        let instance = meta
            .get(metadata::INSTANCE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_instance(v))
            .map(str::to_string)
            .ok_or_else(|| {
                Status::invalid_argument(format!("missing or bad {}", metadata::INSTANCE))
            })?;
        match self.store.agent(project.id, oid).await {
            // Sequence numbers belong to the instance Hello registered: a
            // stale stream (the agent re-registered since) must say Hello
            // again rather than push under numbers that are not its own.
            Ok(Some(agent)) if agent.instance != instance => {
                return Err(Status::aborted(
                    "this instance is not the one registered by the agent's latest Hello; say Hello again",
                ));
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Status::permission_denied(format!(
                    "agent {oid} is not registered in this project; call Hello first"
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, "Agent lookup failed.");
                return Err(Status::unavailable("the collector's store is unavailable"));
            }
        }
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            let mut status =
                Status::resource_exhausted("the collector has too many agents connected");
            let ms = BUSY_RETRY_AFTER.as_millis().to_string();
            if let Ok(v) = MetadataValue::try_from(ms.as_str()) {
                status.metadata_mut().insert(metadata::RETRY_AFTER_MS, v);
            }
            return Err(status);
        };
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(ACK_BUFFER);
        let stream = PushStream {
            store: self.store.clone(),
            project_id: project.id,
            oid,
            instance,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            stream.run(inbound, tx, shutdown).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One agent's open `Push` stream.
struct PushStream<S> {
    store: Arc<S>,
    project_id: i64,
    oid: i64,
    instance: String,
}

impl<S: Store> PushStream<S> {
    async fn run(
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

    async fn store_one(&self, batch: pb::Batch) -> Result<pb::Ack, Status> {
        let seq = batch.seq;
        let incoming = match batch_from_wire(batch) {
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
        let stored = self
            .store
            .store_batch(
                self.project_id,
                self.oid,
                &self.instance,
                incoming,
                now_ms(),
            )
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
        Ok(pb::Ack {
            seq,
            duplicate: stored == Stored::Duplicate,
            slow_down_ms,
            error: String::new(),
            partial: None,
        })
    }
}

/// Converts a wire batch to a row. Samples that cannot be stored (not
/// finite, nameless) are skipped; a batch that cannot be stored at all is
/// an error, sent back in the ack.
pub fn batch_from_wire(batch: pb::Batch) -> Result<IncomingBatch, String> {
    if batch.seq == 0 {
        return Err("sequence numbers start at 1".into());
    }
    let batch_time = batch.time_ms;
    let at = |t: i64| if t == 0 { batch_time } else { t };
    let payloads = batch
        .payloads
        .into_iter()
        .filter_map(|p| p.kind)
        .map(|kind| match kind {
            pb::payload::Kind::Metrics(m) => BatchPayload::Metrics {
                time_ms: at(m.time_ms),
                samples: m
                    .samples
                    .into_iter()
                    .filter(|s| {
                        s.value.is_finite() && !s.name.is_empty() && s.name.len() <= MAX_NAME
                    })
                    .map(|s| {
                        let mut labels: Vec<(String, String)> =
                            s.labels.into_iter().map(|l| (l.key, l.value)).collect();
                        labels.sort();
                        SampleRow {
                            name: s.name,
                            labels,
                            value: s.value,
                        }
                    })
                    .collect(),
            },
            pb::payload::Kind::Processes(p) => BatchPayload::Processes(SnapshotRow {
                time_ms: at(p.time_ms),
                reason: p.reason,
                total: p.total,
                state_counts: p.state_counts.into_iter().collect::<BTreeMap<_, _>>(),
                processes: p
                    .processes
                    .into_iter()
                    .map(|p| ProcessRow {
                        pid: p.pid,
                        name: p.name,
                        user: p.user,
                        cmdline: p.cmdline,
                        cpu_pct: finite(p.cpu_pct),
                        rss_bytes: p.rss_bytes,
                        mem_pct: finite(p.mem_pct),
                        threads: p.threads,
                        state: p.state,
                    })
                    .collect(),
            }),
            pb::payload::Kind::Events(e) => BatchPayload::Events(
                e.events
                    .into_iter()
                    .map(|e| EventRow {
                        time_ms: at(e.time_ms),
                        kind: event_kind(e.kind).to_string(),
                        severity: severity(e.severity).to_string(),
                        message: e.message,
                        attrs: e.attrs.into_iter().collect(),
                    })
                    .collect(),
            ),
        })
        .collect();
    Ok(IncomingBatch {
        seq: batch.seq,
        time_ms: batch.time_ms,
        health: batch.health.map(|h| AgentHealth {
            spool_batches: h.spool_batches,
            spool_bytes: h.spool_bytes,
            batches_sent: h.batches_sent,
            batches_acked: h.batches_acked,
            reconnects: h.reconnects,
            batches_dropped: h.batches_dropped,
            bytes_dropped: h.bytes_dropped,
        }),
        payloads,
    })
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// The API name of an event kind.
pub fn event_kind(kind: i32) -> &'static str {
    match pb::EventKind::try_from(kind).unwrap_or(pb::EventKind::Unspecified) {
        pb::EventKind::Unspecified => "unspecified",
        pb::EventKind::AgentStarted => "agent.started",
        pb::EventKind::HostRebooted => "host.rebooted",
        pb::EventKind::ConfigError => "config.error",
        pb::EventKind::SpoolOverflow => "spool.overflow",
        pb::EventKind::ThresholdExceeded => "threshold.exceeded",
        pb::EventKind::ThresholdRecovered => "threshold.recovered",
        pb::EventKind::AgentNoData => "agent.no_data",
        pb::EventKind::MountUnresponsive => "mount.unresponsive",
    }
}

fn severity(s: i32) -> &'static str {
    match pb::Severity::try_from(s).unwrap_or(pb::Severity::Unspecified) {
        pb::Severity::Unspecified | pb::Severity::Info => "info",
        pb::Severity::Warning => "warning",
        pb::Severity::Critical => "critical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstorable_samples_are_skipped_and_seq_zero_refused() {
        let metrics = pb::Metrics {
            samples: vec![
                pb::Sample {
                    name: "ok".into(),
                    labels: vec![],
                    value: 1.0,
                },
                pb::Sample {
                    name: "nan".into(),
                    labels: vec![],
                    value: f64::NAN,
                },
                pb::Sample {
                    name: String::new(),
                    labels: vec![],
                    value: 1.0,
                },
            ],
            time_ms: 0,
        };
        let batch = pb::Batch {
            seq: 3,
            time_ms: 10,
            health: None,
            payloads: vec![pb::Payload {
                kind: Some(pb::payload::Kind::Metrics(metrics)),
            }],
            liveness: false,
        };
        let row = batch_from_wire(batch).expect("storable");
        let [BatchPayload::Metrics { time_ms, samples }] = row.payloads.as_slice() else {
            panic!("one metrics payload");
        };
        assert_eq!(*time_ms, 10, "no time of its own: the batch's");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].name, "ok");
        let zero = pb::Batch {
            seq: 0,
            ..pb::Batch::default()
        };
        assert!(batch_from_wire(zero).is_err());
    }

    #[test]
    fn unknown_event_kinds_are_kept_as_unspecified() {
        assert_eq!(event_kind(999), "unspecified");
        assert_eq!(
            event_kind(pb::EventKind::SpoolOverflow as i32),
            "spool.overflow"
        );
    }
}
