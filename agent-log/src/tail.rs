//! The tailer: every file the globs match, from discovery to its last
//! acknowledged byte. A synchronous state machine (no clock of its own,
//! no thread, no channel) driven by [`crate::run`]'s reader thread, and
//! in tests directly: [`Tailer::rescan`] lists the globs and notices new,
//! renamed, truncated and deleted files; [`Tailer::poll`] reads the files
//! that changed into their [`Frames`] and hands full (or lingering)
//! chunks to a [`Delivery`]; [`Tailer::settled`] moves checkpoints as
//! sends are acknowledged; [`Tailer::checkpoint`] is what to save.
//!
//! Invariants:
//! - One read buffer for all files ([`READ_BUFFER`]); a chunk in the
//!   making per file, all of them together flushed when they pass
//!   [`PENDING_LIMIT`]: memory is bounded in bytes, not by file count.
//! - A file is read by `pread` at the framer's offset: no seek state, and a
//!   rotated or deleted file is read through the descriptor held open.
//! - A checkpoint offset is a framer's safe offset: never inside a line.
//! - A file truncated under the reader starts a new generation (a new
//!   `file_id`); leading NUL padding (a writer without `O_APPEND`) is
//!   skipped, never shipped.
//! - Never blocks on anything but [`Delivery::send`] (the backpressure) and
//!   file IO.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use agent_core::{Fate, OutBatch};

use crate::checkpoint::{Acks, Entry};
use crate::framing::{Framer, FramingCounts, FramingRules, RecordRef, RecordSink};
use crate::glob::Glob;
use crate::identity::{self, Cursor, FINGERPRINT_MAX, FileKey, Fingerprint};
use crate::settings::{GroupSettings, LogSettings, Start};
use crate::wire::{ChunkBuilder, FileLabels};

/// Bytes read from a file at a time (one buffer for every file).
pub const READ_BUFFER: usize = 256 << 10;
/// Bytes pushed into a framer at a time, so a chunk is checked often.
const PUSH_SLICE: usize = 64 << 10;
/// A chunk is sent once it holds about this many bytes (cut below it,
/// unless one record is larger).
pub const CHUNK_TARGET: usize = 504 << 10;
/// A group's chunks are gathered into one batch up to this many bytes: two
/// full chunks. Every batch costs the spool a file created, renamed and
/// removed and a cursor file rewritten: a fifth of the agent's CPU reading
/// a file in bulk at one chunk a batch (`cargo xtask bench log`, where
/// zstd takes half); two chunks a batch halve that count.
pub const BATCH_TARGET: usize = 2 * CHUNK_TARGET;
// Two full chunks and their framing fit in a batch with the pipeline's
// head room (8 KiB) to spare, so a batch is never split.
const _: () = assert!(BATCH_TARGET + 64 <= agent_core::pipeline::BATCH_LIMIT - (8 << 10));
/// Chunks in the making, all files together, are flushed above this.
pub const PENDING_LIMIT: usize = 4 << 20;
/// Most bytes read from one file before others get a turn.
const TURN_BYTES: u64 = 4 << 20;
/// A file gone from every matched path (renamed away, deleted) is closed
/// once read to its end and unchanged this long.
pub const GONE_IDLE: Duration = Duration::from_secs(5);
/// A truncated file's old generation waits this long for its copy
/// (copytruncate) to be found.
pub const ORPHAN_WAIT: Duration = Duration::from_secs(30);
/// A new file whose first bytes repeat a live file's waits this long for
/// that file to be truncated (then it is its copy) before it is read as a
/// file of its own.
pub const COPY_WAIT: Duration = Duration::from_secs(5);
/// Bytes before the read offset compared at each read (see `mark`).
const MARK_BYTES: u64 = 32;

/// The agent's counters for the log files (reported each interval).
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Files open now.
    pub files_open: AtomicU64,
    /// Files known now (open or not).
    pub files_tracked: AtomicU64,
    /// Folders watched now.
    pub dirs_watched: AtomicU64,
    /// Bytes read from files.
    pub bytes_read: AtomicU64,
    /// Records shipped.
    pub records: AtomicU64,
    /// Records cut at `max_line` or a multi-line limit.
    pub records_cut: AtomicU64,
    /// Invalid byte sequences replaced.
    pub invalid_bytes: AtomicU64,
    /// Lines dropped by include/exclude rules.
    pub lines_filtered: AtomicU64,
    /// NUL bytes skipped (padding after a truncation).
    pub nul_skipped: AtomicU64,
    /// Truncations seen (a new generation each).
    pub truncations: AtomicU64,
    /// Copies found for a truncated file (copytruncate).
    pub copytruncate_copies: AtomicU64,
    /// Bytes known lost in a copytruncate window (a lower bound).
    pub copytruncate_lost_bytes: AtomicU64,
    /// Bytes of a partial last line never completed (file finished).
    pub partial_bytes_lost: AtomicU64,
    /// Bytes of deleted files closed unread after `log.deleted_hold`.
    pub deleted_unread_bytes: AtomicU64,
    /// Times `log.max_open` kept a file from being opened.
    pub open_limit_hits: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

impl LogCounters {
    /// (metric name, value) of every counter.
    pub fn readings(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("log.files.open", g(&self.files_open)),
            ("log.files.tracked", g(&self.files_tracked)),
            ("log.dirs.watched", g(&self.dirs_watched)),
            ("log.bytes.read", g(&self.bytes_read)),
            ("log.records", g(&self.records)),
            ("log.records.cut", g(&self.records_cut)),
            ("log.invalid_bytes", g(&self.invalid_bytes)),
            ("log.lines.filtered", g(&self.lines_filtered)),
            ("log.nul_skipped", g(&self.nul_skipped)),
            ("log.truncations", g(&self.truncations)),
            ("log.copytruncate.copies", g(&self.copytruncate_copies)),
            (
                "log.copytruncate.lost_bytes",
                g(&self.copytruncate_lost_bytes),
            ),
            ("log.partial_bytes_lost", g(&self.partial_bytes_lost)),
            ("log.deleted_unread_bytes", g(&self.deleted_unread_bytes)),
            ("log.open_limit_hits", g(&self.open_limit_hits)),
        ]
    }
}

/// What cuts a file's bytes into records: the real [`Framer`], or a
/// stand-in in tests.
pub trait Frames: Sized {
    /// A framer for a file read from `offset` on.
    fn create(rules: Arc<FramingRules>, offset: u64) -> Self;
    /// See [`Framer::push`].
    fn push(&mut self, bytes: &[u8], now: Instant, sink: &mut impl RecordSink);
    /// See [`Framer::tick`].
    fn tick(&mut self, now: Instant, sink: &mut impl RecordSink);
    /// See [`Framer::finish`].
    fn finish(&mut self, sink: &mut impl RecordSink);
    /// See [`Framer::safe_offset`].
    fn safe_offset(&self) -> u64;
    /// See [`Framer::offset`].
    fn offset(&self) -> u64;
    /// See [`Framer::counts`].
    fn counts(&self) -> FramingCounts;
    /// See [`Framer::field_names`].
    fn field_names(&self) -> Vec<String>;
}

impl Frames for Framer {
    fn create(rules: Arc<FramingRules>, offset: u64) -> Self {
        Framer::new(rules, offset)
    }
    fn push(&mut self, bytes: &[u8], now: Instant, sink: &mut impl RecordSink) {
        Framer::push(self, bytes, now, sink);
    }
    fn tick(&mut self, now: Instant, sink: &mut impl RecordSink) {
        Framer::tick(self, now, sink);
    }
    fn finish(&mut self, sink: &mut impl RecordSink) {
        Framer::finish(self, sink);
    }
    fn safe_offset(&self) -> u64 {
        Framer::safe_offset(self)
    }
    fn offset(&self) -> u64 {
        Framer::offset(self)
    }
    fn counts(&self) -> FramingCounts {
        Framer::counts(self)
    }
    fn field_names(&self) -> Vec<String> {
        Framer::field_names(self)
    }
}

/// Names the send an ack is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// The file generation (internal number).
    pub ident: u64,
    /// The send's number within it.
    pub seq: u64,
}

/// A record as shipped, kept for tests when [`Tailer::keep_records`] is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptRecord {
    /// The wire's file id.
    pub file_id: String,
    /// Its first byte in the file.
    pub start: u64,
    /// One past its last.
    pub end: u64,
    /// Its text.
    pub text: String,
}

