//! Block device I/O from `/proc/diskstats`, and which devices to report.
//!
//! Rates follow `iostat -x`: `await` is the time requests spent queued and
//! served, per request completed; utilisation is the share of wall time the
//! device had requests in flight; queue depth is the time-weighted number
//! of requests in flight.

use super::parse::{ParseError, u64_fields};

const FILE: &str = "diskstats";
/// The kernel counts sectors of 512 bytes in diskstats, whatever the device.
pub const SECTOR_BYTES: u64 = 512;

/// Cumulative counters of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounters {
    /// Reads completed.
    pub reads: u64,
    /// Sectors read.
    pub read_sectors: u64,
    /// Milliseconds spent reading.
    pub read_ms: u64,
    /// Writes completed.
    pub writes: u64,
    /// Sectors written.
    pub write_sectors: u64,
    /// Milliseconds spent writing.
    pub write_ms: u64,
    /// Milliseconds with I/O in flight.
    pub io_ms: u64,
    /// Weighted milliseconds of I/O in flight.
    pub weighted_ms: u64,
}

/// One line of `/proc/diskstats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLine {
    /// Device name (`vda`, `nvme0n1`, `dm-0`).
    pub name: String,
    /// Its counters.
    pub counters: DiskCounters,
}

/// Parses `/proc/diskstats`.
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskLine>, ParseError> {
    let mut disks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_major), Some(_minor), Some(name)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let v = u64_fields(FILE, index + 1, fields)?;
        if v.len() < 11 {
            return Err(ParseError::new(
                FILE,
                index + 1,
                format!("{name}: {} counters, expected at least 11", v.len()),
            ));
        }
        disks.push(DiskLine {
            name: name.to_string(),
            counters: DiskCounters {
                reads: v[0],
                read_sectors: v[2],
                read_ms: v[3],
                writes: v[4],
                write_sectors: v[6],
                write_ms: v[7],
                io_ms: v[9],
                weighted_ms: v[10],
            },
        });
    }
    Ok(disks)
}

/// Rates of one device over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DiskRates {
    /// Reads per second.
    pub reads_per_sec: f64,
    /// Writes per second.
    pub writes_per_sec: f64,
    /// Bytes read per second.
    pub read_bytes_per_sec: f64,
    /// Bytes written per second.
    pub write_bytes_per_sec: f64,
    /// Mean time per request, queue included, in ms.
    pub await_ms: f64,
    /// Share of the interval with requests in flight, %.
    pub util_pct: f64,
    /// Mean requests in flight.
    pub queue_depth: f64,
}

/// Rates between two readings `secs` apart. Counters that went backwards
/// (a device re-attached) count as no change.
pub fn rates(prev: &DiskCounters, cur: &DiskCounters, secs: f64) -> DiskRates {
    if secs <= 0.0 {
        return DiskRates::default();
    }
    let d = |c: u64, p: u64| c.saturating_sub(p) as f64;
    let reads = d(cur.reads, prev.reads);
    let writes = d(cur.writes, prev.writes);
    let ios = reads + writes;
    let busy_ms = d(cur.read_ms, prev.read_ms) + d(cur.write_ms, prev.write_ms);
    DiskRates {
        reads_per_sec: reads / secs,
        writes_per_sec: writes / secs,
        read_bytes_per_sec: d(cur.read_sectors, prev.read_sectors) * SECTOR_BYTES as f64 / secs,
        write_bytes_per_sec: d(cur.write_sectors, prev.write_sectors) * SECTOR_BYTES as f64 / secs,
        await_ms: if ios > 0.0 { busy_ms / ios } else { 0.0 },
        util_pct: (d(cur.io_ms, prev.io_ms) / (secs * 10.0)).min(100.0),
        queue_depth: d(cur.weighted_ms, prev.weighted_ms) / (secs * 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_file() {
        let disks = parse_diskstats(include_str!("../../tests/fixtures/vm-2cpu/diskstats"))
            .expect("parses");
        let vda = disks.iter().find(|d| d.name == "vda").expect("vda");
        assert_eq!(vda.counters.reads, 22330);
        assert_eq!(vda.counters.read_sectors, 5_864_098);
        assert_eq!(vda.counters.write_sectors, 3_725_112);
        assert_eq!(vda.counters.io_ms, 10036);
        assert!(disks.iter().any(|d| d.name == "loop0"));
    }

    #[test]
    fn old_kernels_with_eleven_counters_parse() {
        let disks = parse_diskstats("   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n").expect("parses");
        assert_eq!(disks[0].counters.weighted_ms, 11);
        assert!(parse_diskstats("   8       0 sda 1 2 3\n").is_err());
    }

    #[test]
    fn rates_match_iostat() {
        let prev = DiskCounters::default();
        let cur = DiskCounters {
            reads: 100,
            read_sectors: 2048,
            read_ms: 300,
            writes: 100,
            write_sectors: 4096,
            write_ms: 100,
            io_ms: 500,
            weighted_ms: 2000,
        };
        let r = rates(&prev, &cur, 2.0);
        assert_eq!(r.reads_per_sec, 50.0);
        assert_eq!(r.read_bytes_per_sec, 512.0 * 1024.0);
        assert_eq!(r.write_bytes_per_sec, 1024.0 * 1024.0);
        assert_eq!(r.await_ms, 2.0);
        assert_eq!(r.util_pct, 25.0);
        assert_eq!(r.queue_depth, 1.0);
        let back = rates(&cur, &prev, 2.0);
        assert_eq!(
            back,
            DiskRates::default(),
            "counters going backwards are no change"
        );
    }
}
