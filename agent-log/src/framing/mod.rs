//! Bytes of a file become records: line ends, `max_line`, the encoding,
//! the CRI container log format, multi-line rules, include/exclude
//! filters and the `parse` rule. Pure: no I/O, no clock of its own (the
//! caller passes `now`), so every rule is tested on bytes.
//!
//! The stages, in order: [`decode`] finds line ends (for the file's
//! encoding) and turns each line into UTF-8 text; [`cri`] joins a
//! container's partial lines; the multi-line rule joins continuation
//! lines; the filters drop records; the `parse` rule marks fields. Each
//! stage hands a borrowed `&str` to the next: on the plain path a line is
//! never copied before the sink copies it once.
//!
//! Invariants:
//! - Every byte pushed is covered by exactly one emitted record or one
//!   filtered line, or is still pending; [`Framer::safe_offset`] is the
//!   offset below which nothing is pending, the only offset a checkpoint
//!   may take. A byte-order mark is covered by the first line's span.
//! - A partial last line (no line end yet) is never emitted.
//! - Memory per file is bounded by the rules' limits (`max_line`, the
//!   multi-line limits), never by the length of a line in the file; once
//!   a long record is emitted its buffer shrinks back.
//! - The records do not depend on how the bytes were split into pushes.
//! - Never allocates per line on the plain path: buffers are reused.

mod cri;
mod decode;
#[cfg(test)]
mod tests;

use std::mem;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regex::{CaptureLocations, Regex};

use cri::Stream;
use decode::floor_char;

/// `max_line` when the group does not say.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;
/// `multiline.timeout` when the group does not say.
pub const DEFAULT_MULTILINE_TIMEOUT: Duration = Duration::from_secs(1);
/// `multiline.max_lines` when the group does not say.
pub const DEFAULT_MULTILINE_MAX_LINES: usize = 500;
/// `multiline.max_bytes` when the group does not say.
pub const DEFAULT_MULTILINE_MAX_BYTES: usize = 1024 * 1024;

/// How a group's files are cut into records (from `file.<name>.*`).
#[derive(Debug, Clone)]
pub struct FramingRules {
    /// Longer records are cut to this many bytes and flagged.
    pub max_line: usize,
    /// The file's encoding.
    pub encoding: Encoding,
    /// Plain lines, or the CRI container log format.
    pub format: Format,
    /// Joins continuation lines to the line that starts a record.
    pub multiline: Option<Multiline>,
    /// Only lines matching one of these are kept (empty: all).
    pub include_lines: Vec<Regex>,
    /// Lines matching one of these are dropped.
    pub exclude_lines: Vec<Regex>,
    /// Named groups become fields.
    pub parse: Option<Regex>,
}

impl Default for FramingRules {
    /// Plain UTF-8 lines of at most [`DEFAULT_MAX_LINE`] bytes, no other
    /// rule: what a group gets when it only names its paths.
    fn default() -> FramingRules {
        FramingRules {
            max_line: DEFAULT_MAX_LINE,
            encoding: Encoding::Utf8,
            format: Format::Plain,
            multiline: None,
            include_lines: Vec::new(),
            exclude_lines: Vec::new(),
            parse: None,
        }
    }
}

/// Most fields a record carries: the collector refuses a chunk with more
/// columns, so named groups past these are not fields.
pub const MAX_FIELDS: usize = 64;
/// The longest field name, in bytes: a group with a longer name is not a
/// field (the collector refuses it).
pub const MAX_FIELD_NAME_BYTES: usize = 128;

/// Why a `parse` rule's groups cannot all become fields (more than
/// [`MAX_FIELDS`], or a name over [`MAX_FIELD_NAME_BYTES`]), for settings
/// to refuse at load; the framer itself only uses the groups that fit.
pub fn check_parse_rule(parse: &Regex) -> Result<(), String> {
    let names: Vec<&str> = parse.capture_names().flatten().collect();
    if names.len() > MAX_FIELDS {
        return Err(format!(
            "{} named groups; at most {MAX_FIELDS} become fields",
            names.len()
        ));
    }
    match names.iter().find(|n| n.len() > MAX_FIELD_NAME_BYTES) {
        Some(long) => Err(format!(
            "group name '{}…' is over {MAX_FIELD_NAME_BYTES} bytes",
            decode::floor_char(long, 16)
        )),
        None => Ok(()),
    }
}

