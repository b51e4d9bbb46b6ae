//! Every process: CPU share, memory, threads, state; the counts by state.
//!
//! Cost is what matters here, since a host may run thousands of processes:
//! - `/proc` is listed through a directory kept open, rewound each cycle
//!   and read into one reused buffer; per-process files are opened
//!   relative to it (`openat`), so no path is built on the heap or walked
//!   from `/`.
//! - `/proc/<pid>/stat` is read every cycle, and its file is kept open
//!   between cycles (re-read with `pread` at offset 0): measured here, that
//!   halves the cost against opening it each time. A kept file of a process
//!   that exited answers ESRCH and is dropped; at most [`MAX_KEPT_FDS`] are
//!   kept.
//! - A kernel thread (most of `/proc` on an idle host) has its `schedstat`
//!   kept open too: while that says it has not run since the last cycle,
//!   its `stat` (the costliest file to render) cannot have changed and is
//!   not read again. Its memory is none, and its state changes only by
//!   running (one woken and not yet run shows as sleeping one cycle more).
//!   A user process is not skipped: reclaim can shrink its memory while it
//!   sleeps, and its other threads run without its main one.
//! - `status` and `cmdline` (the user and the command line) are read only
//!   for the processes a snapshot shows: the top N by CPU and by memory
//!   (once per process, again after it `exec`s; a pid reused by a new
//!   process is told apart by its start time), and, for a threshold's full
//!   snapshot, every process ([`ProcessTable::describe_missing`], run by
//!   the loop, not by this sensor). A host that starts hundreds of
//!   short-lived processes a second (a build) does not pay two opens each.
//! - No thread walk, and nothing that makes the kernel walk page tables
//!   (`smaps`, `smaps_rollup`).

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use agent_core::Sample;
use rustix::fs::{Mode, OFlags, RawDir, SeekFrom};

use crate::linux::ProcFs;
use crate::linux::process::{
    PidStat, format_cmdline, parse_passwd, parse_pid_stat, parse_schedstat, parse_status_uid,
    state_name,
};
use crate::processes::ProcessInfo;
use crate::sensor::{Describe, ProcessTable, ReadError, Reading, Sensor, leaders};

/// States always reported, even at zero, so their series have no gaps.
const MAIN_STATES: &[&str] = &[
    "running",
    "sleeping",
    "disk-sleep",
    "zombie",
    "stopped",
    "idle",
];

/// Most `stat` files kept open between cycles.
pub const MAX_KEPT_FDS: usize = 2048;

/// The buffer `/proc` is listed into (one `getdents64` call takes a few
/// hundred entries).
const LIST_BUF: usize = 32 << 10;

#[derive(Debug)]
struct Known {
    start_time: u64,
    comm: String,
    ticks: u64,
    /// User and command line, once read (see the module's notes).
    described: Option<(String, String)>,
    seen: u64,
    stat: Option<File>,
    /// A kernel thread's `schedstat`, its last reading, and the `stat` read
    /// with it (see the module's notes).
    schedstat: Option<(File, (u64, u64), PidStat)>,
}

/// Reads a process's user and command line from `/proc/<pid>/status` and
/// `/proc/<pid>/cmdline`, relative to a `/proc` directory kept open.
#[derive(Debug, Clone)]
pub struct ProcDescriber {
    dir: Arc<OwnedFd>,
    users: Arc<HashMap<u32, String>>,
    cmdline_max: usize,
}

