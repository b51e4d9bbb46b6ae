//! Real rotation: Debian's `logrotate` rotates a real nginx access log
//! (nginx started privately on loopback, driven by a client making
//! numbered requests, `postrotate` sending USR1) several times under load,
//! with `create` and with `copytruncate`, while `sightline-log` tails it.
//! Every request nginx answered appears once in the collector.
//!
//! The ground truth is what is on disk afterwards (the log and its rotated
//! copies): every line there must be stored exactly once, and nothing is
//! ever stored twice. With `copytruncate`, lines nginx wrote between
//! logrotate's copy and its truncate are gone from disk; the agent cannot
//! ship what it never saw, so those may be missing in the collector too.
//! The test bounds that window (only requests made while logrotate ran)
//! and checks the agent counted what it lost.
//!
//! Needs `nginx-light` (or `nginx`) and `logrotate`; `cargo xtask test`
//! installs them.

use std::collections::BTreeSet;
use std::time::Duration;

use sightline_e2e::logs::{
    Logrotate, Nginx, RequestLoop, RotateMode, TailEvent, TailStream, Tally, counter_total,
    lines_on_disk, log_agent_conf, ranges, request_number, wait_for_records,
};
use sightline_e2e::{Agent, Collector, Scratch, create_project, the_agent};

/// Requests a second, in all.
const RATE: u32 = 300;
/// Rotations under load.
const ROTATIONS: u32 = 4;
/// Between rotations.
const GAP: Duration = Duration::from_millis(1500);
/// Client threads (each on one keep-alive connection).
const CLIENTS: u32 = 2;

/// What one run saw.
struct Run {
    /// What LiveTail delivered meanwhile.
    tailed: Vec<TailEvent>,
    oid: i64,
    answered: Vec<u64>,
    failed: Vec<u64>,
    on_disk: Vec<String>,
    stored: Vec<sightline_e2e::logs::LogRecord>,
    /// Per rotation, the request numbers issued before and after logrotate
    /// ran: a line lost to copytruncate lies between them.
    windows: Vec<(u64, u64)>,
    api: sightline_e2e::Api,
    _collector: Collector,
    agent_log: String,
}

fn rotate_under_load(name: &str, mode: RotateMode) -> Run {
    let scratch = Scratch::new(name);
    let data = scratch.join("collector");
    let creds = create_project(&data, name);
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let nginx = Nginx::start(&scratch.join("nginx"));
    let rotate = Logrotate::new(
        &scratch.join("logrotate"),
        &nginx.access_log,
        mode,
        &nginx.pid_file,
    );
    // With copytruncate the copies must match the glob for the agent to
    // finish a file from its copy; with `create` the rotated files leave
    // the glob, and the agent must still read each to its end.
    let log_path = match mode {
        RotateMode::Create => nginx.access_log.display().to_string(),
        RotateMode::CopyTruncate => format!("{}*", nginx.access_log.display()),
    };
    let agent = Agent::log(
        &scratch.join("agent"),
        &log_agent_conf(
            &creds.license,
            collector.grpc,
            &scratch.join("agent/data"),
            &[
                ("file.nginx.path", &log_path),
                // nginx created the (empty) log before the agent's first
                // start: read it from its beginning.
                ("file.nginx.start", "beginning"),
                (
                    "file.nginx.parse",
                    r#"^(?P<ip>\S+) \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d+) (?P<bytes>\d+)"#,
                ),
            ],
        ),
    );
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    let tail = TailStream::open(collector.http, &creds.token, "category=nginx");
    let clients = RequestLoop::start(nginx.port, CLIENTS, RATE);
    let mut windows = Vec::new();
    for _ in 0..ROTATIONS {
        std::thread::sleep(GAP);
        let before = clients.issued();
        rotate.force();
        windows.push((before, clients.issued()));
    }
    std::thread::sleep(GAP);
    let requests = clients.stop();
    assert!(
        requests.answered.len() as f64 >= f64::from(RATE) * 5.0,
        "the client made too few requests to prove anything: {}",
        requests.answered.len()
    );
    let on_disk = lines_on_disk(nginx.access_log.parent().expect("nginx dir"), "access.log");
    let stored = wait_for_records(&api, "nginx", on_disk.len(), Duration::from_secs(30));
    let agent_log = agent.log_text();
    // The stream may trail the store a little: take what it delivers until
    // it has as many records as were stored, or 5 s more.
    let mut tailed = Vec::new();
    let mut records_tailed = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while records_tailed < stored.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok((_, event)) = tail.events.recv_timeout(left) else {
            break;
        };
        if matches!(event, TailEvent::Record(_)) {
            records_tailed += 1;
        }
        tailed.push(event);
    }
    Run {
        tailed,
        oid,
        answered: requests.answered,
        failed: requests.failed,
        on_disk,
        stored,
        windows,
        api,
        _collector: collector,
        agent_log,
    }
}