/// The parse rule's groups that become fields: (group index, name), in
/// group order.
fn field_groups(parse: &Regex) -> impl Iterator<Item = (usize, &str)> {
    parse
        .capture_names()
        .enumerate()
        .filter_map(|(group, name)| Some((group, name?)))
        .filter(|(_, name)| name.len() <= MAX_FIELD_NAME_BYTES)
        .take(MAX_FIELDS)
}

/// A rule's regular expression did not compile.
#[derive(Debug, thiserror::Error)]
#[error("{rule}: bad regular expression")]
pub struct RuleError {
    /// The rule, as its key names it (`file.web.parse`).
    pub rule: String,
    /// Why.
    #[source]
    pub source: regex::Error,
}

/// Compiles the regular expression of the rule named `rule` (its key,
/// for the error).
pub fn compile_rule(rule: &str, pattern: &str) -> Result<Regex, RuleError> {
    Regex::new(pattern).map_err(|source| RuleError {
        rule: rule.to_string(),
        source,
    })
}

/// A file's text encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8; invalid bytes are replaced and counted.
    Utf8,
    /// UTF-16, little-endian (a byte-order mark decides when present).
    Utf16Le,
    /// UTF-16, big-endian.
    Utf16Be,
}

/// The shape of each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One record per line (or per multi-line group).
    Plain,
    /// Kubernetes CRI: `<time> <stream> <P|F> <text>`; `P` lines are
    /// joined to the next until an `F`.
    Cri,
}

/// The multi-line rule: a line matching `start` begins a record, others
/// continue the record before them.
#[derive(Debug, Clone)]
pub struct Multiline {
    /// What the first line of a record looks like.
    pub start: Regex,
    /// A pending record is emitted after this long with no new line.
    pub timeout: Duration,
    /// At most this many lines per record; then it is cut.
    pub max_lines: usize,
    /// At most this many bytes per record; then it is cut.
    pub max_bytes: usize,
}

impl Multiline {
    /// The rule with `start` and the default limits.
    pub fn new(start: Regex) -> Multiline {
        Multiline {
            start,
            timeout: DEFAULT_MULTILINE_TIMEOUT,
            max_lines: DEFAULT_MULTILINE_MAX_LINES,
            max_bytes: DEFAULT_MULTILINE_MAX_BYTES,
        }
    }
}

/// One record as the framer emits it. Borrowed: the sink copies what it
/// keeps, so the framer allocates nothing per line.
#[derive(Debug)]
pub struct RecordRef<'a> {
    /// Where its first byte is in the file.
    pub start: u64,
    /// One past its last byte (line end included).
    pub end: u64,
    /// Its text, UTF-8, line end removed.
    pub text: &'a str,
    /// True when the text was cut.
    pub cut: bool,
    /// Fields from the parse rule: (index of the group in
    /// [`Framer::field_names`], byte range in `text`).
    pub fields: &'a [(usize, Range<u32>)],
    /// The record's own time, unix ms (CRI), when the format has one.
    pub time_ms: Option<i64>,
    /// The CRI stream (`stdout`/`stderr`), when the format has one.
    pub stream: Option<&'a str>,
}

/// Where records go.
pub trait RecordSink {
    /// One complete record.
    fn record(&mut self, record: &RecordRef<'_>);
}

/// What a framer counted, for the agent's health.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FramingCounts {
    /// Records emitted.
    pub records: u64,
    /// Records cut at a limit.
    pub cut: u64,
    /// Invalid byte sequences replaced.
    pub invalid: u64,
    /// Lines dropped by include/exclude rules.
    pub filtered: u64,
    /// Lines of a CRI file not in the CRI format (kept as plain records).
    pub malformed: u64,
    /// Records the `parse` rule did not match (sent without fields).
    pub unparsed: u64,
}

/// A reused buffer that grew past this (a long line, a big multi-line
/// record) is given back down to it once used, so that thousands of open
/// files do not each keep the memory of their longest record.
const RETAINED: usize = 16 * 1024;

/// Empties a reused buffer, giving back what a rare long record made it
/// take beyond [`RETAINED`].
fn recycle(buffer: &mut Vec<u8>) {
    buffer.clear();
    if buffer.capacity() > RETAINED {
        buffer.shrink_to(RETAINED);
    }
}

