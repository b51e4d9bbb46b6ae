//! One [`Sensor`] per Windows source: processor times, memory and paging
//! files, fixed drives, physical disks' counters, network interfaces,
//! processes. Each keeps the previous counters it needs for rates; a
//! counter that goes backwards (an interface reset, a process replaced
//! under the same pid) counts as no change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use agent_core::Sample;

use super::sys;
use crate::interface::push_rates;
use crate::processes::ProcessInfo;
use crate::sensor::{Describe, ProcessTable, ReadError, Reading, Sensor, leaders};

fn io_error(what: &str, source: std::io::Error) -> ReadError {
    ReadError::Io {
        path: what.into(),
        source,
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn per_sec(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        0.0
    } else {
        now.saturating_sub(before) as f64 / secs
    }
}

/// Processor times, total and per logical processor: `cpu.usage`,
/// `cpu.user`, `cpu.system` (privileged, without interrupts and DPCs),
/// `cpu.irq` (interrupts), `cpu.softirq` (deferred procedure calls),
/// `cpu.idle`; `cpu.cores`, `cpu.interrupts_per_sec`.
#[derive(Debug, Default)]
pub struct CpuSensor {
    previous: Option<(Instant, Vec<sys::CoreTimes>)>,
}

fn push_usage(
    out: &mut Vec<Sample>,
    now: &sys::CoreTimes,
    before: &sys::CoreTimes,
    core: Option<usize>,
) {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let idle = d(now.idle, before.idle);
    let kernel = d(now.kernel, before.kernel);
    let user = d(now.user, before.user);
    let dpc = d(now.dpc, before.dpc);
    let interrupt = d(now.interrupt, before.interrupt);
    // Kernel time includes idle, DPC and interrupt time.
    let total = kernel + user;
    let system = kernel.saturating_sub(idle + dpc + interrupt);
    let parts = [
        ("cpu.usage", pct(total.saturating_sub(idle), total)),
        ("cpu.user", pct(user, total)),
        ("cpu.system", pct(system, total)),
        ("cpu.irq", pct(interrupt, total)),
        ("cpu.softirq", pct(dpc, total)),
        ("cpu.idle", pct(idle.min(total), total)),
    ];
    for (name, value) in parts {
        let sample = Sample::new(name, value);
        out.push(match core {
            Some(n) => sample.label("cpu", n.to_string()),
            None => sample,
        });
    }
}

fn sum(cores: &[sys::CoreTimes]) -> sys::CoreTimes {
    cores
        .iter()
        .fold(sys::CoreTimes::default(), |a, c| sys::CoreTimes {
            idle: a.idle + c.idle,
            kernel: a.kernel + c.kernel,
            user: a.user + c.user,
            dpc: a.dpc + c.dpc,
            interrupt: a.interrupt + c.interrupt,
            interrupts: a.interrupts + c.interrupts,
        })
}

impl Sensor for CpuSensor {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn never_blocks(&self) -> bool {
        true
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let cores = sys::core_times().map_err(|e| io_error("processor times", e))?;
        let now = Instant::now();
        out.samples
            .push(Sample::new("cpu.cores", cores.len() as f64));
        if let Some((then, before)) = &self.previous
            && before.len() == cores.len()
        {
            let secs = now.duration_since(*then).as_secs_f64();
            let (all, all_before) = (sum(&cores), sum(before));
            push_usage(&mut out.samples, &all, &all_before, None);
            for (n, (c, b)) in cores.iter().zip(before).enumerate() {
                push_usage(&mut out.samples, c, b, Some(n));
            }
            out.samples.push(Sample::new(
                "cpu.interrupts_per_sec",
                per_sec(all.interrupts, all_before.interrupts, secs),
            ));
        }
        self.previous = Some((now, cores));
        Ok(())
    }
}

/// Physical memory (`mem.*`), the paging files (`swap.*`: the same
/// meaning, memory written out to disk) and the commit charge
/// (`mem.commit_bytes`, `mem.commit_limit_bytes`: Windows only).
#[derive(Debug, Default)]
pub struct MemorySensor;

impl Sensor for MemorySensor {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn never_blocks(&self) -> bool {
        true
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let m = sys::memory().map_err(|e| io_error("memory status", e))?;
        let used = m.total.saturating_sub(m.available);
        out.samples.extend([
            Sample::new("mem.total_bytes", m.total as f64),
            Sample::new("mem.available_bytes", m.available as f64),
            Sample::new("mem.used_bytes", used as f64),
            Sample::new("mem.used_pct", pct(used, m.total)),
            Sample::new("mem.cached_bytes", m.cache as f64),
            Sample::new("mem.commit_bytes", m.commit_total as f64),
            Sample::new("mem.commit_limit_bytes", m.commit_limit as f64),
        ]);
        match sys::page_files() {
            Ok(files) => {
                let total: u64 = files.iter().map(|f| f.total).sum();
                let used: u64 = files.iter().map(|f| f.used).sum();
                out.samples.extend([
                    Sample::new("swap.total_bytes", total as f64),
                    Sample::new("swap.used_bytes", used as f64),
                    Sample::new("swap.used_pct", pct(used, total)),
                ]);
            }
            Err(e) => tracing::debug!(error = %e, "Cannot read the paging files."),
        }
        Ok(())
    }
}

/// Fixed drives' size and use: `disk.total_bytes`, `disk.used_bytes`,
/// `disk.avail_bytes`, `disk.used_pct`, `disk.responsive`, labelled
/// `mount` and `device` (`C:`) and `fstype` (`NTFS`). Runs on the blocking
/// pool: a drive's free space is asked of its filesystem.
#[derive(Debug, Default)]
pub struct DriveSensor;

impl Sensor for DriveSensor {
    fn name(&self) -> &'static str {
        "drives"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        for root in sys::fixed_drives() {
            let drive = root.trim_end_matches('\\').to_string();
            let space = match sys::drive_space(&root) {
                Ok(space) => space,
                Err(e) => {
                    tracing::debug!(drive = %drive, error = %e, "Cannot read a drive's free space.");
                    continue;
                }
            };
            let fstype = sys::filesystem(&root);
            let used = space.total.saturating_sub(space.free);
            let labels = |s: Sample| {
                s.label("mount", drive.clone())
                    .label("device", drive.clone())
                    .label("fstype", fstype.clone())
            };
            for (name, value) in [
                ("disk.total_bytes", space.total as f64),
                ("disk.used_bytes", used as f64),
                ("disk.avail_bytes", space.available as f64),
                ("disk.used_pct", pct(used, used + space.available)),
                ("disk.responsive", 1.0),
            ] {
                out.samples.push(labels(Sample::new(name, value)));
            }
        }
        Ok(())
    }
}