/// One send: a chunk of one file, for the source named after the file.
#[derive(Debug)]
pub struct Outgoing {
    /// The output's name: the group's.
    pub source: String,
    /// The chunks (one per file), the cursor and the record count.
    pub batch: OutBatch,
    /// One per chunk, to be handed back to [`Tailer::settled`].
    pub tickets: Vec<Ticket>,
    /// The records, when kept (tests).
    pub records: Vec<KeptRecord>,
}

/// The agent is stopping: nothing more can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the output is closed")]
pub struct Stopped;

/// What the spool holds for a source (see `agent_core::Resume`).
#[derive(Debug, Clone, Default)]
pub struct Resumed {
    /// The cursor of its newest batch still spooled.
    pub spooled: Option<Vec<u8>>,
    /// The cursor of its newest batch settled with every older one.
    pub acked: Option<Vec<u8>>,
}

/// Where the tailer's chunks go, and where it learns what is spooled.
pub trait Delivery {
    /// What the spool holds for `source`.
    fn resume(&mut self, source: &str) -> Resumed;
    /// Sends one batch; blocks while the spool is full.
    fn send(&mut self, out: Outgoing) -> Result<(), Stopped>;

    /// Sends one batch, waiting at most `limit` for room: the batch comes
    /// back when there was none (the caller then has other work).
    fn send_within(&mut self, out: Outgoing, limit: Duration) -> Result<Option<Outgoing>, Stopped> {
        let _ = limit;
        self.send(out).map(|()| None)
    }
}

/// A file's state besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// At a path a glob matches.
    Live,
    /// At no matched path (renamed away or deleted) since then.
    Gone(Instant),
}

/// The sink a framer pushes into: the file's chunk in the making, cut at
/// [`CHUNK_TARGET`] (the cut chunks wait in `done` to be sent).
struct Cutter<'a> {
    labels: &'a FileLabels,
    fields: &'a [String],
    current: &'a mut Option<ChunkBuilder>,
    since: &'a mut Option<Instant>,
    now: Instant,
    done: &'a mut Vec<(ChunkBuilder, u64, Vec<KeptRecord>)>,
    kept: &'a mut Vec<KeptRecord>,
    keep: bool,
    records: u64,
}

impl RecordSink for Cutter<'_> {
    fn record(&mut self, record: &RecordRef<'_>) {
        if let Some(chunk) = self.current.as_ref()
            && !chunk.is_empty()
            && chunk.wire_bytes() + record.text.len() + 64 > CHUNK_TARGET
        {
            // Everything below this record's start is in the chunk (or
            // was filtered): the chunk's cursor.
            if let Some(full) = self.current.take() {
                self.done
                    .push((full, record.start, std::mem::take(self.kept)));
            }
        }
        let chunk = self
            .current
            .get_or_insert_with(|| ChunkBuilder::new(self.labels, self.fields));
        if chunk.is_empty() {
            *self.since = Some(self.now);
        }
        chunk.record(record);
        self.records += 1;
        if self.keep {
            self.kept.push(KeptRecord {
                file_id: self.labels.file_id.clone(),
                start: record.start,
                end: record.end,
                text: record.text.to_string(),
            });
        }
    }
}

/// One generation of one file.
struct Tracked<F> {
    ident: u64,
    group: usize,
    key: FileKey,
    source: String,
    path: PathBuf,
    labels: FileLabels,
    fields: Vec<String>,
    generation: u32,
    fingerprint: Fingerprint,
    /// The first bytes (up to 1 KiB), for copy detection after a truncation.
    head: Vec<u8>,
    file: Option<File>,
    framer: F,
    counted: FramingCounts,
    acks: Acks,
    chunk: Option<ChunkBuilder>,
    chunk_since: Option<Instant>,
    kept: Vec<KeptRecord>,
    /// The offset the last send (or skip) covered.
    shipped: u64,
    place: Place,
    /// When its size last changed (or it was last read).
    last_growth: Instant,
    /// The largest size seen (for the copytruncate loss estimate).
    max_size: u64,
    /// Size at the last stat.
    size: u64,
    /// The offset after the last read and the bytes just before it: a file
    /// truncated and written past it again is caught by their change.
    mark: (u64, Vec<u8>),
    /// Modification time at the last rescan.
    mtime: Option<SystemTime>,
    /// The tail hash at the safe offset after the last read.
    safe_tail: (u64, u64),
    /// Found empty during a run: its first bytes decide whether it is a
    /// copy of another file (then it is discovered again).
    fresh: bool,
    /// Missed by the last rescan's listing while still linked: gone only
    /// if the next listing misses it too (see [`Tailer::rescan`]).
    missed: bool,
}

/// A truncated generation waiting for its copy.
struct Orphan {
    group: usize,
    ident: u64,
    since: Instant,
}

/// A new file whose first bytes repeat a live one's.
struct Deferred {
    copy_of: u64,
    since: Instant,
}

/// Every file of every group, from discovery to the last ack.
pub struct Tailer<F: Frames = Framer> {
    settings: Arc<LogSettings>,
    globs: Vec<(Vec<Glob>, Vec<Glob>)>,
    files: BTreeMap<u64, Tracked<F>>,
    by_key: HashMap<(usize, FileKey), u64>,
    by_path: HashMap<PathBuf, u64>,
    orphans: Vec<Orphan>,
    deferred: HashMap<(usize, FileKey), Deferred>,
    /// Entries of the last run not yet matched to a file.
    saved: Vec<Entry>,
    /// Whether this is the very first start (no checkpoint file).
    first_start: bool,
    /// Whether the first rescan of this run is done.
    scanned: bool,
    next_ident: u64,
    buf: Vec<u8>,
    dirty: Vec<u64>,
    /// Files that may need a look at each poll (a chunk lingering, a
    /// record pending, gone from their path): idle files cost nothing.
    active: std::collections::BTreeSet<u64>,
    counters: Arc<LogCounters>,
    open: usize,
    dirs: Vec<PathBuf>,
    keep_records: bool,
    last_limit_log: Option<Instant>,
    changed: bool,
    rescan_soon: bool,
    urgent: bool,
    /// Positions sent since the checkpoint was last taken, by file id:
    /// every batch's cursor carries its group's, so the spool's newest
    /// cursor and the checkpoint file together say where every file is.
    since_save: BTreeMap<String, Entry>,
    /// Chunks gathered per group, sent together as one batch.
    outbox: BTreeMap<usize, Outbox>,
    /// Files a rescan found, taken in by the next poll.
    pending_new: Vec<(usize, PathBuf, FileKey)>,
}

/// Chunks of one group waiting to go as one batch.
#[derive(Default)]
struct Outbox {
    payloads: Vec<agent_core::Payload>,
    tickets: Vec<Ticket>,
    records: u64,
    bytes: usize,
    kept: Vec<KeptRecord>,
}

fn payload_len(p: &agent_core::Payload) -> usize {
    match p {
        agent_core::Payload::Encoded(w) => w.len(),
        _ => 0,
    }
}

impl<F: Frames> Tailer<F> {
    /// A tailer for `settings`, resuming from `saved` (the checkpoint
    /// file's entries; `None` on the very first start).
    pub fn new(
        settings: Arc<LogSettings>,
        saved: Option<Vec<Entry>>,
        counters: Arc<LogCounters>,
    ) -> Tailer<F> {
        let globs = settings
            .groups
            .iter()
            .map(|g| {
                let parse = |list: &[String]| -> Vec<Glob> {
                    list.iter().filter_map(|p| Glob::new(p).ok()).collect()
                };
                (parse(&g.paths), parse(&g.exclude))
            })
            .collect();
        Tailer {
            settings,
            globs,
            files: BTreeMap::new(),
            by_key: HashMap::new(),
            by_path: HashMap::new(),
            orphans: Vec::new(),
            deferred: HashMap::new(),
            first_start: saved.is_none(),
            saved: saved.unwrap_or_default(),
            scanned: false,
            next_ident: 1,
            buf: vec![0u8; READ_BUFFER],
            dirty: Vec::new(),
            active: std::collections::BTreeSet::new(),
            counters,
            open: 0,
            dirs: Vec::new(),
            keep_records: false,
            last_limit_log: None,
            changed: true,
            rescan_soon: false,
            urgent: false,
            since_save: BTreeMap::new(),
            outbox: BTreeMap::new(),
            pending_new: Vec::new(),
        }
    }

