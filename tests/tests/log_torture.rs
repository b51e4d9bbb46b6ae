//! The rotation torture test: a writer appends numbered lines at a steady
//! rate while the file is rotated by rename-and-create, by copytruncate and
//! by truncation, and `sightline-log` is killed -9 and restarted, and the
//! collector is killed -9 and restarted, in the middle. At the end the
//! collector holds every line number exactly once.
//!
//! The one exception is copytruncate's window: lines written between the
//! copy and the truncate of the same file are gone from the disk before
//! anyone can read them unless the agent happened to read them in between.
//! Those lines may be missing (never stored twice); the test bounds them to
//! what was written while the copy ran and checks the agent counted what
//! it lost. It holds that window open 50 ms, so lines do fall into it:
//! with the agent running they are read from the original before the
//! truncate (and the copy is then shorter than what the agent has read);
//! with it down they are lost. A truncation proper (the file emptied in place) waits until
//! the collector holds everything written so far: what it destroys before
//! that is the writer's loss, not the agent's, and is not what is tested;
//! what is tested is that the agent reads the file again from its start.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use sightline_e2e::logs::{
    LineWriter, LogRecord, Tally, all_records, counter_total, line_number, log_agent_conf,
    numbered_line, ranges, wait_for_records,
};
use sightline_e2e::{Agent, Api, Collector, Scratch, create_project, free_addrs, the_agent};

/// Lines a second.
const RATE: u32 = 300;
/// Between two steps of the plan.
const STEP: Duration = Duration::from_secs(2);
/// Between copytruncate's copy and its truncate: long enough that lines
/// are written in between (at [`RATE`], about 15), as when logrotate copies
/// a large file. The agent, reading as they come, ships them from the
/// original, so the copy is then shorter than what it has read; if it is
/// down, they are lost.
const COPY_WINDOW: Duration = Duration::from_millis(50);
/// Category of the group.
const CATEGORY: &str = "torture";

/// What the plan does, one thing per step.
#[derive(Debug, Clone, Copy)]
enum Step {
    RenameCreate,
    CopyTruncate,
    Truncate,
    KillAgent,
    KillCollector,
    KillBoth,
    /// The agent killed -9, the file rotated by rename-and-create while it
    /// is down, the agent started again.
    RenameCreateWhileAgentDown,
    /// The same with copytruncate.
    CopyTruncateWhileAgentDown,
}

const PLAN: &[Step] = &[
    Step::RenameCreate,
    Step::CopyTruncate,
    Step::KillAgent,
    Step::RenameCreate,
    Step::KillCollector,
    Step::Truncate,
    Step::CopyTruncate,
    Step::KillBoth,
    Step::RenameCreateWhileAgentDown,
    Step::RenameCreate,
    Step::CopyTruncateWhileAgentDown,
    Step::Truncate,
    Step::CopyTruncate,
];

/// Shifts `app.log.N` to `app.log.N+1`, the newest rotated copy becoming
/// `app.log.1`; returns that path.
fn shift_rotated(dir: &Path) -> std::path::PathBuf {
    let mut n = 1;
    while dir.join(format!("app.log.{n}")).exists() {
        n += 1;
    }
    for k in (1..n).rev() {
        fs::rename(
            dir.join(format!("app.log.{k}")),
            dir.join(format!("app.log.{}", k + 1)),
        )
        .expect("shift a rotated log");
    }
    dir.join("app.log.1")
}

/// Rename-and-create: the log becomes `app.log.1`, a new empty one takes
/// its place, and the writer keeps writing the renamed file a while, as a
/// daemon does until postrotate's signal reaches it.
fn rename_create(dir: &Path, writer: &LineWriter) {
    let log = dir.join("app.log");
    let rotated = shift_rotated(dir);
    fs::rename(&log, &rotated).expect("rename the log");
    fs::File::create(&log).expect("create the new log");
    std::thread::sleep(Duration::from_millis(100));
    writer.reopen();
}

/// Copytruncate: the log copied to `app.log.1`, then, [`COPY_WINDOW`]
/// later, truncated in place (the writer appends on). The numbers of the
/// last line written before the copy and after the truncate.
fn copy_truncate(dir: &Path, writer: &LineWriter) -> (u64, u64) {
    let log = dir.join("app.log");
    let rotated = shift_rotated(dir);
    let before = writer.written();
    fs::copy(&log, &rotated).expect("copy the log");
    std::thread::sleep(COPY_WINDOW);
    // Truncate between two of the writer's lines: a line whose write has
    // returned but whose number is not yet counted would fall into the
    // window without being named in it (a flake seen once: the line after
    // the window missing).
    let _between_lines = writer.pause();
    fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.set_len(0))
        .expect("truncate the log");
    (before, writer.written())
}

