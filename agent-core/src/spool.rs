//! The on-disk queue of batches the collector has not acknowledged yet.
//!
//! One file per batch, `<epoch>-<seq>.batch`, written to a temporary name,
//! then renamed, so a batch is either wholly in the spool or not at all, and
//! a `kill -9` at any moment loses nothing that was appended (the page cache
//! outlives the process). With [`Sync::Normal`] the file of a settled batch
//! is not unlinked but renamed to a spare (`spare-<n>.tmp`, a few at most),
//! which the next batch is written into and renamed from: the filesystem
//! then neither allocates nor frees an inode (nor, for batches of similar
//! size, blocks) per batch, which on ext4 costs more than the writing. With [`Sync::Full`] each file and the rename are
//! also fsynced, so a power cut loses nothing either, at the cost of disk
//! flushes every interval. (Fluent Bit's filesystem buffer stores one file
//! per chunk the same way, with the same `normal`/`full` choice.)
//!
//! Each file starts with a header ([`MAGIC`], a CRC of the rest, then the
//! batch's spool instance, sequence number, source, record count and the
//! source's opaque cursor), so a damaged file is detected, dropped and
//! counted instead of being sent as garbage, and a batch keeps the instance
//! it was numbered in whatever happens to the `instance` file. Files of the
//! older format (`SLB1`, no instance) are refused at open and counted as
//! damaged: there were no deployed agents to carry over.
//!
//! Spool instances: sequence numbers belong to an instance (a random id).
//! `epoch` orders instances within this folder, oldest first. A new instance
//! starts (at seq 1) when the `instance` file is missing or damaged, when
//! the host rebooted since the spool was last opened with [`Sync::Normal`]
//! (the page cache, and with it the record of the numbering, may have been
//! lost in a power cut), and when the collector holds numbers this spool
//! never assigned ([`Spool::settle_through`]).
//!
//! Invariants:
//! - Within an instance, sequence numbers increase by one per append and are
//!   never reused, even across restarts and even when every batch has been
//!   acknowledged: the highest number assigned is persisted before the
//!   newest batch file is removed (until then, that file is the record).
//! - A batch leaves the spool through [`Spool::settle`] (or
//!   [`Spool::settle_through`]) only: acknowledged, or dropped with a reason
//!   that is counted and reported. Every drop stays counted (on disk, across
//!   crashes too) until the collector has acknowledged a report of it: at
//!   most one report is in flight ([`Spool::report_due`],
//!   [`Spool::append_report`]); if that batch is itself dropped, its counts
//!   are reported again. A loss is never silent, and never reported twice.
//! - The spool holds at most `max_bytes` of batch files, plus what is in
//!   flight: it never evicts a batch the transport has sent and not yet
//!   seen acked ([`Spool::mark_in_flight`]), since the collector may store
//!   it. The overshoot is bounded by the transport's window: at most
//!   [`crate::transport::WINDOW`] batches and
//!   [`crate::transport::WINDOW_BYTES`] bytes (or one larger batch).
//! - A source's cursor is persisted only for batches that carry one, and
//!   only once every older batch of that source is settled: a checkpoint
//!   never runs ahead of what the collector has (or will never get).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::ops::Bound;
use std::sync::Arc;

use tokio::sync::watch;

use crate::health::{AgentCounters, Records};
use crate::receipt::{DropReason, Fate, Tracker};
use crate::state::write_atomic;
use std::path::{Path, PathBuf};

/// Magic bytes at the start of every batch file (format 2).
pub const MAGIC: &[u8; 4] = b"SLB2";
/// Magic, CRC-32 of what follows, length of the metadata.
const HEADER_LEN: usize = 4 + 4 + 4;
/// The most metadata a batch file may carry (cursor included).
const MAX_META: usize = 64 << 10;
const BATCH_EXT: &str = "batch";
const LAST_SEQ_FILE: &str = "last_seq";
const INSTANCE_FILE: &str = "instance";
const BOOT_ID_FILE: &str = "boot_id";
const UNREPORTED_FILE: &str = "unreported_drops";
const CURSORS_DIR: &str = "cursors";
/// Settled batch files kept for reuse, at most.
const MAX_SPARES: usize = 4;
/// The largest batch the collector accepts (its gRPC message limit, 4 MiB,
/// less room for framing). A larger one could never be delivered.
pub const MAX_BATCH_BYTES: usize = (4 << 20) - 1024;
/// The newest batches are also kept in memory, up to this many bytes (and
/// the newest one whatever its size), so the transport need not read back
/// and check what it was just given: 2 MiB holds a couple of full log
/// batches, more once compressed.
const CACHE_BYTES: usize = 2 << 20;

/// How hard the spool works to keep a batch through a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// Atomic renames: survives the agent being killed, not a power cut.
    Normal,
    /// Also fsync every file and its folder: survives a power cut.
    Full,
}

/// What a product wants when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpoolFull {
    /// Drop the oldest batches (counted and reported): for metrics, where
    /// the newest readings matter most.
    #[default]
    DropOldest,
    /// Wait for room: the source waits (for logs, the files are the buffer).
    Block,
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

/// Where a batch sits in the spool: its instance's place among the
/// instances of this folder (`epoch`, oldest first), then its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The instance's place among the instances of this folder, oldest first.
    pub epoch: u32,
    /// The sequence number within the instance.
    pub seq: u64,
}

/// Batches dropped (to make room, damaged, refused, or never spooled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// How many batches.
    pub batches: u64,
    /// How many bytes of batch files.
    pub bytes: u64,
    /// The lowest sequence number dropped (0 when none was numbered).
    pub first_seq: u64,
    /// The highest sequence number dropped (0 when none was numbered).
    pub last_seq: u64,
}

