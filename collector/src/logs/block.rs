//! A stored block: the records of one chunk (from its first new record
//! on) as columns, compressed whole, with its bloom filter and its
//! pattern counts beside it.
//!
//! Layout before compression (all integers LEB128 varints): record count;
//! each record's text length; the first record's start, then per record
//! the gap since the previous end and its span; the times (0 and one time
//! for all, or 1 and per-record zigzag deltas); the cut indexes (count,
//! then deltas); the fields (count; per field its name, its dictionary's
//! size and values, then per record offset and length, or its dictionary
//! code when the dictionary is not empty); then the text. Stored as `[FORMAT][codec][raw
//! length][compressed bytes]`.
//!
//! Never panics on what it reads back: a block that does not decode is a
//! [`BlockError`].

use std::collections::HashMap;

use super::pattern;
use super::text::{Bloom, each_token_hash, field_hash};
use crate::model::{LogChunkRow, LogFieldRow};

/// The block format this code writes and reads.
pub const FORMAT: u8 = 2;
/// Compression: zstd (see ARCHITECTURE.md for the measurement that chose
/// it and its level).
const CODEC_ZSTD: u8 = 1;
/// zstd's level: 1 is its fastest standard level.
pub const ZSTD_LEVEL: i32 = 1;
/// The largest block decompressed, in bytes (a chunk is under 1 MiB).
const MAX_RAW_BYTES: usize = 64 << 20;

/// A block that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("log block unreadable: {0}")]
pub struct BlockError(pub String);

/// A block ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBlock {
    /// Records in it.
    pub records: usize,
    /// Bytes of record text.
    pub text_bytes: usize,
    /// Oldest and newest record time.
    pub min_ms: i64,
    /// Newest record time.
    pub max_ms: i64,
    /// The first record's start and the last one's end in the file.
    pub first_start: u64,
    /// The last record's end.
    pub last_end: u64,
    /// The compressed columns.
    pub data: Vec<u8>,
    /// The bloom filter.
    pub bloom: Vec<u8>,
    /// Pattern counts: `(template hash, count)`, encoded.
    pub patterns: Vec<u8>,
    /// Each distinct template of the block with its hash and an example.
    pub templates: Vec<(u64, String, String)>,
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Reads varints from untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn get(&mut self) -> Result<u64, BlockError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.at)
                .ok_or_else(|| BlockError("ends inside a number".into()))?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BlockError("a number is too long".into()))
    }

    fn get_u32(&mut self) -> Result<u32, BlockError> {
        u32::try_from(self.get()?).map_err(|_| BlockError("a length is too large".into()))
    }

    fn count(&mut self, limit: usize) -> Result<usize, BlockError> {
        let n = self.get()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= limit)
            .ok_or_else(|| BlockError("a count is larger than the block".into()))
    }

    fn bytes(&mut self, n: usize) -> Result<&[u8], BlockError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| BlockError("ends early".into()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
}

