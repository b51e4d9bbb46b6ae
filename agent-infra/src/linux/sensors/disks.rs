//! Disk I/O per block device.
//!
//! Whole disks only: a device is reported when `/sys/block/<name>` exists,
//! which is true of disks (`sda`, `nvme0n1`, `vda`), device-mapper and md
//! devices, and never of partitions. `disk.exclude` then drops RAM disks,
//! loop devices and the like.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_core::Sample;

use crate::glob;
use crate::linux::disk::{DiskCounters, parse_diskstats, rates};
use crate::linux::{KeptFile, ProcFs};
use crate::sensor::{ReadError, Reading, Sensor};

/// How long the list of whole disks is trusted before it is read again.
const DISK_LIST_TTL: Duration = Duration::from_secs(60);

/// Reads `/proc/diskstats`.
#[derive(Debug)]
pub struct DiskSensor {
    diskstats: KeptFile,
    sys_block: PathBuf,
    exclude: Vec<String>,
    whole_disks: Option<(Instant, HashSet<String>)>,
    prev: Option<(Instant, HashMap<String, DiskCounters>)>,
}

impl DiskSensor {
    /// A sensor reading `proc`, checking disks against `<sys>/block`.
    pub fn new(proc: ProcFs, sys_root: PathBuf, exclude: Vec<String>) -> DiskSensor {
        DiskSensor {
            diskstats: KeptFile::new(&proc, "diskstats"),
            sys_block: sys_root.join("block"),
            exclude,
            whole_disks: None,
            prev: None,
        }
    }

    /// Whole-disk names; `None` when sysfs cannot be read (then every
    /// device not excluded is reported).
    fn whole_disks(&mut self, names: &[String]) -> Option<&HashSet<String>> {
        let stale = match &self.whole_disks {
            None => true,
            Some((at, known)) => {
                at.elapsed() > DISK_LIST_TTL
                    || names
                        .iter()
                        .any(|n| !known.contains(n) && !looks_like_partition(n))
            }
        };
        if stale {
            let list = std::fs::read_dir(&self.sys_block).ok()?;
            let set = list
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            self.whole_disks = Some((Instant::now(), set));
        }
        self.whole_disks.as_ref().map(|(_, set)| set)
    }
}

/// Only a hint to avoid rereading sysfs for every partition name.
fn looks_like_partition(name: &str) -> bool {
    name.ends_with(|c: char| c.is_ascii_digit())
}

impl Sensor for DiskSensor {
    fn name(&self) -> &'static str {
        "disks"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let lines = parse_diskstats(&self.diskstats.read()?)?;
        let now = Instant::now();
        let names: Vec<String> = lines.iter().map(|l| l.name.clone()).collect();
        let whole = self.whole_disks(&names).cloned();
        let mut current = HashMap::new();
        for line in lines {
            if glob::any(&self.exclude, &line.name)
                || whole.as_ref().is_some_and(|w| !w.contains(&line.name))
            {
                continue;
            }
            if let Some((then, prev)) = &self.prev
                && let Some(before) = prev.get(&line.name)
            {
                let r = rates(
                    before,
                    &line.counters,
                    now.duration_since(*then).as_secs_f64(),
                );
                for (name, value) in [
                    ("diskio.reads_per_sec", r.reads_per_sec),
                    ("diskio.writes_per_sec", r.writes_per_sec),
                    ("diskio.read_bytes_per_sec", r.read_bytes_per_sec),
                    ("diskio.write_bytes_per_sec", r.write_bytes_per_sec),
                    ("diskio.await_ms", r.await_ms),
                    ("diskio.util_pct", r.util_pct),
                    ("diskio.queue_depth", r.queue_depth),
                ] {
                    out.samples
                        .push(Sample::new(name, value).label("device", line.name.clone()));
                }
            }
            current.insert(line.name, line.counters);
        }
        self.prev = Some((now, current));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_disks_are_reported_and_partitions_and_loops_are_not() {
        let root = std::env::temp_dir().join(format!("sl-disks-{}", std::process::id()));
        let (proc, sys) = (root.join("proc"), root.join("sys"));
        for dev in ["sda", "nvme0n1", "dm-0", "loop0"] {
            std::fs::create_dir_all(sys.join("block").join(dev)).expect("sysfs");
        }
        std::fs::create_dir_all(&proc).expect("proc");
        let line =
            |name: &str, n: u64| format!("   8 0 {name} {n} 0 {n} 0 {n} 0 {n} 0 0 {n} {n}\n");
        let write = |n: u64| {
            let text: String = [
                "sda",
                "sda1",
                "nvme0n1",
                "nvme0n1p2",
                "dm-0",
                "loop0",
                "zram0",
            ]
            .iter()
            .map(|d| line(d, n))
            .collect();
            std::fs::write(proc.join("diskstats"), text).expect("diskstats");
        };
        let exclude = crate::settings::DISK_EXCLUDE
            .split(',')
            .map(String::from)
            .collect();
        let mut sensor = DiskSensor::new(ProcFs::new(&proc), sys.clone(), exclude);
        write(100);
        sensor.read(&mut Reading::default()).expect("first");
        write(200);
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("second");
        let mut devices: Vec<String> = reading
            .samples
            .iter()
            .filter(|s| s.name == "diskio.reads_per_sec")
            .filter_map(|s| {
                s.labels
                    .iter()
                    .find(|(k, _)| k == "device")
                    .map(|(_, v)| v.clone())
            })
            .collect();
        devices.sort();
        assert_eq!(devices, ["dm-0", "nvme0n1", "sda"]);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