    /// Keeps every shipped record's text in [`Outgoing::records`] (tests).
    pub fn keep_records(&mut self, keep: bool) {
        self.keep_records = keep;
    }

    /// The folders the last rescan listed: the ones to watch.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// How many files are held open.
    pub fn open_files(&self) -> usize {
        self.open
    }

    fn group(&self, g: usize) -> &GroupSettings {
        &self.settings.groups[g]
    }

    /// A path changed (a file-system event): read it soon. Returns false
    /// when the path is not a known file (a rescan may find it).
    pub fn touched(&mut self, path: &Path) -> bool {
        match self.by_path.get(path) {
            Some(&ident) => {
                self.dirty.push(ident);
                true
            }
            None => false,
        }
    }

    /// Lists every glob, picks up new files, notices renamed, deleted and
    /// truncated ones, and marks files that changed to be read.
    pub fn rescan(&mut self, now: Instant, out: &mut impl Delivery) {
        if !self.scanned {
            self.absorb_spool(out);
        }
        let mut seen: HashSet<(usize, FileKey)> = HashSet::new();
        let mut later: Vec<(usize, PathBuf, FileKey)> = Vec::new();
        let mut dirs = Vec::new();
        let mut by_path = HashMap::new();
        for g in 0..self.settings.groups.len() {
            let mut found: Vec<PathBuf> = Vec::new();
            for glob in &self.globs[g].0 {
                let expansion = glob.expand();
                dirs.extend(expansion.dirs);
                found.extend(expansion.files);
            }
            found.sort();
            found.dedup();
            found.retain(|p| !self.globs[g].1.iter().any(|x| x.matches(p)));
            let mut found: Vec<(PathBuf, std::fs::Metadata, FileKey)> = found
                .into_iter()
                .filter_map(|p| {
                    let meta = std::fs::metadata(&p).ok()?;
                    let key = FileKey::of(&meta);
                    Some((p, meta, key))
                })
                .collect();
            if !self.saved.is_empty() {
                // Files the last run knew first, so a copy is told from
                // its original whatever their names.
                let name = &self.settings.groups[g].name;
                found.sort_by_key(|(_, _, k)| {
                    !self.saved.iter().any(|e| e.key == *k && e.group == *name)
                });
            }
            for (path, meta, key) in found {
                if !seen.insert((g, key)) {
                    continue; // two paths, one file (hard links).
                }
                if let Some(&ident) = self.by_key.get(&(g, key)) {
                    by_path.insert(path.clone(), ident);
                    self.seen_live(ident, path, &meta, now);
                } else if self.scanned {
                    // Taken in by the next poll, after the known files are
                    // read: a file truncated meanwhile is then known to be,
                    // and this one may be its copy.
                    self.pending_new.push((g, path, key));
                } else if self.discover(g, &path, key, now, true) {
                    if let Some(&ident) = self.by_key.get(&(g, key)) {
                        by_path.insert(path, ident);
                    }
                } else {
                    later.push((g, path, key));
                }
            }
        }
        for (g, path, key) in later {
            self.discover(g, &path, key, now, false);
            if let Some(&ident) = self.by_key.get(&(g, key)) {
                by_path.insert(path, ident);
            }
        }
        self.by_path = by_path;
        dirs.sort();
        dirs.dedup();
        self.dirs = dirs;
        // Known files at no matched path now: renamed away or deleted.
        let gone: Vec<u64> = self
            .files
            .values()
            .filter(|t| t.place == Place::Live && !seen.contains(&(t.group, t.key)))
            .map(|t| t.ident)
            .collect();
        for ident in gone {
            if let Some(t) = self.files.get_mut(&ident) {
                // A listing made while a rotation renames files may miss
                // one (readdir over a changing folder); finished on that
                // alone, an idle file would be forgotten and found again
                // as new, its lines shipped twice. A file still linked is
                // gone when a second listing, soon after, misses it too;
                // a deleted one (no link left) at once.
                let unlinked = t.file.as_ref().is_some_and(|f| {
                    use std::os::unix::fs::MetadataExt;
                    f.metadata().is_ok_and(|m| m.nlink() == 0)
                });
                if !unlinked && !t.missed {
                    t.missed = true;
                    self.rescan_soon = true;
                    continue;
                }
                t.missed = false;
                t.place = Place::Gone(now);
                if t.file.is_none() {
                    // Closed while idle (max_open) and gone since: nothing
                    // more can be read.
                    self.forget(ident);
                } else {
                    self.dirty.push(ident);
                }
            }
        }
        self.deferred.retain(|k, _| seen.contains(k));
        // Entries of files that are no more (or held by no file found):
        // needed only while this scan matched copies.
        if !self.saved.is_empty() {
            self.saved.clear();
            self.changed = true;
        }
        self.scanned = true;
        self.counters
            .files_tracked
            .store(self.files.len() as u64, Ordering::Relaxed);
        self.counters
            .dirs_watched
            .store(self.dirs.len() as u64, Ordering::Relaxed);
    }

    /// The spool may know more about the last run's files than the
    /// checkpoint file: each group's newest spooled (and acknowledged)
    /// batch carries every file position that changed since the
    /// checkpoint was last saved ([`Tailer::checkpoint`]).
    fn absorb_spool(&mut self, out: &mut impl Delivery) {
        let groups: Vec<String> = self
            .settings
            .groups
            .iter()
            .map(|g| g.name.clone())
            .collect();
        for group in groups {
            let resumed = out.resume(&group);
            for bytes in [resumed.spooled, resumed.acked].iter().flatten() {
                for e in decode_delta(&group, bytes) {
                    self.merge_saved(e);
                }
            }
        }
    }

    /// Adds a position of a file generation, keeping the furthest one.
    fn merge_saved(&mut self, entry: Entry) {
        match self
            .saved
            .iter_mut()
            .find(|e| e.cursor.file_id == entry.cursor.file_id)
        {
            // A file id moves to another inode only when a copy takes it
            // over, and the checkpoint is written at once then: the
            // checkpoint's inode is the newer one.
            Some(e) if e.key != entry.key => {}
            Some(e) if e.resume_cursor().offset >= entry.resume_cursor().offset => {}
            Some(e) => *e = entry,
            None => self.saved.push(entry),
        }
    }

    fn seen_live(&mut self, ident: u64, path: PathBuf, meta: &std::fs::Metadata, now: Instant) {
        let Some(t) = self.files.get_mut(&ident) else {
            return;
        };
        t.path = path;
        t.missed = false;
        if let Place::Gone(_) = t.place {
            t.place = Place::Live;
        }
        let size = meta.len();
        let mtime = meta.modified().ok();
        if size != t.size || size != t.framer.offset() || mtime != t.mtime {
            t.size = size;
            t.mtime = mtime;
            t.last_growth = now;
            self.dirty.push(ident);
        }
    }

    fn source_name(&self, g: usize) -> String {
        self.group(g).name.clone()
    }