/// Encodes records `first..` of `chunk` into a block (`None` when there
/// are none).
pub fn encode(chunk: &LogChunkRow, first: usize) -> Option<EncodedBlock> {
    let n = chunk.len().checked_sub(first).filter(|&n| n > 0)?;
    let text_from = chunk.text_start(first);
    let text = &chunk.text[text_from..];
    let mut raw = Vec::with_capacity(text.len() + n * 8 + 64);
    put(&mut raw, n as u64);
    for i in first..chunk.len() {
        put(
            &mut raw,
            (chunk.ends[i] as usize - chunk.text_start(i)) as u64,
        );
    }
    put(&mut raw, chunk.starts[first]);
    let mut prev_end = chunk.starts[first];
    for i in first..chunk.len() {
        put(&mut raw, chunk.starts[i] - prev_end);
        put(&mut raw, u64::from(chunk.spans[i]));
        prev_end = chunk.record_end(i);
    }
    let (mut min_ms, mut max_ms) = (i64::MAX, i64::MIN);
    if chunk.times_ms.is_empty() {
        put(&mut raw, 0);
        put(&mut raw, zigzag(chunk.time_ms));
        (min_ms, max_ms) = (chunk.time_ms, chunk.time_ms);
    } else {
        put(&mut raw, 1);
        let mut prev = 0i64;
        for &t in &chunk.times_ms[first..] {
            put(&mut raw, zigzag(t.wrapping_sub(prev)));
            prev = t;
            min_ms = min_ms.min(t);
            max_ms = max_ms.max(t);
        }
    }
    let cut: Vec<u32> = chunk
        .cut
        .iter()
        .filter(|&&c| c as usize >= first)
        .map(|&c| c - first as u32)
        .collect();
    put(&mut raw, cut.len() as u64);
    let mut prev = 0;
    for c in cut {
        put(&mut raw, u64::from(c - prev));
        prev = c;
    }
    put(&mut raw, chunk.fields.len() as u64);
    for f in &chunk.fields {
        put(&mut raw, f.name.len() as u64);
        raw.extend_from_slice(f.name.as_bytes());
        put(&mut raw, f.dict.len() as u64);
        for value in &f.dict {
            put(&mut raw, value.len() as u64);
            raw.extend_from_slice(value.as_bytes());
        }
        for i in first..chunk.len() {
            if f.dict.is_empty() {
                put(&mut raw, u64::from(f.offsets[i]));
                put(&mut raw, u64::from(f.lens[i]));
            } else {
                put(&mut raw, u64::from(f.codes[i]));
            }
        }
    }
    raw.extend_from_slice(text.as_bytes());

    let compressed = zstd::bulk::compress(&raw, ZSTD_LEVEL).ok()?;
    let mut data = Vec::with_capacity(compressed.len() + 12);
    data.push(FORMAT);
    data.push(CODEC_ZSTD);
    put(&mut data, raw.len() as u64);
    data.extend_from_slice(&compressed);

    // Sized for a token per 4 bytes of text (and a field value per record
    // and field), then folded to what the block really holds.
    let mut bloom = Bloom::with_capacity(text.len() / 4 + n * chunk.fields.len());
    // Record by record: the last token of one and the first of the next
    // are two tokens, not one.
    for i in first..chunk.len() {
        each_token_hash(chunk.record_text(i).as_bytes(), |h| bloom.insert(h));
    }
    for (fi, f) in chunk.fields.iter().enumerate() {
        for i in first..chunk.len() {
            if let Some(v) = chunk.field_value(fi, i) {
                bloom.insert(field_hash(&f.name, v));
            }
        }
    }
    bloom.shrink();

    let mut shapes: HashMap<u64, (u64, usize)> = HashMap::new();
    let mut template = String::new();
    let mut templates = Vec::new();
    for i in first..chunk.len() {
        template.clear();
        pattern::template(chunk.record_text(i), &mut template);
        let h = pattern::template_hash(&template);
        let entry = shapes.entry(h).or_insert_with(|| {
            templates.push((h, template.clone(), chunk.record_text(i).to_string()));
            (0, i)
        });
        entry.0 += 1;
    }
    let mut patterns = Vec::with_capacity(shapes.len() * 10);
    put(&mut patterns, shapes.len() as u64);
    for (h, (count, _)) in shapes {
        patterns.extend_from_slice(&h.to_le_bytes());
        put(&mut patterns, count);
    }
    Some(EncodedBlock {
        records: n,
        text_bytes: text.len(),
        min_ms,
        max_ms,
        first_start: chunk.starts[first],
        last_end: chunk.record_end(chunk.len() - 1),
        data,
        bloom: bloom.to_bytes(),
        patterns,
        templates,
    })
}

/// What a block's columns do not hold: its row's columns.
#[derive(Debug, Clone, Default)]
pub struct BlockLabels {
    /// The file's identity.
    pub file_id: String,
    /// Its path.
    pub path: String,
    /// Its category.
    pub category: String,
    /// Its labels.
    pub attrs: std::collections::BTreeMap<String, String>,
}

/// Decodes a stored block back into records.
pub fn decode(data: &[u8], labels: BlockLabels) -> Result<LogChunkRow, BlockError> {
    let mut head = Reader { bytes: data, at: 0 };
    let format = head.bytes(2)?;
    if format != [FORMAT, CODEC_ZSTD] {
        return Err(BlockError(format!("unknown format {format:?}")));
    }
    let raw_len = head.count(MAX_RAW_BYTES)?;
    let raw = zstd::bulk::decompress(&data[head.at..], raw_len)
        .map_err(|e| BlockError(format!("zstd: {e}")))?;
    let mut r = Reader { bytes: &raw, at: 0 };
    let n = r.count(raw.len())?;
    let mut ends = Vec::with_capacity(n);
    let mut end = 0u64;
    for _ in 0..n {
        end += r.get()?;
        ends.push(u32::try_from(end).map_err(|_| BlockError("text too long".into()))?);
    }
    let mut starts = Vec::with_capacity(n);
    let mut spans = Vec::with_capacity(n);
    let mut prev_end = r.get()?;
    for _ in 0..n {
        let start = prev_end
            .checked_add(r.get()?)
            .ok_or_else(|| BlockError("offset overflow".into()))?;
        let span = r.get_u32()?;
        starts.push(start);
        spans.push(span);
        prev_end = start
            .checked_add(u64::from(span))
            .ok_or_else(|| BlockError("offset overflow".into()))?;
    }
    let (time_ms, times_ms) = match r.get()? {
        0 => (unzigzag(r.get()?), Vec::new()),
        1 => {
            let mut prev = 0i64;
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                prev = prev.wrapping_add(unzigzag(r.get()?));
                times.push(prev);
            }
            (times.first().copied().unwrap_or(0), times)
        }
        other => return Err(BlockError(format!("unknown time column {other}"))),
    };
    let cuts = r.count(n)?;
    let mut cut = Vec::with_capacity(cuts);
    let mut prev = 0u32;
    for _ in 0..cuts {
        prev = prev.saturating_add(r.get_u32()?);
        cut.push(prev);
    }
    let field_count = r.count(raw.len())?;
    let mut fields = Vec::with_capacity(field_count);
    for _ in 0..field_count {
        let len = r.count(raw.len())?;
        let name = String::from_utf8(r.bytes(len)?.to_vec())
            .map_err(|_| BlockError("a field name is not UTF-8".into()))?;
        let dict_len = r.count(raw.len())?;
        let mut dict = Vec::with_capacity(dict_len);
        for _ in 0..dict_len {
            let len = r.count(raw.len())?;
            dict.push(
                String::from_utf8(r.bytes(len)?.to_vec())
                    .map_err(|_| BlockError("a field value is not UTF-8".into()))?,
            );
        }
        let (mut offsets, mut lens, mut codes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            if dict.is_empty() {
                offsets.push(r.get_u32()?);
                lens.push(r.get_u32()?);
            } else {
                let code = r.get_u32()?;
                if code as usize > dict.len() {
                    return Err(BlockError("a field code is past its dictionary".into()));
                }
                codes.push(code);
            }
        }
        fields.push(LogFieldRow {
            name,
            offsets,
            lens,
            dict,
            codes,
        });
    }
    let text = std::str::from_utf8(&raw[r.at..])
        .map_err(|_| BlockError("text is not UTF-8".into()))?
        .to_string();
    if end != text.len() as u64 || ends.iter().any(|&e| !text.is_char_boundary(e as usize)) {
        return Err(BlockError("record lengths do not fit the text".into()));
    }
    Ok(LogChunkRow {
        file_id: labels.file_id,
        path: labels.path,
        category: labels.category,
        time_ms,
        attrs: labels.attrs,
        text,
        ends,
        starts,
        spans,
        cut,
        times_ms,
        fields,
    })
}

