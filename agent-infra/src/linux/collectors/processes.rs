//! Every process: CPU share, memory, threads, state; the counts by state.
//!
//! Cost is what matters here, since a host may run thousands of processes:
//! `/proc/<pid>/stat` is read every cycle (one small read; no thread walk),
//! `status` and `cmdline` only for a process not seen before (a pid reused
//! by a new process is told apart by its start time). `smaps` and friends,
//! which make the kernel walk page tables, are never read.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use agent_core::Sample;
use agent_core::domain::ProcessInfo;

use crate::collect::{Collect, ProcessTable, ReadError, Reading};
use crate::linux::ProcFs;
use crate::linux::process::{
    format_cmdline, parse_passwd, parse_pid_stat, parse_status_uid, state_name,
};

/// States always reported, even at zero, so their series have no gaps.
const MAIN_STATES: &[&str] = &[
    "running",
    "sleeping",
    "disk-sleep",
    "zombie",
    "stopped",
    "idle",
];

#[derive(Debug)]
struct Known {
    start_time: u64,
    ticks: u64,
    user: String,
    cmdline: String,
    seen: u64,
}

/// Reads `/proc/<pid>/*`.
#[derive(Debug)]
pub struct ProcessCollector {
    proc: ProcFs,
    passwd: PathBuf,
    cmdline_max: usize,
    ticks_per_sec: f64,
    page_size: u64,
    known: HashMap<u32, Known>,
    users: HashMap<u32, String>,
    users_stamp: Option<SystemTime>,
    prev: Option<Instant>,
    generation: u64,
    buf: String,
    path: PathBuf,
}

impl ProcessCollector {
    /// A collector reading `proc`, naming users from `<etc>/passwd`.
    pub fn new(proc: ProcFs, etc_root: &Path, cmdline_max: usize) -> ProcessCollector {
        ProcessCollector {
            path: proc.root().to_path_buf(),
            proc,
            passwd: etc_root.join("passwd"),
            cmdline_max,
            ticks_per_sec: rustix::param::clock_ticks_per_second() as f64,
            page_size: rustix::param::page_size() as u64,
            known: HashMap::new(),
            users: HashMap::new(),
            users_stamp: None,
            prev: None,
            generation: 0,
            buf: String::with_capacity(512),
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

    /// Reads `<proc>/<pid>/<file>` into the reused buffer.
    fn read_pid_file(&mut self, pid: &str, file: &str) -> std::io::Result<()> {
        self.buf.clear();
        self.path.clear();
        self.path.push(self.proc.root());
        self.path.push(pid);
        self.path.push(file);
        std::fs::File::open(&self.path)?.read_to_string(&mut self.buf)?;
        Ok(())
    }

    fn describe(&mut self, pid: &str, comm: &str) -> (String, String) {
        let uid = match self.read_pid_file(pid, "status") {
            Ok(()) => parse_status_uid(&self.buf),
            Err(_) => None,
        };
        let user = uid.map_or_else(
            || "?".to_string(),
            |u| self.users.get(&u).cloned().unwrap_or_else(|| u.to_string()),
        );
        self.path.clear();
        self.path.push(self.proc.root());
        self.path.push(pid);
        self.path.push("cmdline");
        let cmdline = match std::fs::read(&self.path) {
            Ok(raw) if !raw.is_empty() => format_cmdline(&raw, self.cmdline_max),
            // Kernel threads have no command line; ps shows them bracketed.
            _ => format!("[{comm}]"),
        };
        (user, cmdline)
    }
}

impl Collect for ProcessCollector {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn collect(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        self.refresh_users();
        let mem_total = self.proc.meminfo()?.total;
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
            let name = entry.file_name();
            let Some(pid_text) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let pid_text = pid_text.to_string();
            // The process may exit between listing and reading: skip it.
            if self.read_pid_file(&pid_text, "stat").is_err() {
                continue;
            }
            let Ok(stat) = parse_pid_stat(&self.buf) else {
                continue;
            };
            let ticks = stat.utime + stat.stime;
            let cpu_pct = match (self.known.get(&stat.pid), elapsed) {
                (Some(k), Some(secs)) if k.start_time == stat.start_time && secs > 0.0 => {
                    ticks.saturating_sub(k.ticks) as f64 * 100.0 / (secs * self.ticks_per_sec)
                }
                _ => 0.0,
            };
            let fresh = self
                .known
                .get(&stat.pid)
                .is_none_or(|k| k.start_time != stat.start_time);
            if fresh {
                let (user, cmdline) = self.describe(&pid_text, &stat.comm);
                self.known.insert(
                    stat.pid,
                    Known {
                        start_time: stat.start_time,
                        ticks,
                        user,
                        cmdline,
                        seen: generation,
                    },
                );
            }
            let Some(known) = self.known.get_mut(&stat.pid) else {
                continue;
            };
            known.ticks = ticks;
            known.seen = generation;
            let state = state_name(stat.state);
            *counts.entry(state.to_string()).or_default() += 1;
            let rss_bytes = stat.rss_pages * self.page_size;
            processes.push(ProcessInfo {
                pid: stat.pid,
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
        let mut collector = ProcessCollector::new(ProcFs::new("/proc"), Path::new("/etc"), 4096);
        let mut reading = Reading::default();
        collector.collect(&mut reading).expect("reads /proc");
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
        let expected = collector
            .users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string());
        assert_eq!(me.user, expected);
        assert_eq!(me.cpu_pct, 0.0, "no CPU share on first sight");
        let total: u32 = table.state_counts.values().sum();
        assert_eq!(total as usize, table.processes.len());

        // Burn some CPU, then the second reading shows it.
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let mut reading = Reading::default();
        collector.collect(&mut reading).expect("reads /proc");
        let me = reading
            .processes
            .expect("table")
            .processes
            .into_iter()
            .find(|p| p.pid == std::process::id())
            .expect("me");
        assert!(me.cpu_pct > 50.0, "{}", me.cpu_pct);
    }
}
