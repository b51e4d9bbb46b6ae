//! gRPC ingest: `Hello` registers an agent, `Push` stores its batches and
//! acks each one after the store commits it.
//!
//! Files: this one is the service and `Hello`; [`push`] is one agent's
//! stream; [`convert`] turns what every product sends into rows (a
//! product's own messages are decoded in [`crate::products`]);
//! [`presence`] keeps two hosts with one `oname` apart.
//!
//! Invariants:
//! - Every call is authenticated by its license before anything else; an
//!   unknown license gets `UNAUTHENTICATED` with a message the agent's
//!   `test` shows as is (and a warning logged at most every 10 s).
//! - An ack leaves only after the group holding the batch was committed
//!   ([`crate::store::group`]): `New` and `Duplicate` are both acked; a
//!   store failure ends the stream with `UNAVAILABLE` so the agent resends.
//! - A batch that can never be stored (sequence 0 without `liveness`) is
//!   acked with `Ack.error`, so it cannot block the agent's spool forever;
//!   what a batch carries over a cap is left out and said in
//!   `Ack.partial`.
//! - A terminated agent is refused with `PERMISSION_DENIED`
//!   (`terminated_status`) on `Hello` and `Push`, and its open stream
//!   ends at once (a batch already on its way is not acked), until it is
//!   enabled again.
//! - Every string of `Hello` is bounded (`limit.hello.field.bytes`).
//! - This module and [`crate::products`] are the collector's only users of
//!   prost types: they convert them to [`crate::model`] rows.

pub mod convert;
pub mod liveness;
pub mod presence;
pub mod push;

use std::sync::Arc;
use std::time::Duration;

use agent_core::license::License;
use sightline_proto::metadata;
use sightline_proto::v1::{
    self as pb,
    ingest_server::{Ingest, IngestServer},
};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status, Streaming};

use self::convert::SampleLimits;
use self::liveness::Liveness;
use self::presence::{Holder, Presence};
use crate::auth::{ProjectCache, hash_secret};
use crate::log_limit::LogLimit;
use crate::model::{AgentHello, EventRow, Project};
use crate::store::Store;
use crate::store::group::GroupWriter;
use crate::time_text::format_ms;

/// Acks a stream may have queued for the agent.
const ACK_BUFFER: usize = 64;
/// What an agent is told to wait when all stream slots are taken.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(15);

/// Limits of the ingest service (collector.conf `max.*`, `limit.*`).
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// `Push` streams open at once (one per connected agent).
    pub max_streams: usize,
    /// Bytes of each string field of `Hello` (`limit.hello.field.bytes`).
    pub hello_field_bytes: usize,
    /// Per-sample caps.
    pub samples: SampleLimits,
    /// The store's series cap (enforced there), for messages.
    pub series_per_agent: u64,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_streams: 10_000,
            hello_field_bytes: 256,
            samples: SampleLimits::default(),
            series_per_agent: crate::store::StoreLimits::default().series_per_agent,
        }
    }
}

/// The largest message accepted, compressed or decompressed (the agents'
/// batches are split well under it).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The `Ingest` service over a store.
#[derive(Debug)]
pub struct IngestService<S> {
    store: Arc<S>,
    writer: GroupWriter,
    liveness: Arc<Liveness>,
    projects: Arc<ProjectCache>,
    streams: Arc<Semaphore>,
    presence: Arc<Presence>,
    limits: IngestLimits,
    unknown_license_log: LogLimit,
    terminated_log: LogLimit,
    shutdown: CancellationToken,
}

impl<S: Store> IngestService<S> {
    /// A service storing into `store` through `writer` (and liveness
    /// signals through `liveness`), ending its streams on `shutdown`.
    pub fn new(
        store: Arc<S>,
        writer: GroupWriter,
        liveness: Arc<Liveness>,
        projects: Arc<ProjectCache>,
        limits: IngestLimits,
        shutdown: CancellationToken,
    ) -> IngestService<S> {
        IngestService {
            store,
            writer,
            liveness,
            projects,
            streams: Arc::new(Semaphore::new(limits.max_streams)),
            presence: Arc::new(Presence::default()),
            limits,
            unknown_license_log: LogLimit::new(),
            terminated_log: LogLimit::new(),
            shutdown,
        }
    }

    /// The service as the gRPC server mounts it: every message bounded by
    /// [`MAX_MESSAGE_BYTES`], decompressed too; zstd and gzip accepted.
    pub fn into_server(self) -> IngestServer<IngestService<S>> {
        IngestServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip)
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
            if let Some(suppressed) = self.unknown_license_log.check() {
                tracing::warn!(license = %license, suppressed, "Refused an unknown license.");
            }
            Status::unauthenticated(format!(
                "unknown license {license}: no project on this collector has this key"
            ))
        })
    }

    /// Raises `agent.duplicate_oname` for the agent `holder` holds.
    async fn report_duplicate(&self, project: &Project, hello: &AgentHello, holder: &Holder) {
        let event = EventRow {
            time_ms: crate::now_ms(),
            kind: "agent.duplicate_oname".into(),
            severity: "warning".into(),
            message: format!(
                "Two hosts report as {} ({}): {} holds it, {} was refused. Give each host its own oname.",
                hello.oname, hello.product, holder.hostname, hello.hostname
            ),
            attrs: [
                ("holder_hostname".to_string(), holder.hostname.clone()),
                ("holder_boot_id".to_string(), holder.boot_id.clone()),
                ("refused_hostname".to_string(), hello.hostname.clone()),
                ("refused_boot_id".to_string(), hello.boot_id.clone()),
            ]
            .into(),
        };
        tracing::warn!(oname = %hello.oname, holder = %holder.hostname, refused = %hello.hostname, "Two hosts report with the same oname; refused the second.");
        if let Err(e) = self
            .store
            .insert_event(project.id, Some(holder.oid), &event)
            .await
        {
            tracing::warn!(error = %e, "Cannot record a duplicate-oname event.");
        }
    }
}

