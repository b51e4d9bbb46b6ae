//! CPU usage (total and per core), load averages, context switches,
//! interrupts and forks per second.

use std::time::Instant;

use agent_core::Sample;

use crate::linux::cpu::{self, CpuUsage, Stat};
use crate::linux::load::parse_loadavg;
use crate::linux::{KeptFile, ProcFs};
use crate::sensor::{ReadError, Reading, Sensor};

/// Reads `/proc/stat` and `/proc/loadavg`.
#[derive(Debug)]
pub struct CpuSensor {
    stat: KeptFile,
    loadavg: KeptFile,
    prev: Option<(Instant, Stat)>,
}

impl CpuSensor {
    /// A sensor reading `proc`.
    pub fn new(proc: ProcFs) -> CpuSensor {
        CpuSensor {
            stat: KeptFile::new(&proc, "stat"),
            loadavg: KeptFile::new(&proc, "loadavg"),
            prev: None,
        }
    }
}

impl Sensor for CpuSensor {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let stat = cpu::parse_stat(&self.stat.read()?)?;
        let now = Instant::now();
        let s = &mut out.samples;
        if let Some((then, prev)) = &self.prev {
            if let Some(u) = cpu::usage(&prev.total, &stat.total) {
                push_usage(s, &u, None);
            }
            for (n, times) in &stat.cores {
                // A core that just came online has no earlier reading.
                if let Some(before) = prev.cores.get(n)
                    && let Some(u) = cpu::usage(before, times)
                {
                    push_usage(s, &u, Some(*n));
                }
            }
            let secs = now.duration_since(*then).as_secs_f64();
            if secs > 0.0 {
                let rate = |c: u64, p: u64| c.saturating_sub(p) as f64 / secs;
                s.push(Sample::new(
                    "cpu.context_switches_per_sec",
                    rate(stat.context_switches, prev.context_switches),
                ));
                s.push(Sample::new(
                    "cpu.interrupts_per_sec",
                    rate(stat.interrupts, prev.interrupts),
                ));
                s.push(Sample::new(
                    "proc.forks_per_sec",
                    rate(stat.forks, prev.forks),
                ));
            }
        }
        s.push(Sample::new("cpu.cores", stat.cores.len() as f64));
        s.push(Sample::new("proc.runnable", stat.procs_running as f64));
        s.push(Sample::new("proc.blocked", stat.procs_blocked as f64));
        let load = parse_loadavg(&self.loadavg.read()?)?;
        s.push(Sample::new("load.1m", load.one));
        s.push(Sample::new("load.5m", load.five));
        s.push(Sample::new("load.15m", load.fifteen));
        self.prev = Some((now, stat));
        Ok(())
    }
}

fn push_usage(samples: &mut Vec<Sample>, u: &CpuUsage, core: Option<u32>) {
    let parts = [
        ("cpu.usage", u.usage),
        ("cpu.user", u.user),
        ("cpu.nice", u.nice),
        ("cpu.system", u.system),
        ("cpu.iowait", u.iowait),
        ("cpu.irq", u.irq),
        ("cpu.softirq", u.softirq),
        ("cpu.steal", u.steal),
        ("cpu.idle", u.idle),
        ("cpu.guest", u.guest),
    ];
    for (name, value) in parts {
        let sample = Sample::new(name, value);
        samples.push(match core {
            Some(n) => sample.label("cpu", n.to_string()),
            None => sample,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sl-cpu-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("loadavg"), "0.50 0.40 0.30 1/100 999\n").expect("loadavg");
        dir
    }

    fn write_stat(dir: &std::path::Path, cores: &[(u32, u64, u64)]) {
        let (busy, idle): (u64, u64) = cores
            .iter()
            .fold((0, 0), |(b, i), (_, cb, ci)| (b + cb, i + ci));
        let mut text = format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n");
        for (n, b, i) in cores {
            text.push_str(&format!("cpu{n} {b} 0 0 {i} 0 0 0 0 0 0\n"));
        }
        text.push_str("ctxt 1000\nbtime 1700000000\nprocesses 50\nprocs_running 2\nprocs_blocked 0\nintr 500\n");
        std::fs::write(dir.join("stat"), text).expect("stat");
    }

    fn core_usage(reading: &Reading, core: &str) -> Option<f64> {
        reading
            .samples
            .iter()
            .find(|s| {
                s.name == "cpu.usage" && s.labels.iter().any(|(k, v)| k == "cpu" && v == core)
            })
            .map(|s| s.value)
    }

    #[test]
    fn cores_that_come_and_go_are_handled() {
        let dir = proc_dir("hotplug");
        let mut sensor = CpuSensor::new(ProcFs::new(&dir));
        write_stat(&dir, &[(0, 100, 100), (1, 100, 100)]);
        sensor.read(&mut Reading::default()).expect("first");
        // Core 1 goes offline, core 2 comes online.
        write_stat(&dir, &[(0, 150, 150), (2, 10, 10)]);
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("second");
        assert_eq!(core_usage(&reading, "0"), Some(50.0));
        assert_eq!(core_usage(&reading, "1"), None, "offline");
        assert_eq!(core_usage(&reading, "2"), None, "no earlier reading yet");
        let cores = reading
            .samples
            .iter()
            .find(|s| s.name == "cpu.cores")
            .map(|s| s.value);
        assert_eq!(cores, Some(2.0));
        write_stat(&dir, &[(0, 200, 200), (2, 30, 10)]);
        let mut reading = Reading::default();
        sensor.read(&mut reading).expect("third");
        assert_eq!(
            core_usage(&reading, "2"),
            Some(100.0),
            "reported from its second reading"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
