//! Linux: small parsers for the `/proc` and `/sys` files the agent reads,
//! each tested on files copied from real hosts (`tests/fixtures/`).
//!
//! Invariant: the parsers are pure (text in, values out); only
//! [`ProcFs`] touches the filesystem, so every parser is testable on a
//! fixture and the roots can point at a host's `/proc` mounted into a
//! container.

pub mod cpu;
pub mod memory;
pub mod parse;

use std::io;
use std::path::{Path, PathBuf};

pub use parse::ParseError;

/// A file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The content was not as expected.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// Where `/proc` is (`/proc` on a host, `/host/proc` in a DaemonSet).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl ProcFs {
    /// A reader rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> ProcFs {
        ProcFs { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads `<root>/<name>` whole.
    pub fn read(&self, name: &str) -> Result<String, ReadError> {
        let path = self.root.join(name);
        std::fs::read_to_string(&path).map_err(|source| ReadError::Io { path, source })
    }

    /// `/proc/stat`.
    pub fn stat(&self) -> Result<cpu::Stat, ReadError> {
        Ok(cpu::parse_stat(&self.read("stat")?)?)
    }

    /// `/proc/meminfo`.
    pub fn meminfo(&self) -> Result<memory::MemInfo, ReadError> {
        Ok(memory::parse_meminfo(&self.read("meminfo")?)?)
    }
}
