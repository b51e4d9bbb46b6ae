//! The log store's format and search, without SQL: how a block of records
//! is laid out and compressed ([`block`]), its token bloom filter and the
//! query language ([`text`]), record shapes for pattern analysis
//! ([`pattern`]), and the types the store's log reads and the API share.
//!
//! Invariants: nothing here does IO or knows a backend; every decoder
//! reads bytes from disk as untrusted (a corrupt block is an error, never a
//! panic); the on-disk formats (block layout, token hash, bloom, template
//! hash) are versioned by [`block::FORMAT`] and change only with it.

pub mod block;
pub mod pattern;
pub mod text;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::LogChunkRow;

/// Which records a search wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Terms that must all occur (see [`text::Query`]).
    pub text: text::Query,
    /// Only this category.
    pub category: Option<String>,
    /// Only this agent.
    pub oid: Option<i64>,
    /// From, unix ms, inclusive.
    pub from_ms: i64,
    /// To, unix ms, inclusive.
    pub to_ms: i64,
    /// Fields that must have exactly these values.
    pub fields: Vec<(String, String)>,
    /// At most this many.
    pub limit: usize,
    /// Only records older than this (a previous page's `next`).
    pub before: Option<LogCursor>,
}

/// Where a page of search results ended: records are ordered by time,
/// then block, then place in the block, all descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogCursor {
    /// The record's time.
    pub time_ms: i64,
    /// The block holding it.
    pub block: i64,
    /// Its index in the block.
    pub index: u32,
}

impl LogCursor {
    /// `TIME.BLOCK.INDEX`, as the API hands it out.
    pub fn to_text(self) -> String {
        format!("{}.{}.{}", self.time_ms, self.block, self.index)
    }

    /// Parses [`LogCursor::to_text`].
    pub fn parse(text: &str) -> Option<LogCursor> {
        let mut parts = text.split('.');
        let cursor = LogCursor {
            time_ms: parts.next()?.parse().ok()?,
            block: parts.next()?.parse().ok()?,
            index: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// One stored record, as search and tail return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRecord {
    /// The record's time, unix ms.
    pub time_ms: i64,
    /// The agent.
    pub oid: i64,
    /// The agent's name.
    pub oname: String,
    /// The group's category.
    pub category: String,
    /// The file's path.
    pub path: String,
    /// The file's identity on its host.
    pub file_id: String,
    /// Where the record starts in the file.
    pub start: u64,
    /// Where it ends.
    pub end: u64,
    /// Its text.
    pub text: String,
    /// Whether its text was cut.
    pub cut: bool,
    /// Its fields.
    pub fields: BTreeMap<String, String>,
    /// The file's labels.
    pub attrs: BTreeMap<String, String>,
}

impl LogRecord {
    /// Record `i` of `chunk`.
    pub fn from_chunk(chunk: &LogChunkRow, i: usize, oid: i64, oname: &str) -> LogRecord {
        LogRecord {
            time_ms: chunk.record_time(i),
            oid,
            oname: oname.to_string(),
            category: chunk.category.clone(),
            path: chunk.path.clone(),
            file_id: chunk.file_id.clone(),
            start: chunk.starts[i],
            end: chunk.record_end(i),
            text: chunk.record_text(i).to_string(),
            cut: chunk.is_cut(i),
            fields: (0..chunk.fields.len())
                .filter_map(|f| {
                    Some((
                        chunk.fields[f].name.clone(),
                        chunk.field_value(f, i)?.to_string(),
                    ))
                })
                .collect(),
            attrs: chunk.attrs.clone(),
        }
    }
}

/// A page of search results.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    /// Newest first.
    pub records: Vec<LogRecord>,
    /// Where the next page starts, if there may be one.
    pub next: Option<LogCursor>,
}

/// A record shape and how many records had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogPattern {
    /// The shape: the text with numbers, ids, addresses and times masked.
    pub pattern: String,
    /// Records with this shape in the range.
    pub count: u64,
    /// One record that had it.
    pub example: String,
}

/// Which records patterns are counted over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternQuery {
    /// Only this category.
    pub category: Option<String>,
    /// From, unix ms, inclusive.
    pub from_ms: i64,
    /// To, unix ms, inclusive.
    pub to_ms: i64,
    /// At most this many, most frequent first.
    pub limit: usize,
}

/// Records just stored, for the live tail: `chunk`'s records from
/// `first` on are new.
#[derive(Debug, Clone)]
pub struct LiveLogs {
    /// The agent's project.
    pub project_id: i64,
    /// The agent.
    pub oid: i64,
    /// The chunk.
    pub chunk: Arc<LogChunkRow>,
    /// The first record stored (those before were duplicates).
    pub first: usize,
}
