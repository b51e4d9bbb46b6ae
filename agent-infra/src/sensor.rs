//! Running the host sensors (a sensor reads one source of host data; the
//! word "collector" is kept for the server): each on the blocking pool,
//! each with its own deadline, so one slow source (a hung mount, a process whose memory
//! map is locked) delays nothing else. A sensor that cannot block (it only
//! re-reads in-kernel counters through files it holds open:
//! [`Sensor::never_blocks`]) runs in place on the loop's thread instead,
//! since a hand-off to the pool and back costs more than its reading.
//!
//! Invariants:
//! - A sensor that missed its deadline is not started again until its
//!   previous run returns: at most one stuck thread per sensor, never a
//!   pile of them.
//! - Its late reading is thrown away (it belongs to a past interval); its
//!   state comes back with it, so rates stay correct afterwards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_core::Sample;
use agent_core::domain::Event;

use crate::processes::{ProcessInfo, ProcessSnapshot, SnapshotReason};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};

/// A host source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The content was not as expected.
    #[error("{0}")]
    Parse(String),
}

/// What sensors produce in one cycle.
#[derive(Debug, Default)]
pub struct Reading {
    /// Metric samples.
    pub samples: Vec<Sample>,
    /// The whole process table, from the process sensor.
    pub processes: Option<ProcessTable>,
    /// Events noticed while collecting (a mount stopped answering).
    pub events: Vec<Event>,
}

impl Reading {
    fn merge(&mut self, other: Reading) {
        self.samples.extend(other.samples);
        if other.processes.is_some() {
            self.processes = other.processes;
        }
        self.events.extend(other.events);
    }
}

/// The most processes a threshold snapshot lists: about 150 KB on the wire,
/// far below what one batch may carry, even on a host running 50,000.
pub const FULL_SNAPSHOT_MAX: usize = 1000;

/// Reads what a snapshot shows of a process beyond its counters: its
/// user and command line. Blocking IO: call it off the async threads.
pub trait Describe: Send + Sync + std::fmt::Debug {
    /// User and command line of process `pid`, named `name`.
    fn describe(&self, pid: u32, name: &str) -> (String, String);
}

/// Every process at one moment, with its CPU share over the last interval.
/// The processes [`ProcessTable::top`] shows carry their user and command
/// line; the others may not (an empty `user`), until
/// [`ProcessTable::describe_missing`] reads them.
#[derive(Debug, Clone, Default)]
pub struct ProcessTable {
    /// When it was read.
    pub time: Option<SystemTime>,
    /// Every process.
    pub processes: Vec<ProcessInfo>,
    /// How many processes are in each state.
    pub state_counts: BTreeMap<String, u32>,
    /// Reads the user and command line of a process left without them.
    pub describer: Option<Arc<dyn Describe>>,
}

/// The indexes of the top `n` of `processes` by CPU together with the top
/// `n` by memory (a process in both lists appears once): what
/// [`ProcessTable::top`] shows.
pub fn leaders(processes: &[ProcessInfo], n: usize) -> Vec<usize> {
    let mut by_cpu: Vec<usize> = (0..processes.len()).collect();
    by_cpu.sort_by(|&a, &b| {
        let (a, b) = (&processes[a], &processes[b]);
        b.cpu_pct
            .total_cmp(&a.cpu_pct)
            .then(b.rss_bytes.cmp(&a.rss_bytes))
    });
    by_cpu.truncate(n);
    let mut by_mem: Vec<usize> = (0..processes.len()).collect();
    by_mem.sort_by_key(|&i| std::cmp::Reverse(processes[i].rss_bytes));
    for i in by_mem.into_iter().take(n) {
        if !by_cpu.contains(&i) {
            by_cpu.push(i);
        }
    }
    by_cpu
}

impl ProcessTable {
    /// The top `n` by CPU together with the top `n` by memory (a process in
    /// both lists appears once), ordered by CPU.
    pub fn top(&self, n: usize) -> ProcessSnapshot {
        let mut chosen: Vec<ProcessInfo> = leaders(&self.processes, n)
            .into_iter()
            .filter_map(|i| self.processes.get(i).cloned())
            .collect();
        chosen.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct));
        self.snapshot(SnapshotReason::Top, chosen)
    }

    /// Reads the user and command line of every process left without them
    /// (blocking IO: run it on the blocking pool). For a full snapshot.
    pub fn describe_missing(&mut self) {
        let Some(describer) = &self.describer else {
            return;
        };
        for p in self.processes.iter_mut().filter(|p| p.user.is_empty()) {
            (p.user, p.cmdline) = describer.describe(p.pid, &p.name);
        }
    }

    /// Every process, by CPU, up to [`FULL_SNAPSHOT_MAX`] (the busiest and
    /// largest first; `total` still says how many there were): the load
    /// snapshot of a crossed threshold. Call [`ProcessTable::describe_missing`]
    /// first for every process to show its user and command line.
    pub fn full(&self) -> ProcessSnapshot {
        let mut all = self.processes.clone();
        all.sort_by(|a, b| {
            b.cpu_pct
                .total_cmp(&a.cpu_pct)
                .then(b.rss_bytes.cmp(&a.rss_bytes))
        });
        all.truncate(FULL_SNAPSHOT_MAX);
        self.snapshot(SnapshotReason::Threshold, all)
    }

    fn snapshot(&self, reason: SnapshotReason, processes: Vec<ProcessInfo>) -> ProcessSnapshot {
        ProcessSnapshot {
            time: self.time.unwrap_or_else(SystemTime::now),
            reason,
            processes,
            state_counts: self.state_counts.clone(),
            total: u32::try_from(self.processes.len()).unwrap_or(u32::MAX),
        }
    }
}

