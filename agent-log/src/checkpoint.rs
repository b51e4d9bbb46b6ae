//! Checkpoints: per file, the highest offset below which everything the
//! agent shipped is acknowledged ([`Acks`]), and the file that keeps them
//! across restarts (`<data.dir>/log/checkpoints`, written whole to a
//! temporary name and renamed, so a crash leaves the old file or the new
//! one). Its existence also says the agent has run before: files present
//! at the very first start begin at `start=end|beginning`, later ones at 0.
//!
//! Invariants:
//! - An offset only moves forward over sends that are all settled: acks
//!   may arrive out of order, the checkpoint never passes an unsettled one.
//! - Nothing here reads a log file.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::identity::{Cursor, FileKey};

const HEADER: &str = "sightline-log checkpoints v1";

/// A checkpoint file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint file {path}: {source}", path = path.display())]
pub struct CheckpointError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// One file generation's entry: which group read it, its key, where it
/// stands (acknowledged), and the path it was last seen at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The group's name.
    pub group: String,
    /// Device and inode.
    pub key: FileKey,
    /// Where it stands: everything below is acknowledged.
    pub cursor: Cursor,
    /// Everything below this offset is at least in the spool (which keeps
    /// it through a crash), with the tail hash there; at or past `cursor`.
    pub spooled: Option<(u64, u64)>,
    /// Where it was last seen (for people reading the file).
    pub path: String,
}

/// The checkpoint file of one agent.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// The checkpoint file in `data_dir`.
    pub fn new(data_dir: &Path) -> CheckpointFile {
        CheckpointFile {
            path: data_dir.join("log").join("checkpoints"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved entries, or `None` when there is no checkpoint file (the
    /// agent's very first start). Lines that do not parse are skipped.
    pub fn load(&self) -> Option<Vec<Entry>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "Cannot read the checkpoints; files already known are read as if new.");
                return Some(Vec::new());
            }
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            tracing::warn!(file = %self.path.display(), "Checkpoint file of an unknown format; ignored.");
            return Some(Vec::new());
        }
        Some(lines.filter_map(parse_line).collect())
    }

    /// Writes `entries` atomically.
    pub fn save(&self, entries: &[Entry]) -> Result<(), CheckpointError> {
        let mut text = String::with_capacity(64 + entries.len() * 128);
        text.push_str(HEADER);
        text.push('\n');
        for e in entries {
            let path: String = e
                .path
                .chars()
                .map(|c| if c == '\n' || c == '\t' { '?' } else { c })
                .collect();
            let spooled = e
                .spooled
                .map_or_else(|| "-".to_string(), |(o, t)| format!("{o}:{t:016x}"));
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                e.group,
                e.key.dev,
                e.key.ino,
                e.cursor.encode(),
                spooled,
                path
            ));
        }
        let err = |source| CheckpointError {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        agent_core::state::write_atomic(&self.path, text.as_bytes()).map_err(|e| match e {
            agent_core::spool::SpoolError::Io { source, .. } => err(source),
        })
    }
}

fn parse_line(line: &str) -> Option<Entry> {
    let mut f = line.splitn(6, '\t');
    Some(Entry {
        group: f.next()?.to_string(),
        key: FileKey {
            dev: f.next()?.parse().ok()?,
            ino: f.next()?.parse().ok()?,
        },
        cursor: Cursor::decode(f.next()?)?,
        spooled: match f.next()? {
            "-" => None,
            text => {
                let (o, t) = text.split_once(':')?;
                Some((o.parse().ok()?, u64::from_str_radix(t, 16).ok()?))
            }
        },
        path: f.next().unwrap_or_default().to_string(),
    })
}

impl Entry {
    /// Where a reader resumes: after what is spooled, if that is further
    /// than what is acknowledged.
    pub fn resume_cursor(&self) -> Cursor {
        let mut c = self.cursor.clone();
        if let Some((offset, tail)) = self.spooled
            && offset > c.offset
        {
            c.offset = offset;
            c.tail = tail;
        }
        c
    }
}

/// One file generation's sends not yet settled, in order, and the offset
/// below which everything is settled.
#[derive(Debug, Clone, Default)]
pub struct Acks {
    /// (send number, end offset, tail hash, settled).
    pending: VecDeque<(u64, u64, u64, bool)>,
    /// Everything below is in the spool, and the tail hash there.
    spooled: (u64, u64),
    next: u64,
    /// Everything below is settled.
    acked: u64,
    /// The tail hash at `acked`.
    acked_tail: u64,
}

