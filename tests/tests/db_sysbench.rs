//! The database agent's counter rates against a real workload: Debian's
//! `sysbench` runs its OLTP read-write workload on a private MariaDB
//! (tests/src/mariadb.rs) while `sightline-db` watches it with a 1 s
//! interval, reporting to a real collector. The agent's numbers are read
//! back from the collector's API (`/api/v1/agents/{oid}/metrics`, the
//! `db.com_commit_per_sec` and `db.questions_per_sec` series), not from the
//! agent's own output: what a user sees.
//!
//! sysbench's tps counts its transactions (each ends with one COMMIT), its
//! qps the statements it sends (prepared statements, which the server
//! counts in `Questions` like any other). Both sides are compared as
//! counts over the same span of time: the agent's rates times their
//! intervals, against sysbench's per-second reports summed and
//! interpolated to the agent's read times. They must agree within 5 %.
//!
//! A restart of the server in the middle of a run must give no negative
//! rate in any series, and the rates must come back once it is up.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use sightline_e2e::mariadb::{MONITOR_PASSWORD, MariaDb, ROOT_PASSWORD};
use sightline_e2e::{
    Agent, Api, Collector, Scratch, agent_conf, create_project, now_ms, the_agent, wait_for,
};

/// sysbench loads the machine: one of these tests at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The tables sysbench prepares: small, so `prepare` takes a second.
const TABLE_ARGS: [&str; 2] = ["--tables=2", "--table-size=10000"];

fn sysbench(db: &MariaDb, args: &[&str]) -> Command {
    let mut cmd = Command::new("sysbench");
    cmd.arg("oltp_read_write")
        .arg("--db-driver=mysql")
        .arg(format!("--mysql-socket={}", db.socket_path().display()))
        .arg("--mysql-user=root")
        .arg(format!("--mysql-password={ROOT_PASSWORD}"))
        .arg("--mysql-db=sbtest")
        .args(TABLE_ARGS)
        .args(args);
    cmd
}

/// Creates the sbtest tables.
fn prepare(db: &MariaDb) {
    db.sql("CREATE DATABASE sbtest");
    let out = sysbench(db, &["prepare"])
        .output()
        .expect("runs sysbench (Debian's sysbench)");
    assert!(
        out.status.success(),
        "sysbench prepare: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One of sysbench's per-second reports, stamped when it arrived.
#[derive(Debug, Clone, Copy)]
struct Report {
    /// Unix ms at which the line was read: the end of its second.
    at_ms: i64,
    tps: f64,
    qps: f64,
}

/// `[ 3s ] thds: 2 tps: 637.09 qps: 12708.76 (r/w/o: ...) ...`
fn parse_report(line: &str) -> Option<(f64, f64)> {
    if !line.starts_with('[') {
        return None;
    }
    let field = |name: &str| -> Option<f64> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()?.parse().ok()
    };
    Some((field("tps:")?, field("qps:")?))
}

/// A running `sysbench run`, its reports collected as they arrive.
struct Run {
    child: Child,
    reports: mpsc::Receiver<Report>,
    stderr_tail: mpsc::Receiver<String>,
}

impl Run {
    fn start(db: &MariaDb, seconds: u32, extra: &[&str]) -> Run {
        let time = format!("--time={seconds}");
        let mut child = sysbench(
            db,
            &[&time, "--report-interval=1", "--threads=2", "--rand-seed=1"],
        )
        .args(extra)
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs sysbench");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some((tps, qps)) = parse_report(&line) {
                    let _ = tx.send(Report {
                        at_ms: now_ms(),
                        tps,
                        qps,
                    });
                }
            }
        });
        let (tx, stderr_tail) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Run {
            child,
            reports,
            stderr_tail,
        }
    }

    /// Waits for the end (at most `limit`) and returns every report;
    /// panics when sysbench failed.
    fn finish(mut self, limit: Duration) -> Vec<Report> {
        let status = sightline_e2e::wait_exit(&mut self.child, limit);
        let errors: Vec<String> = self.stderr_tail.try_iter().collect();
        assert!(
            status.is_some_and(|s| s.success()),
            "sysbench run failed ({status:?}): {}",
            errors.join("\n")
        );
        self.reports()
    }

    /// Waits for the end (at most `limit`), however it ended, and returns
    /// every report.
    fn finish_any(mut self, limit: Duration) -> Vec<Report> {
        let _ = sightline_e2e::wait_exit(&mut self.child, limit);
        self.reports()
    }

    fn reports(&self) -> Vec<Report> {
        // The reader thread ends with the pipe; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        self.reports.try_iter().collect()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A collector and `sightline-db` watching `db` every second, once the
/// agent's first rates have arrived.
struct Watched {
    _collector: Collector,
    agent: Agent,
    api: Api,
    oid: i64,
}

fn watch(scratch: &Scratch, db: &MariaDb) -> Watched {
    let data = scratch.join("collector");
    let creds = create_project(&data, "db");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let agent_dir = scratch.join("agent");
    let url = db.url();
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &agent_dir.join("data"),
        &[("db.url", &url), ("db.password", MONITOR_PASSWORD)],
    );
    let agent = Agent::start("sightline-db", &agent_dir, &conf);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    wait_for(
        "the agent's first Questions rate",
        Duration::from_secs(20),
        || (!api.points(oid, "db.questions_per_sec").is_empty()).then_some(()),
    );
    Watched {
        _collector: collector,
        agent,
        api,
        oid,
    }
}

