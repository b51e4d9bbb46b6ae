//! The edge where agent-core's domain types become wire messages. With the
//! rest of [`crate::transport`], the only part of agent-core that sees
//! prost types. A product's own payloads are converted at the product's
//! own edge (its `src/wire.rs`) into a [`WirePayload`]: here they are bytes.
//!
//! A batch is assembled from payload bytes (field 4 of `Batch`, each a
//! length-delimited `Payload` message), so core never decodes or knows a
//! product's message, and a send too large for one batch is split here
//! (metrics by samples, events by events) before it is spooled.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use sightline_proto::v1 as pb;

use crate::domain::{Event, Metrics, Payload, Sample, Severity};
use crate::health::Health;

/// Field number of `Batch.payloads`.
const BATCH_PAYLOADS_FIELD: u32 = 4;

/// Unix milliseconds (0 for times before 1970).
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A product's own payload, converted at the product's wire edge: its time
/// and the encoded bytes of one `Payload` message.
#[derive(Debug, Clone, PartialEq)]
pub struct WirePayload {
    time: SystemTime,
    bytes: Vec<u8>,
}

impl WirePayload {
    /// Encodes `payload`, produced at `time`.
    pub fn new(time: SystemTime, payload: pb::Payload) -> WirePayload {
        WirePayload {
            time,
            bytes: payload.encode_to_vec(),
        }
    }

    /// When it was produced.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// Its encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Its bytes: one encoded `Payload` message.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Whether it encodes to nothing (an empty `Payload`).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A payload larger than a batch may be, which cannot be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a product payload of {bytes} bytes is larger than a batch may be ({limit} bytes)")]
pub struct TooLarge {
    /// Its encoded size.
    pub bytes: usize,
    /// The batch limit.
    pub limit: usize,
}

/// Encodes `payload` into one or more `Payload` messages, each at most
/// `limit` bytes: metrics are split by samples, events by events. A
/// product's own payload is never split: larger than `limit`, it is refused.
/// (A single sample or event larger than `limit` travels alone; the spool
/// refuses it if it is larger than the collector accepts.)
pub fn encode_payload(payload: &Payload, limit: usize) -> Result<Vec<Vec<u8>>, TooLarge> {
    match payload {
        Payload::Encoded(w) if w.len() > limit => Err(TooLarge {
            bytes: w.len(),
            limit,
        }),
        Payload::Encoded(w) => Ok(vec![w.bytes.clone()]),
        Payload::Metrics(m) => {
            let whole = metrics_to_wire(m, &m.samples);
            if whole.encoded_len() + 8 <= limit {
                return Ok(vec![wrap(pb::payload::Kind::Metrics(whole))]);
            }
            let sizes: Vec<usize> = whole.samples.iter().map(Message::encoded_len).collect();
            Ok(chunks(&sizes, limit)
                .into_iter()
                .map(|r| {
                    wrap(pb::payload::Kind::Metrics(metrics_to_wire(
                        m,
                        &m.samples[r],
                    )))
                })
                .collect())
        }
        Payload::Events(events) => {
            let wire: Vec<pb::AgentEvent> = events.iter().map(event_to_wire).collect();
            let sizes: Vec<usize> = wire.iter().map(Message::encoded_len).collect();
            Ok(chunks(&sizes, limit)
                .into_iter()
                .map(|r| {
                    wrap(pb::payload::Kind::Events(pb::AgentEvents {
                        events: wire[r].to_vec(),
                    }))
                })
                .collect())
        }
    }
}

/// Ranges of items whose sizes (plus framing) fit in `limit`, in order;
/// an item larger than `limit` gets a range of its own.
fn chunks(sizes: &[usize], limit: usize) -> Vec<std::ops::Range<usize>> {
    // Room for the Payload and Metrics/AgentEvents framing and a time.
    const FRAMING: usize = 32;
    let mut out = Vec::new();
    let (mut start, mut used) = (0, FRAMING);
    for (i, &size) in sizes.iter().enumerate() {
        let item = size + 1 + encoded_len_varint(size as u64);
        if i > start && used + item > limit {
            out.push(start..i);
            (start, used) = (i, FRAMING);
        }
        used += item;
    }
    if start < sizes.len() || out.is_empty() {
        out.push(start..sizes.len());
    }
    out
}

fn wrap(kind: pb::payload::Kind) -> Vec<u8> {
    pb::Payload { kind: Some(kind) }.encode_to_vec()
}

/// The bytes a payload adds to a batch: its field key, length and body.
pub fn framed_len(payload: &[u8]) -> usize {
    1 + encoded_len_varint(payload.len() as u64) + payload.len()
}

/// Encodes one batch (the bytes that go into the spool) from payloads
/// already encoded by [`encode_payload`].
pub fn encode_batch(seq: u64, time: SystemTime, health: &Health, payloads: &[Vec<u8>]) -> Vec<u8> {
    let head = pb::Batch {
        seq,
        time_ms: unix_ms(time),
        health: Some(health_to_wire(health)),
        payloads: Vec::new(),
        liveness: false,
    };
    let body: usize = payloads.iter().map(|p| framed_len(p)).sum();
    let mut bytes = Vec::with_capacity(head.encoded_len() + body);
    // Encoding into a Vec with enough capacity cannot fail.
    let _ = head.encode(&mut bytes);
    for payload in payloads {
        encode_key(BATCH_PAYLOADS_FIELD, WireType::LengthDelimited, &mut bytes);
        encode_varint(payload.len() as u64, &mut bytes);
        bytes.extend_from_slice(payload);
    }
    bytes
}

/// The liveness signal: no sequence number, no payloads, the agent's health.
pub fn liveness_batch(health: &Health) -> pb::Batch {
    pb::Batch {
        seq: 0,
        time_ms: unix_ms(SystemTime::now()),
        health: Some(health_to_wire(health)),
        payloads: Vec::new(),
        liveness: true,
    }
}

/// Decodes spooled bytes back into the message sent on the wire.
pub fn decode_batch(bytes: &[u8]) -> Result<pb::Batch, prost::DecodeError> {
    pb::Batch::decode(bytes)
}

fn health_to_wire(h: &Health) -> pb::AgentHealth {
    pb::AgentHealth {
        spool_batches: h.spool_batches,
        spool_bytes: h.spool_bytes,
        batches_sent: h.batches_sent,
        batches_acked: h.batches_acked,
        reconnects: h.reconnects,
        batches_dropped: h.batches_dropped,
        bytes_dropped: h.bytes_dropped,
        sources: h
            .sources
            .iter()
            .map(|s| pb::SourceHealth {
                name: s.name.clone(),
                records_read: s.records_read,
                records_sent: s.records_sent,
                records_acked: s.records_acked,
                records_dropped: s.records_dropped,
            })
            .collect(),
    }
}

fn metrics_to_wire(m: &Metrics, samples: &[Sample]) -> pb::Metrics {
    pb::Metrics {
        samples: samples.iter().map(sample_to_wire).collect(),
        time_ms: unix_ms(m.time),
    }
}

fn sample_to_wire(s: &Sample) -> pb::Sample {
    pb::Sample {
        name: s.name.to_string(),
        labels: s
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                key: k.to_string(),
                value: v.clone(),
            })
            .collect(),
        value: s.value,
    }
}

