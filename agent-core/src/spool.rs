//! The on-disk queue of batches the collector has not acknowledged yet.
//!
//! One file per batch, `<seq>.batch`, written to a temporary name, then
//! renamed, so a batch is either wholly in the spool or not at all, and a
//! `kill -9` at any moment loses nothing that was appended (the page cache
//! outlives the process). With [`Sync::Full`] each file and the rename are
//! also fsynced, so a power cut loses nothing either, at the cost of disk
//! flushes every interval. (Fluent Bit's filesystem buffer stores one file
//! per chunk the same way, with the same `normal`/`full` choice.) Each file starts
//! with a small header carrying a CRC, so a file damaged on disk is detected,
//! dropped and counted instead of being sent as garbage.
//!
//! Invariants:
//! - Sequence numbers increase by one per append and are never reused, even
//!   across restarts and even when every batch has been acknowledged: the
//!   highest number assigned is persisted before the newest batch file is
//!   removed (until then, that file is the record).
//! - The spool never holds more than `max_bytes` of batch files. To make room
//!   it drops the oldest batches and counts them. The count stays (on disk,
//!   so across crashes too) until the collector has acknowledged a report of
//!   it: at most one report is in flight ([`Spool::report_due`],
//!   [`Spool::append_report`]); if that batch is itself dropped, its counts
//!   are reported again. A loss is never silent, and never reported twice.
//! - A batch is removed only when acknowledged ([`Spool::remove`]) or dropped
//!   for room; nothing else deletes.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io;

use crate::state::write_atomic;
use std::path::{Path, PathBuf};

/// Magic bytes at the start of every batch file.
const MAGIC: &[u8; 4] = b"SLB1";
/// Magic, CRC-32 of the payload, payload length.
const HEADER_LEN: usize = 4 + 4 + 8;
const BATCH_EXT: &str = "batch";
const LAST_SEQ_FILE: &str = "last_seq";
const UNREPORTED_FILE: &str = "unreported_drops";
/// The largest batch the collector accepts (its gRPC message limit, 4 MiB,
/// less room for framing). A larger one could never be delivered.
pub const MAX_BATCH_BYTES: usize = (4 << 20) - 1024;
/// The newest batches are also kept in memory, up to this many bytes, so
/// the transport need not read back what it was just given.
const CACHE_BYTES: usize = 256 << 10;

/// How hard the spool works to keep a batch through a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Atomic renames: survives the agent being killed, not a power cut.
    Normal,
    /// Also fsync every file and its folder: survives a power cut.
    Full,
}

/// A spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Reading or writing a spool file failed.
    #[error("spool {path}: {source}", path = path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Batches dropped to make room (or because their file was damaged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// How many batches.
    pub batches: u64,
    /// How many bytes of batch files.
    pub bytes: u64,
    /// The lowest sequence number dropped (0 when none).
    pub first_seq: u64,
    /// The highest sequence number dropped (0 when none).
    pub last_seq: u64,
}

impl Dropped {
    fn add(&mut self, seq: u64, bytes: u64) {
        if self.batches == 0 || seq < self.first_seq {
            self.first_seq = seq;
        }
        self.last_seq = self.last_seq.max(seq);
        self.batches += 1;
        self.bytes += bytes;
    }

    fn merge(&mut self, other: Dropped) {
        if other.batches == 0 {
            return;
        }
        if self.batches == 0 || other.first_seq < self.first_seq {
            self.first_seq = other.first_seq;
        }
        self.last_seq = self.last_seq.max(other.last_seq);
        self.batches += other.batches;
        self.bytes += other.bytes;
    }

    /// Whether anything was dropped.
    pub fn is_empty(&self) -> bool {
        self.batches == 0
    }

    /// What remains once `reported` (an earlier part of `self`) is
    /// acknowledged. Drops happen in sequence order, so what remains starts
    /// after the reported range.
    fn minus(self, reported: Dropped) -> Dropped {
        let batches = self.batches.saturating_sub(reported.batches);
        if batches == 0 {
            return Dropped::default();
        }
        Dropped {
            batches,
            bytes: self.bytes.saturating_sub(reported.bytes),
            first_seq: self.first_seq.max(reported.last_seq + 1),
            last_seq: self.last_seq,
        }
    }

    fn fields(&self) -> [u64; 4] {
        [self.batches, self.bytes, self.first_seq, self.last_seq]
    }