/// Lines on disk, by request number; fails on a line nginx wrote twice or
/// one that is not a request of ours.
fn disk_numbers(run: &Run) -> Vec<u64> {
    let mut numbers: Vec<u64> = run
        .on_disk
        .iter()
        .map(|l| request_number(l).unwrap_or_else(|| panic!("not a request of ours: {l}")))
        .collect();
    numbers.sort_unstable();
    let before = numbers.len();
    numbers.dedup();
    assert_eq!(numbers.len(), before, "nginx logged a request twice");
    numbers
}

/// Every field of a sample of records is what the `parse` rule gives.
fn check_fields(run: &Run) {
    for record in run.stored.iter().step_by(97) {
        let n = request_number(&record.text).expect("numbered");
        let fields = &record.json["fields"];
        assert_eq!(fields["path"], format!("/req/{n}"), "{}", record.json);
        assert_eq!(fields["status"], "200", "{}", record.json);
        assert_eq!(fields["method"], "GET", "{}", record.json);
        assert_eq!(fields["ip"], "127.0.0.1", "{}", record.json);
    }
}

#[test]
fn logrotate_create_every_request_once() {
    let run = rotate_under_load("rotate-create", RotateMode::Create);
    let disk = disk_numbers(&run);
    // With `create` nothing is lost on disk: nginx keeps writing the
    // renamed file until USR1, then the new one.
    let tally_disk = Tally::of_texts(
        run.on_disk.iter().map(|l| (l.as_str(), String::new())),
        request_number,
        &run.answered,
        &run.failed,
    );
    assert!(
        tally_disk.missing.is_empty() && tally_disk.unexpected.is_empty(),
        "nginx's log on disk (the test's ground truth) lacks requests: {}",
        tally_disk.summary()
    );
    let tally = Tally::of(&run.stored, request_number, &disk, &[]);
    assert!(
        tally.missing.is_empty()
            && tally.repeated.is_empty()
            && tally.unexpected.is_empty()
            && tally.unnumbered.is_empty(),
        "{} requests answered, {} lines on disk after {ROTATIONS} rotations with `create`, {} records stored: {}\nagent log:\n{}",
        run.answered.len(),
        disk.len(),
        run.stored.len(),
        tally.summary(),
        tail(&run.agent_log)
    );
    check_fields(&run);
    check_live_tail(&run, &disk);
}

/// LiveTail, open from before the first request, delivered every stored
/// line once, in the order each file was written, or said how many it
/// skipped (`lagged`).
fn check_live_tail(run: &Run, disk: &[u64]) {
    let mut seen: Vec<u64> = Vec::new();
    let mut missed = 0;
    for event in &run.tailed {
        match event {
            TailEvent::Record(json) => seen.extend(json["text"].as_str().and_then(request_number)),
            TailEvent::Lagged(n) => missed += n,
        }
    }
    let texts: Vec<String> = seen.iter().map(|n| format!("/req/{n} ")).collect();
    let tally = Tally::of_texts(
        texts.iter().map(|t| (t.as_str(), String::new())),
        request_number,
        disk,
        &[],
    );
    assert!(
        tally.repeated.is_empty()
            && tally.unexpected.is_empty()
            && tally.missing.len() as u64 <= missed,
        "LiveTail (lagged by {missed}): {}",
        tally.summary()
    );
}