impl Dropped {
    fn add(&mut self, seq: u64, bytes: u64) {
        if self.last_seq == 0 || seq < self.first_seq {
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
        if other.last_seq != 0 {
            if self.last_seq == 0 || other.first_seq < self.first_seq {
                self.first_seq = other.first_seq;
            }
            self.last_seq = self.last_seq.max(other.last_seq);
        }
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
            first_seq: self.first_seq.max(reported.last_seq + 1).min(self.last_seq),
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
    key: Key,
    /// The drops it reports.
    covers: Dropped,
}

/// What a batch carries besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct BatchMeta {
    /// The source that sent it.
    pub source: Arc<str>,
    /// How many of the source's records it holds (for per-source counts).
    pub records: u64,
    /// The source's opaque position after this batch.
    pub cursor: Option<Vec<u8>>,
}

/// What [`Spool::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Where the new batch went (its sequence number is `key.seq`).
    pub key: Key,
    /// Whether it was kept (a batch too large to keep or send is not).
    pub kept: bool,
    /// What was dropped to make room for it (or itself).
    pub dropped: Dropped,
}

/// What [`Spool::settle_through`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Through {
    /// Batches removed as already stored.
    pub settled: usize,
    /// The collector holds numbers above what this spool ever assigned for
    /// the instance: nothing above this spool's own numbering was removed,
    /// and new batches go to a new instance.
    pub beyond_numbering: Option<u64>,
}

/// Where a source stands, for it to resume after a restart.
#[derive(Debug, Clone)]
pub struct Resume {
    /// The cursor of the newest batch settled (acked, or dropped for good)
    /// with every older one: a checkpoint may move here.
    pub acked: Option<Vec<u8>>,
    /// The cursor of the newest batch still in the spool: read on after it.
    pub spooled: Option<Vec<u8>>,
    /// Every newer `acked` cursor, as the collector acknowledges batches
    /// (also those spooled before this process started).
    pub acked_updates: watch::Receiver<Option<Vec<u8>>>,
}

#[derive(Debug)]
struct Entry {
    len: u64,
    meta: BatchMeta,
    tracker: Option<Arc<Tracker>>,
    /// Appended by this process (not found at open).
    appended_here: bool,
}

#[derive(Debug)]
struct CursorState {
    /// The newest settled cursor not yet persisted because an older batch
    /// of the source is still in the spool.
    pending: Option<(Key, Vec<u8>)>,
    /// The key of the persisted cursor.
    persisted: Option<Key>,
    tx: watch::Sender<Option<Vec<u8>>>,
}

/// How to open a spool.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Most bytes of batch files.
    pub max_bytes: u64,
    /// See [`Sync`].
    pub sync: Sync,
    /// The host's current boot id (see [`crate::identity::boot_id`]); with
    /// [`Sync::Normal`], a different one than last time starts a new
    /// instance. `None`: no reboot detection.
    pub boot_id: Option<String>,
    /// Where per-source counts go.
    pub counters: Option<Arc<AgentCounters>>,
}

impl SpoolOptions {
    /// Options with no reboot detection and no counters.
    pub fn new(max_bytes: u64, sync: Sync) -> SpoolOptions {
        SpoolOptions {
            max_bytes,
            sync,
            boot_id: None,
            counters: None,
        }
    }
}

/// The spool of one agent, in `<data.dir>/spool`.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    sync: Sync,
    counters: Option<Arc<AgentCounters>>,
    entries: BTreeMap<Key, Entry>,
    bytes: u64,
    /// Instance ids by epoch: the current one and those with batches here.
    instances: BTreeMap<u32, String>,
    /// The epoch new batches are numbered in.
    current: u32,
    /// The highest sequence number assigned in the current instance.
    last_seq: u64,
    /// The value of `last_seq` on disk.
    persisted_last_seq: u64,
    /// The `last_seq` file, kept open in [`Sync::Normal`] mode.
    last_seq_file: Option<fs::File>,
    /// Files of settled batches kept for reuse (`spare-<n>.tmp`, with
    /// their lengths): see [`Spool::write_batch`].
    spares: Vec<(PathBuf, u64)>,
    /// The number of the next spare's name.
    spare_names: u64,
    /// Drops the collector has not acknowledged a report of.
    unreported: Dropped,
    /// The report in flight, if any.
    report: Option<Report>,
    /// The newest batches' bytes, oldest first, at most [`CACHE_BYTES`].
    cache: VecDeque<(Key, Vec<u8>)>,
    cache_bytes: usize,
    /// Batches sent and not yet acked: never evicted.
    in_flight: BTreeSet<Key>,
    /// Persisted cursors by source, loaded at open.
    cursors_on_disk: BTreeMap<String, (Key, Vec<u8>)>,
    cursors: BTreeMap<Arc<str>, CursorState>,
    /// Cursor files kept open to be written in place ([`write_cursor`]).
    cursor_files: BTreeMap<Arc<str>, fs::File>,
}

/// A batch file's header, parsed.
struct Header {
    instance: String,
    seq: u64,
    meta: BatchMeta,
}

impl Spool {
    /// Opens (or creates) the spool in `dir` with no reboot detection and
    /// no counters.
    pub fn open(dir: &Path, max_bytes: u64, sync: Sync) -> Result<Spool, SpoolError> {
        Spool::open_with(dir, SpoolOptions::new(max_bytes, sync))
    }