    fn from_fields(f: &[u64]) -> Option<Dropped> {
        Some(Dropped {
            batches: *f.first()?,
            bytes: *f.get(1)?,
            first_seq: *f.get(2)?,
            last_seq: *f.get(3)?,
        })
    }
}

/// The report of drops currently in the spool, not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Report {
    /// Its batch.
    seq: u64,
    /// The drops it reports.
    covers: Dropped,
}

/// What [`Spool::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The sequence number given to the new batch.
    pub seq: u64,
    /// What was dropped to make room for it.
    pub dropped: Dropped,
}

/// The spool of one agent, in `<data.dir>/spool`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    sync: Sync,
    /// Sequence number to file size, for every batch on disk.
    entries: BTreeMap<u64, u64>,
    bytes: u64,
    /// The highest sequence number ever assigned.
    last_seq: u64,
    /// The value of `last_seq` on disk.
    persisted_last_seq: u64,
    /// The `last_seq` file, kept open in [`Sync::Normal`] mode.
    last_seq_file: Option<fs::File>,
    /// Drops the collector has not acknowledged a report of.
    unreported: Dropped,
    /// The report in flight, if any.
    report: Option<Report>,
    /// The newest batches' bytes, oldest first, at most [`CACHE_BYTES`].
    cache: VecDeque<(u64, Vec<u8>)>,
    cache_bytes: usize,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, removing half-written files
    /// left by a crash.
    pub fn open(dir: &Path, max_bytes: u64, sync: Sync) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut entries = BTreeMap::new();
        let mut bytes = 0;
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
                continue;
            };
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            match (ext, stem.parse::<u64>()) {
                (BATCH_EXT, Ok(seq)) => {
                    let len = entry.metadata().map_err(io_err(&path))?.len();
                    entries.insert(seq, len);
                    bytes += len;
                }
                // A batch that was being written when the agent died.
                ("tmp", _) => fs::remove_file(&path).map_err(io_err(&path))?,
                _ => {}
            }
        }
        let persisted_last_seq = read_small(&dir.join(LAST_SEQ_FILE))?
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let last_seq = persisted_last_seq.max(entries.keys().next_back().copied().unwrap_or(0));
        // `unreported` (4 numbers), then the report in flight: its batch and
        // the 4 numbers it covers (seq 0 when none).
        let fields: Vec<u64> = read_small(&dir.join(UNREPORTED_FILE))?
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let unreported = Dropped::from_fields(&fields).unwrap_or_default();
        let report = fields
            .get(4)
            .filter(|seq| **seq != 0 && entries.contains_key(*seq))
            .and_then(|&seq| {
                Some(Report {
                    seq,
                    covers: Dropped::from_fields(fields.get(5..)?)?,
                })
            });
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            sync,
            entries,
            bytes,
            last_seq,
            persisted_last_seq,
            last_seq_file: None,
            unreported,
            report,
            cache: VecDeque::new(),
            cache_bytes: 0,
        })
    }

    /// Writes a new batch. `encode` receives the batch's sequence number and
    /// returns its bytes. Drops the oldest batches when the spool would
    /// exceed its limit. A batch that can never be kept or sent (larger than
    /// the spool, or than [`MAX_BATCH_BYTES`]) is dropped itself, and
    /// counted, without evicting anything for it.
    pub fn append(&mut self, encode: impl FnOnce(u64) -> Vec<u8>) -> Result<Appended, SpoolError> {
        let seq = self.last_seq + 1;
        let payload = encode(seq);
        let file_len = (HEADER_LEN + payload.len()) as u64;
        self.last_seq = seq;
        let keep = file_len <= self.max_bytes && payload.len() <= MAX_BATCH_BYTES;
        let mut dropped = Dropped::default();
        if keep {
            while self.bytes + file_len > self.max_bytes {
                let Some((&oldest, &len)) = self.entries.iter().next() else {
                    break;
                };
                self.delete(oldest)?;
                self.lost(oldest);
                dropped.add(oldest, len);
            }
        } else {
            tracing::warn!(
                seq,
                bytes = payload.len(),
                "Batch too large to keep or send; dropped."
            );
            dropped.add(seq, file_len);
        }
        // Counted before the write, so a failed write cannot lose the count.
        if !dropped.is_empty() {
            self.persist_last_seq()?;
            self.unreported.merge(dropped);
            self.persist_drops()?;
        }
        if keep {
            if let Err(e) = self.write_batch(seq, &payload) {
                let mut lost = Dropped::default();
                lost.add(seq, file_len);
                self.unreported.merge(lost);
                let _ = self.persist_drops();
                return Err(e);
            }
            self.entries.insert(seq, file_len);
            self.bytes += file_len;
            self.remember(seq, payload);
        }
        Ok(Appended { seq, dropped })
    }

    /// A batch was dropped, not delivered: if it was the report in flight,
    /// its drops are to be reported again.
    fn lost(&mut self, seq: u64) {
        if self.report.is_some_and(|r| r.seq == seq) {
            self.report = None;
        }
    }

    /// A batch was acknowledged: if it was the report in flight, the drops
    /// it reported are settled.
    fn delivered(&mut self, seq: u64) -> Result<(), SpoolError> {
        if let Some(report) = self.report.filter(|r| r.seq == seq) {
            self.unreported = self.unreported.minus(report.covers);
            self.report = None;
            self.persist_drops()?;
        }
        Ok(())
    }

    fn persist_drops(&self) -> Result<(), SpoolError> {
        let mut fields: Vec<u64> = self.unreported.fields().to_vec();
        if let Some(report) = self.report {
            fields.push(report.seq);
            fields.extend(report.covers.fields());
        }
        let line: Vec<String> = fields.iter().map(u64::to_string).collect();
        self.write(UNREPORTED_FILE, format!("{}\n", line.join(" ")).as_bytes())
    }

    /// Drops to report now: some are unreported and no report is in flight.
    pub fn report_due(&self) -> Option<Dropped> {
        (self.report.is_none() && !self.unreported.is_empty()).then_some(self.unreported)
    }

    /// Appends the report of what [`Spool::report_due`] returned; `encode`
    /// receives the sequence number and the drops it covers.
    pub fn append_report(
        &mut self,
        encode: impl FnOnce(u64, Dropped) -> Vec<u8>,
    ) -> Result<Appended, SpoolError> {
        let covers = self.unreported;
        let appended = self.append(|seq| encode(seq, covers))?;
        if self.entries.contains_key(&appended.seq) {
            self.report = Some(Report {
                seq: appended.seq,
                covers,
            });
            self.persist_drops()?;
        }
        Ok(appended)
    }

    /// A batch that was read but cannot be delivered (it no longer decodes,
    /// or the collector refused it for good): removed, and counted as a
    /// drop to report, like any other loss.
    pub fn discard(&mut self, seq: u64) -> Result<(), SpoolError> {
        let Some(&len) = self.entries.get(&seq) else {
            return Ok(());
        };
        self.persist_last_seq()?;
        self.delete(seq)?;
        self.lost(seq);
        let mut dropped = Dropped::default();
        dropped.add(seq, len);
        self.unreported.merge(dropped);
        self.persist_drops()
    }

    fn write_batch(&self, seq: u64, payload: &[u8]) -> Result<(), SpoolError> {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        header[8..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        let mut contents = Vec::with_capacity(HEADER_LEN + payload.len());
        contents.extend_from_slice(&header);
        contents.extend_from_slice(payload);
        write_file(&self.batch_path(seq), &contents, self.sync)
    }

    fn remember(&mut self, seq: u64, payload: Vec<u8>) {
        self.cache_bytes += payload.len();
        self.cache.push_back((seq, payload));
        while self.cache_bytes > CACHE_BYTES {
            let Some((_, old)) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= old.len();
        }
    }

    /// A batch's bytes if it is among the newest, held in memory.
    pub fn cached(&self, seq: u64) -> Option<Vec<u8>> {
        self.cache
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, bytes)| bytes.clone())
    }

    fn write(&self, name: &str, contents: &[u8]) -> Result<(), SpoolError> {
        write_file(&self.dir.join(name), contents, self.sync)
    }

    /// Reads a batch's bytes. A damaged file is removed and counted as
    /// dropped, and `None` is returned, as for a batch no longer there.
    pub fn read(&mut self, seq: u64) -> Result<Option<Vec<u8>>, SpoolError> {
        let Some(&len) = self.entries.get(&seq) else {
            return Ok(None);
        };
        let path = self.batch_path(seq);
        let contents = match fs::read(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(seq);
                return Ok(None);
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if let Some(payload) = check_header(&contents) {
            return Ok(Some(payload.to_vec()));
        }
        tracing::warn!(file = %path.display(), "Spooled batch is damaged; dropping it.");
        self.persist_last_seq()?;
        self.delete(seq)?;
        self.lost(seq);
        let mut dropped = Dropped::default();
        dropped.add(seq, len);
        self.unreported.merge(dropped);
        self.persist_drops()?;
        Ok(None)
    }

    /// Removes an acknowledged batch.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        if !self.entries.contains_key(&seq) {
            return Ok(());
        }
        if self.entries.keys().next_back() == Some(&seq) {
            self.persist_last_seq()?;
        }
        self.delete(seq)?;
        self.delivered(seq)
    }

    /// Removes every batch up to and including `seq` (the collector said it
    /// has stored them), and makes sure new batches number above `seq`.
    pub fn remove_through(&mut self, seq: u64) -> Result<usize, SpoolError> {
        self.last_seq = self.last_seq.max(seq);
        let done: Vec<u64> = self.entries.range(..=seq).map(|(&s, _)| s).collect();
        self.persist_last_seq()?;
        for s in &done {
            self.delete(*s)?;
            self.delivered(*s)?;
        }
        Ok(done.len())
    }

    fn delete(&mut self, seq: u64) -> Result<(), SpoolError> {
        let path = self.batch_path(seq);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
        self.forget(seq);
        Ok(())
    }

    fn forget(&mut self, seq: u64) {
        if let Some(len) = self.entries.remove(&seq) {
            self.bytes -= len;
        }
        if let Some(at) = self.cache.iter().position(|(s, _)| *s == seq)
            && let Some((_, bytes)) = self.cache.remove(at)
        {
            self.cache_bytes -= bytes.len();
        }
    }

    /// Records the highest sequence number assigned. In [`Sync::Normal`]
    /// mode it overwrites a fixed-width record in a file kept open: one
    /// `pwrite`, which a killed process cannot leave half done. In
    /// [`Sync::Full`] mode it goes through fsync and rename.
    fn persist_last_seq(&mut self) -> Result<(), SpoolError> {
        if self.persisted_last_seq == self.last_seq {
            return Ok(());
        }
        let record = format!("{:020}\n", self.last_seq);
        match self.sync {
            Sync::Full => self.write(LAST_SEQ_FILE, record.as_bytes())?,
            Sync::Normal => {
                let path = self.dir.join(LAST_SEQ_FILE);
                if self.last_seq_file.is_none() {
                    let file = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    self.last_seq_file = Some(file);
                }
                if let Some(file) = &self.last_seq_file {
                    use std::os::unix::fs::FileExt;
                    file.write_all_at(record.as_bytes(), 0)
                        .map_err(io_err(&path))?;
                }
            }
        }
        self.persisted_last_seq = self.last_seq;
        Ok(())
    }

    /// The oldest batch after `seq` (use 0 for the oldest of all).
    pub fn next_after(&self, seq: u64) -> Option<u64> {
        self.entries.range(seq + 1..).next().map(|(&s, _)| s)
    }

    /// The highest sequence number assigned so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Drops the collector has not acknowledged a report of (they survive
    /// restarts).
    pub fn unreported(&self) -> Dropped {
        self.unreported
    }

    fn batch_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.{BATCH_EXT}"))
    }
}

fn check_header(contents: &[u8]) -> Option<&[u8]> {
    if contents.len() < HEADER_LEN || &contents[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(contents[4..8].try_into().ok()?);
    let len = u64::from_le_bytes(contents[8..HEADER_LEN].try_into().ok()?);
    let payload = &contents[HEADER_LEN..];
    (payload.len() as u64 == len && crc32fast::hash(payload) == crc).then_some(payload)
}

/// Writes `contents` to `path` through a temporary file and a rename;
/// with [`Sync::Full`], fsyncs the file and the folder too.
fn write_file(path: &Path, contents: &[u8], sync: Sync) -> Result<(), SpoolError> {
    match sync {
        Sync::Full => write_atomic(path, contents),
        Sync::Normal => {
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, contents).map_err(io_err(&tmp))?;
            fs::rename(&tmp, path).map_err(io_err(path))
        }
    }
}

fn read_small(path: &Path) -> Result<Option<String>, SpoolError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests;