/// The agent's rate points as (unix ms, rate), in time order.
fn rates(watched: &Watched, name: &str) -> Vec<(i64, f64)> {
    let mut points = watched.api.points(watched.oid, name);
    points.sort_by_key(|p| p.0);
    points
}

/// What sysbench counted from its first report to `at_ms`, interpolated
/// within a second; `None` outside the reports' span.
fn sysbench_count(reports: &[Report], at_ms: i64, value: fn(&Report) -> f64) -> Option<f64> {
    let first = reports.first()?;
    // The first report covers the second before it arrived.
    let mut previous_ms = first.at_ms - 1000;
    if at_ms < previous_ms {
        return None;
    }
    let mut count = 0.0;
    for report in reports {
        let span_ms = (report.at_ms - previous_ms).max(1) as f64;
        if at_ms <= report.at_ms {
            let part = (at_ms - previous_ms) as f64 / span_ms;
            return Some(count + value(report) * part);
        }
        // A report is a rate over one second, whenever the line arrived.
        count += value(report);
        previous_ms = report.at_ms;
    }
    None
}

/// Counts over the span of the agent's points that fall inside the
/// reports (after the first `skip` seconds, which include the ramp-up):
/// (agent's count, sysbench's count, seconds compared).
fn compare(
    reports: &[Report],
    points: &[(i64, f64)],
    value: fn(&Report) -> f64,
    skip: usize,
) -> (f64, f64, f64) {
    let start_ms = reports[skip].at_ms;
    let end_ms = reports.last().expect("reports").at_ms - 1000;
    let inside: Vec<(i64, f64)> = points
        .iter()
        .copied()
        .filter(|(at, _)| (start_ms..=end_ms).contains(at))
        .collect();
    assert!(
        inside.len() >= 8,
        "too few agent points inside sysbench's reports: {inside:?} in {start_ms}..{end_ms}"
    );
    let mut agent = 0.0;
    for pair in inside.windows(2) {
        let ((from, _), (to, rate)) = (pair[0], pair[1]);
        agent += rate * (to - from) as f64 / 1000.0;
    }
    let (from, to) = (inside[0].0, inside[inside.len() - 1].0);
    let bench = sysbench_count(reports, to, value).expect("inside")
        - sysbench_count(reports, from, value).expect("inside");
    (agent, bench, (to - from) as f64 / 1000.0)
}

#[test]
fn transactions_and_queries_per_second_agree_with_sysbench_within_5_percent() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("db-sysbench");
    let db = MariaDb::start();
    prepare(&db);
    let watched = watch(&scratch, &db);

    let reports = Run::start(&db, 20, &[]).finish(Duration::from_secs(60));
    assert!(reports.len() >= 19, "sysbench reported {reports:?}");
    // The reports arrived one a second, not all at the end.
    let spread_ms = reports[reports.len() - 1].at_ms - reports[0].at_ms;
    assert!(
        spread_ms > 15_000,
        "sysbench's reports came in {spread_ms} ms: buffered"
    );
    assert!(
        reports.iter().all(|r| r.tps > 10.0),
        "a stalled run proves nothing: {reports:?}"
    );
    // The agent's last rates of the run.
    std::thread::sleep(Duration::from_secs(3));
    let commits = rates(&watched, "db.com_commit_per_sec");
    let questions = rates(&watched, "db.questions_per_sec");

    let (agent_tx, bench_tx, seconds) = compare(&reports, &commits, |r| r.tps, 2);
    let (agent_q, bench_q, _) = compare(&reports, &questions, |r| r.qps, 2);
    let tps_error = (agent_tx - bench_tx).abs() / bench_tx;
    let qps_error = (agent_q - bench_q).abs() / bench_q;
    eprintln!(
        "over {seconds:.1} s: transactions agent {agent_tx:.0} sysbench {bench_tx:.0} ({:.2} %), \
         statements agent {agent_q:.0} sysbench {bench_q:.0} ({:.2} %)",
        tps_error * 100.0,
        qps_error * 100.0
    );
    assert!(
        tps_error < 0.05,
        "transactions: agent {agent_tx:.0}, sysbench {bench_tx:.0} over {seconds:.1} s"
    );
    assert!(
        qps_error < 0.05,
        "statements: agent {agent_q:.0}, sysbench {bench_q:.0} over {seconds:.1} s"
    );
    assert!(
        watched
            .agent
            .log_text()
            .lines()
            .all(|l| !l.contains("ERROR")),
        "{}",
        watched.agent.log_text()
    );
}