    /// Makes room for one more open file: closes the idle live file read
    /// longest ago. False when every open file is busy.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.open < self.settings.max_open {
            return true;
        }
        let victim = self
            .files
            .values()
            .filter(|t| {
                t.file.is_some()
                    && t.place == Place::Live
                    && t.chunk.is_none()
                    && t.framer.offset() >= t.size
                    && t.framer.safe_offset() == t.framer.offset()
            })
            .min_by_key(|t| t.last_growth)
            .map(|t| t.ident);
        match victim {
            Some(ident) => {
                if let Some(t) = self.files.get_mut(&ident) {
                    t.file = None;
                    self.open -= 1;
                }
                true
            }
            None => {
                add(&self.counters.open_limit_hits, 1);
                // Tried again soon, not only at the next periodic rescan.
                self.rescan_soon = true;
                if self
                    .last_limit_log
                    .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
                {
                    self.last_limit_log = Some(now);
                    tracing::warn!(
                        max_open = self.settings.max_open,
                        "Every open file is busy; new files wait for log.max_open to allow them."
                    );
                }
                false
            }
        }
    }

    fn open_file(&mut self, path: &Path, key: FileKey, now: Instant) -> Option<File> {
        if !self.make_room(now) {
            return None;
        }
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        if FileKey::of(&meta) != key {
            return None; // replaced between the listing and the open.
        }
        self.open += 1;
        self.counters
            .files_open
            .store(self.open as u64, Ordering::Relaxed);
        Some(file)
    }

    /// A file at a matched path that is not known by its key.
    fn discover(
        &mut self,
        g: usize,
        path: &Path,
        key: FileKey,
        now: Instant,
        first_pass: bool,
    ) -> bool {
        let Some(file) = self.open_file(path, key, now) else {
            return true;
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let Ok(head) = identity::read_head(&file) else {
            self.close(file);
            return true;
        };
        // 1. Where the last run (or this one, before a restart) stood:
        // entries of this inode (an older generation may be among them,
        // waiting for its copy: its fingerprint will not match).
        let group_name = self.group(g).name.clone();
        let saved: Vec<Cursor> = self
            .saved
            .iter()
            .filter(|e| e.group == group_name && e.key == key)
            .map(Entry::resume_cursor)
            .collect();
        let best = saved
            .into_iter()
            // A cursor taken of an empty file says nothing of which file
            // this is (and reusing its id could clash with what it later
            // shipped): such a file is read as new, from 0, as it would be.
            .filter(|c| c.fingerprint.len > 0 && identity::head_matches(&head, &c.fingerprint))
            // The most specific fingerprint first (an empty file's matches
            // anything), then the newest generation, then the furthest.
            .max_by_key(|c| (c.fingerprint.len, c.generation, c.offset));
        if let Some(c) = best {
            let file_id = c.file_id.clone();
            self.saved.retain(|e| e.cursor.file_id != file_id);
            let intact = c.offset <= size
                && identity::tail_hash(&file, c.offset).ok().flatten() == Some(c.tail);
            if intact {
                self.track(g, path, key, file, head, size, now, StartAt::Resume(c));
            } else {
                tracing::info!(file = %path.display(), offset = c.offset, "File rewritten while the agent was stopped; reading it from its start.");
                self.track(
                    g,
                    path,
                    key,
                    file,
                    head,
                    size,
                    now,
                    StartAt::New(c.generation + 1, 0),
                );
            }
            return true;
        }
        if first_pass {
            // Copies are matched once every file has been looked up by
            // its own key (and the spool's cursors for it gathered).
            self.close(file);
            return false;
        }
        // 2. The copy of a file truncated while the agent was stopped: a
        // saved entry of another inode whose bytes it holds.
        let copied = self.saved.iter().position(|e| {
            e.group == group_name
                    && e.key != key
                    && e.resume_cursor().offset > 0
                    && e.cursor.fingerprint.len > 0
                    && identity::head_matches(&head, &e.cursor.fingerprint)
                    // Its own file still holds those bytes: it is no copy's.
                    && !still_holds(&e.path, e.key, &e.cursor.fingerprint)
                    && {
                        // A copy shorter than the offset holds only bytes
                        // already shipped (its first bytes say whose copy
                        // it is); a longer one must hold the same bytes
                        // before the offset.
                        let c = e.resume_cursor();
                        c.offset > size
                            || identity::tail_hash(&file, c.offset).ok().flatten() == Some(c.tail)
                    }
        });
        if let Some(i) = copied {
            let e = self.saved.remove(i);
            add(&self.counters.copytruncate_copies, 1);
            let mut cursor = e.resume_cursor();
            if cursor.offset > size {
                // A shorter copy (see `adopt`): followed from its last
                // line end.
                cursor.offset = line_start_before(&file, size);
                cursor.tail = identity::tail_hash(&file, cursor.offset)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                cursor.fingerprint = Fingerprint::of(&head);
            }
            self.track(g, path, key, file, head, size, now, StartAt::Resume(cursor));
            // Only the checkpoint knows the copy continues the old file.
            self.urgent = true;
            return true;
        }
        // 3. The copy of a file truncated in this run (copytruncate).
        if let Some(pos) = self.orphans.iter().position(|o| {
            o.group == g
                && self
                    .files
                    .get(&o.ident)
                    .is_some_and(|t| is_copy_of(&head, t))
        }) {
            let orphan = self.orphans.remove(pos);
            self.adopt(orphan.ident, path, key, file, size, now);
            return true;
        }
        // 4. Perhaps the copy of a live file about to be truncated.
        if self.scanned
            && !head.is_empty()
            && let Some(copy_of) = self.live_with_head(g, key, &head)
        {
            let d = self.deferred.entry((g, key)).or_insert(Deferred {
                copy_of,
                since: now,
            });
            if now.duration_since(d.since) < COPY_WAIT {
                // Its original may have been truncated: look now.
                self.dirty.push(copy_of);
                self.close(file);
                return true;
            }
            self.deferred.remove(&(g, key));
        }
        // 5. A new file.
        let offset = if self.first_start && !self.scanned && self.group(g).start == Start::End {
            line_start_before(&file, size)
        } else {
            0
        };
        let fresh = self.scanned && head.is_empty();
        self.track(g, path, key, file, head, size, now, StartAt::New(0, offset));
        if fresh
            && let Some(&ident) = self.by_key.get(&(g, key))
            && let Some(t) = self.files.get_mut(&ident)
        {
            t.fresh = true;
        }
        true
    }

    fn close(&mut self, file: File) {
        drop(file);
        self.open = self.open.saturating_sub(1);
        self.counters
            .files_open
            .store(self.open as u64, Ordering::Relaxed);
    }

    /// A live file of group `g` whose first bytes `head` repeats.
    fn live_with_head(&mut self, g: usize, key: FileKey, head: &[u8]) -> Option<u64> {
        // A scan of every file: new files are rare next to reads, and the
        // comparison stops at the first differing byte. A file whose known
        // first bytes are fewer than the new one's (not read since it grew)
        // has them read again first.
        for t in self.files.values_mut() {
            if t.group != g || t.key == key || t.place != Place::Live {
                continue;
            }
            if t.head.len() < head.len()
                && t.head.len() < FINGERPRINT_MAX
                && head.starts_with(&t.head)
                && let Some(file) = &t.file
                && let Ok(fresh) = identity::read_head(file)
                && fresh.len() > t.head.len()
                && fresh.starts_with(&t.head)
            {
                t.head = fresh;
                t.fingerprint = Fingerprint::of(&t.head);
            }
            let n = t.head.len().min(head.len());
            if n > 0 && t.head[..n] == head[..n] {
                return Some(t.ident);
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn track(
        &mut self,
        g: usize,
        path: &Path,
        key: FileKey,
        file: File,
        head: Vec<u8>,
        size: u64,
        now: Instant,
        start: StartAt,
    ) {
        let (file_id, generation, offset, tail) = match start {
            StartAt::Resume(c) => (c.file_id, c.generation, c.offset, c.tail),
            StartAt::New(generation, offset) => {
                let tail = identity::tail_hash(&file, offset)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                (identity::new_file_id(key, &head), generation, offset, tail)
            }
        };
        let ident = self.next_ident;
        self.next_ident += 1;
        let group = self.group(g);
        let labels = FileLabels {
            file_id,
            path: path.display().to_string(),
            category: group.category.clone(),
            attrs: if group.pod_attrs {
                crate::settings::pod_attrs(path)
            } else {
                BTreeMap::new()
            },
        };
        let mark_from = offset.saturating_sub(MARK_BYTES);
        let mark = (
            offset,
            identity::read_at(&file, mark_from, (offset - mark_from) as usize).unwrap_or_default(),
        );
        let framer = F::create(group.rules.clone(), offset);
        let fields = framer.field_names();
        let tracked = Tracked {
            ident,
            group: g,
            key,
            source: self.source_name(g),
            path: path.to_path_buf(),
            labels,
            fields,
            generation,
            fingerprint: Fingerprint::of(&head),
            head,
            file: Some(file),
            framer,
            counted: FramingCounts::default(),
            acks: Acks::at(offset, tail),
            chunk: None,
            chunk_since: None,
            kept: Vec::new(),
            shipped: offset,
            place: Place::Live,
            last_growth: now,
            max_size: size,
            size,
            mark,
            mtime: None,
            safe_tail: (offset, tail),
            fresh: false,
            missed: false,
        };
        self.by_key.insert((g, key), ident);
        self.by_path.insert(path.to_path_buf(), ident);
        self.files.insert(ident, tracked);
        self.dirty.push(ident);
        self.changed = true;
    }

    /// A truncated generation continues in its copy, from where it stood.
    fn adopt(
        &mut self,
        ident: u64,
        path: &Path,
        key: FileKey,
        file: File,
        size: u64,
        now: Instant,
    ) {
        let Some(g) = self.files.get(&ident).map(|t| t.group) else {
            self.close(file);
            return;
        };
        let source = self.source_name(g);
        let Some(t) = self.files.get_mut(&ident) else {
            return;
        };
        let lost = t.max_size.saturating_sub(size.max(t.framer.offset()));
        add(&self.counters.copytruncate_copies, 1);
        add(&self.counters.copytruncate_lost_bytes, lost);
        if lost > 0 {
            tracing::warn!(file = %t.path.display(), copy = %path.display(), lost_bytes = lost, "Copytruncate: lines written between the copy and the truncation are lost.");
        }
        // The copy holds the bytes of the old generation: read on from
        // the last safe offset (a partial line is read again from it).
        let mut offset = t.framer.safe_offset();
        if size < offset {
            // A copy shorter than what was read of its original (the lines
            // written between the copy and the truncation were read from
            // the original): it holds only shipped bytes. It is followed
            // from its last line end, so a restart finds it whole; what it
            // sends again (a copy still being written) is stored once.
            offset = line_start_before(&file, size);
            let tail = identity::tail_hash(&file, offset)
                .ok()
                .flatten()
                .unwrap_or(0);
            t.acks = Acks::at(offset, tail);
            t.shipped = offset;
            t.safe_tail = (offset, tail);
            t.head = identity::read_head(&file).unwrap_or_default();
            t.fingerprint = Fingerprint::of(&t.head);
            let from = offset.saturating_sub(MARK_BYTES);
            t.mark = (
                offset,
                identity::read_at(&file, from, (offset - from) as usize).unwrap_or_default(),
            );
        }
        t.framer = F::create(self.settings.groups[g].rules.clone(), offset);
        t.counted = FramingCounts::default();
        t.key = key;
        t.source = source;
        t.path = path.to_path_buf();
        t.file = Some(file);
        t.place = Place::Live;
        t.last_growth = now;
        t.size = size;
        self.by_key.insert((g, key), ident);
        self.by_path.insert(path.to_path_buf(), ident);
        self.dirty.push(ident);
        self.changed = true;
        // Only the checkpoint knows the copy continues the old file.
        self.urgent = true;
    }

    /// Whether the checkpoint should be saved now rather than within the
    /// second (a copy took over a truncated file). Resets the request.
    pub fn take_urgent(&mut self) -> bool {
        std::mem::take(&mut self.urgent)
    }

    /// Reads what changed, sends full and lingering chunks, ends files that
    /// are finished. Errors only when the output is closed.
    pub fn poll(&mut self, now: Instant, out: &mut impl Delivery) -> Result<(), Stopped> {
        // Files gone from their path are read each poll until closed.
        let gone: Vec<u64> = self
            .active
            .iter()
            .filter(|i| {
                self.files
                    .get(i)
                    .is_some_and(|t| matches!(t.place, Place::Gone(_)) && t.file.is_some())
            })
            .copied()
            .collect();
        self.dirty.extend(gone);
        self.read_dirty(now, out)?;
        // New files, now that truncations of known ones are seen.
        if self.take_in_new(now) {
            self.read_dirty(now, out)?;
        }
        self.end_orphans(now);
        // Lingering chunks, multi-line timeouts, the memory bound.
        let linger = self.settings.linger;
        let mut pending_bytes = 0usize;
        let mut due = Vec::new();
        let mut cut = Vec::new();
        for ident in &self.active {
            let Some(t) = self.files.get_mut(ident) else {
                continue;
            };
            if t.framer.safe_offset() < t.framer.offset() {
                for d in tick(t, now, self.keep_records, &self.counters) {
                    cut.push((t.ident, d));
                }
            }
            if let Some(c) = &t.chunk {
                pending_bytes += c.wire_bytes();
                if t.chunk_since
                    .is_some_and(|s| now.duration_since(s) >= linger)
                {
                    due.push(t.ident);
                }
            }
        }
        if pending_bytes > PENDING_LIMIT {
            due = self
                .active
                .iter()
                .filter(|i| self.files.get(i).is_some_and(|t| t.chunk.is_some()))
                .copied()
                .collect();
        }
        for (ident, (chunk, end, kept)) in cut {
            self.send(ident, chunk, end, kept, out)?;
        }
        for ident in due {
            self.flush(ident, out)?;
        }
        // Skips: filtered lines move the checkpoint with nothing sent.
        for ident in &self.active {
            let Some(t) = self.files.get_mut(ident) else {
                continue;
            };
            let safe = t.framer.safe_offset();
            if t.chunk.is_none()
                && safe > t.shipped
                && let Some(file) = &t.file
            {
                let tail = if t.safe_tail.0 == safe {
                    t.safe_tail.1
                } else {
                    identity::tail_hash(file, safe).ok().flatten().unwrap_or(0)
                };
                t.acks.skipped(safe, tail);
                t.shipped = safe;
                self.changed = true;
            }
        }
        self.finish_gone(now, out)?;
        self.dispatch_all(out)?;
        let files = &self.files;
        self.active.retain(|i| {
            files.get(i).is_some_and(|t| {
                t.chunk.is_some()
                    || t.framer.safe_offset() < t.framer.offset()
                    || (matches!(t.place, Place::Gone(_)) && t.file.is_some())
            })
        });
        Ok(())
    }

    /// Discovers the files the last rescan found; true when there were.
    fn take_in_new(&mut self, now: Instant) -> bool {
        let fresh = std::mem::take(&mut self.pending_new);
        let any = !fresh.is_empty();
        for (g, path, key) in fresh {
            if !self.by_key.contains_key(&(g, key)) {
                self.discover(g, &path, key, now, false);
            }
        }
        any
    }

    /// Reads every dirty file (and the new generations reading them
    /// starts) until each is read to its end.
    fn read_dirty(&mut self, now: Instant, out: &mut impl Delivery) -> Result<(), Stopped> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        self.active.extend(dirty.iter().copied());
        while !dirty.is_empty() {
            let mut again = Vec::new();
            for ident in dirty {
                if self.read(ident, now, out)? {
                    again.push(ident);
                }
            }
            // New generations (truncations) are read in this poll too.
            let fresh = std::mem::take(&mut self.dirty);
            self.active.extend(fresh.iter().copied());
            again.extend(fresh);
            again.sort_unstable();
            again.dedup();
            dirty = again;
        }
        Ok(())
    }

    /// When the next poll is due for lingering chunks and gone files.
    pub fn next_due(&self, now: Instant) -> Option<Duration> {
        let mut next: Option<Duration> = None;
        let mut at = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));
        for t in self.active.iter().filter_map(|i| self.files.get(i)) {
            if let Some(since) = t.chunk_since {
                at((since + self.settings.linger).saturating_duration_since(now));
            }
            if matches!(t.place, Place::Gone(_)) || t.framer.safe_offset() < t.framer.offset() {
                at(Duration::from_millis(250));
            }
        }
        if !self.orphans.is_empty() || !self.deferred.is_empty() {
            at(Duration::from_millis(500));
        }
        next
    }

    /// Whether a rescan is due soon: for deferred files (possible
    /// copies), or a copy to adopt. Resets the request.
    pub fn wants_rescan(&mut self) -> bool {
        std::mem::take(&mut self.rescan_soon) || !self.deferred.is_empty()
    }

    /// Reads one file for a turn; true when more is left to read.
    fn read(&mut self, ident: u64, now: Instant, out: &mut impl Delivery) -> Result<bool, Stopped> {
        let keep = self.keep_records;
        let Some(t) = self.files.get_mut(&ident) else {
            return Ok(false);
        };
        if t.file.is_none() {
            if t.place != Place::Live {
                return Ok(false);
            }
            // Closed while idle (max_open): reopen by path.
            let (path, key) = (t.path.clone(), t.key);
            match self.open_file(&path, key, now) {
                Some(f) => {
                    if let Some(t) = self.files.get_mut(&ident) {
                        t.file = Some(f);
                    }
                }
                None => return Ok(false),
            }
        }
        let Some(t) = self.files.get_mut(&ident) else {
            return Ok(false);
        };
        let Some(file) = t.file.as_ref() else {
            return Ok(false);
        };
        let size = match file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return Ok(false),
        };
        if t.fresh {
            if size == 0 {
                return Ok(false);
            }
            // A file found empty gets its first bytes: it may be a copy
            // being written (copytruncate).
            t.fresh = false;
            let head = identity::read_head(file).unwrap_or_default();
            let (g, key, path) = (t.group, t.key, t.path.clone());
            let orphan = self.orphans.iter().position(|o| {
                o.group == g
                    && self
                        .files
                        .get(&o.ident)
                        .is_some_and(|x| is_copy_of(&head, x))
            });
            if let Some(pos) = orphan {
                let orphan = self.orphans.remove(pos);
                let file = self.files.get_mut(&ident).and_then(|t| t.file.take());
                self.forget(ident);
                if let Some(file) = file {
                    self.adopt(orphan.ident, &path, key, file, size, now);
                }
                return Ok(true);
            }
            if let Some(copy_of) = self.live_with_head(g, key, &head) {
                // Found again by a rescan; read as its own file if its
                // original is not truncated within COPY_WAIT.
                self.forget(ident);
                self.deferred.insert(
                    (g, key),
                    Deferred {
                        copy_of,
                        since: now,
                    },
                );
                self.dirty.push(copy_of);
                self.rescan_soon = true;
                return Ok(false);
            }
            let Some(t) = self.files.get_mut(&ident) else {
                return Ok(false);
            };
            t.head = head;
            t.fingerprint = Fingerprint::of(&t.head);
        }
        let Some(t) = self.files.get_mut(&ident) else {
            return Ok(false);
        };
        let Some(file) = t.file.as_ref() else {
            return Ok(false);
        };
        t.max_size = t.max_size.max(size);
        // Truncated and written again past the old offset between two
        // looks: the bytes before the offset are not the ones read.
        let rewritten = t.mark.0 == t.framer.offset()
            && t.mark.0 > 0
            && size >= t.mark.0
            && identity::read_at(file, t.mark.0 - t.mark.1.len() as u64, t.mark.1.len())
                .is_ok_and(|b| b != t.mark.1);
        if size < t.framer.offset() || rewritten {
            self.truncated(ident, now, out)?;
            return Ok(true);
        }
        if size != t.size {
            t.size = size;
            t.last_growth = now;
        }
        let mut turn = 0u64;
        let mut done: Vec<(ChunkBuilder, u64, Vec<KeptRecord>)> = Vec::new();
        loop {
            let offset = t.framer.offset();
            if offset >= size || turn >= TURN_BYTES {
                break;
            }
            let want = ((size - offset) as usize).min(self.buf.len());
            let n = match std::os::unix::fs::FileExt::read_at(file, &mut self.buf[..want], offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(file = %t.path.display(), error = %e, "Cannot read a log file.");
                    break;
                }
            };
            turn += n as u64;
            add(&self.counters.bytes_read, n as u64);
            let mut bytes = &self.buf[..n];
            // NUL padding at a line start (a writer without O_APPEND after
            // a truncation) is skipped, never shipped.
            if bytes[0] == 0 && t.framer.safe_offset() == offset {
                let nuls = bytes.iter().take_while(|&&b| b == 0).count();
                add(&self.counters.nul_skipped, nuls as u64);
                let rules = self.settings.groups[t.group].rules.clone();
                fold_counts(&t.framer, &mut t.counted, &self.counters);
                t.framer = F::create(rules, offset + nuls as u64);
                t.counted = FramingCounts::default();
                bytes = &bytes[nuls..];
            }
            if t.fingerprint.len < FINGERPRINT_MAX as u32 && offset < FINGERPRINT_MAX as u64 {
                let end = (offset as usize + n).min(FINGERPRINT_MAX);
                if end > t.head.len() && t.head.len() == offset as usize {
                    t.head.extend_from_slice(&self.buf[..end - offset as usize]);
                    t.fingerprint = Fingerprint::of(&t.head);
                    self.changed = true;
                } else if end > t.head.len()
                    && let Ok(h) = identity::read_head(file)
                {
                    t.head = h;
                    t.fingerprint = Fingerprint::of(&t.head);
                }
            }
            for slice in bytes.chunks(PUSH_SLICE) {
                let mut cutter = Cutter {
                    labels: &t.labels,
                    fields: &t.fields,
                    current: &mut t.chunk,
                    since: &mut t.chunk_since,
                    now,
                    done: &mut done,
                    kept: &mut t.kept,
                    keep,
                    records: 0,
                };
                t.framer.push(slice, now, &mut cutter);
                add(&self.counters.records, cutter.records);
            }
            fold_counts(&t.framer, &mut t.counted, &self.counters);
            if !done.is_empty() {
                break;
            }
        }
        if turn > 0 {
            // The tail hash at the safe offset, taken while the bytes are
            // surely there (a truncation may come before the chunk is sent).
            let safe = t.framer.safe_offset();
            if let Ok(Some(tail)) = identity::tail_hash(file, safe) {
                t.safe_tail = (safe, tail);
            }
            let end = t.framer.offset();
            let from = end.saturating_sub(MARK_BYTES);
            t.mark = (
                end,
                identity::read_at(file, from, (end - from) as usize).unwrap_or_default(),
            );
        }
        let more = t.framer.offset() < size && turn > 0;
        for (chunk, end, kept) in done {
            self.send(ident, chunk, end, kept, out)?;
        }
        // A chunk at its target is sent without waiting for the linger.
        if let Some(t) = self.files.get(&ident)
            && t.chunk
                .as_ref()
                .is_some_and(|c| c.wire_bytes() >= CHUNK_TARGET)
        {
            self.flush(ident, out)?;
        }
        Ok(more)
    }

    /// Sends the file's chunk in the making, if any.
    fn flush(&mut self, ident: u64, out: &mut impl Delivery) -> Result<(), Stopped> {
        let Some(t) = self.files.get_mut(&ident) else {
            return Ok(());
        };
        let Some(chunk) = t.chunk.take() else {
            return Ok(());
        };
        t.chunk_since = None;
        let end = t.framer.safe_offset();
        let kept = std::mem::take(&mut t.kept);
        self.send(ident, chunk, end, kept, out)
    }

    fn send(
        &mut self,
        ident: u64,
        chunk: ChunkBuilder,
        end: u64,
        kept: Vec<KeptRecord>,
        out: &mut impl Delivery,
    ) -> Result<(), Stopped> {
        let Some(t) = self.files.get_mut(&ident) else {
            return Ok(());
        };
        let tail = if t.safe_tail.0 == end {
            t.safe_tail.1
        } else {
            t.file
                .as_ref()
                .and_then(|f| identity::tail_hash(f, end).ok().flatten())
                .unwrap_or(0)
        };
        let cursor = Cursor {
            file_id: t.labels.file_id.clone(),
            generation: t.generation,
            offset: end,
            fingerprint: t.fingerprint,
            tail,
        };
        let records = chunk.len() as u64;
        let seq = t.acks.sent(end, tail);
        t.shipped = end;
        let group = self.settings.groups[t.group].name.clone();
        let g = t.group;
        self.since_save.insert(
            cursor.file_id.clone(),
            Entry {
                group,
                key: t.key,
                cursor,
                spooled: None,
                path: t.path.display().to_string(),
            },
        );
        self.changed = true;
        let payload = chunk.finish(SystemTime::now());
        let bytes = payload_len(&payload);
        let outbox = self.outbox.entry(g).or_default();
        if outbox.bytes > 0 && outbox.bytes + bytes > BATCH_TARGET {
            self.dispatch(g, out)?;
        }
        let outbox = self.outbox.entry(g).or_default();
        outbox.payloads.push(payload);
        outbox.tickets.push(Ticket { ident, seq });
        outbox.records += records;
        outbox.bytes += bytes;
        outbox.kept.extend(kept);
        // No room for another full chunk: sent now; otherwise the next
        // chunk, or the end of this poll, sends it.
        if outbox.bytes + CHUNK_TARGET > BATCH_TARGET {
            self.dispatch(g, out)?;
        }
        Ok(())
    }

    /// Sends group `g`'s chunks gathered so far as one batch.
    fn dispatch(&mut self, g: usize, out: &mut impl Delivery) -> Result<(), Stopped> {
        let Some(outbox) = self.outbox.remove(&g) else {
            return Ok(());
        };
        if outbox.payloads.is_empty() {
            return Ok(());
        }
        let group = self.settings.groups[g].name.clone();
        let mut delta = encode_delta(self.since_save.values().filter(|e| e.group == group));
        if delta.len() > DELTA_LIMIT {
            // Too many files moved since the last checkpoint: the
            // positions of this batch's files only (the checkpoint file,
            // at most a second old, has the others; a crash now means
            // some lines are sent again, and stored once).
            let ids: HashSet<&str> = outbox
                .tickets
                .iter()
                .filter_map(|t| self.files.get(&t.ident))
                .map(|t| t.labels.file_id.as_str())
                .collect();
            delta = encode_delta(
                self.since_save
                    .values()
                    .filter(|e| ids.contains(e.cursor.file_id.as_str())),
            );
        }
        let mut batch = Outgoing {
            source: group,
            batch: OutBatch {
                payloads: outbox.payloads,
                cursor: Some(delta),
                records: outbox.records,
            },
            tickets: outbox.tickets,
            records: outbox.kept,
        };
        // While the spool is full, files gone from their paths are not
        // held open past log.deleted_hold.
        loop {
            match out.send_within(batch, Duration::from_secs(1))? {
                None => return Ok(()),
                Some(back) => {
                    batch = back;
                    self.close_overdue(Instant::now());
                }
            }
        }
    }

    /// Closes files gone from their paths and held past
    /// `log.deleted_hold` (the agent is blocked): their unread rest is
    /// counted as lost.
    fn close_overdue(&mut self, now: Instant) {
        let hold = self.settings.deleted_hold;
        let overdue: Vec<u64> = self
            .active
            .iter()
            .filter(|i| {
                self.files.get(i).is_some_and(|t| {
                    t.file.is_some()
                        && matches!(t.place, Place::Gone(since) if now.duration_since(since) >= hold)
                })
            })
            .copied()
            .collect();
        for ident in overdue {
            let Some(t) = self.files.get_mut(&ident) else {
                continue;
            };
            let Some(file) = t.file.take() else {
                continue;
            };
            let size = file.metadata().map(|m| m.len()).unwrap_or(t.size);
            let left = size.saturating_sub(t.framer.offset());
            add(&self.counters.deleted_unread_bytes, left);
            tracing::warn!(file = %t.path.display(), unread_bytes = left, "A file gone from its path was held open past log.deleted_hold while the collector could not keep up; closed unread.");
            let (g, key, path) = (t.group, t.key, t.path.clone());
            self.close(file);
            if self.by_key.get(&(g, key)) == Some(&ident) {
                self.by_key.remove(&(g, key));
            }
            if self.by_path.get(&path) == Some(&ident) {
                self.by_path.remove(&path);
            }
        }
    }

    /// Sends every group's gathered chunks.
    fn dispatch_all(&mut self, out: &mut impl Delivery) -> Result<(), Stopped> {
        let groups: Vec<usize> = self.outbox.keys().copied().collect();
        for g in groups {
            self.dispatch(g, out)?;
        }
        Ok(())
    }

    /// The open file is shorter than what was read: its old bytes are
    /// gone. The old generation ends (and waits for a copy, as with
    /// copytruncate); the file is read from 0 as a new generation.
    fn truncated(
        &mut self,
        ident: u64,
        now: Instant,
        out: &mut impl Delivery,
    ) -> Result<(), Stopped> {
        add(&self.counters.truncations, 1);
        self.flush(ident, out)?;
        let Some(t) = self.files.get_mut(&ident) else {
            return Ok(());
        };
        tracing::info!(file = %t.path.display(), offset = t.framer.offset(), "File truncated; reading it from its start as a new generation.");
        let (g, key, path, generation) = (t.group, t.key, t.path.clone(), t.generation);
        let Some(file) = t.file.take() else {
            return Ok(());
        };
        t.place = Place::Gone(now);
        self.by_key.remove(&(g, key));
        self.by_path.remove(&path);
        // The orphan keeps its state (and its pending acks); a copy found
        // within ORPHAN_WAIT reads on from its safe offset.
        self.orphans.push(Orphan {
            group: g,
            ident,
            since: now,
        });
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let head = identity::read_head(&file).unwrap_or_default();
        // Pending copies of it found before the truncation.
        let copy = self
            .deferred
            .iter()
            .find(|(_, d)| d.copy_of == ident)
            .map(|(k, _)| *k);
        self.track(
            g,
            &path,
            key,
            file,
            head,
            size,
            now,
            StartAt::New(generation + 1, 0),
        );
        if let Some(k) = copy {
            self.deferred.remove(&k);
            // Found again (and adopted) by the next rescan.
            self.rescan_soon = true;
        }
        Ok(())
    }

    fn end_orphans(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .orphans
            .iter()
            .filter(|o| now.duration_since(o.since) >= ORPHAN_WAIT)
            .map(|o| o.ident)
            .collect();
        self.orphans
            .retain(|o| now.duration_since(o.since) < ORPHAN_WAIT);
        for ident in expired {
            if let Some(t) = self.files.get_mut(&ident) {
                let pending = t.framer.offset() - t.framer.safe_offset();
                add(&self.counters.partial_bytes_lost, pending);
            }
            self.forget(ident);
        }
    }

    /// Files gone from their paths, read to their end and idle: finished
    /// and closed. Held longer than `log.deleted_hold` unread: closed,
    /// the rest counted lost.
    fn finish_gone(&mut self, now: Instant, out: &mut impl Delivery) -> Result<(), Stopped> {
        let hold = self.settings.deleted_hold;
        let keep = self.keep_records;
        let done: Vec<(u64, bool)> = self
            .active
            .iter()
            .filter_map(|i| self.files.get(i))
            .filter_map(|t| {
                let Place::Gone(since) = t.place else {
                    return None;
                };
                t.file.as_ref()?;
                if self.orphans.iter().any(|o| o.ident == t.ident) {
                    return None;
                }
                let caught_up = t.framer.offset() >= t.size;
                let idle = now.duration_since(t.last_growth) >= GONE_IDLE;
                if caught_up && idle {
                    Some((t.ident, false))
                } else if !caught_up && now.duration_since(since) >= hold {
                    Some((t.ident, true))
                } else {
                    None
                }
            })
            .collect();
        for (ident, overdue) in done {
            let Some(t) = self.files.get_mut(&ident) else {
                continue;
            };
            if overdue {
                let left = t.size.saturating_sub(t.framer.offset());
                add(&self.counters.deleted_unread_bytes, left);
                tracing::warn!(file = %t.path.display(), unread_bytes = left, "A file gone from its path was held open past log.deleted_hold; closed unread.");
            }
            let cut = finish(t, now, keep, &self.counters);
            let pending = t.framer.offset() - t.framer.safe_offset();
            add(&self.counters.partial_bytes_lost, pending);
            for (chunk, end, kept) in cut {
                self.send(ident, chunk, end, kept, out)?;
            }
            self.flush(ident, out)?;
            if let Some(t) = self.files.get_mut(&ident)
                && let Some(f) = t.file.take()
            {
                let (g, key, path) = (t.group, t.key, t.path.clone());
                self.close(f);
                // Closed for good: its inode may be reused by a new file,
                // which must not be taken for this one.
                if self.by_key.get(&(g, key)) == Some(&ident) {
                    self.by_key.remove(&(g, key));
                }
                if self.by_path.get(&path) == Some(&ident) {
                    self.by_path.remove(&path);
                }
            }
            if self.files.get(&ident).is_some_and(|t| t.acks.is_idle()) {
                self.forget(ident);
            }
        }
        Ok(())
    }

    fn forget(&mut self, ident: u64) {
        if let Some(mut t) = self.files.remove(&ident) {
            if self.by_key.get(&(t.group, t.key)) == Some(&ident) {
                self.by_key.remove(&(t.group, t.key));
            }
            if self.by_path.get(&t.path) == Some(&ident) {
                self.by_path.remove(&t.path);
            }
            if let Some(f) = t.file.take() {
                self.close(f);
            }
        }
        self.changed = true;
    }

    /// A send is in the spool: a restart resumes after it.
    pub fn spooled(&mut self, ticket: Ticket) {
        if let Some(t) = self.files.get_mut(&ticket.ident) {
            t.acks.spooled(ticket.seq);
            self.changed = true;
        }
    }

    /// A send settled: the checkpoint may move.
    pub fn settled(&mut self, ticket: Ticket, fate: &Fate) {
        if let Fate::Dropped(reason) = fate {
            tracing::warn!(reason = %reason, "A log chunk was dropped; its records are lost.");
        }
        let Some(t) = self.files.get_mut(&ticket.ident) else {
            return;
        };
        if t.acks.settled(ticket.seq) {
            self.changed = true;
        }
        if t.file.is_none() && t.acks.is_idle() && t.place != Place::Live {
            let ident = t.ident;
            if !self.orphans.iter().any(|o| o.ident == ident) {
                self.forget(ident);
            }
        }
    }

    /// Whether every send is settled.
    pub fn all_settled(&self) -> bool {
        self.files.values().all(|t| t.acks.is_idle())
    }

    /// Reads what is there and sends every chunk in the making (the agent
    /// is stopping), until `deadline`.
    pub fn drain(&mut self, deadline: Instant, out: &mut impl Delivery) -> Result<(), Stopped> {
        let idents: Vec<u64> = self.files.keys().copied().collect();
        for ident in idents {
            if Instant::now() >= deadline {
                break;
            }
            while self.read(ident, Instant::now(), out)? && Instant::now() < deadline {}
        }
        if (!self.orphans.is_empty() || !self.deferred.is_empty()) && Instant::now() < deadline {
            // A file truncated just now may have its copy waiting: taken
            // over now, so the next run need not match it by its bytes.
            self.rescan(Instant::now(), out);
            self.take_in_new(Instant::now());
            let idents: Vec<u64> = self.files.keys().copied().collect();
            for ident in idents {
                if Instant::now() >= deadline {
                    break;
                }
                while self.read(ident, Instant::now(), out)? && Instant::now() < deadline {}
            }
        }
        let idents: Vec<u64> = self.files.keys().copied().collect();
        for ident in idents {
            self.flush(ident, out)?;
        }
        self.dispatch_all(out)
    }

    /// Whether the checkpoint changed since the last [`Tailer::checkpoint`].
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// What to save: every file's acknowledged position.
    pub fn checkpoint(&mut self) -> Vec<Entry> {
        self.changed = false;
        // Positions the entries below hold (spooled) leave the delta;
        // sends not yet known spooled stay in it.
        let spooled: HashMap<&str, u64> = self
            .files
            .values()
            .map(|t| (t.labels.file_id.as_str(), t.acks.spooled_at().0))
            .collect();
        self.since_save.retain(|id, e| {
            spooled
                .get(id.as_str())
                .is_some_and(|&at| at < e.cursor.offset)
        });
        let mut entries: Vec<Entry> = self.saved.clone();
        for t in self.files.values() {
            let orphan = self.orphans.iter().any(|o| o.ident == t.ident);
            if self.by_key.get(&(t.group, t.key)) != Some(&t.ident) && !orphan {
                continue; // an old generation: its inode has a newer one.
            }
            let acked = t.acks.acked();
            let fingerprint = t.fingerprint;
            entries.push(Entry {
                group: self.settings.groups[t.group].name.clone(),
                key: t.key,
                cursor: Cursor {
                    file_id: t.labels.file_id.clone(),
                    generation: t.generation,
                    offset: acked,
                    fingerprint,
                    tail: t.acks.acked_tail(),
                },
                spooled: Some(t.acks.spooled_at()),
                path: t.path.display().to_string(),
            });
        }
        entries
    }
}

