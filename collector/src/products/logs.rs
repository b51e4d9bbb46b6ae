//! The log agent's `LogChunk`, checked and decoded into a
//! [`LogChunkRow`]. Never stores anything itself, and never trusts the
//! wire: every length, offset and position is checked before it is used,
//! so the store and the API can slice record texts without a check.
//!
//! What is refused, always by count (never a panic, never silently):
//! - a whole chunk whose shape is wrong: `file_id` over
//!   [`MAX_FILE_ID_BYTES`], arrays whose lengths disagree, `text_lens`
//!   that do not add up to the text or split a UTF-8 character, records
//!   not in file order, a `cut` index past the last record;
//! - one record whose field positions fall outside its text or split a
//!   character (the rest of the chunk is kept).

use std::collections::BTreeMap;

use sightline_proto::v1 as pb;

use crate::ingest::convert::Refusals;
use crate::model::{LogChunkRow, LogFieldRow};

/// Longest `file_id`.
pub const MAX_FILE_ID_BYTES: usize = 128;
/// Longest field name.
pub const MAX_FIELD_NAME_BYTES: usize = 128;
/// Most fields per chunk.
pub const MAX_FIELDS: usize = 64;

/// Converts one chunk; `at` resolves a zero time to the batch's. `None`
/// when nothing of it can be stored (what was refused is in `refused`).
pub fn chunk_from_wire(
    chunk: pb::LogChunk,
    at: impl Fn(i64) -> i64,
    refused: &mut Refusals,
) -> Option<LogChunkRow> {
    let records = chunk.text_lens.len();
    let shape = check_shape(&chunk);
    if let Err(reason) = shape {
        // The count is the records the chunk claims, at least one.
        refused.add_many(records.max(1) as u64, || {
            format!("a log chunk is malformed: {reason}")
        });
        return None;
    }
    let mut ends = Vec::with_capacity(records);
    let mut end = 0u32;
    for &len in &chunk.text_lens {
        end += len; // no overflow: the sum was checked against the text
        ends.push(end);
    }
    let mut row = LogChunkRow {
        file_id: chunk.file_id,
        path: chunk.path,
        category: chunk.category,
        time_ms: at(chunk.time_ms),
        attrs: chunk.attrs.into_iter().collect::<BTreeMap<_, _>>(),
        text: chunk.text,
        ends,
        starts: chunk.starts,
        spans: chunk.spans,
        cut: {
            let mut cut = chunk.cut;
            cut.sort_unstable();
            cut.dedup();
            cut
        },
        times_ms: chunk.record_times_ms,
        fields: chunk
            .fields
            .into_iter()
            .map(|f| LogFieldRow {
                name: f.name,
                offsets: f.offsets,
                lens: f.lens,
            })
            .collect(),
    };
    let bad: Vec<usize> = (0..row.len()).filter(|&i| !fields_fit(&row, i)).collect();
    if !bad.is_empty() {
        refused.add_many(bad.len() as u64, || {
            "a log record's field lies outside its text or splits a character".into()
        });
        row = without(&row, &bad);
    }
    (!row.is_empty()).then_some(row)
}

fn check_shape(chunk: &pb::LogChunk) -> Result<(), String> {
    let n = chunk.text_lens.len();
    if chunk.file_id.len() > MAX_FILE_ID_BYTES {
        return Err(format!("file_id is over {MAX_FILE_ID_BYTES} bytes"));
    }
    if chunk.starts.len() != n || chunk.spans.len() != n {
        return Err("text_lens, starts and spans differ in length".into());
    }
    if !chunk.record_times_ms.is_empty() && chunk.record_times_ms.len() != n {
        return Err("record_times_ms is neither empty nor one per record".into());
    }
    if chunk.cut.iter().any(|&i| i as usize >= n) {
        return Err("a cut index is past the last record".into());
    }
    if chunk.fields.len() > MAX_FIELDS {
        return Err(format!("more than {MAX_FIELDS} fields"));
    }
    for field in &chunk.fields {
        if field.name.is_empty() || field.name.len() > MAX_FIELD_NAME_BYTES {
            return Err(format!(
                "a field name is empty or over {MAX_FIELD_NAME_BYTES} bytes"
            ));
        }
        if field.offsets.len() != n || field.lens.len() != n {
            return Err(format!(
                "field '{}' is not one entry per record",
                field.name
            ));
        }
    }
    let total: u64 = chunk.text_lens.iter().map(|&l| u64::from(l)).sum();
    if total != chunk.text.len() as u64 || u32::try_from(total).is_err() {
        return Err("text_lens do not add up to the text's length".into());
    }
    let mut at = 0usize;
    for &len in &chunk.text_lens {
        at += len as usize;
        if !chunk.text.is_char_boundary(at) {
            return Err("a record's text ends inside a UTF-8 character".into());
        }
    }
    let mut next = 0u64;
    for (&start, &span) in chunk.starts.iter().zip(&chunk.spans) {
        if start < next {
            return Err("records are not in file order".into());
        }
        next = start
            .checked_add(u64::from(span))
            .ok_or("a record's end offset overflows")?;
    }
    Ok(())
}

/// Whether every field value of record `i` lies in its text, on
/// character boundaries.
fn fields_fit(row: &LogChunkRow, i: usize) -> bool {
    let text = row.record_text(i);
    row.fields.iter().all(|f| {
        let (at, len) = (f.offsets[i] as usize, f.lens[i] as usize);
        len == 0
            || at.checked_add(len).is_some_and(|end| {
                end <= text.len() && text.is_char_boundary(at) && text.is_char_boundary(end)
            })
    })
}