/// Waits until the collector holds every line up to `through` but those
/// in `maybe_lost`; fails with what is missing.
fn wait_stored_through(api: &Api, through: u64, maybe_lost: &BTreeSet<u64>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let stored: BTreeSet<u64> = all_records(api, CATEGORY)
            .iter()
            .filter_map(|r| line_number(&r.text))
            .collect();
        let missing: Vec<u64> = (1..=through)
            .filter(|n| !stored.contains(n) && !maybe_lost.contains(n))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "before truncating: lines up to {through} not all stored within {limit:?}; missing {}",
            ranges(&missing)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn every_line_once_through_rotations_and_kill_9_of_both_sides() {
    let started = Instant::now();
    let scratch = Scratch::new("log-torture");
    let data = scratch.join("collector");
    let creds = create_project(&data, "torture");
    let (grpc, http) = free_addrs();
    let (grpc_text, http_text) = (grpc.to_string(), http.to_string());
    let mut collector = Collector::start_with(&data, &grpc_text, &http_text, &[]);
    let api = collector.api(&creds.token);
    let logs = scratch.join("logs");
    fs::create_dir_all(&logs).expect("logs dir");
    let log = logs.join("app.log");
    let writer = LineWriter::start(&log, RATE);
    let agent_dir = scratch.join("agent");
    // The glob takes in the rotated files: the agent finds a copytruncate
    // copy (or a file renamed while it was down) only where it looks.
    let log_path = format!("{}*", log.display());
    let conf = log_agent_conf(
        &creds.license,
        grpc,
        &agent_dir.join("data"),
        &[
            ("file.app.path", &log_path),
            ("file.app.category", CATEGORY),
            ("file.app.start", "beginning"),
        ],
    );
    let mut agent = Agent::log(&agent_dir, &conf);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");

    // Lines that copytruncate may have taken: written between the copy's
    // start and the truncate.
    let mut maybe_lost: BTreeSet<u64> = BTreeSet::new();
    let mut windows = Vec::new();
    for step in PLAN {
        std::thread::sleep(STEP);
        eprintln!(
            "{:>5.1} s: {step:?} at line {}",
            started.elapsed().as_secs_f64(),
            writer.written()
        );
        match step {
            Step::RenameCreate => rename_create(&logs, &writer),
            Step::CopyTruncate => {
                let (before, after) = copy_truncate(&logs, &writer);
                maybe_lost.extend(before + 1..=after);
                windows.push((before, after));
            }
            Step::RenameCreateWhileAgentDown => {
                agent.kill9();
                std::thread::sleep(Duration::from_millis(300));
                rename_create(&logs, &writer);
                std::thread::sleep(Duration::from_millis(300));
                agent = Agent::log(&agent_dir, &conf);
            }
            Step::CopyTruncateWhileAgentDown => {
                agent.kill9();
                std::thread::sleep(Duration::from_millis(300));
                let (before, after) = copy_truncate(&logs, &writer);
                maybe_lost.extend(before + 1..=after);
                windows.push((before, after));
                std::thread::sleep(Duration::from_millis(300));
                agent = Agent::log(&agent_dir, &conf);
            }
            Step::Truncate => {
                let _paused = writer.pause();
                wait_stored_through(&api, writer.written(), &maybe_lost, Duration::from_secs(20));
                fs::OpenOptions::new()
                    .write(true)
                    .open(&log)
                    .and_then(|f| f.set_len(0))
                    .expect("truncate the log");
            }
            Step::KillAgent => {
                agent.kill9();
                std::thread::sleep(Duration::from_millis(500));
                agent = Agent::log(&agent_dir, &conf);
            }
            Step::KillCollector => {
                collector.kill9();
                // The writer goes on; the agent waits (the file is the
                // buffer).
                std::thread::sleep(Duration::from_secs(1));
                collector = Collector::start_with(&data, &grpc_text, &http_text, &[]);
            }
            Step::KillBoth => {
                agent.kill9();
                collector.kill9();
                std::thread::sleep(Duration::from_millis(500));
                collector = Collector::start_with(&data, &grpc_text, &http_text, &[]);
                agent = Agent::log(&agent_dir, &conf);
            }
        }
    }
    std::thread::sleep(STEP);
    let last = writer.stop();
    let expected: Vec<u64> = (1..=last).filter(|n| !maybe_lost.contains(n)).collect();
    let maybe: Vec<u64> = maybe_lost.iter().copied().collect();
    let records = wait_for_records(&api, CATEGORY, expected.len(), Duration::from_secs(30));
    let tally = Tally::of(&records, line_number, &expected, &maybe);
    assert!(
        tally.missing.is_empty()
            && tally.repeated.is_empty()
            && tally.unexpected.is_empty()
            && tally.unnumbered.is_empty(),
        "{last} lines written ({} in copytruncate windows {windows:?}), {} records stored: {}\nagent log:\n{}",
        maybe.len(),
        records.len(),
        tally.summary(),
        tail(&agent.log_text())
    );
    let stored: BTreeSet<u64> = records
        .iter()
        .filter_map(|r| line_number(&r.text))
        .collect();
    let lost: Vec<u64> = maybe
        .iter()
        .copied()
        .filter(|n| !stored.contains(n))
        .collect();
    let copytruncates = PLAN
        .iter()
        .filter(|s| matches!(s, Step::CopyTruncate | Step::CopyTruncateWhileAgentDown))
        .count() as u64;
    check_counted(&api, oid, copytruncates, &lost);
    check_offsets(&records);
    eprintln!(
        "{last} lines, {} stored once, {} in copytruncate windows of which {} lost; {:.1} s",
        tally.once,
        maybe.len(),
        lost.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Records of one file never overlap: (file id, start) is unique and each
/// record's byte range ends where the next begins or before.
fn check_offsets(records: &[LogRecord]) {
    let mut by_file: std::collections::BTreeMap<&str, Vec<(u64, u64)>> = Default::default();
    for r in records {
        by_file
            .entry(r.file_id.as_str())
            .or_default()
            .push((r.start, r.end));
    }
    for (file, mut spans) in by_file {
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "file {file}: records {:?} and {:?} overlap",
                pair[0],
                pair[1]
            );
        }
    }
}

/// The agent recognised every copytruncate copy as the rest of the file it
/// was reading (`log.copytruncate.copies`), and counts as lost
/// (`log.copytruncate.lost_bytes`, a lower bound: bytes it saw in the file
/// and not in the copy) no more than the lines it did not ship.
fn check_counted(api: &Api, oid: i64, copytruncates: u64, lost: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let copies = loop {
        let copies = counter_total(api, oid, "log.copytruncate.copies");
        if copies >= copytruncates || Instant::now() > deadline {
            break copies;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        copies, copytruncates,
        "log.copytruncate.copies: the agent found {copies} copies for {copytruncates} copytruncate rotations"
    );
    let lost_bytes: u64 = lost.iter().map(|&n| numbered_line(n).len() as u64).sum();
    let counted = counter_total(api, oid, "log.copytruncate.lost_bytes");
    assert!(
        counted <= lost_bytes,
        "log.copytruncate.lost_bytes: the agent counts {counted} bytes lost; the lines missing from the collector hold {lost_bytes} ({})",
        ranges(lost)
    );
}

/// The last lines of an agent's log, for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Access-log lines begin alike (`127.0.0.1 - - [24/Nov/2026:01:58:` is 34
/// bytes shared by every line of a minute), so the first bytes of one
/// copytruncate copy repeat those of the one before: the agent must tell
/// the copies apart. Four copytruncate rotations with the copies shifted
/// (`app.log.1` to `app.log.2`, as logrotate does) under lines sharing a
/// 44-byte prefix: every line is stored once. (The first run of these steps
/// stored one copy's 300 lines twice, under a second file id; later runs
/// passed: the defect is intermittent. `log_rotation`'s copytruncate test
/// with real logrotate and nginx hit it in each of its first runs.)
#[test]
fn copytruncate_of_lines_that_begin_alike_stores_each_line_once() {
    const PREFIX: &str = "127.0.0.1 - - [24/Nov/2026:01:58:00 +0000] \"";
    let scratch = Scratch::new("log-copytruncate-alike");
    let data = scratch.join("collector");
    let creds = create_project(&data, "alike");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let logs = scratch.join("logs");
    fs::create_dir_all(&logs).expect("logs dir");
    let log = logs.join("app.log");
    fs::File::create(&log).expect("create the log");
    let glob = format!("{}*", log.display());
    let agent = Agent::log(
        &scratch.join("agent"),
        &log_agent_conf(
            &creds.license,
            collector.grpc,
            &scratch.join("agent/data"),
            &[
                ("file.alike.path", &glob),
                ("file.alike.start", "beginning"),
            ],
        ),
    );
    the_agent(&api);
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open the log");
    let mut n: u64 = 0;
    let mut write_lines = |count: u64| {
        for _ in 0..count {
            n += 1;
            file.write_all(format!("{PREFIX}seq={n} GET /req/{n} HTTP/1.1 200\n").as_bytes())
                .expect("append a line");
            std::thread::sleep(Duration::from_millis(3));
        }
        n
    };
    for _ in 0..4 {
        write_lines(300);
        let rotated = shift_rotated(&logs);
        fs::copy(&log, &rotated).expect("copy the log");
        fs::OpenOptions::new()
            .write(true)
            .open(&log)
            .and_then(|f| f.set_len(0))
            .expect("truncate the log");
    }
    let last = write_lines(100);
    let expected: Vec<u64> = (1..=last).collect();
    let records = wait_for_records(&api, "alike", expected.len(), Duration::from_secs(15));
    let tally = Tally::of(&records, line_number, &expected, &[]);
    assert!(
        tally.missing.is_empty() && tally.repeated.is_empty() && tally.unexpected.is_empty(),
        "{last} lines written, 4 copytruncate rotations, {} records stored: {}\nagent log:\n{}",
        records.len(),
        tally.summary(),
        tail(&agent.log_text())
    );
}
