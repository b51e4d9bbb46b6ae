//! CPU time from `/proc/stat`, and usage as the share of each state between
//! two readings.
//!
//! The kernel counts guest time inside user (and guest_nice inside nice);
//! we subtract it so no tick is counted twice. Counters that go backwards
//! (iowait does, on some kernels, when a CPU goes idle) are clamped to no
//! change. `cpu.usage` is the time spent working: everything but idle,
//! iowait and steal (time the hypervisor gave to someone else is not work
//! this host did).

use std::collections::BTreeMap;

use super::parse::{ParseError, u64_fields};

const FILE: &str = "stat";

/// Cumulative time per state, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// User time, guest excluded.
    pub user: u64,
    /// Niced user time, guest_nice excluded.
    pub nice: u64,
    /// Kernel time.
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle with I/O outstanding.
    pub iowait: u64,
    /// Hard interrupts.
    pub irq: u64,
    /// Soft interrupts.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
    /// Running guests (guest + guest_nice).
    pub guest: u64,
}

impl CpuTimes {
    fn from_fields(v: &[u64]) -> CpuTimes {
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let (guest, guest_nice) = (at(8), at(9));
        CpuTimes {
            user: at(0).saturating_sub(guest),
            nice: at(1).saturating_sub(guest_nice),
            system: at(2),
            idle: at(3),
            iowait: at(4),
            irq: at(5),
            softirq: at(6),
            steal: at(7),
            guest: guest + guest_nice,
        }
    }
}

/// One reading of `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// All CPUs together.
    pub total: CpuTimes,
    /// Per CPU, keyed by CPU number; offline CPUs are absent.
    pub cores: BTreeMap<u32, CpuTimes>,
    /// Context switches since boot.
    pub context_switches: u64,
    /// Interrupts since boot.
    pub interrupts: u64,
    /// Processes forked since boot.
    pub forks: u64,
    /// Runnable tasks now.
    pub procs_running: u64,
    /// Tasks blocked on I/O now.
    pub procs_blocked: u64,
    /// Boot time, unix seconds.
    pub boot_time: u64,
}

/// Parses `/proc/stat`.
pub fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    let mut stat = Stat::default();
    let mut saw_total = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if key == "cpu" {
            stat.total = CpuTimes::from_fields(&u64_fields(FILE, number, fields)?);
            saw_total = true;
        } else if let Some(cpu) = key.strip_prefix("cpu") {
            let cpu: u32 = cpu
                .parse()
                .map_err(|_| ParseError::new(FILE, number, format!("bad CPU name '{key}'")))?;
            stat.cores.insert(
                cpu,
                CpuTimes::from_fields(&u64_fields(FILE, number, fields)?),
            );
        } else {
            let first =
                |fields: &mut std::str::SplitAsciiWhitespace<'_>| -> Result<u64, ParseError> {
                    let f = fields.next().ok_or_else(|| {
                        ParseError::new(FILE, number, format!("{key} has no value"))
                    })?;
                    f.parse().map_err(|_| {
                        ParseError::new(FILE, number, format!("{key}: '{f}' is not a number"))
                    })
                };
            match key {
                "ctxt" => stat.context_switches = first(&mut fields)?,
                "intr" => stat.interrupts = first(&mut fields)?,
                "processes" => stat.forks = first(&mut fields)?,
                "procs_running" => stat.procs_running = first(&mut fields)?,
                "procs_blocked" => stat.procs_blocked = first(&mut fields)?,
                "btime" => stat.boot_time = first(&mut fields)?,
                _ => {}
            }
        }
    }
    if !saw_total {
        return Err(ParseError::new(FILE, 1, "no 'cpu' line"));
    }
    Ok(stat)
}

/// The share of time in each state between two readings, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUsage {
    /// Working: 100 minus idle, iowait and steal.
    pub usage: f64,
    /// User (guest excluded).
    pub user: f64,
    /// Nice.
    pub nice: f64,
    /// System.
    pub system: f64,
    /// Iowait.
    pub iowait: f64,
    /// Irq.
    pub irq: f64,
    /// Softirq.
    pub softirq: f64,
    /// Steal.
    pub steal: f64,
    /// Idle.
    pub idle: f64,
    /// Guest.
    pub guest: f64,
}

