//! The log agent's wire edge: records from [`crate::framing`] are packed
//! into one columnar `LogChunk` (logs.proto) per file and sent. The only
//! module of sightline-log that sees prost types.
//!
//! A record's text is copied once, into the chunk's text blob; its other
//! parts are integers appended to packed columns. Nothing is allocated per
//! record beyond the columns' own growth.

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

/// Bytes a packed column's tag and length take at most.
const COLUMN_OVERHEAD: usize = 1 + 5;
/// Bytes a unix-ms time of this century takes as a varint.
const TIME_VARINT: usize = 6;

/// Packs one file's records into a chunk, copying each record's text
/// once into the chunk's text blob.
///
/// Columns: `text_lens`, `starts`, `spans` one entry per record; `cut`
/// the indexes of cut records; one `LogField` per name of the parse rule,
/// one (offset, length) per record, length 0 when the record has no such
/// field; `record_times_ms` only once a record has its own time (CRI),
/// then one per record, a record without one taking the chunk's time.
///
/// The CRI stream is not sent: a `LogField` value must be a part of the
/// record's text, and the stream is not (see the report of issue 7's
/// framing work: the protocol needs a place for it).
#[derive(Debug)]
pub struct ChunkBuilder {
    chunk: pb::LogChunk,
    /// The parse rule's columns, in `field_names` order.
    fields: Vec<pb::LogField>,
    /// Whether some record had its own time.
    has_times: bool,
    /// The encoded size of everything but the text blob.
    other_bytes: usize,
}