#[test]
fn logrotate_copytruncate_every_request_once_but_the_counted_window() {
    let run = rotate_under_load("rotate-copytruncate", RotateMode::CopyTruncate);
    let disk = disk_numbers(&run);
    // What copytruncate lost on disk: answered, not in any file. Each must
    // have been made while logrotate ran (between its copy and truncate).
    let lost_on_disk: Vec<u64> = run
        .answered
        .iter()
        .copied()
        .filter(|n| disk.binary_search(n).is_err())
        .collect();
    let in_a_window = |n: u64| {
        run.windows
            .iter()
            .any(|&(before, after)| n + u64::from(CLIENTS) > before && n <= after)
    };
    let outside: Vec<u64> = lost_on_disk
        .iter()
        .copied()
        .filter(|&n| !in_a_window(n))
        .collect();
    assert!(
        outside.is_empty(),
        "requests missing from disk outside logrotate's runs {:?}: {}",
        run.windows,
        ranges(&outside)
    );
    // In the collector: every line on disk once; of those lost on disk,
    // what the agent read before the truncate once, the rest nowhere.
    let tally = Tally::of(&run.stored, request_number, &disk, &lost_on_disk);
    assert!(
        tally.missing.is_empty()
            && tally.repeated.is_empty()
            && tally.unexpected.is_empty()
            && tally.unnumbered.is_empty(),
        "{} requests answered, {} lines on disk after {ROTATIONS} rotations with `copytruncate`, {} records stored: {}\nagent log:\n{}",
        run.answered.len(),
        disk.len(),
        run.stored.len(),
        tally.summary(),
        tail(&run.agent_log)
    );
    let stored: BTreeSet<u64> = run
        .stored
        .iter()
        .filter_map(|r| request_number(&r.text))
        .collect();
    let lost: Vec<u64> = lost_on_disk
        .iter()
        .copied()
        .filter(|n| !stored.contains(n))
        .collect();
    // The bound: at most the requests made while logrotate ran.
    let window_total: u64 = run
        .windows
        .iter()
        .map(|&(before, after)| after - before + u64::from(CLIENTS))
        .sum();
    assert!(
        lost.len() as u64 <= window_total,
        "lost {} > {window_total} requests made while logrotate ran",
        lost.len()
    );
    // The agent recognised every copy as the rest of the file it was
    // reading (not a new file), and counts as lost no more than was.
    let copies = wait_for_counter(&run, "log.copytruncate.copies", u64::from(ROTATIONS));
    assert_eq!(
        copies,
        u64::from(ROTATIONS),
        "log.copytruncate.copies: the agent found {copies} copies for {ROTATIONS} copytruncate rotations"
    );
    let lost_bytes: u64 = lost.iter().map(|&n| line_bytes(&run, n)).sum();
    let counted = counter_total(&run.api, run.oid, "log.copytruncate.lost_bytes");
    assert!(
        counted <= lost_bytes,
        "log.copytruncate.lost_bytes: the agent counts {counted} bytes lost; the lines missing from the collector hold {lost_bytes} ({})",
        ranges(&lost)
    );
    eprintln!(
        "copytruncate: {} requests, {} lost on disk, {} lost in the collector, {counted} counted by the agent; windows {:?}",
        run.answered.len(),
        lost_on_disk.len(),
        lost.len(),
        run.windows
    );
    check_fields(&run);
}

/// The agent's counter `name`, once it reports at least `expected` (its
/// counters go out every interval) or after 10 s.
fn wait_for_counter(run: &Run, name: &str, expected: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let total = counter_total(&run.api, run.oid, name);
        if total >= expected || std::time::Instant::now() > deadline {
            return total;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The length of request `n`'s line (with its line end): every request's
/// line differs from another's only in its number and time, so one line
/// on disk gives the length of any (within the digits).
fn line_bytes(run: &Run, n: u64) -> u64 {
    let sample = run.on_disk.first().map_or("", String::as_str);
    let sample_n = request_number(sample).unwrap_or(0);
    (sample.len() + 1 + n.to_string().len()) as u64 - sample_n.to_string().len() as u64
}

/// The last lines of an agent's log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
