//! `sightline-log`, the log agent: tails files matched by globs and ships
//! their records to the collector, every line exactly once through
//! rotation, truncation, restarts of either side and outages.
//!
//! The path: [`discovery`] finds files (notify watches plus a periodic
//! rescan), [`identity`] names each file by device, inode and a fingerprint
//! of its first bytes, [`tail`] reads each file from its checkpoint,
//! [`framing`] cuts the bytes into records (line ends, `max_line`,
//! encodings, multi-line rules, CRI, filters, the `parse` rule), [`wire`]
//! packs them into columnar chunks, and agent-core's output spools and
//! sends them; [`checkpoint`] moves a file's saved offset only as far as
//! the collector has acknowledged.
//!
//! Invariants:
//! - A byte range of a file is shipped at most once per identity; the
//!   collector drops what it already holds by (file id, start offset).
//! - A checkpoint never passes a byte the collector has not acknowledged,
//!   and never passes a partial last line.
//! - The spool policy is `block`: when the collector is slow the agent
//!   stops reading (the files are the buffer); memory stays bounded in
//!   bytes.
//! - Only [`wire`] sees prost types.

pub mod checkpoint;
pub mod framing;
pub mod glob;
pub mod identity;
pub mod run;
pub mod settings;
pub mod tail;
pub mod wire;

pub use settings::{LOG_KEYS, LogConfig};