/// One source of host data. `read` runs on a blocking thread and may
/// block (unless it says it never does: [`Sensor::never_blocks`]); it keeps
/// whatever it needs for rates between calls.
pub trait Sensor: Send + 'static {
    /// Short name for logs: `cpu`, `filesystems`.
    fn name(&self) -> &'static str;
    /// Reads once, adding to `out`.
    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError>;
    /// Whether `read` can never block: it reads in-kernel counters only
    /// (no disk, no mount, no other process's memory), briefly. Such a
    /// sensor runs on the async thread, in place. `false` unless said.
    fn never_blocks(&self) -> bool {
        false
    }
}

/// Sensors run one after the other in one slot: for sources that read
/// in-kernel counters only (`/proc/stat`, `meminfo`, `diskstats`,
/// `net/dev`) and so cannot block, where a thread hand-off each would cost
/// more than the reading. An error in one member does not stop the others.
pub struct Group {
    name: &'static str,
    members: Vec<Box<dyn Sensor>>,
    never_blocks: bool,
}

impl Group {
    /// A group named `name`.
    pub fn new(name: &'static str, members: Vec<Box<dyn Sensor>>) -> Group {
        Group {
            name,
            members,
            never_blocks: false,
        }
    }

    /// A group of sensors that never block (see [`Sensor::never_blocks`]),
    /// to run in place.
    pub fn never_blocking(name: &'static str, members: Vec<Box<dyn Sensor>>) -> Group {
        Group {
            never_blocks: true,
            ..Group::new(name, members)
        }
    }
}

impl Sensor for Group {
    fn name(&self) -> &'static str {
        self.name
    }

    fn never_blocks(&self) -> bool {
        self.never_blocks
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        for member in &mut self.members {
            if let Err(e) = member.read(out) {
                tracing::warn!(sensor = member.name(), error = %e, "Cannot read host data.");
            }
        }
        Ok(())
    }
}

type Outcome = (Box<dyn Sensor>, Result<Reading, ReadError>);

struct Slot {
    name: &'static str,
    /// Runs in place (see [`Sensor::never_blocks`]).
    in_place: bool,
    idle: Option<Box<dyn Sensor>>,
    running: Option<JoinHandle<Outcome>>,
    /// Missed its deadline and has not returned yet (logged once).
    late: bool,
}

/// The sensors of a host.
pub struct SensorSet {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for SensorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.slots.iter().map(|s| s.name).collect();
        f.debug_struct("SensorSet")
            .field("sensors", &names)
            .finish()
    }
}

impl SensorSet {
    /// A set running `sensors`.
    pub fn new(sensors: Vec<Box<dyn Sensor>>) -> SensorSet {
        SensorSet {
            slots: sensors
                .into_iter()
                .map(|c| Slot {
                    name: c.name(),
                    in_place: c.never_blocks(),
                    idle: Some(c),
                    running: None,
                    late: false,
                })
                .collect(),
        }
    }