#[test]
fn a_server_restart_in_the_middle_of_a_run_gives_no_negative_rate() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new("db-sysbench-restart");
    let mut db = MariaDb::start();
    prepare(&db);
    let watched = watch(&scratch, &db);

    // sysbench 1.0.20 does not survive the restart (with
    // `--mysql-ignore-errors=all` it crashes reconnecting): a second run
    // takes over once the server is back.
    let run = Run::start(&db, 30, &[]);
    std::thread::sleep(Duration::from_secs(6));
    let uptime_before = db.global_status("Uptime");
    let restarted_ms = now_ms();
    db.restart();
    assert!(db.global_status("Uptime") < uptime_before);
    let before = run.finish_any(Duration::from_secs(60));
    assert!(
        before.iter().filter(|r| r.tps > 10.0).count() >= 4,
        "sysbench was not busy before the restart: {before:?}"
    );
    let after = Run::start(&db, 8, &[]).finish(Duration::from_secs(60));
    assert!(
        after.iter().all(|r| r.tps > 10.0),
        "sysbench after the restart: {after:?}"
    );
    std::thread::sleep(Duration::from_secs(3));

    // Every rate series of the agent, through and after the restart.
    let names = watched
        .api
        .ok(&format!("/api/v1/agents/{}/metrics", watched.oid));
    let rate_names: Vec<String> = names["names"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(|n| n.as_str())
        .filter(|n| n.starts_with("db.") && n.ends_with("_per_sec"))
        .map(str::to_string)
        .collect();
    assert!(
        rate_names.iter().any(|n| n == "db.com_commit_per_sec"),
        "{rate_names:?}"
    );
    for name in &rate_names {
        let negative: Vec<(i64, f64)> = rates(&watched, name)
            .into_iter()
            .filter(|(_, v)| *v < 0.0)
            .collect();
        assert!(negative.is_empty(), "{name} went negative: {negative:?}");
    }
    // The agent reconnected: commit rates after the restart, as busy as
    // sysbench says.
    let commits_after: Vec<(i64, f64)> = rates(&watched, "db.com_commit_per_sec")
        .into_iter()
        .filter(|(at, _)| *at > restarted_ms + 2000)
        .collect();
    assert!(
        commits_after.iter().any(|(_, v)| *v > 10.0),
        "no commit rate after the restart: {commits_after:?}\nagent log:\n{}",
        watched.agent.log_text()
    );
    // And the uptime it reports starts again from the restart.
    let uptimes = rates(&watched, "db.uptime");
    assert!(
        uptimes
            .windows(2)
            .any(|w| w[1].1 < w[0].1 && w[1].0 > restarted_ms),
        "the agent's db.uptime never fell: {uptimes:?}"
    );
}

#[test]
fn sysbench_report_lines_parse() {
    let line = "[ 3s ] thds: 2 tps: 637.09 qps: 12708.76 (r/w/o: 8893.24/2541.35/1274.18) lat (ms,95%): 3.89 err/s: 0.00 reconn/s: 0.00";
    assert_eq!(parse_report(line), Some((637.09, 12708.76)));
    assert_eq!(parse_report("Threads started!"), None);
    let reports = [
        Report {
            at_ms: 10_000,
            tps: 100.0,
            qps: 0.0,
        },
        Report {
            at_ms: 11_000,
            tps: 200.0,
            qps: 0.0,
        },
    ];
    assert_eq!(sysbench_count(&reports, 8_999, |r| r.tps), None);
    assert_eq!(sysbench_count(&reports, 9_500, |r| r.tps), Some(50.0));
    assert_eq!(sysbench_count(&reports, 10_500, |r| r.tps), Some(200.0));
    assert_eq!(sysbench_count(&reports, 11_000, |r| r.tps), Some(300.0));
    assert_eq!(sysbench_count(&reports, 11_001, |r| r.tps), None);
}
