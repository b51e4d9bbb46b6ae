//! Every process: CPU share, memory, threads, state; the counts by state.
//!
//! Cost is what matters here, since a host may run thousands of processes:
//! - `/proc/<pid>/stat` is read every cycle, and its file is kept open
//!   between cycles (re-read with `pread` at offset 0): measured here, that
//!   halves the cost against opening it each time. A kept file of a process
//!   that exited answers ESRCH and is dropped; at most [`MAX_KEPT_FDS`] are
//!   kept.
//! - `status` and `cmdline` are read only for a process not seen before,
//!   or one that changed its name (`exec`); a pid reused by a new process is
//!   told apart by its start time.
//! - No thread walk, and nothing that makes the kernel walk page tables
//!   (`smaps`, `smaps_rollup`).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use agent_core::Sample;

use crate::linux::ProcFs;
use crate::linux::process::{
    PidStat, format_cmdline, parse_passwd, parse_pid_stat, parse_status_uid, state_name,
};
use crate::processes::ProcessInfo;
use crate::sensor::{ProcessTable, ReadError, Reading, Sensor};

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

#[derive(Debug)]
struct Known {
    start_time: u64,
    comm: String,
    ticks: u64,
    user: String,
    cmdline: String,
    seen: u64,
    stat: Option<File>,
}

/// Reads `/proc/<pid>/*`.
#[derive(Debug)]
pub struct ProcessSensor {
    proc: ProcFs,
    passwd: PathBuf,
    cmdline_max: usize,
    ticks_per_sec: f64,
    page_size: u64,
    known: HashMap<u32, Known>,
    kept_fds: usize,
    fd_budget: usize,
    mem_total: Option<u64>,
    users: HashMap<u32, String>,
    users_stamp: Option<SystemTime>,
    prev: Option<Instant>,
    generation: u64,
    stat_buf: Vec<u8>,
    buf: String,
    path: PathBuf,
}

impl ProcessSensor {
    /// A sensor reading `proc`, naming users from `<etc>/passwd`.
    pub fn new(proc: ProcFs, etc_root: &Path, cmdline_max: usize) -> ProcessSensor {
        ProcessSensor {
            path: proc.root().to_path_buf(),
            proc,
            passwd: etc_root.join("passwd"),
            cmdline_max,
            ticks_per_sec: rustix::param::clock_ticks_per_second() as f64,
            page_size: rustix::param::page_size() as u64,
            known: HashMap::new(),
            kept_fds: 0,
            fd_budget: fd_budget(),
            mem_total: None,
            users: HashMap::new(),
            users_stamp: None,
            prev: None,
            generation: 0,
            stat_buf: vec![0; 4096],
            buf: String::with_capacity(1024),
        }
    }

    fn refresh_users(&mut self) {
        let stamp = std::fs::metadata(&self.passwd)
            .and_then(|m| m.modified())
            .ok();
        if stamp.is_some() && stamp == self.users_stamp {
            return;
        }
        self.users = std::fs::read_to_string(&self.passwd)
            .map(|t| parse_passwd(&t))
            .unwrap_or_default();
        self.users_stamp = stamp;
    }

    fn pid_path(&mut self, pid: u32, file: &str) -> &Path {
        self.path.clear();
        self.path.push(self.proc.root());
        self.path.push(pid.to_string());
        self.path.push(file);
        &self.path
    }

