//! What names a file across renames, restarts and inode reuse: its device
//! and inode ([`FileKey`]), plus a [`Fingerprint`] of its first bytes that
//! grows up to [`FINGERPRINT_MAX`] as the file grows (so a short file is
//! named too, and a new file that got a freed inode is told apart by its
//! first bytes), and the wire's `file_id`, fixed when the file is first
//! read. A [`Cursor`] is where a file generation stands, with a hash of
//! the bytes just before the offset so a file rewritten while the agent
//! was stopped is caught. Reads files only with `pread`; never writes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

/// The most bytes a fingerprint covers.
pub const FINGERPRINT_MAX: usize = 1024;
/// How many bytes before a cursor's offset its tail hash covers.
pub const TAIL_CHECK: usize = 256;

/// A file's device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileKey {
    /// The key of an open file or a path's metadata.
    pub fn of(meta: &std::fs::Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A hash of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    /// How many bytes it covers (at most [`FINGERPRINT_MAX`]).
    pub len: u32,
    /// Their hash.
    pub hash: u64,
}

/// The first 8 bytes of SHA-256, as a number.
pub fn hash64(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

impl Fingerprint {
    /// The fingerprint of `head` (a file's first bytes, at most
    /// [`FINGERPRINT_MAX`] of them are used).
    pub fn of(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(FINGERPRINT_MAX)];
        Fingerprint {
            len: head.len() as u32,
            hash: hash64(head),
        }
    }

    /// Whether it covers as much as it ever will.
    pub fn is_full(&self) -> bool {
        self.len as usize >= FINGERPRINT_MAX
    }
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut out[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    out.truncate(got);
    Ok(out)
}

/// A file's first bytes, up to [`FINGERPRINT_MAX`].
pub fn read_head(file: &File) -> io::Result<Vec<u8>> {
    read_at(file, 0, FINGERPRINT_MAX)
}

/// The hash of the [`TAIL_CHECK`] bytes before `offset` (fewer near the
/// start); `None` when the file is shorter than `offset`.
pub fn tail_hash(file: &File, offset: u64) -> io::Result<Option<u64>> {
    let from = offset.saturating_sub(TAIL_CHECK as u64);
    let bytes = read_at(file, from, (offset - from) as usize)?;
    Ok((bytes.len() as u64 == offset - from).then(|| hash64(&bytes)))
}

/// Whether `head` (a file's first bytes) begins with the bytes
/// `fingerprint` was taken of.
pub fn head_matches(head: &[u8], fingerprint: &Fingerprint) -> bool {
    let len = fingerprint.len as usize;
    head.len() >= len && hash64(&head[..len]) == fingerprint.hash
}

/// A new wire `file_id`: 16 hex digits, from the file's key, its first
/// bytes and the time (so a reused inode with equal first bytes still
/// gets a new id).
pub fn new_file_id(key: FileKey, head: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut seed = Vec::with_capacity(40 + head.len());
    seed.extend_from_slice(&key.dev.to_le_bytes());
    seed.extend_from_slice(&key.ino.to_le_bytes());
    seed.extend_from_slice(&now.to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(head);
    format!("{:016x}", hash64(&seed))
}

/// Where one generation of a file stands: the spool's cursor for it and
/// one entry of the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The wire's file id of this generation.
    pub file_id: String,
    /// Counts the generations on one inode (truncation starts a new one).
    pub generation: u32,
    /// Everything below this offset is shipped (or filtered).
    pub offset: u64,
    /// The file's fingerprint when the cursor was taken.
    pub fingerprint: Fingerprint,
    /// [`tail_hash`] at `offset`.
    pub tail: u64,
}

impl Cursor {
    /// `v1 <file_id> <generation> <offset> <fp len> <fp hash> <tail>`.
    pub fn encode(&self) -> String {
        format!(
            "v1 {} {} {} {} {:016x} {:016x}",
            self.file_id,
            self.generation,
            self.offset,
            self.fingerprint.len,
            self.fingerprint.hash,
            self.tail
        )
    }

    /// The cursor [`Cursor::encode`] wrote; `None` for anything else.
    pub fn decode(text: &str) -> Option<Cursor> {
        let mut f = text.split(' ');
        if f.next()? != "v1" {
            return None;
        }
        let file_id = f.next()?.to_string();
        if file_id.is_empty() || !file_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let cursor = Cursor {
            file_id,
            generation: f.next()?.parse().ok()?,
            offset: f.next()?.parse().ok()?,
            fingerprint: Fingerprint {
                len: f.next()?.parse().ok()?,
                hash: u64::from_str_radix(f.next()?, 16).ok()?,
            },
            tail: u64::from_str_radix(f.next()?, 16).ok()?,
        };
        f.next().is_none().then_some(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_garbage_does_not() {
        let c = Cursor {
            file_id: "00ff12ab34cd56ef".into(),
            generation: 2,
            offset: 1 << 40,
            fingerprint: Fingerprint::of(b"first line\n"),
            tail: 7,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("v1 x 1 2"), None);
        assert_eq!(Cursor::decode("v2 a 1 2 3 4 5"), None);
        assert_eq!(Cursor::decode(""), None);
    }

    #[test]
    fn a_fingerprint_is_of_the_first_kib_and_matches_longer_heads() {
        let short = Fingerprint::of(b"abc");
        assert_eq!(short.len, 3);
        assert!(head_matches(b"abcdef", &short));
        assert!(!head_matches(b"ab", &short), "a shorter head cannot match");
        assert!(!head_matches(b"abX", &short));
        let long = Fingerprint::of(&[7u8; 5000]);
        assert_eq!(long.len as usize, FINGERPRINT_MAX);
        assert!(long.is_full());
    }
}