    /// Opens (or creates) the spool in `dir`, removing half-written files
    /// left by a crash and counting damaged (or old-format) ones as drops.
    pub fn open_with(dir: &Path, options: SpoolOptions) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut entries = BTreeMap::new();
        let mut instances = BTreeMap::new();
        let mut bytes = 0;
        let mut damaged = Dropped::default();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
                continue;
            };
            match ext {
                BATCH_EXT => {}
                // A batch that was being written when the agent died.
                "tmp" => {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    continue;
                }
                _ => continue,
            }
            let len = entry.metadata().map_err(io_err(&path))?.len();
            let key = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(parse_file_name);
            let header = read_header(&path);
            match (key, header) {
                (Some(key), Some(h))
                    if h.seq == key.seq
                        && instances.get(&key.epoch).is_none_or(|id| *id == h.instance) =>
                {
                    instances.insert(key.epoch, h.instance);
                    entries.insert(
                        key,
                        Entry {
                            len,
                            meta: h.meta,
                            tracker: None,
                            appended_here: false,
                        },
                    );
                    bytes += len;
                }
                (key, _) => {
                    tracing::warn!(file = %path.display(), "Spooled batch is damaged or of an older format; dropping it.");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    damaged.add(key.map_or(0, |k| k.seq), len);
                }
            }
        }
        let instance_file = read_small(&dir.join(INSTANCE_FILE))?.and_then(|t| {
            let mut fields = t.split_whitespace();
            let id = fields.next().filter(|id| is_instance_id(id))?.to_string();
            let epoch = match fields.next() {
                Some(g) => g.parse::<u32>().ok()?,
                None => 1,
            };
            Some((epoch, id))
        });
        let last_seq_record: Option<(Option<u32>, u64)> = read_small(&dir.join(LAST_SEQ_FILE))?
            .and_then(|t| {
                let fields: Vec<&str> = t.split_whitespace().collect();
                match fields.as_slice() {
                    [seq] => Some((None, seq.parse().ok()?)),
                    [epoch, seq] => Some((Some(epoch.parse().ok()?), seq.parse().ok()?)),
                    _ => None,
                }
            });
        // `unreported` (4 numbers), then the report in flight: its epoch and
        // seq and the 4 numbers it covers (epoch 0 when none).
        let fields: Vec<u64> = read_small(&dir.join(UNREPORTED_FILE))?
            .map(|t| {
                t.split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let unreported = Dropped::from_fields(&fields).unwrap_or_default();
        let report = match (fields.get(4), fields.get(5)) {
            (Some(&epoch), Some(&seq)) if epoch != 0 => {
                let key = Key {
                    epoch: u32::try_from(epoch).unwrap_or(0),
                    seq,
                };
                entries
                    .contains_key(&key)
                    .then(|| Dropped::from_fields(fields.get(6..)?))
                    .flatten()
                    .map(|covers| Report { key, covers })
            }
            _ => None,
        };
        let newest_epoch = entries
            .keys()
            .map(|k| k.epoch)
            .chain(instance_file.iter().map(|(g, _)| *g))
            .chain(last_seq_record.and_then(|(g, _)| g))
            .max()
            .unwrap_or(0);
        let boot_file = dir.join(BOOT_ID_FILE);
        let previous_boot = read_small(&boot_file)?.map(|t| t.trim().to_string());
        let rebooted = options.sync == Sync::Normal
            && matches!((&previous_boot, &options.boot_id), (Some(a), Some(b)) if a != b);

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes: options.max_bytes,
            sync: options.sync,
            counters: options.counters,
            entries,
            bytes,
            instances,
            current: 0,
            last_seq: 0,
            persisted_last_seq: 0,
            last_seq_file: None,
            spares: Vec::new(),
            spare_names: 0,
            unreported,
            report,
            cache: VecDeque::new(),
            cache_bytes: 0,
            in_flight: BTreeSet::new(),
            cursors_on_disk: read_cursors(&dir.join(CURSORS_DIR)),
            cursor_files: BTreeMap::new(),
            cursors: BTreeMap::new(),
        };
        let kept = instance_file.filter(|(epoch, id)| {
            spool.instances.get(epoch).is_none_or(|have| have == id)
                && spool
                    .instances
                    .iter()
                    .all(|(g, have)| g == epoch || have != id)
        });
        match kept {
            Some((epoch, id)) if !rebooted => {
                let recorded = match last_seq_record {
                    Some((Some(g), seq)) if g == epoch => seq,
                    Some((None, seq)) => seq,
                    _ => 0,
                };
                let spooled = spool
                    .entries
                    .range(
                        Key { epoch, seq: 0 }..=Key {
                            epoch,
                            seq: u64::MAX,
                        },
                    )
                    .next_back()
                    .map_or(0, |(k, _)| k.seq);
                spool.current = epoch;
                spool.instances.insert(epoch, id);
                spool.last_seq = recorded.max(spooled);
                spool.persisted_last_seq = recorded;
            }
            Some(_) => {
                tracing::warn!(
                    "The host rebooted since the spool was last opened, and spool.sync=normal may have lost the record of its numbering; new batches start a new spool instance."
                );
                spool.rotate_to(newest_epoch + 1)?;
            }
            None => spool.rotate_to(newest_epoch + 1)?,
        }
        if !damaged.is_empty() {
            spool.note_dropped(damaged)?;
        }
        if let Some(boot_id) = options.boot_id
            && previous_boot.as_deref() != Some(boot_id.as_str())
        {
            write_atomic(&boot_file, format!("{boot_id}\n").as_bytes())?;
        }
        Ok(spool)
    }

    /// Starts a new instance for new batches, numbered from 1; batches
    /// already spooled keep theirs.
    fn rotate_to(&mut self, epoch: u32) -> Result<(), SpoolError> {
        let id = new_instance_id().map_err(io_err(&self.dir.join(INSTANCE_FILE)))?;
        write_atomic(
            &self.dir.join(INSTANCE_FILE),
            format!("{id} {epoch}\n").as_bytes(),
        )?;
        if !self.has_epoch(self.current) {
            self.instances.remove(&self.current);
        }
        self.instances.insert(epoch, id);
        self.current = epoch;
        self.last_seq = 0;
        self.persisted_last_seq = u64::MAX;
        self.persist_last_seq()
    }

    fn has_epoch(&self, epoch: u32) -> bool {
        self.entries
            .range(
                Key { epoch, seq: 0 }..=Key {
                    epoch,
                    seq: u64::MAX,
                },
            )
            .next()
            .is_some()
    }

    /// Starts a new instance now (see [`Spool::settle_through`]).
    pub fn rotate(&mut self) -> Result<(), SpoolError> {
        let newest = self.instances.keys().next_back().copied().unwrap_or(0);
        self.rotate_to(newest.max(self.current) + 1)
    }

    /// The epoch and id of the instance new batches are numbered in.
    pub fn current_instance(&self) -> (u32, &str) {
        (
            self.current,
            self.instances.get(&self.current).map_or("", String::as_str),
        )
    }

    /// The id of instance `epoch`, while it is current or has batches here.
    pub fn instance(&self, epoch: u32) -> Option<&str> {
        self.instances.get(&epoch).map(String::as_str)
    }

    /// The instance the transport should deliver now: the oldest batch's,
    /// or the current one when the spool is empty.
    pub fn oldest_instance(&self) -> (u32, String) {
        let epoch = self.entries.keys().next().map_or(self.current, |k| k.epoch);
        (epoch, self.instance(epoch).unwrap_or_default().to_string())
    }

    /// Whether a new batch file of `len` bytes fits without evicting
    /// anything (always true of an empty spool: a batch too large for it is
    /// dropped by [`Spool::append`], not waited for).
    pub fn has_room(&self, len: u64) -> bool {
        self.entries.is_empty() || self.bytes + len <= self.max_bytes
    }

    /// The file size of a batch whose encoded bytes are `payload_len` long.
    pub fn file_len(payload_len: usize, meta: &BatchMeta) -> u64 {
        (HEADER_LEN + meta_len(meta) + payload_len) as u64
    }

    /// Writes a new batch. `encode` receives the batch's sequence number and
    /// returns its bytes. Drops the oldest batches not in flight when the
    /// spool would exceed its limit. A batch that can never be kept or sent
    /// (larger than the spool, or than [`MAX_BATCH_BYTES`]) is dropped
    /// itself, and counted, without evicting anything for it. `tracker`
    /// hears that the batch was spooled (or dropped), and later its fate.
    pub fn append(
        &mut self,
        meta: BatchMeta,
        tracker: Option<Arc<Tracker>>,
        encode: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<Appended, SpoolError> {
        let seq = self.last_seq + 1;
        let key = Key {
            epoch: self.current,
            seq,
        };
        let payload = encode(seq);
        let file_len = Spool::file_len(payload.len(), &meta);
        self.last_seq = seq;
        let keep = file_len <= self.max_bytes && payload.len() <= MAX_BATCH_BYTES;
        let mut dropped = Dropped::default();
        if keep {
            while self.bytes + file_len > self.max_bytes {
                let Some(oldest) = self
                    .entries
                    .keys()
                    .find(|k| !self.in_flight.contains(k))
                    .copied()
                else {
                    break;
                };
                let len = self.entries.get(&oldest).map_or(0, |e| e.len);
                self.persist_last_seq()?;
                self.unlink(oldest, Fate::Dropped(DropReason::SpoolFull))?;
                dropped.add(oldest.seq, len);
            }
        } else {
            tracing::warn!(
                seq,
                bytes = payload.len(),
                "Batch too large to keep or send; dropped."
            );
            dropped.add(seq, file_len);
            self.count_records(&meta.source, Records::Dropped, meta.records);
            if let Some(t) = &tracker {
                t.part_dropped_unspooled(DropReason::TooLarge);
            }
        }
        // Counted before the write, so a failed write cannot lose the count.
        if !dropped.is_empty() {
            self.persist_last_seq()?;
            self.note_dropped(dropped)?;
        }
        if keep {
            if let Err(e) = self.write_batch(key, &meta, &payload) {
                let mut lost = Dropped::default();
                lost.add(seq, file_len);
                let _ = self.note_dropped(lost);
                self.count_records(&meta.source, Records::Dropped, meta.records);
                if let Some(t) = &tracker {
                    t.part_dropped_unspooled(DropReason::Damaged);
                }
                return Err(e);
            }
            self.count_records(&meta.source, Records::Sent, meta.records);
            if let Some(t) = &tracker {
                t.part_spooled();
            }
            self.entries.insert(
                key,
                Entry {
                    len: file_len,
                    meta,
                    tracker,
                    appended_here: true,
                },
            );
            self.bytes += file_len;
            self.remember(key, payload);
        }
        Ok(Appended {
            key,
            kept: keep,
            dropped,
        })
    }

    fn count_records(&self, source: &str, which: Records, n: u64) {
        if let Some(c) = &self.counters {
            c.records(source, which, n);
        }
    }

    /// Counts drops: in the agent's counters, and in the drops to report.
    fn note_dropped(&mut self, dropped: Dropped) -> Result<(), SpoolError> {
        if let Some(c) = &self.counters {
            AgentCounters::add(&c.batches_dropped, dropped.batches);
            AgentCounters::add(&c.bytes_dropped, dropped.bytes);
        }
        self.unreported.merge(dropped);
        self.persist_drops()
    }

    /// Counts batches that never reached the spool (queued when the agent
    /// stopped, say): reported like any other drop, by the next run if need be.
    pub fn count_unspooled(&mut self, batches: u64, bytes: u64) -> Result<(), SpoolError> {
        if batches == 0 {
            return Ok(());
        }
        self.note_dropped(Dropped {
            batches,
            bytes,
            first_seq: 0,
            last_seq: 0,
        })
    }

    fn persist_drops(&self) -> Result<(), SpoolError> {
        let mut fields: Vec<u64> = self.unreported.fields().to_vec();
        if let Some(report) = self.report {
            fields.push(report.key.epoch.into());
            fields.push(report.key.seq);
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
        meta: BatchMeta,
        encode: impl FnOnce(u64, Dropped) -> Vec<u8>,
    ) -> Result<Appended, SpoolError> {
        let covers = self.unreported;
        let appended = self.append(meta, None, |seq| encode(seq, covers))?;
        if self.entries.contains_key(&appended.key) {
            self.report = Some(Report {
                key: appended.key,
                covers,
            });
            self.persist_drops()?;
        }
        Ok(appended)
    }

    /// Takes a batch out of the spool with its fate: acknowledged by the
    /// collector, or dropped (refused for good, damaged), which is counted
    /// and reported like any other loss. Its receipt, its source's counts
    /// and its source's cursor follow.
    pub fn settle(&mut self, key: Key, fate: Fate) -> Result<(), SpoolError> {
        let Some(len) = self.entries.get(&key).map(|e| e.len) else {
            return Ok(());
        };
        if let Fate::Dropped(reason) = &fate {
            tracing::debug!(seq = key.seq, reason = %reason, "Batch dropped from the spool.");
            self.persist_last_seq()?;
            self.unlink(key, fate)?;
            let mut dropped = Dropped::default();
            dropped.add(key.seq, len);
            return self.note_dropped(dropped);
        }
        if key.epoch == self.current && self.entries.keys().next_back() == Some(&key) {
            self.persist_last_seq()?;
        }
        self.unlink(key, fate)
    }

    /// Takes out every batch of instance `epoch` up to `seq` (the collector
    /// says it has stored them). Never removes anything above what this
    /// spool numbered in its current instance: if the collector holds more
    /// (this spool's record of its numbering was lost), those batches are
    /// kept and new batches start a new instance. (An older instance is no
    /// longer numbered in, so the collector holding more of it is normal:
    /// its newest batches were acked and removed before.)
    pub fn settle_through(&mut self, epoch: u32, seq: u64) -> Result<Through, SpoolError> {
        let (through, beyond) = if epoch == self.current {
            (seq.min(self.last_seq), (seq > self.last_seq).then_some(seq))
        } else {
            (seq, None)
        };
        let done: Vec<Key> = self
            .entries
            .range(
                Key { epoch, seq: 0 }..=Key {
                    epoch,
                    seq: through,
                },
            )
            .map(|(&k, _)| k)
            .collect();
        self.persist_last_seq()?;
        for key in &done {
            self.unlink(*key, Fate::Acked)?;
        }
        if beyond.is_some() {
            self.rotate()?;
        }
        Ok(Through {
            settled: done.len(),
            beyond_numbering: beyond,
        })
    }

    /// The one way out: unlinks the file and resolves everything that
    /// waited on the batch.
    fn unlink(&mut self, key: Key, fate: Fate) -> Result<(), SpoolError> {
        let path = self.batch_path(key);
        let len = self.entries.get(&key).map_or(0, |e| e.len);
        self.remove_batch_file(path, len)?;
        self.in_flight.remove(&key);
        if let Some(at) = self.cache.iter().position(|(k, _)| *k == key)
            && let Some((_, bytes)) = self.cache.remove(at)
        {
            self.cache_bytes -= bytes.len();
        }
        let Some(entry) = self.entries.remove(&key) else {
            return Ok(());
        };
        self.bytes -= entry.len;
        if key.epoch != self.current && !self.has_epoch(key.epoch) {
            self.instances.remove(&key.epoch);
        }
        if let Some(report) = self.report.filter(|r| r.key == key) {
            if fate == Fate::Acked {
                // Delivered: the drops it reported are settled.
                self.unreported = self.unreported.minus(report.covers);
            }
            // Dropped: its drops are to be reported again.
            self.report = None;
            self.persist_drops()?;
        }
        let which = match fate {
            Fate::Acked => Records::Acked,
            Fate::Dropped(_) => Records::Dropped,
        };
        self.count_records(&entry.meta.source, which, entry.meta.records);
        self.advance_cursor(key, &entry.meta)?;
        if let Some(tracker) = entry.tracker {
            tracker.part_settled(fate);
        }
        Ok(())
    }

    /// After `key` of `meta.source` is settled: persists the source's
    /// newest settled cursor once no older batch of the source remains.
    fn advance_cursor(&mut self, key: Key, meta: &BatchMeta) -> Result<(), SpoolError> {
        let source = &meta.source;
        let pending = self
            .cursors
            .get(source)
            .is_some_and(|c| c.pending.is_some());
        if meta.cursor.is_none() && !pending {
            return Ok(());
        }
        let on_disk = self.cursors_on_disk.get(&**source).map(|(k, _)| *k);
        let state = self
            .cursors
            .entry(source.clone())
            .or_insert_with(|| CursorState {
                pending: None,
                persisted: on_disk,
                tx: watch::channel(None).0,
            });
        if let Some(cursor) = &meta.cursor
            && state.pending.as_ref().is_none_or(|(k, _)| key > *k)
            && state.persisted.is_none_or(|k| key > k)
        {
            state.pending = Some((key, cursor.clone()));
        }
        let Some((pending_key, _)) = &state.pending else {
            return Ok(());
        };
        let older_left = self
            .entries
            .range(..*pending_key)
            .any(|(_, e)| e.meta.source == *source);
        if older_left {
            return Ok(());
        }
        let Some((pending_key, cursor)) = state.pending.take() else {
            return Ok(());
        };
        let record = cursor_record(pending_key, &cursor);
        write_cursor(
            &self.dir.join(CURSORS_DIR),
            &mut self.cursor_files,
            source,
            &record,
            self.sync,
        )?;
        state.persisted = Some(pending_key);
        state.tx.send_replace(Some(cursor.clone()));
        self.cursors_on_disk
            .insert(source.to_string(), (pending_key, cursor));
        Ok(())
    }

    /// Where `source` stands: its newest settled cursor, its newest cursor
    /// still spooled, and a subscription to the settled ones to come.
    pub fn resume(&mut self, source: &str) -> Resume {
        let acked = self.cursors_on_disk.get(source).map(|(_, c)| c.clone());
        let spooled = self
            .entries
            .values()
            .rev()
            .find(|e| &*e.meta.source == source && e.meta.cursor.is_some())
            .and_then(|e| e.meta.cursor.clone());
        let on_disk = self.cursors_on_disk.get(source).map(|(k, _)| *k);
        let state = self
            .cursors
            .entry(Arc::from(source))
            .or_insert_with(|| CursorState {
                pending: None,
                persisted: on_disk,
                tx: watch::channel(acked.clone()).0,
            });
        if state.tx.borrow().is_none() && acked.is_some() {
            state.tx.send_replace(acked.clone());
        }
        Resume {
            acked,
            spooled,
            acked_updates: state.tx.subscribe(),
        }
    }

    /// The transport sent this batch: it is not evicted until settled.
    pub fn mark_in_flight(&mut self, key: Key) {
        if self.entries.contains_key(&key) {
            self.in_flight.insert(key);
        }
    }

    /// The session ended: nothing is in flight any more.
    pub fn clear_in_flight(&mut self) {
        self.in_flight.clear();
    }

    /// Takes a batch file out of the folder: kept as a spare when there is
    /// room for one (and the spool need not fsync), else unlinked.
    fn remove_batch_file(&mut self, path: PathBuf, len: u64) -> Result<(), SpoolError> {
        if self.sync == Sync::Normal && self.spares.len() < MAX_SPARES {
            let spare = self.dir.join(format!("spare-{}.tmp", self.spare_names));
            match fs::rename(&path, &spare) {
                Ok(()) => {
                    self.spare_names += 1;
                    self.spares.push((spare, len));
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                // Unlinking may still work.
                Err(_) => {}
            }
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Writes `contents` as the batch file `path` through a spare: written
    /// over in place (cut to length), then renamed. `false` when there is
    /// no spare or it failed (it is then removed, and the caller writes a
    /// new file).
    fn write_through_spare(&mut self, path: &Path, contents: &[u8]) -> bool {
        let Some((spare, spare_len)) = self.spares.pop() else {
            return false;
        };
        let written = fs::OpenOptions::new()
            .write(true)
            .open(&spare)
            .and_then(|file| {
                write_all_at(&file, contents, 0)?;
                if (contents.len() as u64) < spare_len {
                    file.set_len(contents.len() as u64)?;
                }
                Ok(())
            })
            .and_then(|()| fs::rename(&spare, path));
        match written {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(file = %spare.display(), error = %e, "Cannot reuse a spare batch file; writing a new one.");
                let _ = fs::remove_file(&spare);
                false
            }
        }
    }

    fn write_batch(
        &mut self,
        key: Key,
        meta: &BatchMeta,
        payload: &[u8],
    ) -> Result<(), SpoolError> {
        let instance = self.instances.get(&key.epoch).map_or("", String::as_str);
        // Header (magic, CRC placeholder, metadata length), then the body:
        // metadata and payload, written once; the CRC covers the body.
        let mut contents = Vec::with_capacity(HEADER_LEN + meta_len(meta) + payload.len());
        contents.extend_from_slice(MAGIC);
        contents.extend_from_slice(&[0; 8]);
        encode_meta(&mut contents, instance, key.seq, meta);
        let meta_bytes = contents.len() - HEADER_LEN;
        contents.extend_from_slice(payload);
        let crc = crc32fast::hash(&contents[HEADER_LEN..]);
        contents[4..8].copy_from_slice(&crc.to_le_bytes());
        contents[8..12].copy_from_slice(&(meta_bytes as u32).to_le_bytes());
        let path = self.batch_path(key);
        if self.sync == Sync::Normal && self.write_through_spare(&path, &contents) {
            return Ok(());
        }
        write_file(&path, &contents, self.sync)
    }

    fn remember(&mut self, key: Key, payload: Vec<u8>) {
        self.cache_bytes += payload.len();
        self.cache.push_back((key, payload));
        while self.cache_bytes > CACHE_BYTES && self.cache.len() > 1 {
            let Some((_, old)) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= old.len();
        }
    }

    /// Whether the batch was appended by this process: its bytes are what
    /// this build encoded (and a read checks they still are), so they need
    /// no check that they decode. A batch found at open may be of another
    /// build, or written wrong by one.
    pub fn appended_here(&self, key: Key) -> bool {
        self.entries.get(&key).is_some_and(|e| e.appended_here)
    }

    /// A batch's bytes if it is among the newest, held in memory: taken
    /// out of memory (the transport asks once per batch; a resend after a
    /// lost connection reads the file).
    pub fn cached(&mut self, key: Key) -> Option<Vec<u8>> {
        let at = self.cache.iter().position(|(k, _)| *k == key)?;
        let (_, bytes) = self.cache.remove(at)?;
        self.cache_bytes -= bytes.len();
        Some(bytes)
    }

    fn write(&self, name: &str, contents: &[u8]) -> Result<(), SpoolError> {
        write_file(&self.dir.join(name), contents, self.sync)
    }

    /// Reads a batch's bytes. A damaged file is settled as dropped
    /// ([`DropReason::Damaged`]), and `None` is returned, as for a batch no
    /// longer there.
    pub fn read(&mut self, key: Key) -> Result<Option<Vec<u8>>, SpoolError> {
        if !self.entries.contains_key(&key) {
            return Ok(None);
        }
        let path = self.batch_path(key);
        let contents = match fs::read(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.settle(key, Fate::Dropped(DropReason::Damaged))?;
                return Ok(None);
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if let Some(payload) = check_file(&contents) {
            return Ok(Some(payload.to_vec()));
        }
        tracing::warn!(file = %path.display(), "Spooled batch is damaged; dropping it.");
        self.settle(key, Fate::Dropped(DropReason::Damaged))?;
        Ok(None)
    }

    /// Records the highest sequence number assigned, with its instance's
    /// epoch. In [`Sync::Normal`] mode it overwrites a fixed-width record in a
    /// file kept open: one `pwrite`, which a killed process cannot leave
    /// half done. In [`Sync::Full`] mode it goes through fsync and rename.
    fn persist_last_seq(&mut self) -> Result<(), SpoolError> {
        if self.persisted_last_seq == self.last_seq {
            return Ok(());
        }
        let record = format!("{:010} {:020}\n", self.current, self.last_seq);
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
                    write_all_at(file, record.as_bytes(), 0).map_err(io_err(&path))?;
                }
            }
        }
        self.persisted_last_seq = self.last_seq;
        Ok(())
    }

    /// The oldest batch after `after` (`None`: the oldest of all).
    pub fn next_after(&self, after: Option<Key>) -> Option<Key> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.entries
            .range((from, Bound::Unbounded))
            .next()
            .map(|(&k, _)| k)
    }

    /// The highest sequence number assigned so far in the current instance.
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

    fn batch_path(&self, key: Key) -> PathBuf {
        self.dir
            .join(format!("{:010}-{:020}.{BATCH_EXT}", key.epoch, key.seq))
    }
}

