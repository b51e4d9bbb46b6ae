//! The agent's side of the wire protocol: `Hello`, then one `Push` stream
//! that replays the spool in order and removes each batch when it is acked.
//!
//! Invariants:
//! - A batch leaves the spool only when the collector acks it (or refuses it
//!   for good with `Ack.error`). A lost connection loses nothing: the next
//!   session starts again from the oldest batch still spooled.
//! - At most [`WINDOW`] batches are in flight; every wait (connect, call,
//!   ack) is bounded by `server.timeout`.
//! - Reconnects back off exponentially with jitter; the collector's
//!   `slow_down_ms` and retry-after hints are obeyed.
//! - This module and [`wire`] are the only parts of agent-core that see
//!   prost types.

pub mod endpoint;
pub mod retry;
pub mod wire;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sightline_proto::metadata;
use sightline_proto::v1::{self as pb, ingest_client::IngestClient};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::health::AgentCounters;
use crate::identity;
use crate::license::License;
use crate::pipeline::SharedSpool;
use crate::settings::ServerSettings;
use retry::{Backoff, Retry};

/// Batches sent but not yet acked, at most.
pub const WINDOW: usize = 32;

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The settings cannot make a connection (bad address, unreadable CA).
    #[error("{0}")]
    Config(String),
    /// TCP, TLS or HTTP/2 setup failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The cause chain.
        reason: String,
    },
    /// The collector answered with an error.
    #[error("{}", describe_status(.0))]
    Status(#[from] Status),
    /// Something took longer than `server.timeout`.
    #[error("no answer within {after:?} while {during}")]
    Timeout {
        /// What was awaited.
        during: &'static str,
        /// The bound.
        after: Duration,
    },
    /// The collector ended the stream.
    #[error("the collector closed the stream")]
    StreamClosed,
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
}

impl TransportError {
    fn retry(&self) -> Retry {
        match self {
            TransportError::Status(status) => retry::classify(status),
            TransportError::Config(reason) => Retry::Refused(reason.clone()),
            _ => Retry::Backoff,
        }
    }
}

/// A status in words, without tonic's debug dump.
pub fn describe_status(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// An error and its causes, joined with `: `.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What the agent tells the collector about itself in `Hello`.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// `infra`, `db`, ...
    pub product: &'static str,
    /// The agent's name.
    pub oname: String,
    /// The host's name.
    pub hostname: String,
    /// OS and kernel.
    pub os: String,
    /// The agent's version.
    pub version: &'static str,
    /// Host boot time, unix ms.
    pub boot_time_ms: i64,
    /// `createdtime` from the config.
    pub created_time: String,
    /// The spool instance id.
    pub instance: String,
    /// The collection interval.
    pub interval: Duration,
}

/// Connects to the collector (TCP, TLS when on, HTTP/2), bounded by
/// `server.timeout`.
pub async fn connect(server: &ServerSettings) -> Result<IngestClient<Channel>, TransportError> {
    // Reading the CA file is disk IO: off the async thread.
    let settings = server.clone();
    let endpoint = tokio::task::spawn_blocking(move || endpoint::endpoint(&settings))
        .await
        .map_err(|e| TransportError::Config(format!("building the endpoint: {e}")))??;
    let channel = match timeout(server.timeout, endpoint.connect()).await {
        Err(_) => {
            return Err(TransportError::Timeout {
                during: "connecting",
                after: server.timeout,
            });
        }
        Ok(Err(e)) => {
            return Err(TransportError::Connect {
                addr: server.authority(),
                reason: error_chain(&e),
            });
        }
        Ok(Ok(channel)) => channel,
    };
    Ok(endpoint::client(channel, server.compression))
}