    /// Runs every sensor that is free, and gathers what arrives within
    /// `deadline`.
    pub async fn read(&mut self, deadline: Duration) -> Reading {
        let until = Instant::now() + deadline;
        for slot in &mut self.slots {
            if let Some(handle) = &slot.running {
                if !handle.is_finished() {
                    continue;
                }
                // The late run finished: take the sensor back, drop its
                // stale reading.
                if let Some(handle) = slot.running.take()
                    && let Ok((sensor, _stale)) = handle.await
                {
                    tracing::info!(sensor = slot.name, "Sensor answers again.");
                    slot.idle = Some(sensor);
                    slot.late = false;
                }
            }
            if slot.in_place {
                continue;
            }
            if let Some(mut sensor) = slot.idle.take() {
                slot.running = Some(tokio::task::spawn_blocking(move || {
                    let mut reading = Reading::default();
                    let result = sensor.read(&mut reading).map(|()| reading);
                    (sensor, result)
                }));
            }
        }
        let mut all = Reading::default();
        for slot in &mut self.slots {
            if slot.in_place
                && let Some(sensor) = slot.idle.as_mut()
            {
                let mut reading = Reading::default();
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    sensor.read(&mut reading)
                }));
                match read {
                    Ok(Ok(())) => all.merge(reading),
                    Ok(Err(e)) => {
                        tracing::warn!(sensor = slot.name, error = %e, "Cannot read host data.")
                    }
                    Err(_) => {
                        slot.idle = None;
                        tracing::error!(sensor = slot.name, "Sensor crashed; it is disabled.");
                    }
                }
                continue;
            }
            let Some(handle) = slot.running.as_mut() else {
                continue;
            };
            match timeout_at(until, handle).await {
                Ok(Ok((sensor, result))) => {
                    slot.running = None;
                    slot.idle = Some(sensor);
                    match result {
                        Ok(reading) => all.merge(reading),
                        Err(e) => {
                            tracing::warn!(sensor = slot.name, error = %e, "Cannot read host data.")
                        }
                    }
                }
                Ok(Err(e)) => {
                    slot.running = None;
                    tracing::error!(sensor = slot.name, error = %e, "Sensor crashed; it is disabled.");
                }
                Err(_) => {
                    if !slot.late {
                        tracing::warn!(sensor = slot.name, deadline = ?deadline, "Sensor missed its deadline; the others report without it.");
                        slot.late = true;
                    }
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    struct Fixed(&'static str, f64);
    impl Sensor for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
            out.samples.push(Sample::new(self.0, self.1));
            Ok(())
        }
    }

    /// Blocks while `hold` is set; counts how many runs started.
    struct Stuck {
        hold: Arc<AtomicBool>,
        runs: Arc<AtomicU32>,
    }
    impl Sensor for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }
        fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            while self.hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            out.samples.push(Sample::new("stuck", 1.0));
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_stuck_sensor_delays_nothing_and_is_never_started_twice() {
        let hold = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicU32::new(0));
        let mut set = SensorSet::new(vec![
            Box::new(Fixed("a", 1.0)),
            Box::new(Stuck {
                hold: hold.clone(),
                runs: runs.clone(),
            }),
            Box::new(Fixed("b", 2.0)),
        ]);
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let reading = set.read(Duration::from_millis(100)).await;
            assert!(started.elapsed() < Duration::from_millis(500));
            let names: Vec<&str> = reading.samples.iter().map(|s| &*s.name).collect();
            assert_eq!(names, ["a", "b"]);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not restarted while stuck");
        hold.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Its late reading is dropped; the next cycle runs it afresh.
        let reading = set.read(Duration::from_millis(500)).await;
        let names: Vec<&str> = reading.samples.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["a", "stuck", "b"]);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    /// Reads on the thread it runs on, and says whether it may block.
    struct Here {
        never_blocks: bool,
        thread: Arc<std::sync::Mutex<Option<std::thread::ThreadId>>>,
    }
    impl Sensor for Here {
        fn name(&self) -> &'static str {
            "here"
        }
        fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
            if let Ok(mut seen) = self.thread.lock() {
                *seen = Some(std::thread::current().id());
            }
            out.samples.push(Sample::new("here", 1.0));
            Ok(())
        }
        fn never_blocks(&self) -> bool {
            self.never_blocks
        }
    }

    #[tokio::test]
    async fn only_a_sensor_that_never_blocks_runs_in_place() {
        let in_place = Arc::new(std::sync::Mutex::new(None));
        let pooled = Arc::new(std::sync::Mutex::new(None));
        let mut set = SensorSet::new(vec![
            Box::new(Here {
                never_blocks: true,
                thread: in_place.clone(),
            }),
            Box::new(Fixed("a", 1.0)),
            Box::new(Here {
                never_blocks: false,
                thread: pooled.clone(),
            }),
        ]);
        for _ in 0..2 {
            let reading = set.read(Duration::from_secs(5)).await;
            let names: Vec<&str> = reading.samples.iter().map(|s| &*s.name).collect();
            assert_eq!(names, ["here", "a", "here"], "in the sensors' order");
        }
        let me = std::thread::current().id();
        assert_eq!(*in_place.lock().expect("lock"), Some(me));
        let other = *pooled.lock().expect("lock");
        assert!(other.is_some_and(|t| t != me), "on the blocking pool");
    }

    #[test]
    fn top_joins_the_cpu_and_memory_leaders() {
        let p = |pid, cpu, rss| ProcessInfo {
            pid,
            name: format!("p{pid}"),
            user: "u".into(),
            cmdline: String::new(),
            cpu_pct: cpu,
            rss_bytes: rss,
            mem_pct: 0.0,
            threads: 1,
            state: "running",
        };
        let table = ProcessTable {
            time: None,
            processes: vec![
                p(1, 50.0, 10),
                p(2, 40.0, 1000),
                p(3, 1.0, 5000),
                p(4, 0.5, 1),
            ],
            state_counts: BTreeMap::new(),
            describer: None,
        };
        let top = table.top(2);
        let pids: Vec<u32> = top.processes.iter().map(|p| p.pid).collect();
        assert_eq!(
            pids,
            [1, 2, 3],
            "top 2 by CPU (1, 2) and by memory (3, 2), once each"
        );
        assert_eq!(top.total, 4);
        assert_eq!(table.full().processes.len(), 4);
    }
}
