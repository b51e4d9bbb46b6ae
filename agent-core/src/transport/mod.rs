//! The agent's side of the wire protocol: `Hello`, then one `Push` stream
//! that replays the spool in order and settles each batch when it is acked.
//!
//! Invariants:
//! - A batch leaves the spool only when the collector acks it (or refuses it
//!   for good with `Ack.error`). A lost connection loses nothing: the next
//!   session starts again from the oldest batch still spooled.
//! - One session carries one spool instance: `Hello` names the instance of
//!   the oldest spooled batch, and only its batches are pushed. When the
//!   next batch belongs to a newer instance, the session ends cleanly once
//!   the acks in flight are in, and the next one starts at once.
//! - A batch sent and not yet acked is marked in flight in the spool, which
//!   then never evicts it (the collector may be storing it).
//! - With nothing to send for an interval and a half, a liveness signal
//!   (`Batch` with seq 0, `liveness`, the agent's health) goes on the
//!   stream: not spooled, not acked. (Half an interval of slack, so an
//!   agent that reports every interval never sends one: its batches lag
//!   their tick by the collection time.) Any ack for seq 0 is ignored.
//! - At most [`WINDOW`] batches and [`WINDOW_BYTES`] bytes are in flight
//!   (a larger batch alone); every wait (connect, call,
//!   ack) is bounded by `server.timeout`.
//! - Reconnects back off exponentially with jitter; the collector's
//!   `slow_down_ms` and retry-after hints are obeyed.
//! - A batch goes on the wire as the bytes the spool holds ([`push`]): it
//!   is not decoded and encoded again on the way.
//! - This module and [`wire`] are the only parts of agent-core that see
//!   prost types.

pub mod endpoint;
pub mod push;
pub mod retry;
pub mod wire;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
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
use crate::receipt::{DropReason, Fate};
use crate::settings::ServerSettings;
use crate::spool::Key;
use retry::{Backoff, Retry};

/// Batches sent but not yet acked, at most.
pub const WINDOW: usize = 32;
/// Bytes of the batches sent but not yet acked, at most (one batch larger
/// than this is sent alone): what keeps a backlog of large log batches from
/// holding [`WINDOW`] megabytes in the agent. 8 MiB covers 50 ms of acks at
/// 160 MB/s, more than loopback or a LAN needs.
pub const WINDOW_BYTES: usize = 8 << 20;

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
    /// The spool instance of the session's batches: set per session from
    /// the spool (empty for a probe).
    pub instance: String,
    /// The collection interval.
    pub interval: Duration,
    /// The kernel's boot id, read once at start ([`identity::boot_id`]).
    pub boot_id: String,
}

/// Connects to the collector (TCP, TLS when on, HTTP/2), bounded by
/// `server.timeout`.
pub async fn connect(server: &ServerSettings) -> Result<IngestClient<Channel>, TransportError> {
    let channel = connect_channel(server).await?;
    Ok(endpoint::client(channel, server.compression))
}

/// The connection itself, for the generated client (`Hello`) and the
/// [`push::PushClient`] to share.
pub async fn connect_channel(server: &ServerSettings) -> Result<Channel, TransportError> {
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
    Ok(channel)
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
        boot_id: who.boot_id.clone(),
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
    /// What `Hello` says (its `instance` is set per session, from the spool).
    pub identity: AgentIdentity,
    /// The spool to deliver.
    pub spool: SharedSpool,
    /// The agent's counters.
    pub counters: Arc<AgentCounters>,
    /// Where the oid is remembered.
    pub data_dir: PathBuf,
}

/// How a session ended when it did not fail.
enum SessionEnd {
    Shutdown,
    /// Every batch of the session's instance is acked; a newer instance
    /// has batches waiting.
    NextInstance,
}