/// Calls `Hello`, bounded by `limit`. A `probe` registers nothing.
pub async fn hello(
    client: &mut IngestClient<Channel>,
    license: &License,
    who: &AgentIdentity,
    limit: Duration,
    probe: bool,
) -> Result<pb::HelloReply, TransportError> {
    let mut request = Request::new(pb::HelloRequest {
        product: who.product.to_string(),
        oname: who.oname.clone(),
        hostname: who.hostname.clone(),
        os: who.os.clone(),
        agent_version: who.version.to_string(),
        boot_time_ms: who.boot_time_ms,
        created_time: who.created_time.clone(),
        instance: who.instance.clone(),
        interval_ms: u32::try_from(who.interval.as_millis()).unwrap_or(u32::MAX),
        probe,
        boot_id: String::new(),
    });
    request.set_timeout(limit);
    insert_metadata(&mut request, metadata::LICENSE, license.expose())?;
    match timeout(limit, client.hello(request)).await {
        Err(_) => Err(TransportError::Timeout {
            during: "waiting for Hello",
            after: limit,
        }),
        Ok(reply) => Ok(reply?.into_inner()),
    }
}

fn insert_metadata<T>(
    request: &mut Request<T>,
    key: &'static str,
    value: &str,
) -> Result<(), TransportError> {
    let value = MetadataValue::try_from(value).map_err(|_| {
        TransportError::Config(format!("{key} has characters gRPC metadata cannot carry"))
    })?;
    request.metadata_mut().insert(key, value);
    Ok(())
}

/// Delivers the spool to the collector until shutdown.
pub struct Transport {
    /// The collector.
    pub server: ServerSettings,
    /// The license sent with every call.
    pub license: License,
    /// What `Hello` says.
    pub identity: AgentIdentity,
    /// The spool to deliver.
    pub spool: SharedSpool,
    /// The agent's counters.
    pub counters: Arc<AgentCounters>,
    /// Where the agent id is remembered.
    pub data_dir: PathBuf,
}

/// How a session ended when it did not fail.
enum SessionEnd {
    Shutdown,
}