/// Whether a file beginning with `head` is a copy of `original` (made
/// when it had at least as many bytes, or a shorter copy, or one still
/// being written).
fn is_copy_of<F>(head: &[u8], original: &Tracked<F>) -> bool {
    if head.is_empty() || original.head.is_empty() {
        return false;
    }
    if head.len() >= original.head.len() {
        identity::head_matches(head, &original.fingerprint)
    } else {
        original.head.starts_with(head)
    }
}

/// Where a tracked file generation begins.
enum StartAt {
    /// Where a cursor of the last run (or of its original) left it.
    Resume(Cursor),
    /// A new generation (its number) at an offset.
    New(u32, u64),
}

/// Whether the file at `path` is still `key` and begins with the bytes
/// `fingerprint` was taken of.
fn still_holds(path: &str, key: FileKey, fingerprint: &Fingerprint) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    file.metadata().is_ok_and(|m| FileKey::of(&m) == key)
        && identity::read_head(&file).is_ok_and(|h| identity::head_matches(&h, fingerprint))
}

/// The most bytes of positions a batch's cursor carries.
const DELTA_LIMIT: usize = 32 << 10;

/// A batch's cursor: `v2`, then one line per file generation:
/// `<dev> <ino> <cursor>\t<path>`.
fn encode_delta<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<u8> {
    let mut out = String::from("v2\n");
    for e in entries {
        let path: String = e
            .path
            .chars()
            .map(|c| if c == '\n' || c == '\t' { '?' } else { c })
            .collect();
        out.push_str(&format!(
            "{} {} {}\t{}\n",
            e.key.dev,
            e.key.ino,
            e.resume_cursor().encode(),
            path
        ));
    }
    out.into_bytes()
}

