//! Linux: small parsers for the `/proc` and `/sys` files the agent reads,
//! each tested on files copied from real hosts (`tests/fixtures/`).
//!
//! Invariant: the parsers are pure (text in, values out); only
//! [`ProcFs`] touches the filesystem, so every parser is testable on a
//! fixture and the roots can point at a host's `/proc` mounted into a
//! container.

pub mod collectors;
pub mod cpu;
pub mod disk;
pub mod load;
pub mod memory;
pub mod mounts;
pub mod net;
pub mod parse;
pub mod process;
pub mod sockdiag;
pub mod vmstat;

use std::path::{Path, PathBuf};

pub use parse::ParseError;

use crate::collect::{Collect, Group, ReadError};
use crate::settings::InfraSettings;
use collectors::filesystems::{FsOptions, StatFs};
use collectors::network::NetFilter;

impl From<ParseError> for ReadError {
    fn from(e: ParseError) -> Self {
        ReadError::Parse(e.to_string())
    }
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
        let mut text = String::new();
        self.read_into(name, &mut text)?;
        Ok(text)
    }

    /// Reads `<root>/<name>` whole into `buf` (cleared first), in as few
    /// `read` calls as possible: procfs files have no size to ask for, and
    /// some (`net/tcp`) cost the kernel a full table walk per call.
    pub fn read_into(&self, name: &str, buf: &mut String) -> Result<(), ReadError> {
        let path = self.root.join(name);
        read_file(&path, buf).map_err(|source| ReadError::Io { path, source })
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

/// Reads a whole file into `buf` with large reads and no size probing.
pub fn read_file(path: &Path, buf: &mut String) -> std::io::Result<()> {
    use std::io::Read;
    buf.clear();
    let mut bytes = std::mem::take(buf).into_bytes();
    let mut file = std::fs::File::open(path)?;
    let result = loop {
        if bytes.capacity() - bytes.len() < 4096 {
            bytes.reserve(bytes.capacity().max(16 << 10));
        }
        let len = bytes.len();
        let spare = bytes.capacity() - len;
        bytes.resize(len + spare, 0);
        match file.read(&mut bytes[len..]) {
            Ok(0) => {
                bytes.truncate(len);
                break Ok(());
            }
            Ok(n) => bytes.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => bytes.truncate(len),
            Err(e) => {
                bytes.truncate(len);
                break Err(e);
            }
        }
    };
    // Paths and names from userspace need not be UTF-8 (a mount point, a
    // process renamed with prctl): read them lossily rather than not at all.
    *buf = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    result
}

/// The kernel's id for this boot: changes at every boot, unlike the boot
/// time, which drifts with clock corrections.
pub fn boot_id(proc: &ProcFs) -> Result<String, ReadError> {
    Ok(proc.read("sys/kernel/random/boot_id")?.trim().to_string())
}

/// Every collector the settings ask for, with `statfs` as given.
pub fn collectors(settings: &InfraSettings, statfs: StatFs) -> Vec<Box<dyn Collect>> {
    let proc = ProcFs::new(&settings.proc_root);
    // In-kernel counters: cannot block, cheaper together.
    let counters: Vec<Box<dyn Collect>> = vec![
        Box::new(collectors::cpu::CpuCollector::new(proc.clone())),
        Box::new(collectors::memory::MemoryCollector::new(proc.clone())),
        Box::new(collectors::disks::DiskCollector::new(
            proc.clone(),
            settings.sys_root.clone(),
            settings.disk_exclude.clone(),
        )),
        Box::new(collectors::network::NetCollector::new(
            proc.clone(),
            settings.sys_root.clone(),
            NetFilter {
                include: settings.net_include.clone(),
                exclude: settings.net_exclude.clone(),
                virtual_too: settings.net_virtual,
            },
            settings.net_tcp.then_some(collectors::network::TcpOptions {
                states_every: settings.tcp_states_every,
            }),
        )),
    ];
    vec![
        Box::new(Group::new("counters", counters)),
        Box::new(collectors::filesystems::FsCollector::new(
            proc.clone(),
            FsOptions {
                host_root: settings.host_root.clone(),
                exclude_types: settings.fs_exclude_types.clone(),
                exclude_mounts: settings.fs_exclude_mounts.clone(),
                timeout: settings.fs_timeout,
                statfs,
            },
        )),
        Box::new(collectors::processes::ProcessCollector::new(
            proc,
            &settings.etc_root,
            settings.cmdline_max,
        )),
    ]
}