/// [`recycle`] for text.
fn recycle_text(buffer: &mut String) {
    buffer.clear();
    if buffer.capacity() > RETAINED {
        buffer.shrink_to(RETAINED);
    }
}

/// A record being joined from several lines (CRI partials, or the
/// multi-line rule). Its buffer is kept between records.
#[derive(Debug, Default)]
struct Pending {
    active: bool,
    start: u64,
    end: u64,
    text: String,
    lines: usize,
    cut: bool,
    time_ms: Option<i64>,
    stream: Option<Stream>,
}

impl Pending {
    fn begin(&mut self, start: u64, time_ms: Option<i64>, stream: Option<Stream>) {
        self.active = true;
        self.start = start;
        self.end = start;
        self.text.clear();
        self.lines = 0;
        self.cut = false;
        self.time_ms = time_ms;
        self.stream = stream;
    }
}

/// Cuts one file's bytes into records.
#[derive(Debug)]
pub struct Framer {
    rules: Arc<FramingRules>,
    /// The file offset of the next byte [`Framer::push`] expects.
    offset: u64,
    counts: FramingCounts,
    /// The encoding in effect: the rules', or a byte-order mark's.
    encoding: Encoding,
    /// While the file's first bytes may still be a byte-order mark: those
    /// bytes (fewer than 3), not yet framed.
    head: Option<Vec<u8>>,
    /// The first byte of the partial line (`offset` when there is none).
    line_start: u64,
    /// The partial line's bytes, at most [`Framer::raw_cap`].
    line: Vec<u8>,
    /// The partial line is longer than the cap: its rest is skipped.
    line_cut: bool,
    /// UTF-16: the first byte of a code unit whose second has not come.
    odd: Option<u8>,
    /// Decoded text of a line that was not valid UTF-8 as it stood.
    scratch: String,
    cri: Pending,
    multi: Pending,
    /// The current record's fields.
    fields: Vec<(usize, Range<u32>)>,
    /// The parse rule's capture positions, reused.
    locations: Option<CaptureLocations>,
    /// For each group of the parse rule, its index in `field_names`.
    group_fields: Vec<Option<usize>>,
    /// When bytes last came.
    last_bytes_at: Option<Instant>,
}

impl Framer {
    /// A framer for a file read from `offset` on.
    pub fn new(rules: Arc<FramingRules>, offset: u64) -> Framer {
        let mut group_fields = Vec::new();
        if let Some(parse) = &rules.parse {
            group_fields = vec![None; parse.captures_len()];
            for (field, (group, _)) in field_groups(parse).enumerate() {
                group_fields[group] = Some(field);
            }
        }
        Framer {
            encoding: rules.encoding,
            locations: rules.parse.as_ref().map(Regex::capture_locations),
            group_fields,
            // Only a file read from its start can show a byte-order mark.
            head: (offset == 0).then(Vec::new),
            rules,
            offset,
            counts: FramingCounts::default(),
            line_start: offset,
            line: Vec::new(),
            line_cut: false,
            odd: None,
            scratch: String::new(),
            cri: Pending::default(),
            multi: Pending::default(),
            fields: Vec::new(),
            last_bytes_at: None,
        }
    }

    /// A framer for a file resumed at `offset` whose first bytes are
    /// `file_head` (3 bytes, or all the file has): a byte-order mark there
    /// decides the encoding, as it did when the file was read from 0.
    pub fn resumed(rules: Arc<FramingRules>, offset: u64, file_head: &[u8]) -> Framer {
        let mut framer = Framer::new(rules, offset);
        if offset > 0
            && let Some((encoding, _)) = decode::bom(file_head)
        {
            framer.encoding = encoding;
        }
        framer
    }

    /// The names of the parse rule's groups, indexed as in
    /// [`RecordRef::fields`].
    pub fn field_names(&self) -> Vec<String> {
        self.rules
            .parse
            .as_ref()
            .map(|re| field_groups(re).map(|(_, name)| name.to_string()).collect())
            .unwrap_or_default()
    }