/// The positions [`encode_delta`] wrote (lines that do not parse are
/// skipped).
fn decode_delta(group: &str, bytes: &[u8]) -> Vec<Entry> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some("v2") {
        return Vec::new();
    }
    lines
        .filter_map(|line| {
            let (head, path) = line.split_once('\t')?;
            let mut f = head.splitn(3, ' ');
            let key = FileKey {
                dev: f.next()?.parse().ok()?,
                ino: f.next()?.parse().ok()?,
            };
            Some(Entry {
                group: group.to_string(),
                key,
                cursor: Cursor::decode(f.next()?)?,
                spooled: None,
                path: path.to_string(),
            })
        })
        .collect()
}

/// The offset just after the last line end before `size` (or `size`
/// when no line end is found in the last 64 KiB): where a file read from
/// its end starts, so a partial line is not shipped as a line.
fn line_start_before(file: &File, size: u64) -> u64 {
    // Most files end with a line end: the last 4 KiB usually settle it.
    for window in [4u64 << 10, 64 << 10] {
        let from = size.saturating_sub(window);
        let Ok(bytes) = identity::read_at(file, from, (size - from) as usize) else {
            return size;
        };
        if let Some(i) = memchr::memrchr(b'\n', &bytes) {
            return from + i as u64 + 1;
        }
        if from == 0 {
            return 0;
        }
    }
    size
}