/// Physical disks' counters (`IOCTL_DISK_PERFORMANCE`): `diskio.*` as on
/// Linux, labelled `device` (`PhysicalDrive0`). The disks are found at the
/// first reading (`\\.\PhysicalDrive0` to `15`) and kept open.
#[derive(Debug, Default)]
pub struct DiskIoSensor {
    disks: Option<Vec<(String, sys::Handle, Option<sys::DiskCounters>)>>,
}

impl Sensor for DiskIoSensor {
    fn name(&self) -> &'static str {
        "diskio"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let disks = self.disks.get_or_insert_with(|| {
            (0..16)
                .filter_map(|n| {
                    let handle = sys::open_physical_disk(n).ok()?;
                    sys::disk_counters(&handle).ok()?;
                    Some((format!("PhysicalDrive{n}"), handle, None))
                })
                .collect()
        });
        for (device, handle, previous) in disks.iter_mut() {
            let Ok(now) = sys::disk_counters(handle) else {
                continue;
            };
            if let Some(before) = previous.replace(now) {
                // QueryTime and the busy times are in 100 ns units.
                let span = now.query_time.saturating_sub(before.query_time);
                let secs = span as f64 / 1e7;
                let requests =
                    (now.reads + now.writes).saturating_sub(before.reads + before.writes);
                let busy = (now.read_time + now.write_time)
                    .saturating_sub(before.read_time + before.write_time);
                let idle = now.idle_time.saturating_sub(before.idle_time);
                let await_ms = if requests == 0 {
                    0.0
                } else {
                    busy as f64 / 1e4 / requests as f64
                };
                let util = if span == 0 {
                    0.0
                } else {
                    (100.0 - pct(idle, span)).clamp(0.0, 100.0)
                };
                let queue = if span == 0 {
                    0.0
                } else {
                    busy as f64 / span as f64
                };
                for (name, value) in [
                    (
                        "diskio.reads_per_sec",
                        per_sec(now.reads, before.reads, secs),
                    ),
                    (
                        "diskio.writes_per_sec",
                        per_sec(now.writes, before.writes, secs),
                    ),
                    (
                        "diskio.read_bytes_per_sec",
                        per_sec(now.bytes_read, before.bytes_read, secs),
                    ),
                    (
                        "diskio.write_bytes_per_sec",
                        per_sec(now.bytes_written, before.bytes_written, secs),
                    ),
                    ("diskio.await_ms", await_ms),
                    ("diskio.util_pct", util),
                    ("diskio.queue_depth", queue),
                ] {
                    out.samples
                        .push(Sample::new(name, value).label("device", device.clone()));
                }
            }
        }
        Ok(())
    }
}

/// Network interfaces' counters (`GetIfTable2`): `net.*_per_sec` as on
/// Linux, labelled `iface` (the interface's alias, `Ethernet`). By
/// default hardware interfaces only, never a filter's copy of one.
#[derive(Debug)]
pub struct NetSensor {
    include: Vec<String>,
    exclude: Vec<String>,
    virtual_too: bool,
    previous: HashMap<String, (Instant, sys::Interface)>,
}

impl NetSensor {
    /// A sensor reporting what the filters pass (see `net.*` keys).
    pub fn new(include: Vec<String>, exclude: Vec<String>, virtual_too: bool) -> NetSensor {
        NetSensor {
            include,
            exclude,
            virtual_too,
            previous: HashMap::new(),
        }
    }