fn parse_file_name(stem: &str) -> Option<Key> {
    let (epoch, seq) = stem.split_once('-')?;
    Some(Key {
        epoch: epoch.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

fn meta_len(meta: &BatchMeta) -> usize {
    1 + 32 + 8 + 8 + 2 + meta.source.len() + 1 + 4 + meta.cursor.as_ref().map_or(0, Vec::len)
}

/// Instance (length, text), seq, records, source (length, text), cursor
/// (flag, length, bytes); integers little endian.
fn encode_meta(out: &mut Vec<u8>, instance: &str, seq: u64, meta: &BatchMeta) {
    let instance = &instance.as_bytes()[..instance.len().min(255)];
    out.push(instance.len() as u8);
    out.extend_from_slice(instance);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&meta.records.to_le_bytes());
    let source = &meta.source.as_bytes()[..meta.source.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(source.len() as u16).to_le_bytes());
    out.extend_from_slice(source);
    match &meta.cursor {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(c);
        }
        None => {
            out.push(0);
            out.extend_from_slice(&0u32.to_le_bytes());
        }
    }
}

fn decode_meta(bytes: &[u8]) -> Option<(String, u64, BatchMeta)> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = bytes.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let ilen = *take(1)?.first()? as usize;
    let instance = std::str::from_utf8(take(ilen)?).ok()?.to_string();
    let seq = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let records = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let slen = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let source: Arc<str> = Arc::from(std::str::from_utf8(take(slen)?).ok()?);
    let has_cursor = *take(1)?.first()? == 1;
    let clen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let cursor = take(clen)?.to_vec();
    Some((
        instance,
        seq,
        BatchMeta {
            source,
            records,
            cursor: has_cursor.then_some(cursor),
        },
    ))
}