fn fold_counts<F: Frames>(framer: &F, counted: &mut FramingCounts, counters: &LogCounters) {
    let now = framer.counts();
    add(&counters.records_cut, now.cut.saturating_sub(counted.cut));
    add(
        &counters.invalid_bytes,
        now.invalid.saturating_sub(counted.invalid),
    );
    add(
        &counters.lines_filtered,
        now.filtered.saturating_sub(counted.filtered),
    );
    *counted = now;
}

type Done = Vec<(ChunkBuilder, u64, Vec<KeptRecord>)>;

/// Time passed: a multi-line record past its timeout is emitted. Returns
/// chunks cut meanwhile, to be sent.
fn tick<F: Frames>(t: &mut Tracked<F>, now: Instant, keep: bool, counters: &LogCounters) -> Done {
    let mut done = Vec::new();
    let mut cutter = Cutter {
        labels: &t.labels,
        fields: &t.fields,
        current: &mut t.chunk,
        since: &mut t.chunk_since,
        now,
        done: &mut done,
        kept: &mut t.kept,
        keep,
        records: 0,
    };
    t.framer.tick(now, &mut cutter);
    add(&counters.records, cutter.records);
    done
}

/// The file is finished for good: a pending multi-line record is emitted.
fn finish<F: Frames>(t: &mut Tracked<F>, now: Instant, keep: bool, counters: &LogCounters) -> Done {
    let mut done = Vec::new();
    let mut cutter = Cutter {
        labels: &t.labels,
        fields: &t.fields,
        current: &mut t.chunk,
        since: &mut t.chunk_since,
        now,
        done: &mut done,
        kept: &mut t.kept,
        keep,
        records: 0,
    };
    t.framer.finish(&mut cutter);
    add(&counters.records, cutter.records);
    done
}

#[cfg(test)]
mod tests;