fn now_ms() -> i64 {
    crate::now_ms()
}

/// What a terminated agent is told, on `Hello`, on `Push`, and on an open
/// stream: `PERMISSION_DENIED`, which agent-core's transport counts as a
/// refusal (it logs the reason and waits its longest delay before trying
/// again, keeping its spool), with what to do about it.
pub(crate) fn terminated_status(oid: i64) -> Status {
    Status::permission_denied(format!(
        "agent {oid} was terminated on this collector: its data was deleted and it is refused until it is enabled again (POST /api/v1/agents/{oid}/enable)"
    ))
}

fn check_field(what: &str, value: &str, max: usize, required: bool) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{what} is {} bytes, over limit.hello.field.bytes={max}",
            value.len()
        )));
    }
    if required && value.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{what} must not be empty"
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
        let max = self.limits.hello_field_bytes;
        for (what, value, required) in [
            ("product", &hello.product, true),
            ("oname", &hello.oname, true),
            ("hostname", &hello.hostname, false),
            ("os", &hello.os, false),
            ("agent_version", &hello.agent_version, false),
            ("created_time", &hello.created_time, false),
            ("boot_id", &hello.boot_id, false),
        ] {
            check_field(what, value, max, required)?;
        }
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
            boot_id: hello.boot_id,
        };
        let key = (project.id, row.product.clone(), row.oname.clone());
        if let Err(conflict) = self.presence.check(&key, &row.boot_id) {
            if conflict.first {
                self.report_duplicate(&project, &row, &conflict.holder)
                    .await;
            }
            let h = &conflict.holder;
            let address = h
                .address
                .map_or_else(|| "address unknown".into(), |a| a.ip().to_string());
            return Err(Status::failed_precondition(format!(
                "oname {} is in use by another host ({}, {}, since {}): give this host its own oname in {}.conf",
                row.oname,
                h.hostname,
                address,
                format_ms(h.since_ms),
                row.product
            )));
        }
        let registered = self
            .store
            .register_agent(project.id, &row, now_ms())
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "Agent registration failed.");
                Status::unavailable("the collector's store is unavailable")
            })?;
        if registered.terminated {
            if let Some(suppressed) = self.terminated_log.check() {
                tracing::warn!(project = %project.name, oid = registered.oid, oname = %row.oname, suppressed, "Refused a terminated agent.");
            }
            return Err(terminated_status(registered.oid));
        }
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
        // Before the lookup below: a termination after it is still heard.
        let terminations = self.store.subscribe_terminations();
        let address = request.remote_addr();
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
        let agent = match self.store.agent(project.id, oid).await {
            // Sequence numbers belong to the instance Hello registered: a
            // stale stream (the agent re-registered since) must say Hello
            // again rather than push under numbers that are not its own.
            Ok(Some(agent)) if agent.instance != instance => {
                return Err(Status::aborted(
                    "this instance is not the one registered by the agent's latest Hello; say Hello again",
                ));
            }
            Ok(Some(agent)) if agent.terminated_ms.is_some() => {
                return Err(terminated_status(oid));
            }
            Ok(Some(agent)) => agent,
            Ok(None) => {
                return Err(Status::permission_denied(format!(
                    "agent {oid} is not registered in this project; call Hello first"
                )));
            }
            Err(e) => {
                tracing::error!(error = %e, "Agent lookup failed.");
                return Err(Status::unavailable("the collector's store is unavailable"));
            }
        };
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            let mut status =
                Status::resource_exhausted("the collector has too many agents connected");
            let ms = BUSY_RETRY_AFTER.as_millis().to_string();
            if let Ok(v) = MetadataValue::try_from(ms.as_str()) {
                status.metadata_mut().insert(metadata::RETRY_AFTER_MS, v);
            }
            return Err(status);
        };
        let presence = self.presence.enter(
            (project.id, agent.product.clone(), agent.oname.clone()),
            Holder {
                oid,
                boot_id: agent.boot_id.clone(),
                hostname: agent.hostname.clone(),
                address,
                since_ms: now_ms(),
            },
        );
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(ACK_BUFFER);
        let stream = push::PushStream {
            writer: self.writer.clone(),
            liveness: self.liveness.clone(),
            project_id: project.id,
            oid,
            instance,
            limits: self.limits.samples,
            series_per_agent: self.limits.series_per_agent,
        };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _presence = presence;
            stream.run(inbound, tx, terminations, shutdown).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