/// Reads the header of a batch file (not its payload: the CRC is checked
/// when the batch is read).
fn read_header(path: &Path) -> Option<Header> {
    let mut file = fs::File::open(path).ok()?;
    let mut head = [0u8; HEADER_LEN];
    file.read_exact(&mut head).ok()?;
    if &head[..4] != MAGIC {
        return None;
    }
    let meta_len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    if meta_len > MAX_META {
        return None;
    }
    let mut meta = vec![0u8; meta_len];
    file.read_exact(&mut meta).ok()?;
    let (instance, seq, meta) = decode_meta(&meta)?;
    is_instance_id(&instance).then_some(Header {
        instance,
        seq,
        meta,
    })
}

/// One batch file as read from disk, for tools and tests that look into a
/// spool folder without opening the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledFile {
    /// The spool instance the batch belongs to.
    pub instance: String,
    /// Its sequence number within that instance.
    pub seq: u64,
    /// The encoded `Batch` (decompressed if it was spooled compressed).
    pub batch: Vec<u8>,
}

/// Reads one `.batch` file: `None` when it is not a whole, undamaged batch
/// file of this format.
pub fn read_spooled_file(path: &Path) -> Option<SpooledFile> {
    let contents = fs::read(path).ok()?;
    let batch = check_file(&contents)?;
    let meta_len = contents.len() - HEADER_LEN - batch.len();
    let (instance, seq, _) = decode_meta(&contents[HEADER_LEN..HEADER_LEN + meta_len])?;
    let batch = crate::transport::wire::uncompressed(
        batch.to_vec(),
        crate::transport::endpoint::MAX_MESSAGE_BYTES,
    )
    .ok()?;
    Some(SpooledFile {
        instance,
        seq,
        batch,
    })
}