impl Acks {
    /// Nothing in flight; everything below `offset` counts as settled.
    pub fn at(offset: u64, tail: u64) -> Acks {
        Acks {
            acked: offset,
            acked_tail: tail,
            spooled: (offset, tail),
            ..Acks::default()
        }
    }

    /// A send covering everything below `end` left: its number.
    pub fn sent(&mut self, end: u64, tail: u64) -> u64 {
        let n = self.next;
        self.next += 1;
        self.pending.push_back((n, end, tail, false));
        n
    }

    /// Everything below `end` is shipped or filtered with nothing sent:
    /// it settles with the sends before it.
    pub fn skipped(&mut self, end: u64, tail: u64) {
        if self.pending.is_empty() {
            self.acked = self.acked.max(end);
            self.acked_tail = tail;
        } else {
            let n = self.sent(end, tail);
            self.settled(n);
        }
    }

    /// Send `n` is in the spool (sends are spooled in order).
    pub fn spooled(&mut self, n: u64) {
        if let Some(&(_, end, tail, _)) = self.pending.iter().find(|p| p.0 == n)
            && end > self.spooled.0
        {
            self.spooled = (end, tail);
        }
    }

    /// Everything below this offset is in the spool (or acknowledged).
    pub fn spooled_at(&self) -> (u64, u64) {
        if self.acked >= self.spooled.0 {
            (self.acked, self.acked_tail)
        } else {
            self.spooled
        }
    }

    /// Send `n` is settled; returns whether the acked offset moved.
    pub fn settled(&mut self, n: u64) -> bool {
        if let Some(p) = self.pending.iter_mut().find(|p| p.0 == n) {
            p.3 = true;
        }
        let mut moved = false;
        while let Some(&(_, end, tail, true)) = self.pending.front() {
            self.pending.pop_front();
            if end >= self.acked {
                self.acked = end;
                self.acked_tail = tail;
                moved = true;
            }
        }
        moved
    }

    /// Everything below this is settled.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The tail hash at [`Acks::acked`].
    pub fn acked_tail(&self) -> u64 {
        self.acked_tail
    }

    /// Whether every send is settled.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Entries by group name and key, for lookups at discovery.
pub fn by_key(entries: Vec<Entry>) -> BTreeMap<(String, FileKey), Entry> {
    entries
        .into_iter()
        .map(|e| ((e.group.clone(), e.key), e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Fingerprint;

    #[test]
    fn the_acked_offset_never_passes_an_unsettled_send() {
        let mut acks = Acks::at(10, 0);
        let a = acks.sent(20, 1);
        let b = acks.sent(30, 2);
        let c = acks.sent(40, 3);
        assert!(!acks.settled(b), "b settled before a: nothing moves");
        assert_eq!(acks.acked(), 10);
        assert!(acks.settled(a));
        assert_eq!((acks.acked(), acks.acked_tail()), (30, 2));
        acks.skipped(45, 9);
        assert_eq!(acks.acked(), 30, "a skip waits behind c");
        acks.settled(c);
        assert_eq!((acks.acked(), acks.acked_tail()), (45, 9));
        assert!(acks.is_idle());
        acks.skipped(50, 4);
        assert_eq!(acks.acked(), 50);
    }

    #[test]
    fn the_file_reads_back_what_was_saved_and_its_absence_means_first_start() {
        let dir = std::env::temp_dir().join(format!("sl-ckpt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = CheckpointFile::new(&dir);
        assert!(file.load().is_none(), "no file: the very first start");
        let entry = Entry {
            group: "app".into(),
            key: FileKey { dev: 1, ino: 2 },
            cursor: Cursor {
                file_id: "abc".into(),
                generation: 0,
                offset: 99,
                fingerprint: Fingerprint::of(b"x"),
                tail: 5,
            },
            spooled: Some((120, 0xabc)),
            path: "/var/log/a\tb.log".into(),
        };
        file.save(std::slice::from_ref(&entry)).expect("save");
        let back = file.load().expect("a file now");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].cursor, entry.cursor);
        assert_eq!(back[0].path, "/var/log/a?b.log");
        assert_eq!(back[0].spooled, Some((120, 0xabc)));
        assert_eq!(back[0].resume_cursor().offset, 120);
        let _ = fs::remove_dir_all(&dir);
    }
}