impl ChunkBuilder {
    /// An empty chunk for a file; `field_names` as the framer gives them.
    pub fn new(file: &FileLabels, field_names: &[String]) -> ChunkBuilder {
        let fields: Vec<pb::LogField> = field_names
            .iter()
            .map(|name| pb::LogField {
                name: name.clone(),
                ..Default::default()
            })
            .collect();
        let string = |s: &str| 1 + varint_len(s.len() as u64) + s.len();
        let attrs: usize = file
            .attrs
            .iter()
            .map(|(k, v)| {
                let entry = string(k) + string(v);
                1 + varint_len(entry as u64) + entry
            })
            .sum();
        let field_headers: usize = fields
            .iter()
            .map(|f| COLUMN_OVERHEAD + string(&f.name) + 2 * COLUMN_OVERHEAD)
            .sum();
        let other_bytes = string(&file.file_id)
            + string(&file.path)
            + string(&file.category)
            + attrs
            + 1
            + 10 // time_ms
            + COLUMN_OVERHEAD // text
            + 5 * COLUMN_OVERHEAD // the packed columns
            + field_headers
            + COLUMN_OVERHEAD; // the payload around the chunk
        ChunkBuilder {
            chunk: pb::LogChunk {
                file_id: file.file_id.clone(),
                path: file.path.clone(),
                category: file.category.clone(),
                attrs: file.attrs.clone().into_iter().collect(),
                ..Default::default()
            },
            fields,
            has_times: false,
            other_bytes,
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

    /// About how many bytes the chunk takes on the wire: never less than
    /// it does, and more by at most a few dozen bytes per column.
    pub fn wire_bytes(&self) -> usize {
        self.chunk.text.len() + self.other_bytes
    }

    /// The chunk as a payload agent-core can carry.
    pub fn finish(mut self, time: SystemTime) -> Payload {
        let time_ms = unix_ms(time);
        self.chunk.time_ms = time_ms;
        if self.has_times {
            for t in &mut self.chunk.record_times_ms {
                if *t == 0 {
                    *t = time_ms;
                }
            }
        }
        self.chunk.fields = self.fields;
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
        let index = self.chunk.starts.len();
        let text_len = record.text.len() as u32;
        // A span over 4 GiB (one line that long) cannot be said; it is
        // clamped, which leaves a gap before the next record, never an
        // overlap.
        let span = u32::try_from(record.end.saturating_sub(record.start)).unwrap_or(u32::MAX);
        self.chunk.text.push_str(record.text);
        self.chunk.text_lens.push(text_len);
        self.chunk.starts.push(record.start);
        self.chunk.spans.push(span);
        let mut other = varint_len(u64::from(text_len))
            + varint_len(record.start)
            + varint_len(u64::from(span));
        if record.cut {
            self.chunk.cut.push(index as u32);
            other += varint_len(index as u64);
        }
        for column in &mut self.fields {
            column.offsets.push(0);
            column.lens.push(0);
            other += 2;
        }
        for (field, range) in record.fields {
            if let Some(column) = self.fields.get_mut(*field) {
                let len = range.end.saturating_sub(range.start);
                column.offsets[index] = range.start;
                column.lens[index] = len;
                other += varint_len(u64::from(range.start)) + varint_len(u64::from(len)) - 2;
            }
        }
        if record.time_ms.is_some() && !self.has_times {
            self.has_times = true;
            self.chunk.record_times_ms = vec![0; index];
            other += COLUMN_OVERHEAD + index * TIME_VARINT;
        }
        if self.has_times {
            self.chunk.record_times_ms.push(record.time_ms.unwrap_or(0));
            other += record
                .time_ms
                .map_or(TIME_VARINT, |t| varint_len(t as u64).max(TIME_VARINT));
        }
        self.other_bytes += other;
    }
}

/// Bytes `value` takes as a protobuf varint.
fn varint_len(value: u64) -> usize {
    // 7 bits a byte; 0 takes one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{Format, Framer, FramingRules, compile_rule};
    use agent_core::health::Health;
    use agent_core::transport::wire::{decode_batch, encode_batch, encode_payload};
    use std::sync::Arc;
    use std::time::{Duration, Instant, UNIX_EPOCH};

    fn labels() -> FileLabels {
        FileLabels {
            file_id: "dev1-ino2-abcdef".into(),
            path: "/var/log/nginx/access.log".into(),
            category: "nginx".into(),
            attrs: BTreeMap::from([("pod".to_string(), "web-1".to_string())]),
        }
    }

    /// The chunk as the collector receives it: through agent-core's
    /// encoding of a batch and back.
    fn round_trip(payload: &Payload) -> pb::LogChunk {
        let time = UNIX_EPOCH + Duration::from_secs(7);
        let parts = encode_payload(payload, 1 << 20).expect("fits");
        let batch =
            decode_batch(&encode_batch(1, time, &Health::default(), &parts)).expect("decodes");
        let Some(pb::payload::Kind::Logs(chunk)) = batch.payloads[0].kind.clone() else {
            panic!("not a log chunk");
        };
        chunk
    }

    fn chunk_text(chunk: &pb::LogChunk, i: usize) -> &str {
        let from: usize = chunk.text_lens[..i].iter().map(|&l| l as usize).sum();
        &chunk.text[from..from + chunk.text_lens[i] as usize]
    }

    #[test]
    fn parsed_records_reach_the_wire_with_their_fields_and_offsets() {
        let rules = FramingRules {
            max_line: 16,
            parse: Some(
                compile_rule(
                    "file.web.parse",
                    r"^(?P<ip>\S+) (?P<method>[A-Z]+) (?P<status>\d+)",
                )
                .expect("compiles"),
            ),
            ..FramingRules::default()
        };
        let mut framer = Framer::new(Arc::new(rules), 100);
        let mut chunk = ChunkBuilder::new(&labels(), &framer.field_names());
        let input = b"10.0.0.1 GET 200\nnot a request\r\n10.0.0.2 POST 500 and a long tail\n";
        framer.push(input, Instant::now(), &mut chunk);
        assert_eq!(chunk.len(), 3);
        let chunk = round_trip(&chunk.finish(UNIX_EPOCH + Duration::from_secs(5)));

        assert_eq!(chunk.file_id, "dev1-ino2-abcdef");
        assert_eq!(chunk.category, "nginx");
        assert_eq!(chunk.attrs["pod"], "web-1");
        assert_eq!(chunk.time_ms, 5000);
        assert_eq!(chunk.starts, vec![100, 117, 132]);
        assert_eq!(chunk.spans, vec![17, 15, 34]);
        assert_eq!(chunk_text(&chunk, 0), "10.0.0.1 GET 200");
        assert_eq!(chunk_text(&chunk, 1), "not a request");
        assert_eq!(chunk_text(&chunk, 2), "10.0.0.2 POST 50");
        assert_eq!(chunk.cut, vec![2]);
        assert!(chunk.record_times_ms.is_empty());

        let names: Vec<&str> = chunk.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["ip", "method", "status"]);
        let value = |field: usize, record: usize| {
            let f = &chunk.fields[field];
            let (at, len) = (f.offsets[record] as usize, f.lens[record] as usize);
            (len > 0).then(|| chunk_text(&chunk, record)[at..at + len].to_string())
        };
        assert_eq!(value(2, 0).as_deref(), Some("200"));
        assert_eq!(value(1, 0).as_deref(), Some("GET"));
        assert_eq!(value(0, 1), None, "an unmatched record has no fields");
        // The parse rule sees the cut text: the status lost its last digit.
        assert_eq!(value(2, 2).as_deref(), Some("50"));
        assert_eq!(value(0, 2).as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn record_times_are_sent_only_when_a_record_has_its_own() {
        let rules = Arc::new(FramingRules {
            format: Format::Cri,
            ..FramingRules::default()
        });
        let mut framer = Framer::new(rules, 0);
        let mut chunk = ChunkBuilder::new(&labels(), &framer.field_names());
        framer.push(
            b"not cri at all\n2024-01-01T00:00:00.250Z stderr F boom\n",
            Instant::now(),
            &mut chunk,
        );
        let chunk = round_trip(&chunk.finish(UNIX_EPOCH + Duration::from_secs(9)));
        assert_eq!(chunk.record_times_ms, vec![9000, 1_704_067_200_250]);
        assert_eq!(chunk_text(&chunk, 1), "boom");
    }

    #[test]
    fn wire_bytes_is_a_close_upper_estimate() {
        let rules = Arc::new(FramingRules {
            parse: Some(compile_rule("p", r"(?P<a>\d+) (?P<b>\w+)").expect("compiles")),
            ..FramingRules::default()
        });
        for lines in [0usize, 1, 10, 5000] {
            let mut framer = Framer::new(Arc::clone(&rules), 1 << 33);
            let mut chunk = ChunkBuilder::new(&labels(), &framer.field_names());
            let mut input = String::new();
            for i in 0..lines {
                input.push_str(&format!("{i} word{} {}\n", i * 7, "x".repeat(i % 300)));
            }
            framer.push(input.as_bytes(), Instant::now(), &mut chunk);
            let estimate = chunk.wire_bytes();
            let Payload::Encoded(payload) = chunk.finish(SystemTime::now()) else {
                panic!("not encoded");
            };
            let actual = payload.len();
            assert!(estimate >= actual, "{lines} lines: {estimate} < {actual}");
            assert!(
                estimate <= actual + actual / 100 + 128,
                "{lines} lines: {estimate} far above {actual}"
            );
        }
    }

    #[test]
    fn varint_lengths() {
        let table = [
            (0u64, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::from(u32::MAX), 5),
            (1_704_067_200_000, 6),
            (u64::MAX, 10),
        ];
        for (value, len) in table {
            assert_eq!(varint_len(value), len, "{value}");
        }
    }
}