/// What comes next in the spool for a session.
enum Next {
    /// A batch's key and its bytes (an encoded `Batch`).
    Batch(Key, Vec<u8>),
    OtherInstance,
    Nothing,
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
            // Whatever was in flight is not any more: it may be evicted
            // again if the spool fills up before it is resent.
            let _ = self.spool.in_memory(|s| s.clear_in_flight()).await;
            if acked {
                backoff.reset();
            }
            let error = match outcome {
                Ok(SessionEnd::Shutdown) => return,
                Ok(SessionEnd::NextInstance) => {
                    attempt = 0;
                    continue;
                }
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
        let channel = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            c = connect_channel(&self.server) => c?,
        };
        let mut client = endpoint::client(channel.clone(), self.server.compression);
        let mut pusher = push::PushClient::new(channel, self.server.compression);
        let (epoch, instance) = self.spool.in_memory(|s| s.oldest_instance()).await?;
        let mut who = self.identity.clone();
        who.instance = instance.clone();
        let reply = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            r = hello(&mut client, &self.license, &who, limit, false) => r?,
        };
        let (dir, oid) = (self.data_dir.clone(), reply.oid);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || identity::save_oid(&dir, oid)).await
        {
            tracing::warn!(error = %e, "Cannot remember the oid.");
        }
        let last_stored = reply.last_seq;
        let through = self
            .spool
            .with(move |s| s.settle_through(epoch, last_stored))
            .await??;
        if let Some(collector_has) = through.beyond_numbering {
            tracing::error!(
                instance = %instance,
                collector_has,
                "The collector holds batches of this spool instance numbered above what the spool remembers assigning (its record was lost, e.g. in a power cut with spool.sync=normal); nothing unsent was removed, and new batches start a new spool instance."
            );
        }
        tracing::info!(
            collector = %self.server.authority(),
            oid = reply.oid,
            project = %reply.project,
            instance = %instance,
            already_stored = through.settled,
            "Connected to the collector."
        );

        let (tx, rx) = mpsc::channel::<Vec<u8>>(WINDOW);
        let mut request = Request::new(ReceiverStream::new(rx));
        insert_metadata(&mut request, metadata::LICENSE, self.license.expose())?;
        insert_metadata(&mut request, metadata::OID, &reply.oid.to_string())?;
        insert_metadata(&mut request, metadata::INSTANCE, &instance)?;
        let mut acks = match timeout(limit, pusher.push(request)).await {
            Err(_) => {
                return Err(TransportError::Timeout {
                    during: "opening the Push stream",
                    after: limit,
                });
            }
            Ok(response) => response?.into_inner(),
        };

        let idle = self.identity.interval + self.identity.interval / 2;
        // (seq, bytes) of each batch sent and not yet acked.
        let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
        let room = |in_flight: &VecDeque<(u64, usize)>| {
            in_flight.len() < WINDOW
                && (in_flight.is_empty()
                    || in_flight.iter().map(|&(_, bytes)| bytes).sum::<usize>() < WINDOW_BYTES)
        };
        let mut last_sent: Option<Key> = None;
        let mut ack_deadline = Instant::now() + limit;
        let mut idle_deadline = Instant::now() + idle;
        let mut paused_until: Option<Instant> = None;
        let mut other_instance_waiting = false;
        loop {
            if paused_until.is_some_and(|t| Instant::now() >= t) {
                paused_until = None;
            }
            while room(&in_flight) && paused_until.is_none() && !other_instance_waiting {
                let (key, batch) = match self.next_batch(epoch, last_sent).await? {
                    Next::Batch(key, batch) => (key, batch),
                    Next::OtherInstance => {
                        other_instance_waiting = true;
                        break;
                    }
                    Next::Nothing => break,
                };
                let bytes = batch.len();
                if tx.send(batch).await.is_err() {
                    return Err(TransportError::StreamClosed);
                }
                if in_flight.is_empty() {
                    ack_deadline = Instant::now() + limit;
                }
                in_flight.push_back((key.seq, bytes));
                last_sent = Some(key);
                idle_deadline = Instant::now() + idle;
                AgentCounters::add(&self.counters.batches_sent, 1);
            }
            if other_instance_waiting && in_flight.is_empty() {
                tracing::info!(instance = %instance, "Every batch of this spool instance is delivered; moving on to the next.");
                return Ok(SessionEnd::NextInstance);
            }
            let can_send = room(&in_flight) && paused_until.is_none() && !other_instance_waiting;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                message = acks.message() => {
                    let Some(ack) = message? else {
                        return Err(TransportError::StreamClosed);
                    };
                    // No batch has number 0: such an ack answers a liveness
                    // signal (a collector that does not know them refuses it).
                    if ack.seq == 0 {
                        continue;
                    }
                    *acked_any = true;
                    in_flight.retain(|&(s, _)| s > ack.seq);
                    ack_deadline = Instant::now() + limit;
                    self.on_ack(epoch, &ack).await?;
                    if ack.slow_down_ms > 0 {
                        paused_until = Some(Instant::now() + Duration::from_millis(ack.slow_down_ms.into()));
                    }
                }
                () = sleep_until(ack_deadline), if !in_flight.is_empty() => {
                    return Err(TransportError::Timeout { during: "waiting for an ack", after: limit });
                }
                () = self.spool.appended(), if can_send => {}
                () = sleep_until(paused_until.unwrap_or_else(Instant::now)), if paused_until.is_some() => {}
                () = sleep_until(idle_deadline), if paused_until.is_none() => {
                    let liveness = wire::liveness_batch(&self.counters.snapshot()).encode_to_vec();
                    if tx.send(liveness).await.is_err() {
                        return Err(TransportError::StreamClosed);
                    }
                    idle_deadline = Instant::now() + idle;
                }
            }
        }
    }

    /// The next spooled batch of instance `epoch` after `after`, marked in
    /// flight. A batch read back from disk that this process did not spool
    /// (one left by an earlier run) is checked to decode first: one that
    /// does not is dropped (and counted) rather than blocking the spool
    /// forever. (One spooled by this process is what it encoded: the
    /// spool's CRC says the file still holds it.)
    async fn next_batch(&self, epoch: u32, after: Option<Key>) -> Result<Next, TransportError> {
        let mut after = after;
        loop {
            // The index and the newest batches are in memory: no thread hop
            // unless the batch must be read from disk.
            let next = self
                .spool
                .in_memory(move |s| {
                    let key = s.next_after(after)?;
                    if key.epoch != epoch {
                        return Some((key, None, false));
                    }
                    s.mark_in_flight(key);
                    Some((key, s.cached(key), true))
                })
                .await?;
            let (key, cached) = match next {
                None => return Ok(Next::Nothing),
                Some((_, _, false)) => return Ok(Next::OtherInstance),
                Some((key, cached, true)) => (key, cached),
            };
            after = Some(key);
            if let Some(bytes) = cached {
                return Ok(Next::Batch(key, bytes));
            }
            let Some((bytes, appended_here)) = self
                .spool
                .with(move |s| {
                    Ok::<_, crate::spool::SpoolError>(
                        s.read(key)?.map(|b| (b, s.appended_here(key))),
                    )
                })
                .await??
            else {
                continue;
            };
            if appended_here {
                return Ok(Next::Batch(key, bytes));
            }
            match wire::decode_spooled(&bytes) {
                Ok(_) => return Ok(Next::Batch(key, bytes)),
                Err(e) => {
                    tracing::warn!(seq = key.seq, error = %e, "Spooled batch does not decode; dropping it.");
                    self.spool
                        .with(move |s| s.settle(key, Fate::Dropped(DropReason::Damaged)))
                        .await??;
                }
            }
        }
    }

    async fn on_ack(&self, epoch: u32, ack: &pb::Ack) -> Result<(), TransportError> {
        let key = Key {
            epoch,
            seq: ack.seq,
        };
        if let Some(partial) = &ack.partial {
            tracing::warn!(
                seq = ack.seq,
                rejected = partial.rejected,
                reason = %partial.message,
                "Collector stored a batch but left part of it out."
            );
        }
        if ack.error.is_empty() {
            self.spool
                .with(move |s| s.settle(key, Fate::Acked))
                .await??;
            AgentCounters::add(&self.counters.batches_acked, 1);
        } else {
            // Refused for good: not stored, so a loss to report.
            let fate = Fate::Dropped(DropReason::Refused(ack.error.clone()));
            self.spool.with(move |s| s.settle(key, fate)).await??;
            AgentCounters::add(&self.counters.batches_rejected, 1);
            tracing::error!(seq = ack.seq, reason = %ack.error, "Collector refused a batch for good; it was removed.");
        }
        Ok(())
    }
}