    /// Bytes read from the file, contiguous with the previous push.
    /// Complete records go to `sink`; the rest waits for more bytes.
    pub fn push(&mut self, bytes: &[u8], now: Instant, sink: &mut impl RecordSink) {
        if bytes.is_empty() {
            return;
        }
        self.last_bytes_at = Some(now);
        let at = self.offset;
        self.offset += bytes.len() as u64;
        let rules = Arc::clone(&self.rules);
        let Some(mut head) = self.head.take() else {
            self.feed(&rules, bytes, at, sink);
            return;
        };
        // The file's first bytes: a byte-order mark decides the encoding
        // and is no record's text (the first line's span covers it).
        let mut probe = [0u8; 3];
        let known = head.len().min(3);
        probe[..known].copy_from_slice(&head[..known]);
        let more = bytes.len().min(3 - known);
        probe[known..known + more].copy_from_slice(&bytes[..more]);
        let probe = &probe[..known + more];
        if probe.len() < 3 && decode::may_be_bom(probe) {
            head.extend_from_slice(bytes);
            self.head = Some(head);
            return;
        }
        let (encoding, bom_len) = decode::bom(probe).unwrap_or((rules.encoding, 0));
        self.encoding = encoding;
        if head.is_empty() {
            self.feed(&rules, &bytes[bom_len..], at + bom_len as u64, sink);
        } else {
            // Once per file, and only when its first push was tiny.
            head.extend_from_slice(bytes);
            let from = at - (head.len() - bytes.len()) as u64;
            self.feed(&rules, &head[bom_len..], from + bom_len as u64, sink);
        }
    }

    /// Time passed with no new bytes: a multi-line record pending longer
    /// than its timeout is emitted.
    pub fn tick(&mut self, now: Instant, sink: &mut impl RecordSink) {
        let rules = Arc::clone(&self.rules);
        let (Some(multiline), Some(last)) = (&rules.multiline, self.last_bytes_at) else {
            return;
        };
        if self.multi.active && now.saturating_duration_since(last) >= multiline.timeout {
            self.flush_multi(&rules, sink);
        }
    }

    /// The file is finished for good (deleted or rotated away and read to
    /// its end): a pending multi-line record is emitted, and CRI partial
    /// lines whose full line never came; a partial last line is not (it is
    /// counted by the caller from `offset() - safe_offset()`).
    pub fn finish(&mut self, sink: &mut impl RecordSink) {
        let rules = Arc::clone(&self.rules);
        self.flush_cri(&rules, sink);
        self.flush_multi(&rules, sink);
    }

    /// Below this offset every byte is in an emitted record or a filtered
    /// line: the only offset a checkpoint may take, and where a restarted
    /// reader begins.
    pub fn safe_offset(&self) -> u64 {
        if self.multi.active {
            self.multi.start
        } else if self.cri.active {
            self.cri.start
        } else {
            self.line_start
        }
    }

    /// The offset of the next byte expected.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// What was counted so far.
    pub fn counts(&self) -> FramingCounts {
        self.counts
    }

    /// The most bytes of one line kept: `max_line` characters' worth in
    /// the file's encoding, and room for a `\r` before the line end.
    fn raw_cap(&self) -> usize {
        let max = self.rules.max_line.max(1);
        match self.encoding {
            Encoding::Utf8 => max + 1,
            Encoding::Utf16Le | Encoding::Utf16Be => 2 * max + 2,
        }
    }

    /// `data` starts at file offset `at`; for UTF-16, holds back an odd
    /// byte so that lines are searched in whole code units.
    fn feed(&mut self, rules: &FramingRules, data: &[u8], at: u64, sink: &mut impl RecordSink) {
        if self.encoding == Encoding::Utf8 {
            self.split(rules, data, at, sink);
            return;
        }
        let (mut data, mut at) = (data, at);
        if let Some(first) = self.odd.take() {
            let Some((&second, rest)) = data.split_first() else {
                self.odd = Some(first);
                return;
            };
            self.split(rules, &[first, second], at - 1, sink);
            (data, at) = (rest, at + 1);
        }
        if data.len() % 2 == 1 {
            let (&last, whole) = data.split_last().unwrap_or((&0, &[]));
            self.odd = Some(last);
            data = whole;
        }
        self.split(rules, data, at, sink);
    }