/// The payload of a whole batch file, if its CRC holds.
fn check_file(contents: &[u8]) -> Option<&[u8]> {
    if contents.len() < HEADER_LEN || &contents[..4] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(contents[4..8].try_into().ok()?);
    let meta_len = u32::from_le_bytes(contents[8..12].try_into().ok()?) as usize;
    let body = &contents[HEADER_LEN..];
    if crc32fast::hash(body) != crc {
        return None;
    }
    body.get(meta_len..)
}

fn is_instance_id(text: &str) -> bool {
    text.len() == 32 && text.chars().all(|c| c.is_ascii_hexdigit())
}

fn new_instance_id() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn cursor_file_name(source: &str) -> String {
    let hex: String = source.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.cursor")
}

/// The start of a cursor record with a length and a CRC: one that may be
/// followed by the rest of a longer, older record ([`write_cursor`]).
const CURSOR_MAGIC: &[u8; 4] = b"SLC2";
/// A record this large at most is written in place: one `pwrite` within
/// the file's first page, which a killed process cannot leave half done.
const CURSOR_IN_PLACE_BYTES: usize = 4096;

/// A cursor file's contents: [`CURSOR_MAGIC`], the length of the cursor,
/// a CRC-32 of what follows it, the batch's epoch and seq, the cursor
/// (integers little endian).
fn cursor_record(key: Key, cursor: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(24 + cursor.len());
    record.extend_from_slice(CURSOR_MAGIC);
    record.extend_from_slice(
        &u32::try_from(cursor.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&key.epoch.to_le_bytes());
    record.extend_from_slice(&key.seq.to_le_bytes());
    record.extend_from_slice(cursor);
    let crc = crc32fast::hash(&record[12..]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    record
}

/// A cursor record as read: the key and the cursor. Files of the first
/// format (epoch, seq, then the cursor to the end) are read too.
fn parse_cursor_record(bytes: &[u8]) -> Option<(Key, Vec<u8>)> {
    let key = |b: &[u8]| -> Option<Key> {
        Some(Key {
            epoch: u32::from_le_bytes(b.get(..4)?.try_into().ok()?),
            seq: u64::from_le_bytes(b.get(4..12)?.try_into().ok()?),
        })
    };
    if bytes.starts_with(CURSOR_MAGIC) {
        let len = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
        let body = bytes.get(12..24usize.checked_add(len)?)?;
        if crc32fast::hash(body) != crc {
            return None;
        }
        return Some((key(body)?, body[12..].to_vec()));
    }
    Some((key(bytes)?, bytes.get(12..)?.to_vec()))
}

/// Persists a source's cursor record. With [`Sync::Normal`] a record of
/// at most [`CURSOR_IN_PLACE_BYTES`] is written over the start of the file,
/// kept open (what a longer record left after it is ignored: the record
/// says its length): no new file and no rename for every settled batch,
/// which cost the log agent 8 % of its CPU. Else the file is replaced
/// whole (temporary file, rename; fsynced with [`Sync::Full`]).
fn write_cursor(
    dir: &Path,
    open: &mut BTreeMap<Arc<str>, fs::File>,
    source: &Arc<str>,
    record: &[u8],
    sync: Sync,
) -> Result<(), SpoolError> {
    let path = dir.join(cursor_file_name(source));
    if sync == Sync::Normal && record.len() <= CURSOR_IN_PLACE_BYTES {
        if !open.contains_key(source) {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            let file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err(&path))?;
            open.insert(source.clone(), file);
        }
        if let Some(file) = open.get(source) {
            return write_all_at(file, record, 0).map_err(io_err(&path));
        }
    }
    // The file is replaced: a handle kept would write to the old one.
    open.remove(source);
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_file(&path, record, sync)
}

/// Writes all of `buf` at `offset` of `file` (`pwrite`; on Windows a
/// positioned write, which also moves the file's cursor, unused here).
#[cfg(unix)]
fn write_all_at(file: &fs::File, buf: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(buf, offset)
}

/// Writes all of `buf` at `offset` of `file` (`pwrite`; on Windows a
/// positioned write, which also moves the file's cursor, unused here).
#[cfg(windows)]
fn write_all_at(file: &fs::File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_cursors(dir: &Path) -> BTreeMap<String, (Key, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let Ok(list) = fs::read_dir(dir) else {
        return out;
    };
    for entry in list.flatten() {
        let path = entry.path();
        let Some(hex) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".cursor"))
        else {
            continue;
        };
        let name: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        let (Some(Ok(name)), Ok(bytes)) = (name.map(String::from_utf8), fs::read(&path)) else {
            continue;
        };
        if let Some(record) = parse_cursor_record(&bytes) {
            out.insert(name, record);
        }
    }
    out
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