    /// Reads `stat` of `pid`: through its kept file when there is one,
    /// else by opening it (and returns the newly opened file).
    fn read_stat(&mut self, pid: u32) -> Option<(PidStat, Option<File>)> {
        if let Some(known) = self.known.get_mut(&pid)
            && let Some(file) = &known.stat
        {
            match rustix::io::pread(file, &mut self.stat_buf[..], 0) {
                Ok(n) if n > 0 => {
                    let stat = parse_pid_stat(&String::from_utf8_lossy(&self.stat_buf[..n])).ok();
                    if let Some(stat) = stat {
                        return Some((stat, None));
                    }
                }
                // ESRCH: that process exited (the pid may be someone else's now).
                _ => {}
            }
            known.stat = None;
            self.kept_fds -= 1;
        }
        let file = File::open(self.pid_path(pid, "stat")).ok()?;
        let n = rustix::io::pread(&file, &mut self.stat_buf[..], 0)
            .ok()
            .filter(|n| *n > 0)?;
        // `comm` is raw bytes (prctl can set anything): read it lossily.
        let stat = parse_pid_stat(&String::from_utf8_lossy(&self.stat_buf[..n])).ok()?;
        Some((stat, Some(file)))
    }

    fn describe(&mut self, pid: u32, comm: &str) -> (String, String) {
        let path = self.pid_path(pid, "status").to_path_buf();
        let uid = match crate::linux::read_file(&path, &mut self.buf) {
            Ok(()) => parse_status_uid(&self.buf),
            Err(_) => None,
        };
        let user = uid.map_or_else(
            || "?".to_string(),
            |u| self.users.get(&u).cloned().unwrap_or_else(|| u.to_string()),
        );
        let cmdline = match std::fs::read(self.pid_path(pid, "cmdline")) {
            Ok(raw) if !raw.is_empty() => format_cmdline(&raw, self.cmdline_max),
            // Kernel threads have no command line; ps shows them bracketed.
            _ => format!("[{comm}]"),
        };
        (user, cmdline)
    }
}

/// How many `stat` files to keep open: [`MAX_KEPT_FDS`], or half the
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
        let entries = std::fs::read_dir(self.proc.root()).map_err(|source| ReadError::Io {
            path: self.proc.root().to_path_buf(),
            source,
        })?;
        let mut processes = Vec::new();
        let mut counts: BTreeMap<String, u32> =
            MAIN_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // The process may exit between listing and reading: skip it.
            let Some((stat, opened)) = self.read_stat(pid) else {
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
                let (user, cmdline) = self.describe(pid, &stat.comm);
                // Same process renamed by exec: keep its file. A new process
                // under a reused pid: drop the old one's.
                let kept = match self.known.remove(&pid) {
                    Some(old) if old.start_time == stat.start_time => old.stat,
                    Some(old) => {
                        if old.stat.is_some() {
                            self.kept_fds -= 1;
                        }
                        None
                    }
                    None => None,
                };
                self.known.insert(
                    pid,
                    Known {
                        start_time: stat.start_time,
                        comm: stat.comm.clone(),
                        ticks,
                        user,
                        cmdline,
                        seen: generation,
                        stat: kept,
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
            known.ticks = ticks;
            known.seen = generation;
            let state = state_name(stat.state);
            *counts.entry(state.to_string()).or_default() += 1;
            let rss_bytes = stat.rss_pages * self.page_size;
            processes.push(ProcessInfo {
                pid,
                name: stat.comm,
                user: known.user.clone(),
                cmdline: known.cmdline.clone(),
                cpu_pct,
                rss_bytes,
                mem_pct: if mem_total == 0 {
                    0.0
                } else {
                    rss_bytes as f64 * 100.0 / mem_total as f64
                },
                threads: stat.threads,
                state: state.to_string(),
            });
        }
        self.known.retain(|_, k| k.seen == generation);
        self.kept_fds = self.known.values().filter(|k| k.stat.is_some()).count();
        self.prev = Some(now);
        out.samples
            .push(Sample::new("proc.total", processes.len() as f64));
        for (state, count) in &counts {
            out.samples
                .push(Sample::new("proc.count", f64::from(*count)).label("state", state.clone()));
        }
        out.processes = Some(ProcessTable {
            time: Some(SystemTime::now()),
            processes,
            state_counts: counts.into_iter().filter(|(_, c)| *c > 0).collect(),
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
        let held = sensor.known.values().filter(|k| k.stat.is_some()).count();
        assert_eq!(sensor.kept_fds, held, "the count matches the files held");
    }
}