    /// Where the next line end in `data` is: (its index, its length).
    fn next_line_end(&self, data: &[u8]) -> Option<(usize, usize)> {
        match self.encoding {
            Encoding::Utf8 => memchr::memchr(b'\n', data).map(|i| (i, 1)),
            // `\n` is 0A 00 at an even index; data holds whole units.
            Encoding::Utf16Le => memchr::memchr_iter(b'\n', data)
                .find(|&i| i % 2 == 0 && data.get(i + 1) == Some(&0))
                .map(|i| (i, 2)),
            // `\n` is 00 0A, the 0A at an odd index.
            Encoding::Utf16Be => memchr::memchr_iter(b'\n', data)
                .find(|&i| i % 2 == 1 && data[i - 1] == 0)
                .map(|i| (i - 1, 2)),
        }
    }

    /// Cuts `data` (starting at file offset `at`, whole code units) into
    /// lines; the last, partial one is kept (up to the cap) for the next
    /// push.
    fn split(&mut self, rules: &FramingRules, data: &[u8], at: u64, sink: &mut impl RecordSink) {
        let cap = self.raw_cap();
        let mut pos = 0;
        while pos < data.len() {
            let Some((len, unit)) = self.next_line_end(&data[pos..]) else {
                self.keep_partial(&data[pos..], cap);
                return;
            };
            let end = at + (pos + len + unit) as u64;
            let start = self.line_start;
            if self.line.is_empty() && !self.line_cut {
                // The whole line is in `data`: framed where it lies.
                let raw = &data[pos..pos + len];
                let cut = raw.len() > cap;
                self.on_line(rules, start, end, &raw[..raw.len().min(cap)], cut, sink);
            } else {
                self.keep_partial(&data[pos..pos + len], cap);
                let line = mem::take(&mut self.line);
                let cut = self.line_cut;
                self.on_line(rules, start, end, &line, cut, sink);
                self.line = line;
                recycle(&mut self.line);
                self.line_cut = false;
            }
            self.line_start = end;
            pos += len + unit;
        }
    }

