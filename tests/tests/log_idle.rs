//! Large globs cost almost nothing once caught up: 5,000 files in one
//! glob, `sightline-log` reads them all (one line each), then over 10 s
//! with nothing written it uses under 1% of a core (user + system time
//! from `/proc/<pid>/stat`), and a new file matching the glob is stored in
//! the collector in under a second.

use std::fs;
use std::time::{Duration, Instant};

use sightline_e2e::logs::{cpu_time, log_agent_conf, search_all, wait_for_records};
use sightline_e2e::{Agent, Collector, Scratch, create_project, now_ms, the_agent};

const FILES: usize = 5_000;
const IDLE: Duration = Duration::from_secs(10);

#[test]
fn five_thousand_idle_files_cost_under_one_percent_and_a_new_one_is_seen_within_a_second() {
    let scratch = Scratch::new("log-idle");
    let data = scratch.join("collector");
    let creds = create_project(&data, "idle");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let dir = scratch.join("logs");
    fs::create_dir_all(&dir).expect("logs dir");
    for i in 0..FILES {
        fs::write(
            dir.join(format!("svc-{i:04}.log")),
            format!("idle file {i} started\n"),
        )
        .expect("write a log");
    }
    let glob = dir.join("*.log").display().to_string();
    let agent = Agent::log(
        &scratch.join("agent"),
        &log_agent_conf(
            &creds.license,
            collector.grpc,
            &scratch.join("agent/data"),
            &[("file.idle.path", &glob), ("file.idle.start", "beginning")],
        ),
    );
    the_agent(&api);
    let caught_up = Instant::now();
    let records = wait_for_records(&api, "idle", FILES, Duration::from_secs(60));
    assert_eq!(
        records.len(),
        FILES,
        "the collector holds {} records of {FILES} one-line files after {:?}; agent log:\n{}",
        records.len(),
        caught_up.elapsed(),
        agent.log_text()
    );
    eprintln!("caught up with {FILES} files in {:?}", caught_up.elapsed());
    // Let checkpoints and the last acks settle.
    std::thread::sleep(Duration::from_secs(2));

    let pid = agent.pid();
    let before = cpu_time(pid);
    std::thread::sleep(IDLE);
    let used = cpu_time(pid) - before;
    let share = used.as_secs_f64() / IDLE.as_secs_f64();
    eprintln!(
        "idle: {:.3} s of CPU over {IDLE:?} ({:.2}% of a core)",
        used.as_secs_f64(),
        share * 100.0
    );
    assert!(
        share < 0.01,
        "with {FILES} idle files the agent used {:.3} s of CPU in {IDLE:?}: {:.2}% of a core, not under 1%",
        used.as_secs_f64(),
        share * 100.0
    );

    let written_ms = now_ms();
    let written = Instant::now();
    fs::write(dir.join("svc-new.log"), "a new file appeared\n").expect("write the new file");
    let mut seen = None;
    while written.elapsed() < Duration::from_secs(5) {
        let fresh = search_all(
            &api,
            &format!(
                "category=idle&from={}&to={}",
                written_ms - 1000,
                now_ms() + 60_000
            ),
        );
        if fresh.iter().any(|r| r.text == "a new file appeared") {
            seen = Some(written.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = seen.unwrap_or_else(|| {
        panic!(
            "a new file matching the glob was not stored within 5 s; agent log:\n{}",
            agent.log_text()
        )
    });
    eprintln!("new file stored {seen:?} after it was written");
    assert!(
        seen < Duration::from_secs(1),
        "a new file was stored {seen:?} after it was written, not under a second"
    );
}