/// Usage between `prev` and `cur`; `None` when no tick passed.
pub fn usage(prev: &CpuTimes, cur: &CpuTimes) -> Option<CpuUsage> {
    let d = |c: u64, p: u64| c.saturating_sub(p) as f64;
    let user = d(cur.user, prev.user);
    let nice = d(cur.nice, prev.nice);
    let system = d(cur.system, prev.system);
    let idle = d(cur.idle, prev.idle);
    let iowait = d(cur.iowait, prev.iowait);
    let irq = d(cur.irq, prev.irq);
    let softirq = d(cur.softirq, prev.softirq);
    let steal = d(cur.steal, prev.steal);
    let guest = d(cur.guest, prev.guest);
    let total = user + nice + system + idle + iowait + irq + softirq + steal + guest;
    if total <= 0.0 {
        return None;
    }
    let pct = |v: f64| v * 100.0 / total;
    Some(CpuUsage {
        usage: pct(total - idle - iowait - steal),
        user: pct(user),
        nice: pct(nice),
        system: pct(system),
        iowait: pct(iowait),
        irq: pct(irq),
        softirq: pct(softirq),
        steal: pct(steal),
        idle: pct(idle),
        guest: pct(guest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = include_str!("../../tests/fixtures/vm-2cpu/stat");

    #[test]
    fn parses_a_real_file() {
        let stat = parse_stat(VM).expect("parses");
        assert_eq!(stat.cores.len(), 2);
        assert!(stat.boot_time > 1_600_000_000);
        assert!(stat.context_switches > 0 && stat.interrupts > 0);
        let sum: u64 = stat.cores.values().map(|c| c.user).sum();
        // The total line is the sum of the cores, give or take a tick.
        assert!(
            stat.total.user.abs_diff(sum) <= 2,
            "{} vs {sum}",
            stat.total.user
        );
    }

    #[test]
    fn guest_is_taken_out_of_user_and_nice() {
        let text = "cpu  1000 200 300 4000 50 6 7 80 400 100\n";
        let t = parse_stat(text).expect("parses").total;
        assert_eq!((t.user, t.nice, t.guest), (600, 100, 500));
    }

    #[test]
    fn usage_excludes_idle_iowait_and_steal() {
        let prev = CpuTimes::default();
        let cur = CpuTimes {
            user: 30,
            system: 10,
            idle: 40,
            iowait: 10,
            steal: 10,
            ..CpuTimes::default()
        };
        let u = usage(&prev, &cur).expect("ticks passed");
        assert!((u.usage - 40.0).abs() < 1e-9);
        assert!((u.iowait - 10.0).abs() < 1e-9);
        assert!((u.steal - 10.0).abs() < 1e-9);
        let parts =
            u.user + u.nice + u.system + u.iowait + u.irq + u.softirq + u.steal + u.idle + u.guest;
        assert!((parts - 100.0).abs() < 1e-9);
    }

    #[test]
    fn a_counter_going_backwards_counts_as_no_change() {
        let prev = CpuTimes {
            user: 100,
            idle: 100,
            iowait: 50,
            ..CpuTimes::default()
        };
        let cur = CpuTimes {
            user: 150,
            idle: 150,
            iowait: 40,
            ..CpuTimes::default()
        };
        let u = usage(&prev, &cur).expect("ticks passed");
        assert!((u.usage - 50.0).abs() < 1e-9, "{u:?}");
        assert_eq!(u.iowait, 0.0);
    }

    #[test]
    fn no_ticks_means_no_reading() {
        assert_eq!(usage(&CpuTimes::default(), &CpuTimes::default()), None);
    }

    #[test]
    fn garbage_names_the_line() {
        let err = parse_stat("cpu 1 2 3\ncpuX 1 2\n").expect_err("bad");
        assert_eq!(err.line, 2);
        assert!(parse_stat("intr 5\n").is_err(), "no cpu line");
    }
}