fn event_to_wire(e: &Event) -> pb::AgentEvent {
    pb::AgentEvent {
        time_ms: unix_ms(e.time),
        kind: legacy_event_kind(&e.name) as i32,
        severity: severity_to_wire(e.severity) as i32,
        message: e.message.clone(),
        name: e.name.to_string(),
        attrs: e
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The deprecated `AgentEvent.kind` for an event name that the closed enum
/// has (`spool.overflow` is `EVENT_KIND_SPOOL_OVERFLOW`), else unspecified.
///
/// Compatibility: remove once every collector reads `name`.
fn legacy_event_kind(name: &str) -> pb::EventKind {
    let enum_name = format!("EVENT_KIND_{}", name.to_ascii_uppercase().replace('.', "_"));
    pb::EventKind::from_str_name(&enum_name).unwrap_or(pb::EventKind::Unspecified)
}

fn severity_to_wire(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// Helpers for agent-core's own tests elsewhere, so prost types stay here.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A product payload of about `len` bytes (core never looks inside).
    pub(crate) fn opaque_payload(len: usize) -> WirePayload {
        WirePayload::new(
            SystemTime::now(),
            pb::Payload {
                kind: Some(pb::payload::Kind::Metrics(pb::Metrics {
                    samples: vec![pb::Sample {
                        name: "x".repeat(len),
                        ..Default::default()
                    }],
                    time_ms: 0,
                })),
            },
        )
    }

    /// The sequence number and the number of samples of a spooled batch.
    pub(crate) fn seq_and_samples(bytes: &[u8]) -> (u64, usize) {
        let batch = decode_batch(bytes).expect("decodes");
        let samples = batch
            .payloads
            .into_iter()
            .map(|p| match p.kind {
                Some(pb::payload::Kind::Metrics(m)) => m.samples.len(),
                _ => 0,
            })
            .sum();
        (batch.seq, samples)
    }
}

#[cfg(test)]
mod tests;
