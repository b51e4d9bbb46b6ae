//! The log agent's wire edge: records from [`crate::framing`] are packed
//! into one columnar `LogChunk` (logs.proto) per file and send. The only
//! module of sightline-log that sees prost types.

use std::collections::BTreeMap;
use std::time::SystemTime;

use agent_core::transport::wire::unix_ms;
use agent_core::{Payload, WirePayload};
use sightline_proto::v1 as pb;

use crate::framing::{RecordRef, RecordSink};

/// What a chunk says about its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLabels {
    /// The file's identity (see [`crate::identity`] once it lands).
    pub file_id: String,
    /// The path it was first read under.
    pub path: String,
    /// The group's category.
    pub category: String,
    /// Kubernetes namespace, pod, container, when known.
    pub attrs: BTreeMap<String, String>,
}

/// Packs one file's records into a chunk, copying each record's text
/// once into the chunk's text blob.
#[derive(Debug)]
pub struct ChunkBuilder {
    chunk: pb::LogChunk,
}

impl ChunkBuilder {
    /// An empty chunk for a file; `field_names` as the framer gives them.
    pub fn new(file: &FileLabels, field_names: &[String]) -> ChunkBuilder {
        // SKELETON: the framing helper completes this module.
        let _ = field_names;
        ChunkBuilder {
            chunk: pb::LogChunk {
                file_id: file.file_id.clone(),
                path: file.path.clone(),
                category: file.category.clone(),
                attrs: file.attrs.clone().into_iter().collect(),
                ..Default::default()
            },
        }
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.chunk.starts.len()
    }

    /// True when no record was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// About how many bytes the chunk takes on the wire.
    pub fn wire_bytes(&self) -> usize {
        self.chunk.text.len() + 12 * self.len()
    }

    /// The chunk as a payload agent-core can carry.
    pub fn finish(mut self, time: SystemTime) -> Payload {
        self.chunk.time_ms = unix_ms(time);
        Payload::Encoded(WirePayload::new(
            time,
            pb::Payload {
                kind: Some(pb::payload::Kind::Logs(self.chunk)),
            },
        ))
    }
}

impl RecordSink for ChunkBuilder {
    fn record(&mut self, record: &RecordRef<'_>) {
        self.chunk.text.push_str(record.text);
        self.chunk.text_lens.push(record.text.len() as u32);
        self.chunk.starts.push(record.start);
        self.chunk.spans.push((record.end - record.start) as u32);
    }
}