    fn wanted(&self, i: &sys::Interface) -> bool {
        if crate::glob::any(&self.include, &i.alias) {
            return true;
        }
        if i.filter || crate::glob::any(&self.exclude, &i.alias) {
            return false;
        }
        self.virtual_too || i.hardware
    }
}

impl Sensor for NetSensor {
    fn name(&self) -> &'static str {
        "network"
    }

    fn never_blocks(&self) -> bool {
        true
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let now = Instant::now();
        let interfaces = sys::interfaces().map_err(|e| io_error("network interfaces", e))?;
        let mut seen = HashMap::new();
        for i in interfaces.into_iter().filter(|i| self.wanted(i)) {
            if seen.contains_key(&i.alias) {
                continue;
            }
            if let Some((then, before)) = self.previous.get(&i.alias) {
                let secs = now.duration_since(*then).as_secs_f64();
                push_rates(
                    &mut out.samples,
                    &i.alias,
                    &i.counters,
                    &before.counters,
                    secs,
                );
            }
            seen.insert(i.alias.clone(), (now, i));
        }
        self.previous = seen;
        Ok(())
    }
}

/// Reads a process's user and executable path (for a snapshot).
#[derive(Debug)]
struct Describer {
    cmdline_max: usize,
}

impl Describe for Describer {
    fn describe(&self, pid: u32, _name: &str) -> (String, String) {
        let user = sys::process_user(pid).unwrap_or_default();
        let mut image = sys::process_image(pid).unwrap_or_default();
        if image.len() > self.cmdline_max {
            let mut end = self.cmdline_max;
            while !image.is_char_boundary(end) {
                end -= 1;
            }
            image.truncate(end);
        }
        (user, image)
    }
}

/// Every process: CPU share of one core over the interval, working set,
/// threads; the user and executable path for those the top-N shows.
/// `proc.total` and `proc.count{state=running}` (Windows keeps no
/// process state: every process counts as running).
#[derive(Debug)]
pub struct ProcessSensor {
    top: usize,
    describer: Arc<Describer>,
    previous: HashMap<u32, (u64, u64)>,
    described: HashMap<(u32, u64), (String, String)>,
    then: Option<Instant>,
    total_memory: u64,
}

impl ProcessSensor {
    /// A sensor describing the top `top` processes, paths cut at
    /// `cmdline_max` bytes.
    pub fn new(top: usize, cmdline_max: usize) -> ProcessSensor {
        ProcessSensor {
            top,
            describer: Arc::new(Describer { cmdline_max }),
            previous: HashMap::new(),
            described: HashMap::new(),
            then: None,
            total_memory: sys::memory().map_or(0, |m| m.total),
        }
    }
}

impl Sensor for ProcessSensor {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let list = sys::processes().map_err(|e| io_error("process list", e))?;
        let now = Instant::now();
        let wall = self
            .then
            .map(|t| now.duration_since(t).as_nanos() as f64 / 100.0);
        let mut counters = HashMap::with_capacity(list.len());
        let mut created = Vec::with_capacity(list.len());
        let mut processes = Vec::with_capacity(list.len());
        for entry in list {
            let c = sys::process_counters(entry.pid).unwrap_or_default();
            let cpu_pct = match (wall, self.previous.get(&entry.pid)) {
                (Some(wall), Some(&(when, cpu))) if when == c.created && wall > 0.0 => {
                    c.cpu_time.saturating_sub(cpu) as f64 * 100.0 / wall
                }
                _ => 0.0,
            };
            counters.insert(entry.pid, (c.created, c.cpu_time));
            created.push(c.created);
            processes.push(ProcessInfo {
                pid: entry.pid,
                name: entry.name,
                user: String::new(),
                cmdline: String::new(),
                cpu_pct,
                rss_bytes: c.working_set,
                mem_pct: pct(c.working_set, self.total_memory),
                threads: entry.threads,
                state: "running",
            });
        }
        // The user and path of those shown, remembered while they live.
        let mut described = HashMap::new();
        for i in leaders(&processes, self.top) {
            let p = &mut processes[i];
            let key = (p.pid, created[i]);
            let (user, cmdline) = self
                .described
                .remove(&key)
                .unwrap_or_else(|| self.describer.describe(p.pid, &p.name));
            (p.user, p.cmdline) = (user.clone(), cmdline.clone());
            described.insert(key, (user, cmdline));
        }
        self.described = described;
        self.previous = counters;
        self.then = Some(now);
        let total = processes.len();
        out.samples.push(Sample::new("proc.total", total as f64));
        out.samples
            .push(Sample::new("proc.count", total as f64).label("state", "running"));
        let mut state_counts = std::collections::BTreeMap::new();
        state_counts.insert(
            "running".to_string(),
            u32::try_from(total).unwrap_or(u32::MAX),
        );
        out.processes = Some(ProcessTable {
            time: Some(SystemTime::now()),
            processes,
            state_counts,
            describer: Some(self.describer.clone()),
        });
        Ok(())
    }
}