    /// Keeps the start of a partial line, at most `cap` bytes of it.
    fn keep_partial(&mut self, bytes: &[u8], cap: usize) {
        let room = cap.saturating_sub(self.line.len());
        if bytes.len() > room {
            self.line_cut = true;
        }
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// One complete line, `raw` its kept bytes without the line end.
    fn on_line(
        &mut self,
        rules: &FramingRules,
        start: u64,
        end: u64,
        raw: &[u8],
        raw_cut: bool,
        sink: &mut impl RecordSink,
    ) {
        let mut scratch = mem::take(&mut self.scratch);
        let max = rules.max_line.max(1);
        let (text, cut, invalid) = decode::decode(self.encoding, raw, raw_cut, max, &mut scratch);
        self.counts.invalid += invalid;
        let cut = cut || raw_cut;
        match rules.format {
            Format::Plain => self.logical(rules, start, end, text, cut, None, None, sink),
            Format::Cri => self.cri_line(rules, start, end, text, cut, sink),
        }
        if scratch.capacity() > RETAINED {
            recycle_text(&mut scratch);
        }
        self.scratch = scratch;
    }

    /// A CRI line: a full line with nothing pending is a record as it is;
    /// partial lines are joined (up to `max_line`) until a full one.
    fn cri_line(
        &mut self,
        rules: &FramingRules,
        start: u64,
        end: u64,
        text: &str,
        cut: bool,
        sink: &mut impl RecordSink,
    ) {
        let Some(line) = cri::parse_line(text) else {
            // Never dropped: what came before it is finished, and the line
            // is a plain record of its own.
            self.counts.malformed += 1;
            self.flush_cri(rules, sink);
            self.logical(rules, start, end, text, cut, None, None, sink);
            return;
        };
        // A line of the other stream ends a partial one (the two streams
        // share the file; a record's span is one contiguous range).
        if self.cri.active && self.cri.stream != Some(line.stream) {
            self.flush_cri(rules, sink);
        }
        if !self.cri.active {
            if !line.partial {
                let (time, stream) = (Some(line.time_ms), Some(line.stream));
                self.logical(rules, start, end, line.text, cut, time, stream, sink);
                return;
            }
            self.cri.begin(start, Some(line.time_ms), Some(line.stream));
        }
        let max = rules.max_line.max(1);
        let room = max.saturating_sub(self.cri.text.len());
        let part = floor_char(line.text, room);
        self.cri.text.push_str(part);
        self.cri.cut |= cut || part.len() < line.text.len();
        self.cri.end = end;
        if !line.partial {
            self.flush_cri(rules, sink);
        }
    }

    fn flush_cri(&mut self, rules: &FramingRules, sink: &mut impl RecordSink) {
        if !self.cri.active {
            return;
        }
        self.cri.active = false;
        let text = mem::take(&mut self.cri.text);
        let (start, end, cut) = (self.cri.start, self.cri.end, self.cri.cut);
        let (time, stream) = (self.cri.time_ms, self.cri.stream);
        self.logical(rules, start, end, &text, cut, time, stream, sink);
        self.cri.text = text;
        recycle_text(&mut self.cri.text);
    }

    /// A logical line (a physical one, or joined CRI parts): the
    /// multi-line rule, when there is one, else a record.
    #[allow(clippy::too_many_arguments)]
    fn logical(
        &mut self,
        rules: &FramingRules,
        start: u64,
        end: u64,
        text: &str,
        cut: bool,
        time_ms: Option<i64>,
        stream: Option<Stream>,
        sink: &mut impl RecordSink,
    ) {
        let Some(multiline) = &rules.multiline else {
            self.emit(rules, start, end, text, cut, time_ms, stream, sink);
            return;
        };
        let max_bytes = multiline.max_bytes.max(1);
        if self.multi.active {
            if multiline.start.is_match(text) {
                self.flush_multi(rules, sink);
            } else if self.multi.lines >= multiline.max_lines.max(1) {
                // The record is full: it is cut here, and this line begins
                // the next one.
                self.multi.cut = true;
                self.flush_multi(rules, sink);
            } else {
                self.multi.end = end;
                self.multi.lines += 1;
                self.multi.cut |= cut;
                // At `max_bytes` the record is cut and emitted; the rest of
                // this line is covered by its span.
                let room = max_bytes.saturating_sub(self.multi.text.len());
                let full = if room == 0 {
                    true
                } else {
                    self.multi.text.push('\n');
                    let part = floor_char(text, room - 1);
                    self.multi.text.push_str(part);
                    part.len() < text.len()
                };
                if full {
                    self.multi.cut = true;
                    self.flush_multi(rules, sink);
                }
                return;
            }
        }
        // A start line, or lines before any start line: a new record.
        self.multi.begin(start, time_ms, stream);
        self.multi.end = end;
        self.multi.lines = 1;
        let part = floor_char(text, max_bytes);
        self.multi.text.push_str(part);
        self.multi.cut = cut || part.len() < text.len();
        if part.len() < text.len() {
            self.flush_multi(rules, sink);
        }
    }

    fn flush_multi(&mut self, rules: &FramingRules, sink: &mut impl RecordSink) {
        if !self.multi.active {
            return;
        }
        self.multi.active = false;
        let text = mem::take(&mut self.multi.text);
        let (start, end, cut) = (self.multi.start, self.multi.end, self.multi.cut);
        let (time, stream) = (self.multi.time_ms, self.multi.stream);
        self.emit(rules, start, end, &text, cut, time, stream, sink);
        self.multi.text = text;
        recycle_text(&mut self.multi.text);
    }

    /// The filters, then the parse rule, then the sink.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        rules: &FramingRules,
        start: u64,
        end: u64,
        text: &str,
        cut: bool,
        time_ms: Option<i64>,
        stream: Option<Stream>,
        sink: &mut impl RecordSink,
    ) {
        let excluded = rules.exclude_lines.iter().any(|re| re.is_match(text));
        let included = rules.include_lines.is_empty()
            || rules.include_lines.iter().any(|re| re.is_match(text));
        if excluded || !included {
            self.counts.filtered += 1;
            return;
        }
        self.fields.clear();
        if let (Some(parse), Some(locations)) = (&rules.parse, &mut self.locations) {
            if parse.captures_read(locations, text).is_some() {
                for (group, field) in self.group_fields.iter().enumerate() {
                    if let (Some(field), Some((from, to))) = (field, locations.get(group)) {
                        self.fields.push((*field, from as u32..to as u32));
                    }
                }
            } else {
                self.counts.unparsed += 1;
            }
        }
        self.counts.records += 1;
        if cut {
            self.counts.cut += 1;
        }
        sink.record(&RecordRef {
            start,
            end,
            text,
            cut,
            fields: &self.fields,
            time_ms,
            stream: stream.map(Stream::as_str),
        });
    }
}
