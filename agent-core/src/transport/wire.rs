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

/// The first bytes of every zstd frame. Spooled bytes that start with them
/// are a compressed batch ([`encode_compressed_batch`]); an encoded `Batch`
/// never does (a spooled batch starts with its `seq`, field 1: byte 0x08).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// zstd's fastest standard level: on nginx access logs it compresses
/// 7.06× at 727 MB/s against level 3's 7.38× at 521 MB/s (`zstd -b1 -e3`
/// on this machine); an agent's CPU is worth more than 4 % of its bytes.
pub const ZSTD_LEVEL: i32 = 1;

/// Whether spooled bytes are a zstd-compressed batch.
pub fn is_compressed(batch: &[u8]) -> bool {
    batch.starts_with(&ZSTD_MAGIC)
}

/// Spooled bytes that cannot be read back as a batch.
#[derive(Debug, thiserror::Error)]
pub enum SpooledBatchError {
    /// A compressed batch that does not decompress (or is larger than
    /// any batch may be).
    #[error("does not decompress: {0}")]
    Decompress(std::io::Error),
    /// Not an encoded `Batch`.
    #[error("does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// The payloads of one batch as their part of the encoded `Batch` (field 4,
/// each framed), compressed: the bulk of a batch, compressed before it is
/// numbered so that the spool's lock is not held for it. One zstd context
/// and one pair of buffers for the process, kept (making a context costs
/// more than a small batch, and buffers kept per thread of the blocking
/// pool would each stay resident): the pipeline compresses one batch at a
/// time.
pub fn compress_payloads(payloads: &[Vec<u8>]) -> Result<Vec<u8>, std::io::Error> {
    /// Buffers larger than this (a batch of a large record) are not kept.
    const KEEP_BYTES: usize = 2 << 20;
    struct PayloadCompressor {
        compressor: zstd::bulk::Compressor<'static>,
        body: Vec<u8>,
        out: Vec<u8>,
    }
    static COMPRESSOR: std::sync::Mutex<Option<PayloadCompressor>> = std::sync::Mutex::new(None);
    let mut guard = COMPRESSOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let state = match guard.as_mut() {
        Some(state) => state,
        None => guard.insert(PayloadCompressor {
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)?,
            body: Vec::new(),
            out: Vec::new(),
        }),
    };
    state.body.clear();
    for payload in payloads {
        encode_key(
            BATCH_PAYLOADS_FIELD,
            WireType::LengthDelimited,
            &mut state.body,
        );
        encode_varint(payload.len() as u64, &mut state.body);
        state.body.extend_from_slice(payload);
    }
    state.out.clear();
    state
        .out
        .reserve(zstd::zstd_safe::compress_bound(state.body.len()));
    let compressed = state
        .compressor
        .compress_to_buffer(&state.body, &mut state.out)
        .map(|_| state.out.clone());
    for buffer in [&mut state.body, &mut state.out] {
        if buffer.capacity() > KEEP_BYTES {
            *buffer = Vec::new();
        }
    }
    compressed
}

/// One batch as spooled when compression is on: the batch's number, time
/// and health (a few hundred bytes, as a zstd frame of raw blocks: no
/// compressing under the spool's lock) followed by the payloads already
/// compressed by [`compress_payloads`]. zstd frames one after the other
/// decompress to their contents one after the other, and the fields of a
/// protobuf message may come in any order, so the whole decompresses to an
/// encoded `Batch`: the collector (tonic's zstd decoder) reads it as any
/// other compressed message.
pub fn encode_compressed_batch(
    seq: u64,
    time: SystemTime,
    health: &Health,
    compressed_payloads: &[u8],
) -> Vec<u8> {
    let head = pb::Batch {
        seq,
        time_ms: unix_ms(time),
        health: Some(health_to_wire(health)),
        payloads: Vec::new(),
        liveness: false,
    }
    .encode_to_vec();
    let mut bytes = Vec::with_capacity(head.len() + 32 + compressed_payloads.len());
    raw_zstd_frame(&head, &mut bytes);
    bytes.extend_from_slice(compressed_payloads);
    bytes
}

/// `content` as a zstd frame of raw (stored) blocks.
fn raw_zstd_frame(content: &[u8], out: &mut Vec<u8>) {
    /// The largest block zstd allows.
    const MAX_BLOCK: usize = 128 << 10;
    out.extend_from_slice(&ZSTD_MAGIC);
    // Frame header descriptor: a single segment (no window descriptor),
    // a 4-byte content size, no checksum, no dictionary.
    out.push(0b1010_0000);
    out.extend_from_slice(
        &u32::try_from(content.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    let mut blocks = content.chunks(MAX_BLOCK).peekable();
    if blocks.peek().is_none() {
        // One empty raw block, the last.
        out.extend_from_slice(&[1, 0, 0]);
    }
    while let Some(block) = blocks.next() {
        let last = u32::from(blocks.peek().is_none());
        // Block header, 3 bytes little endian: size, type 0 (raw), last.
        let header = ((block.len() as u32) << 3) | last;
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(block);
    }
}

/// Spooled bytes as an encoded `Batch`: decompressed when they were
/// spooled compressed (at most `limit` bytes of it), else as they are.
pub fn uncompressed(batch: Vec<u8>, limit: usize) -> Result<Vec<u8>, SpooledBatchError> {
    use std::io::Read;
    if !is_compressed(&batch) {
        return Ok(batch);
    }
    let decoder = zstd::stream::read::Decoder::new(batch.as_slice())
        .map_err(SpooledBatchError::Decompress)?;
    let mut out = Vec::with_capacity(batch.len() * 8);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(SpooledBatchError::Decompress)?;
    if out.len() > limit {
        return Err(SpooledBatchError::Decompress(std::io::Error::other(
            format!("larger than {limit} bytes"),
        )));
    }
    Ok(out)
}

/// Decodes spooled bytes, compressed or not, into the message sent on the
/// wire.
pub fn decode_spooled(batch: &[u8]) -> Result<pb::Batch, SpooledBatchError> {
    if is_compressed(batch) {
        let plain = uncompressed(batch.to_vec(), super::endpoint::MAX_MESSAGE_BYTES)?;
        return Ok(decode_batch(&plain)?);
    }
    Ok(decode_batch(batch)?)
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
