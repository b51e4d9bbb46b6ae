//! Linux: small parsers for the `/proc` and `/sys` files the agent reads,
//! each tested on files copied from real hosts (`tests/fixtures/`).
//!
//! Invariant: the parsers are pure (text in, values out); only
//! [`ProcFs`] touches the filesystem, so every parser is testable on a
//! fixture and the roots can point at a host's `/proc` mounted into a
//! container.

pub mod cpu;
pub mod disk;
pub mod load;
pub mod memory;
pub mod mounts;
pub mod net;
pub mod parse;
pub mod process;
pub mod sensors;
pub mod sockdiag;
pub mod vmstat;

use std::path::{Path, PathBuf};

pub use parse::ParseError;

use crate::sensor::{Group, ReadError, Sensor};
use crate::settings::InfraSettings;
use sensors::filesystems::{FsOptions, StatFs};
use sensors::network::NetFilter;

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

    /// `/proc/meminfo`.
    pub fn meminfo(&self) -> Result<memory::MemInfo, ReadError> {
        Ok(memory::parse_meminfo(&self.read("meminfo")?)?)
    }
}

/// A `/proc` file kept open and re-read from the start with one `pread`:
/// one syscall a cycle instead of open, read, read, close. procfs answers
/// each `pread` at offset 0 with freshly generated content, all of it if
/// it fits; a full buffer means it did not, and the read is retried with a
/// larger one.
#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    file: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl KeptFile {
    /// `<root>/<name>`, opened on first read.
    pub fn new(proc: &ProcFs, name: &str) -> KeptFile {
        KeptFile {
            path: proc.root.join(name),
            file: None,
            buf: vec![0; 8 << 10],
        }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as it is now (lossy UTF-8: paths in it need not be UTF-8).
    pub fn read(&mut self) -> Result<std::borrow::Cow<'_, str>, ReadError> {
        let io = |source| ReadError::Io {
            path: self.path.clone(),
            source,
        };
        for attempt in 0..2 {
            if self.file.is_none() {
                self.file = Some(std::fs::File::open(&self.path).map_err(io)?);
            }
            let Some(file) = &self.file else { continue };
            let result = loop {
                match rustix::io::pread(file, &mut self.buf[..], 0) {
                    Ok(n) if n < self.buf.len() => break Ok(n),
                    Ok(_) => self.buf.resize(self.buf.len() * 2, 0),
                    Err(e) => break Err(std::io::Error::from(e)),
                }
            };
            match result {
                Ok(n) => return Ok(String::from_utf8_lossy(&self.buf[..n])),
                // Reopen once (the file may have been replaced).
                Err(e) if attempt == 0 => {
                    tracing::debug!(file = %self.path.display(), error = %e, "Re-opening a /proc file.");
                    self.file = None;
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(io(std::io::Error::other("could not read")))
    }

    /// Whether the kernel flagged a change since the last call (POLLPRI,
    /// as `mountinfo` does on every mount or unmount); `true` when unknown.
    pub fn changed(&mut self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let Some(file) = &self.file else { return true };
        let mut fds = [PollFd::new(file, PollFlags::PRI)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&zero)) {
            Ok(n) => n > 0,
            Err(_) => true,
        }
    }
}

/// Reads a whole file into `buf` (cleared first), lossily: paths and names
/// from userspace need not be UTF-8 (a mount point, a process renamed with
/// prctl). Reads are large, since some procfs files (`net/tcp`) cost the
/// kernel a table walk per `read`.
pub fn read_file(path: &Path, buf: &mut String) -> std::io::Result<()> {
    use std::io::Read;
    let mut bytes = std::mem::take(buf).into_bytes();
    bytes.clear();
    bytes.reserve(64 << 10);
    std::fs::File::open(path)?.read_to_end(&mut bytes)?;
    *buf = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(())
}

/// The kernel's id for this boot: changes at every boot, unlike the boot
/// time, which drifts with clock corrections.
pub fn boot_id(proc: &ProcFs) -> Result<String, ReadError> {
    Ok(proc.read("sys/kernel/random/boot_id")?.trim().to_string())
}

/// Every sensor the settings ask for, with `statfs` as given.
pub fn sensors(settings: &InfraSettings, statfs: StatFs) -> Vec<Box<dyn Sensor>> {
    let proc = ProcFs::new(&settings.proc_root);
    // In-kernel counters through files held open (sysfs and netlink for
    // the rest): they cannot block, so they run together, in place.
    let counters: Vec<Box<dyn Sensor>> = vec![
        Box::new(sensors::cpu::CpuSensor::new(proc.clone())),
        Box::new(sensors::memory::MemorySensor::new(proc.clone())),
        Box::new(sensors::disks::DiskSensor::new(
            proc.clone(),
            settings.sys_root.clone(),
            settings.disk_exclude.clone(),
        )),
        Box::new(sensors::network::NetSensor::new(
            proc.clone(),
            settings.sys_root.clone(),
            NetFilter {
                include: settings.net_include.clone(),
                exclude: settings.net_exclude.clone(),
                virtual_too: settings.net_virtual,
            },
            settings.net_tcp.then_some(sensors::network::TcpOptions {
                states_every: settings.tcp_states_every,
            }),
        )),
    ];
    vec![
        Box::new(Group::never_blocking("counters", counters)),
        Box::new(sensors::filesystems::FsSensor::new(
            proc.clone(),
            FsOptions {
                host_root: settings.host_root.clone(),
                exclude_types: settings.fs_exclude_types.clone(),
                exclude_mounts: settings.fs_exclude_mounts.clone(),
                timeout: settings.fs_timeout,
                statfs,
            },
        )),
        Box::new(
            sensors::processes::ProcessSensor::new(proc, &settings.etc_root, settings.cmdline_max)
                .describing_top(settings.process_top),
        ),
    ]
}