/// The chunk without the records `bad` (ascending).
fn without(row: &LogChunkRow, bad: &[usize]) -> LogChunkRow {
    let keep: Vec<usize> = (0..row.len())
        .filter(|i| bad.binary_search(i).is_err())
        .collect();
    let mut text = String::with_capacity(row.text.len());
    let mut ends = Vec::with_capacity(keep.len());
    for &i in &keep {
        text.push_str(row.record_text(i));
        ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
    }
    let pick = |v: &[u32]| keep.iter().map(|&i| v[i]).collect::<Vec<_>>();
    LogChunkRow {
        file_id: row.file_id.clone(),
        path: row.path.clone(),
        category: row.category.clone(),
        time_ms: row.time_ms,
        attrs: row.attrs.clone(),
        text,
        ends,
        starts: keep.iter().map(|&i| row.starts[i]).collect(),
        spans: pick(&row.spans),
        cut: keep
            .iter()
            .enumerate()
            .filter(|&(_, &i)| row.is_cut(i))
            .filter_map(|(new, _)| u32::try_from(new).ok())
            .collect(),
        times_ms: if row.times_ms.is_empty() {
            Vec::new()
        } else {
            keep.iter().map(|&i| row.times_ms[i]).collect()
        },
        fields: row
            .fields
            .iter()
            .map(|f| LogFieldRow {
                name: f.name.clone(),
                offsets: pick(&f.offsets),
                lens: pick(&f.lens),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of `lines`, each line plus a newline in the file, from 0.
    pub(crate) fn chunk(lines: &[&str]) -> pb::LogChunk {
        let mut start = 0u64;
        let mut starts = Vec::new();
        for l in lines {
            starts.push(start);
            start += l.len() as u64 + 1;
        }
        pb::LogChunk {
            file_id: "dev1-ino2".into(),
            path: "/var/log/app.log".into(),
            category: "app".into(),
            time_ms: 0,
            attrs: Default::default(),
            text: lines.concat(),
            text_lens: lines.iter().map(|l| l.len() as u32).collect(),
            starts,
            spans: lines.iter().map(|l| l.len() as u32 + 1).collect(),
            cut: vec![],
            fields: vec![],
            record_times_ms: vec![],
        }
    }

    fn convert(c: pb::LogChunk) -> (Option<LogChunkRow>, Refusals) {
        let mut refused = Refusals::default();
        let row = chunk_from_wire(c, |t| if t == 0 { 77 } else { t }, &mut refused);
        (row, refused)
    }

    #[test]
    fn a_good_chunk_keeps_every_record_and_the_batch_time() {
        let mut c = chunk(&["héllo", "world 500"]);
        c.fields = vec![pb::LogField {
            name: "status".into(),
            offsets: vec![0, 6],
            lens: vec![0, 3],
        }];
        c.cut = vec![1];
        let (row, refused) = convert(c);
        let row = row.expect("stored");
        assert_eq!(refused.count, 0);
        assert_eq!(row.len(), 2);
        assert_eq!(row.record_text(0), "héllo");
        assert_eq!(row.record_text(1), "world 500");
        assert_eq!(row.record_time(1), 77);
        assert_eq!((row.record_end(0), row.starts[1]), (7, 7));
        assert!(row.is_cut(1) && !row.is_cut(0));
        assert_eq!(row.field_value(0, 0), None);
        assert_eq!(row.field_value(0, 1), Some("500"));
    }

    #[test]
    fn a_malformed_chunk_is_refused_whole_by_its_record_count() {
        type Spoil = Box<dyn Fn(&mut pb::LogChunk)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("file_id", Box::new(|c| c.file_id = "x".repeat(129))),
            (
                "spans",
                Box::new(|c| {
                    c.spans.pop();
                }),
            ),
            ("add up", Box::new(|c| c.text_lens[0] += 1)),
            (
                "character",
                Box::new(|c| {
                    c.text_lens[0] -= 1;
                    c.text_lens[1] += 1;
                }),
            ),
            ("order", Box::new(|c| c.starts[1] = 0)),
            ("cut", Box::new(|c| c.cut = vec![2])),
            ("record_times_ms", Box::new(|c| c.record_times_ms = vec![1])),
            (
                "field",
                Box::new(|c| {
                    c.fields = vec![pb::LogField {
                        name: "f".into(),
                        offsets: vec![0],
                        lens: vec![1],
                    }]
                }),
            ),
        ];
        for (what, spoil) in cases {
            // "é" is two bytes: moving one byte of it splits it.
            let mut c = chunk(&["abcé", "def"]);
            spoil(&mut c);
            let (row, refused) = convert(c);
            assert!(row.is_none(), "{what}");
            assert_eq!(refused.count, 2, "{what}: {:?}", refused.reasons);
            assert!(refused.reasons[0].contains("malformed"), "{what}");
        }
    }

    #[test]
    fn a_record_whose_field_is_outside_it_is_refused_alone() {
        let mut c = chunk(&["GET 200", "GET 404", "POST 500"]);
        c.fields = vec![pb::LogField {
            name: "status".into(),
            offsets: vec![4, 4, 5],
            lens: vec![3, 9, 3],
        }];
        c.cut = vec![2];
        let (row, refused) = convert(c);
        let row = row.expect("the rest is stored");
        assert_eq!(refused.count, 1);
        assert_eq!(row.len(), 2);
        assert_eq!(row.record_text(1), "POST 500");
        assert_eq!(row.starts[1], 16);
        assert_eq!(row.field_value(0, 1), Some("500"));
        assert!(row.is_cut(1), "the cut flag moves with its record");
    }
}