/// Decodes a block's pattern counts.
pub fn decode_patterns(bytes: &[u8]) -> Result<Vec<(u64, u64)>, BlockError> {
    let mut r = Reader { bytes, at: 0 };
    let n = r.count(bytes.len())?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let h = r.bytes(8)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(h);
        out.push((u64::from_le_bytes(le), r.get()?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk() -> LogChunkRow {
        let lines = ["GET /a 200 héllo", "POST /b 500", "GET /c 200"];
        let mut ends = Vec::new();
        let mut end = 0;
        for l in lines {
            end += l.len() as u32;
            ends.push(end);
        }
        LogChunkRow {
            file_id: "f".into(),
            path: "/p".into(),
            category: "c".into(),
            time_ms: 1000,
            attrs: Default::default(),
            text: lines.concat(),
            ends,
            starts: vec![10, 40, 60],
            spans: vec![20, 12, 11],
            cut: vec![1, 2],
            times_ms: vec![900, 950, 1100],
            fields: vec![
                LogFieldRow {
                    name: "status".into(),
                    offsets: vec![7, 8, 7],
                    lens: vec![3, 3, 3],
                    ..Default::default()
                },
                LogFieldRow {
                    name: "stream".into(),
                    dict: vec!["stdout".into(), "stderr".into()],
                    codes: vec![1, 2, 0],
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn a_block_decodes_to_the_records_it_was_made_of() {
        let c = chunk();
        let block = encode(&c, 1).expect("records");
        assert_eq!(block.records, 2);
        assert_eq!((block.min_ms, block.max_ms), (950, 1100));
        assert_eq!((block.first_start, block.last_end), (40, 71));
        let back = decode(&block.data, BlockLabels::default()).expect("decodes");
        assert_eq!(back.len(), 2);
        assert_eq!(back.record_text(0), "POST /b 500");
        assert_eq!(back.record_text(1), "GET /c 200");
        assert_eq!(back.starts, [40, 60]);
        assert_eq!(back.spans, [12, 11]);
        assert_eq!(back.times_ms, [950, 1100]);
        assert_eq!(back.cut, [0, 1]);
        assert_eq!(back.field_value(0, 0), Some("500"));
        assert_eq!(back.field_value(1, 0), Some("stderr"));
        assert_eq!(back.field_value(1, 1), None);
        let whole =
            decode(&encode(&c, 0).expect("all").data, BlockLabels::default()).expect("decodes");
        assert_eq!(whole.record_text(0), "GET /a 200 héllo");
        assert!(encode(&c, 3).is_none());
        let counts = decode_patterns(&block.patterns).expect("patterns");
        assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 2);
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_panic() {
        let block = encode(&chunk(), 0).expect("records");
        for cut_at in 0..block.data.len() {
            let _ = decode(&block.data[..cut_at], BlockLabels::default());
        }
        let mut flipped = block.data.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = decode(&flipped, BlockLabels::default());
            flipped[i] ^= 0x5a;
        }
        assert!(decode(&[9, 9, 9], BlockLabels::default()).is_err());
    }
}