impl ProcDescriber {
    /// User and command line of `pid` (named `comm`), reading into `buf`.
    /// A process gone or unreadable shows as user `?`; one without a
    /// command line (a kernel thread) as `[comm]`, as `ps` shows it.
    fn describe_into(&self, pid: u32, comm: &str, buf: &mut Vec<u8>) -> (String, String) {
        let uid = match read_at(&self.dir, pid, "status", buf, usize::MAX) {
            Ok(n) => parse_status_uid(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => None,
        };
        let user = uid.map_or_else(
            || "?".to_string(),
            |u| self.users.get(&u).cloned().unwrap_or_else(|| u.to_string()),
        );
        // A little past the limit is enough to know the line was cut.
        let limit = self.cmdline_max.saturating_add(8);
        let cmdline = match read_at(&self.dir, pid, "cmdline", buf, limit) {
            Ok(n) if n > 0 => format_cmdline(&buf[..n], self.cmdline_max),
            // Kernel threads have no command line; ps shows them bracketed.
            _ => format!("[{comm}]"),
        };
        (user, cmdline)
    }
}

impl Describe for ProcDescriber {
    fn describe(&self, pid: u32, name: &str) -> (String, String) {
        self.describe_into(pid, name, &mut Vec::new())
    }
}

/// Reads at most `max` bytes of `<pid>/<file>` under `dir` into `buf`
/// (grown as needed, never shrunk); returns how many.
fn read_at(
    dir: &OwnedFd,
    pid: u32,
    file: &str,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<usize> {
    let mut name = [0u8; 48];
    let fd = rustix::fs::openat(
        dir,
        pid_path(&mut name, pid, file)?,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut filled = 0;
    loop {
        let end = buf.len().min(max);
        if filled >= end {
            return Ok(filled);
        }
        let n = rustix::io::read(&fd, &mut buf[filled..end])?;
        filled += n;
        // procfs answers a read with all it has when it fits.
        if n == 0 || filled < end {
            return Ok(filled);
        }
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// `<pid>/<file>` as a C string in `buf`, without touching the heap.
fn pid_path<'a>(buf: &'a mut [u8; 48], pid: u32, file: &str) -> std::io::Result<&'a CStr> {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{pid}/{file}\0")?;
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    CStr::from_bytes_with_nul(&buf[..len]).map_err(std::io::Error::other)
}

/// A directory entry's name as a pid, if it is one.
fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name.len() > 10 {
        return None;
    }
    let mut pid: u32 = 0;
    for &b in name {
        if !b.is_ascii_digit() {
            return None;
        }
        pid = pid.checked_mul(10)?.checked_add(u32::from(b - b'0'))?;
    }
    Some(pid)
}

/// Reads `/proc/<pid>/*`.
#[derive(Debug)]
pub struct ProcessSensor {
    proc: ProcFs,
    passwd: PathBuf,
    cmdline_max: usize,
    /// Describe only the top this many by CPU and by memory (`None`: all).
    describe_top: Option<usize>,
    ticks_per_sec: f64,
    page_size: u64,
    /// `/proc`, kept open (opened at the first read).
    dir: Option<Arc<OwnedFd>>,
    list_buf: Vec<std::mem::MaybeUninit<u8>>,
    pids: Vec<u32>,
    known: HashMap<u32, Known>,
    kept_fds: usize,
    fd_budget: usize,
    mem_total: Option<u64>,
    users: Arc<HashMap<u32, String>>,
    users_stamp: Option<SystemTime>,
    prev: Option<Instant>,
    generation: u64,
    stat_buf: Vec<u8>,
    buf: Vec<u8>,
}

impl ProcessSensor {
    /// A sensor reading `proc`, naming users from `<etc>/passwd`. It reads
    /// the user and command line of every process; see
    /// [`ProcessSensor::describing_top`].
    pub fn new(proc: ProcFs, etc_root: &Path, cmdline_max: usize) -> ProcessSensor {
        ProcessSensor {
            proc,
            passwd: etc_root.join("passwd"),
            cmdline_max,
            describe_top: None,
            ticks_per_sec: rustix::param::clock_ticks_per_second() as f64,
            page_size: rustix::param::page_size() as u64,
            dir: None,
            list_buf: Vec::new(),
            pids: Vec::new(),
            known: HashMap::new(),
            kept_fds: 0,
            fd_budget: fd_budget(),
            mem_total: None,
            users: Arc::new(HashMap::new()),
            users_stamp: None,
            prev: None,
            generation: 0,
            stat_buf: vec![0; 4096],
            buf: Vec::with_capacity(4096),
        }
    }

    /// Reads the user and command line only of the processes
    /// [`ProcessTable::top`]`(n)` shows; the others' are left empty, for
    /// [`ProcessTable::describe_missing`] to fill in when a full snapshot
    /// is wanted.
    pub fn describing_top(mut self, n: usize) -> ProcessSensor {
        self.describe_top = Some(n);
        self
    }

    fn refresh_users(&mut self) {
        let stamp = std::fs::metadata(&self.passwd)
            .and_then(|m| m.modified())
            .ok();
        if stamp.is_some() && stamp == self.users_stamp {
            return;
        }
        self.users = Arc::new(
            std::fs::read_to_string(&self.passwd)
                .map(|t| parse_passwd(&t))
                .unwrap_or_default(),
        );
        self.users_stamp = stamp;
    }

    /// `/proc`, opened once.
    fn dir(&mut self) -> Result<Arc<OwnedFd>, ReadError> {
        if let Some(dir) = &self.dir {
            return Ok(dir.clone());
        }
        let root = self.proc.root();
        let dir = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ReadError::Io {
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        let dir = Arc::new(dir);
        self.dir = Some(dir.clone());
        Ok(dir)
    }

    /// Lists the pids in `/proc` into `self.pids`.
    fn list_pids(&mut self, dir: &OwnedFd) -> Result<(), ReadError> {
        let io = |e: rustix::io::Errno| ReadError::Io {
            path: self.proc.root().to_path_buf(),
            source: e.into(),
        };
        rustix::fs::seek(dir, SeekFrom::Start(0)).map_err(io)?;
        if self.list_buf.is_empty() {
            self.list_buf = vec![std::mem::MaybeUninit::uninit(); LIST_BUF];
        }
        self.pids.clear();
        let mut entries = RawDir::new(dir, &mut self.list_buf[..]);
        while let Some(entry) = entries.next() {
            let entry = entry.map_err(io)?;
            if let Some(pid) = parse_pid(entry.file_name().to_bytes()) {
                self.pids.push(pid);
            }
        }
        Ok(())
    }

    /// Reads `stat` of `pid`: through its kept file when there is one,
    /// else by opening it (and returns the newly opened file); for a kernel
    /// thread that has not run since, the last one read (and `true`).
    fn read_stat(&mut self, dir: &OwnedFd, pid: u32) -> Option<(PidStat, Option<File>, bool)> {
        if let Some(known) = self.known.get_mut(&pid)
            && let Some((file, ran, last)) = &mut known.schedstat
        {
            let now = rustix::io::pread(&*file, &mut self.stat_buf[..], 0)
                .ok()
                .and_then(|n| parse_schedstat(&String::from_utf8_lossy(&self.stat_buf[..n])));
            match now {
                Some(now) if now == *ran => return Some((last.clone(), None, true)),
                Some(now) => *ran = now,
                // That thread exited.
                None => {
                    known.schedstat = None;
                    self.kept_fds -= 1;
                }
            }
        }
        if let Some(known) = self.known.get_mut(&pid)
            && let Some(file) = &known.stat
        {
            match rustix::io::pread(file, &mut self.stat_buf[..], 0) {
                Ok(n) if n > 0 => {
                    let stat = parse_pid_stat(&String::from_utf8_lossy(&self.stat_buf[..n])).ok();
                    if let Some(stat) = stat {
                        return Some((stat, None, false));
                    }
                }
                // ESRCH: that process exited (the pid may be someone else's now).
                _ => {}
            }
            known.stat = None;
            self.kept_fds -= 1;
        }
        let mut name = [0u8; 48];
        let path = pid_path(&mut name, pid, "stat").ok()?;
        let fd =
            rustix::fs::openat(dir, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let file = File::from(fd);
        let n = rustix::io::pread(&file, &mut self.stat_buf[..], 0)
            .ok()
            .filter(|n| *n > 0)?;
        // `comm` is raw bytes (prctl can set anything): read it lossily.
        let stat = parse_pid_stat(&String::from_utf8_lossy(&self.stat_buf[..n])).ok()?;
        Some((stat, Some(file), false))
    }
}

/// Opens `<pid>/schedstat` and reads it once.
fn open_schedstat(dir: &OwnedFd, pid: u32, buf: &mut [u8]) -> Option<(File, (u64, u64))> {
    let mut name = [0u8; 48];
    let path = pid_path(&mut name, pid, "schedstat").ok()?;
    let file = File::from(
        rustix::fs::openat(dir, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?,
    );
    let n = rustix::io::pread(&file, &mut *buf, 0).ok()?;
    let ran = parse_schedstat(&String::from_utf8_lossy(&buf[..n]))?;
    Some((file, ran))
}

/// How many `stat` and `schedstat` files to keep open: [`MAX_KEPT_FDS`], or half the
/// process's file limit if that is lower (after raising the soft limit as
/// far as the hard one allows).
fn fd_budget() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let wanted = (MAX_KEPT_FDS as u64) * 2;
    if limit.current.is_some_and(|c| c < wanted) {
        let raised = limit.maximum.map_or(wanted, |m| m.min(wanted));
        limit.current = Some(raised);
        let _ = setrlimit(Resource::Nofile, limit);
    }
    let current = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    usize::try_from(current / 2)
        .unwrap_or(MAX_KEPT_FDS)
        .min(MAX_KEPT_FDS)
}

impl Sensor for ProcessSensor {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        self.refresh_users();
        // Physical memory does not change while the host runs (hot-plug
        // aside, which the memory sensor reports).
        let mem_total = match self.mem_total {
            Some(total) => total,
            None => {
                let total = self.proc.meminfo()?.total;
                self.mem_total = Some(total);
                total
            }
        };
        let now = Instant::now();
        let elapsed = self.prev.map(|p| now.duration_since(p).as_secs_f64());
        self.generation += 1;
        let generation = self.generation;
        let dir = self.dir()?;
        self.list_pids(&dir)?;
        let mut processes = Vec::with_capacity(self.pids.len());
        let mut counts = [0u32; MAIN_STATES.len()];
        let mut other_counts: std::collections::BTreeMap<&'static str, u32> =
            std::collections::BTreeMap::new();
        for i in 0..self.pids.len() {
            let pid = self.pids[i];
            // The process may exit between listing and reading: skip it.
            let Some((stat, opened, unchanged)) = self.read_stat(&dir, pid) else {
                continue;
            };
            let ticks = stat.utime + stat.stime;
            let same = self
                .known
                .get(&pid)
                .filter(|k| k.start_time == stat.start_time);
            let cpu_pct = match (same, elapsed) {
                (Some(k), Some(secs)) if secs > 0.0 => {
                    ticks.saturating_sub(k.ticks) as f64 * 100.0 / (secs * self.ticks_per_sec)
                }
                _ => 0.0,
            };
            let stale = same.is_none_or(|k| k.comm != stat.comm);
            if stale {
                // Same process renamed (by exec; a kernel worker renames
                // itself as it picks up work): keep its files. A new process
                // under a reused pid: drop the old one's.
                let (kept, schedstat) = match self.known.remove(&pid) {
                    Some(old) if old.start_time == stat.start_time => (old.stat, old.schedstat),
                    Some(old) => {
                        self.kept_fds -=
                            usize::from(old.stat.is_some()) + usize::from(old.schedstat.is_some());
                        (None, None)
                    }
                    None => (None, None),
                };
                self.known.insert(
                    pid,
                    Known {
                        start_time: stat.start_time,
                        comm: stat.comm.clone(),
                        ticks,
                        described: None,
                        seen: generation,
                        stat: kept,
                        schedstat,
                    },
                );
            }
            let Some(known) = self.known.get_mut(&pid) else {
                continue;
            };
            if known.stat.is_none()
                && let Some(file) = opened
                && self.kept_fds < self.fd_budget
            {
                known.stat = Some(file);
                self.kept_fds += 1;
            }
            if stat.kernel_thread && !unchanged {
                match &mut known.schedstat {
                    Some((_, _, last)) => *last = stat.clone(),
                    None if known.stat.is_some() && self.kept_fds < self.fd_budget => {
                        known.schedstat = open_schedstat(&dir, pid, &mut self.stat_buf)
                            .map(|(file, ran)| (file, ran, stat.clone()));
                        self.kept_fds += usize::from(known.schedstat.is_some());
                    }
                    None => {}
                }
            }
            known.ticks = ticks;
            known.seen = generation;
            let state = state_name(stat.state);
            match MAIN_STATES.iter().position(|s| *s == state) {
                Some(at) => counts[at] += 1,
                None => *other_counts.entry(state).or_default() += 1,
            }
            let rss_bytes = stat.rss_pages * self.page_size;
            processes.push(ProcessInfo {
                pid,
                name: stat.comm,
                user: String::new(),
                cmdline: String::new(),
                cpu_pct,
                rss_bytes,
                mem_pct: if mem_total == 0 {
                    0.0
                } else {
                    rss_bytes as f64 * 100.0 / mem_total as f64
                },
                threads: stat.threads,
                state,
            });
        }
        self.known.retain(|_, k| k.seen == generation);
        self.kept_fds = self
            .known
            .values()
            .map(|k| usize::from(k.stat.is_some()) + usize::from(k.schedstat.is_some()))
            .sum();
        self.prev = Some(now);

        let describer = ProcDescriber {
            dir,
            users: self.users.clone(),
            cmdline_max: self.cmdline_max,
        };
        let chosen = match self.describe_top {
            Some(n) => leaders(&processes, n),
            None => (0..processes.len()).collect(),
        };
        for at in chosen {
            let Some(p) = processes.get_mut(at) else {
                continue;
            };
            let Some(known) = self.known.get_mut(&p.pid) else {
                continue;
            };
            let (user, cmdline) = match &known.described {
                Some(described) => described.clone(),
                None => {
                    let described = describer.describe_into(p.pid, &p.name, &mut self.buf);
                    known.described = Some(described.clone());
                    described
                }
            };
            p.user = user;
            p.cmdline = cmdline;
        }

        out.samples
            .push(Sample::new("proc.total", processes.len() as f64));
        let mut state_counts = std::collections::BTreeMap::new();
        for (state, count) in MAIN_STATES.iter().zip(counts) {
            out.samples
                .push(Sample::new("proc.count", f64::from(count)).label("state", *state));
            if count > 0 {
                state_counts.insert(state.to_string(), count);
            }
        }
        for (state, count) in other_counts {
            out.samples
                .push(Sample::new("proc.count", f64::from(count)).label("state", state));
            state_counts.insert(state.to_string(), count);
        }
        out.processes = Some(ProcessTable {
            time: Some(SystemTime::now()),
            processes,
            state_counts,
            describer: Some(Arc::new(describer)),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_process_is_found_with_its_command_line_and_user() {
        let mut sensor = ProcessSensor::new(ProcFs::new("/proc"), Path::new("/etc"), 4096);
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("reads /proc");
        let table = reading.processes.expect("a table");
        let me = table
            .processes
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("this process");
        let exe = std::env::args().next().expect("argv0");
        assert!(me.cmdline.starts_with(&exe), "{} vs {exe}", me.cmdline);
        assert!(me.rss_bytes > 0 && me.threads >= 1);
        let uid = rustix::process::getuid().as_raw();
        let expected = sensor
            .users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string());
        assert_eq!(me.user, expected);
        assert_eq!(me.cpu_pct, 0.0, "no CPU share on first sight");
        let total: u32 = table.state_counts.values().sum();
        assert_eq!(total as usize, table.processes.len());
        assert!(sensor.kept_fds > 0 && sensor.kept_fds <= sensor.fd_budget);

        // Burn some CPU: the second reading (through the kept files) shows
        // this process's share as the kernel accounted it, however busy the
        // machine is (other tests run beside this one).
        let cpu_time = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
            t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
        };
        let (wall0, cpu0) = (Instant::now(), cpu_time());
        let mut x = 0u64;
        while wall0.elapsed() < std::time::Duration::from_millis(400) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("reads /proc");
        let expected = (cpu_time() - cpu0) * 100.0 / wall0.elapsed().as_secs_f64();
        let me = reading
            .processes
            .expect("table")
            .processes
            .into_iter()
            .find(|p| p.pid == std::process::id())
            .expect("me");
        // Clock ticks are 10 ms: a few points either way over 0.4 s.
        assert!(
            (me.cpu_pct - expected).abs() <= 10.0,
            "sensor {:.1}% vs kernel {expected:.1}%",
            me.cpu_pct
        );
        assert!(me.cpu_pct > 10.0, "{}", me.cpu_pct);
    }

    /// Kernel threads are read through `schedstat` once known: what the
    /// table shows of them is what their `stat` says (a kernel thread that
    /// ran is read again), and the kept files are counted.
    #[test]
    fn kernel_threads_keep_their_reading_while_they_do_not_run() {
        let mut sensor = ProcessSensor::new(ProcFs::new("/proc"), Path::new("/etc"), 256);
        sensor.read(&mut Reading::default()).expect("reads");
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("reads");
        let kthreads: Vec<u32> = sensor
            .known
            .iter()
            .filter(|(_, k)| k.schedstat.is_some())
            .map(|(pid, _)| *pid)
            .collect();
        assert!(
            !kthreads.is_empty(),
            "kthreadd and its workers are in this host's /proc"
        );
        let table = reading.processes.expect("table");
        for pid in kthreads {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue; // exited since
            };
            let now = parse_pid_stat(&text).expect("parses");
            let shown = table
                .processes
                .iter()
                .find(|p| p.pid == pid)
                .expect("listed");
            assert_eq!(shown.threads, 1, "{pid}");
            assert_eq!(shown.rss_bytes, 0, "{pid}");
            // A worker renames itself as it runs; kthreadd never does.
            if pid == 2 {
                assert_eq!(shown.name, now.comm);
            }
        }
        let held: usize = sensor
            .known
            .values()
            .map(|k| usize::from(k.stat.is_some()) + usize::from(k.schedstat.is_some()))
            .sum();
        assert_eq!(sensor.kept_fds, held);
    }

    #[test]
    fn an_exited_process_is_forgotten_and_its_file_closed() {
        let mut sensor = ProcessSensor::new(ProcFs::new("/proc"), Path::new("/etc"), 256);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        sensor.read(&mut Reading::default()).expect("reads");
        assert!(
            sensor.known.get(&pid).is_some_and(|k| k.stat.is_some()),
            "its stat file is kept"
        );
        child.kill().expect("kill");
        child.wait().expect("reap");
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("reads");
        // Its entry, which owned its file, is gone.
        assert!(!sensor.known.contains_key(&pid));
        assert!(
            reading
                .processes
                .expect("table")
                .processes
                .iter()
                .all(|p| p.pid != pid)
        );
        let held: usize = sensor
            .known
            .values()
            .map(|k| usize::from(k.stat.is_some()) + usize::from(k.schedstat.is_some()))
            .sum();
        assert_eq!(sensor.kept_fds, held, "the count matches the files held");
    }
}