impl Transport {
    /// Runs sessions until `shutdown`, reconnecting with backoff.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut last_error: Option<String> = None;
        let mut attempt: u64 = 0;
        loop {
            if attempt > 0 {
                AgentCounters::add(&self.counters.reconnects, 1);
            }
            attempt += 1;
            let mut acked = false;
            let outcome = self.session(&shutdown, &mut acked).await;
            if acked {
                backoff.reset();
            }
            let error = match outcome {
                Ok(SessionEnd::Shutdown) => return,
                Err(error) => error,
            };
            if shutdown.is_cancelled() {
                return;
            }
            let message = error.to_string();
            let delay = match error.retry() {
                Retry::Backoff => backoff.next_delay(),
                Retry::After(d) => d,
                Retry::Refused(reason) => {
                    tracing::error!(reason = %reason, "Collector refused the agent; data stays in the spool.");
                    backoff.max_delay()
                }
            };
            if last_error.as_deref() == Some(message.as_str()) {
                tracing::debug!(error = %message, retry_in = ?delay, "Collector still unreachable.");
            } else {
                tracing::warn!(error = %message, retry_in = ?delay, "Lost the collector; spooling until it is back.");
                last_error = Some(message);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep(delay) => {}
            }
        }
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        acked_any: &mut bool,
    ) -> Result<SessionEnd, TransportError> {
        let limit = self.server.timeout;
        let mut client = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            c = connect(&self.server) => c?,
        };
        let reply = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            r = hello(&mut client, &self.license, &self.identity, limit, false) => r?,
        };
        let (dir, agent_id) = (self.data_dir.clone(), reply.oid);
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || identity::save_agent_id(&dir, agent_id)).await
        {
            tracing::warn!(error = %e, "Cannot remember the agent id.");
        }
        let last_stored = reply.last_seq;
        let (already, ours) = self
            .spool
            .with(move |s| {
                let ours = s.last_seq();
                s.remove_through(last_stored).map(|n| (n, ours))
            })
            .await??;
        if last_stored > ours {
            tracing::error!(
                collector_has = last_stored,
                spool_numbered = ours,
                "The collector holds batches this spool does not remember numbering (its state was lost, e.g. in a power cut with spool.sync=normal); batches numbered up to the collector's are dropped as duplicates."
            );
        }
        tracing::info!(
            collector = %self.server.authority(),
            agent_id = reply.oid,
            project = %reply.project,
            already_stored = already,
            "Connected to the collector."
        );

        let (tx, rx) = mpsc::channel::<pb::Batch>(WINDOW);
        let mut request = Request::new(ReceiverStream::new(rx));
        insert_metadata(&mut request, metadata::LICENSE, self.license.expose())?;
        insert_metadata(&mut request, metadata::OID, &reply.oid.to_string())?;
        insert_metadata(&mut request, metadata::INSTANCE, &self.identity.instance)?;
        let mut acks = match timeout(limit, client.push(request)).await {
            Err(_) => {
                return Err(TransportError::Timeout {
                    during: "opening the Push stream",
                    after: limit,
                });
            }
            Ok(response) => response?.into_inner(),
        };

        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut last_sent = 0u64;
        let mut ack_deadline = Instant::now() + limit;
        let mut paused_until: Option<Instant> = None;
        loop {
            if paused_until.is_some_and(|t| Instant::now() >= t) {
                paused_until = None;
            }
            while in_flight.len() < WINDOW && paused_until.is_none() {
                let Some((seq, batch)) = self.next_batch(last_sent).await? else {
                    break;
                };
                if tx.send(batch).await.is_err() {
                    return Err(TransportError::StreamClosed);
                }
                if in_flight.is_empty() {
                    ack_deadline = Instant::now() + limit;
                }
                in_flight.push_back(seq);
                last_sent = seq;
                AgentCounters::add(&self.counters.batches_sent, 1);
            }
            let can_send = in_flight.len() < WINDOW && paused_until.is_none();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                message = acks.message() => {
                    let Some(ack) = message? else {
                        return Err(TransportError::StreamClosed);
                    };
                    *acked_any = true;
                    in_flight.retain(|&s| s > ack.seq);
                    ack_deadline = Instant::now() + limit;
                    self.on_ack(&ack).await?;
                    if ack.slow_down_ms > 0 {
                        paused_until = Some(Instant::now() + Duration::from_millis(ack.slow_down_ms.into()));
                    }
                }
                () = sleep_until(ack_deadline), if !in_flight.is_empty() => {
                    return Err(TransportError::Timeout { during: "waiting for an ack", after: limit });
                }
                () = self.spool.appended(), if can_send => {}
                () = sleep_until(paused_until.unwrap_or_else(Instant::now)), if paused_until.is_some() => {}
            }
        }
    }

    /// The next spooled batch after `last_sent`, decoded. A batch that no
    /// longer decodes is dropped (and counted) rather than blocking the
    /// spool forever.
    async fn next_batch(&self, last_sent: u64) -> Result<Option<(u64, pb::Batch)>, TransportError> {
        let mut after = last_sent;
        loop {
            // The index and the newest batches are in memory: no thread hop
            // unless the batch must be read from disk.
            let Some((seq, cached)) = self
                .spool
                .look(move |s| s.next_after(after).map(|seq| (seq, s.cached(seq))))
                .await?
            else {
                return Ok(None);
            };
            after = seq;
            let bytes = match cached {
                Some(bytes) => bytes,
                None => match self.spool.with(move |s| s.read(seq)).await?? {
                    Some(bytes) => bytes,
                    None => continue,
                },
            };
            match wire::decode_batch(&bytes) {
                Ok(batch) => return Ok(Some((seq, batch))),
                Err(e) => {
                    tracing::warn!(seq, error = %e, "Spooled batch does not decode; dropping it.");
                    AgentCounters::add(&self.counters.batches_dropped, 1);
                    self.spool.with(move |s| s.discard(seq)).await??;
                }
            }
        }
    }

    async fn on_ack(&self, ack: &pb::Ack) -> Result<(), TransportError> {
        let seq = ack.seq;
        if ack.error.is_empty() {
            self.spool.with(move |s| s.remove(seq)).await??;
            AgentCounters::add(&self.counters.batches_acked, 1);
        } else {
            // Refused for good: not stored, so a loss to report.
            self.spool.with(move |s| s.discard(seq)).await??;
            AgentCounters::add(&self.counters.batches_rejected, 1);
            tracing::error!(seq, reason = %ack.error, "Collector refused a batch for good; it was removed.");
        }
        Ok(())
    }
}
