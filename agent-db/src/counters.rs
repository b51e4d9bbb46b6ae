//! `SHOW GLOBAL STATUS` into metric samples: per-second rates for the
//! counters, values for the gauges. Pure: rows in, samples out, the clock
//! passed in.
//!
//! Names: a gauge is `db.<status name, lower case>` (`db.threads_running`);
//! a counter is `db.<status name, lower case>_per_sec`
//! (`db.com_select_per_sec`), the change since the last read divided by the
//! seconds between the two reads. Invariant: a rate is never negative: a
//! counter that went backwards (the server restarted, or `FLUSH STATUS`)
//! gives no rate for that cycle, and the next cycle starts from it.

use std::collections::BTreeMap;
use std::time::Instant;

use agent_core::Sample;

/// Counters reported as per-second rates.
pub const COUNTERS: &[&str] = &[
    "Aborted_clients",
    "Aborted_connects",
    "Bytes_received",
    "Bytes_sent",
    "Com_begin",
    "Com_commit",
    "Com_delete",
    "Com_insert",
    "Com_replace",
    "Com_rollback",
    "Com_select",
    "Com_update",
    "Connections",
    "Created_tmp_disk_tables",
    "Created_tmp_files",
    "Created_tmp_tables",
    "Handler_commit",
    "Handler_read_rnd_next",
    "Handler_rollback",
    "Innodb_buffer_pool_read_requests",
    "Innodb_buffer_pool_reads",
    "Innodb_buffer_pool_write_requests",
    "Innodb_data_fsyncs",
    "Innodb_data_read",
    "Innodb_data_written",
    "Innodb_deadlocks",
    "Innodb_log_waits",
    "Innodb_os_log_written",
    "Innodb_row_lock_time",
    "Innodb_row_lock_waits",
    "Innodb_rows_deleted",
    "Innodb_rows_inserted",
    "Innodb_rows_read",
    "Innodb_rows_updated",
    "Queries",
    "Questions",
    "Select_full_join",
    "Select_scan",
    "Slow_queries",
    "Sort_merge_passes",
    "Table_locks_waited",
    "Threads_created",
];

/// Gauges reported as they are.
pub const GAUGES: &[&str] = &[
    "Innodb_buffer_pool_pages_data",
    "Innodb_buffer_pool_pages_dirty",
    "Innodb_buffer_pool_pages_free",
    "Innodb_buffer_pool_pages_total",
    "Innodb_history_list_length",
    "Innodb_row_lock_current_waits",
    "Max_used_connections",
    "Open_files",
    "Open_tables",
    "Threads_cached",
    "Threads_connected",
    "Threads_running",
    "Uptime",
];

/// The status values the agent itself acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Vitals {
    /// `Threads_running`.
    pub threads_running: u64,
    /// `Innodb_row_lock_current_waits`: lock waits now.
    pub row_lock_current_waits: u64,
}

/// The metric name of a status variable.
pub fn metric_name(status: &str, counter: bool) -> String {
    let lower = status.to_ascii_lowercase();
    if counter {
        format!("db.{lower}_per_sec")
    } else {
        format!("db.{lower}")
    }
}

/// Turns successive `SHOW GLOBAL STATUS` reads into samples.
#[derive(Debug, Default)]
pub struct Rates {
    previous: Option<(Instant, BTreeMap<&'static str, u64>)>,
}

impl Rates {
    /// A fresh state: the first read gives gauges only.
    pub fn new() -> Rates {
        Rates::default()
    }

    /// Forgets the last read (after a reconnect the server may be another
    /// process: the next read starts over).
    pub fn reset(&mut self) {
        self.previous = None;
    }

    /// The samples of one read taken at `now`, and the vitals.
    pub fn observe<'a>(
        &mut self,
        now: Instant,
        rows: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Vec<Sample>, Vitals) {
        let mut counters = BTreeMap::new();
        let mut samples = Vec::new();
        let mut vitals = Vitals::default();
        for (name, value) in rows {
            if let Some(known) = find(COUNTERS, name) {
                if let Ok(v) = value.trim().parse::<u64>() {
                    counters.insert(known, v);
                }
            } else if let Some(known) = find(GAUGES, name)
                && let Ok(v) = value.trim().parse::<f64>()
            {
                samples.push(Sample::new(metric_name(known, false), v));
                match known {
                    "Threads_running" => vitals.threads_running = v as u64,
                    "Innodb_row_lock_current_waits" => vitals.row_lock_current_waits = v as u64,
                    _ => {}
                }
            }
        }
        if let Some((then, previous)) = &self.previous {
            let seconds = now.saturating_duration_since(*then).as_secs_f64();
            if seconds > 0.0 {
                for (name, value) in &counters {
                    let Some(before) = previous.get(name) else {
                        continue;
                    };
                    // Backwards: a restart or FLUSH STATUS; no rate this time.
                    if value < before {
                        continue;
                    }
                    let rate = (value - before) as f64 / seconds;
                    samples.push(Sample::new(metric_name(name, true), rate));
                }
            }
        }
        self.previous = Some((now, counters));
        (samples, vitals)
    }
}

fn find(list: &'static [&'static str], name: &str) -> Option<&'static str> {
    list.iter().copied().find(|k| k.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn value(samples: &[Sample], name: &str) -> Option<f64> {
        samples.iter().find(|s| s.name == name).map(|s| s.value)
    }

    #[test]
    fn counters_become_rates_and_gauges_stay_values() {
        let mut rates = Rates::new();
        let t0 = Instant::now();
        let (first, vitals) = rates.observe(
            t0,
            [
                ("Questions", "1000"),
                ("Threads_running", "3"),
                ("Innodb_row_lock_current_waits", "2"),
                ("Ssl_cipher", "TLS_AES"),
            ],
        );
        assert_eq!(value(&first, "db.threads_running"), Some(3.0));
        assert_eq!(value(&first, "db.questions_per_sec"), None, "no rate yet");
        assert_eq!(vitals.threads_running, 3);
        assert_eq!(vitals.row_lock_current_waits, 2);
        let (second, _) = rates.observe(
            t0 + Duration::from_secs(5),
            [("Questions", "1500"), ("Threads_running", "1")],
        );
        assert_eq!(value(&second, "db.questions_per_sec"), Some(100.0));
        assert_eq!(value(&second, "db.threads_running"), Some(1.0));
    }

    #[test]
    fn a_counter_going_backwards_gives_no_negative_rate() {
        let mut rates = Rates::new();
        let t0 = Instant::now();
        rates.observe(t0, [("Questions", "5000"), ("Com_select", "10")]);
        let (after_restart, _) = rates.observe(
            t0 + Duration::from_secs(5),
            [("Questions", "12"), ("Com_select", "20")],
        );
        assert_eq!(value(&after_restart, "db.questions_per_sec"), None);
        assert_eq!(value(&after_restart, "db.com_select_per_sec"), Some(2.0));
        let (next, _) = rates.observe(t0 + Duration::from_secs(10), [("Questions", "62")]);
        assert_eq!(value(&next, "db.questions_per_sec"), Some(10.0));
        assert!(after_restart.iter().chain(&next).all(|s| s.value >= 0.0));
    }

    #[test]
    fn names_are_lower_case_with_the_rate_suffix() {
        assert_eq!(metric_name("Com_select", true), "db.com_select_per_sec");
        assert_eq!(metric_name("Threads_running", false), "db.threads_running");
    }
}
