//! The fleet view at 1,000 servers: with 1,000 simulated server agents in
//! the store (the ingest load generator, sending what `sightline-infra`
//! sends), `GET /api/v1/fleet` lists every one with its CPU, memory and
//! fullest disk, and answers in under 100 ms at the 99th percentile of 200
//! requests (issue 10's figure for the fleet page's data).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sightline_e2e::{Collector, Scratch, binary, create_project};

const AGENTS: usize = 1000;
const REQUESTS: usize = 200;
const P99_LIMIT: Duration = Duration::from_millis(100);

#[test]
fn the_fleet_of_1000_servers_answers_under_100_ms_at_p99() {
    let scratch = Scratch::new("fleet-speed");
    let data = scratch.join("collector");
    let creds = create_project(&data, "fleet");
    let collector = Collector::start(&data);
    let out = Command::new(binary("loadgen"))
        .args(["--target", "collector", "--shape", "infra", "--addr"])
        .arg(collector.grpc.to_string())
        .args(["--license", &creds.license])
        .args(["--agents", &AGENTS.to_string()])
        .args(["--interval", "5", "--steady", "6", "--burst", "0"])
        .output()
        .expect("runs loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .map(|json| serde_json::from_str(json).expect("result is JSON"))
        .expect("a result line");
    assert_eq!(result["agents_failed"], 0, "{result}");

    let http: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://{}/api/v1/fleet", collector.http);
    let auth = format!("Bearer {}", creds.token);
    let fetch = || -> Value {
        http.get(&url)
            .header("Authorization", &auth)
            .call()
            .expect("GET /api/v1/fleet")
            .body_mut()
            .read_json()
            .expect("JSON")
    };

    // What a user checks first: every server is there with its numbers.
    let fleet = fetch();
    assert_eq!(fleet["counts"]["servers"], AGENTS, "{}", fleet["counts"]);
    let servers = fleet["servers"].as_array().expect("servers");
    for server in servers {
        for key in [
            "cpu_pct",
            "mem_pct",
            "disk_used_pct",
            "disk_io_bytes_per_sec",
        ] {
            assert!(server[key].is_f64(), "{key} of {server}");
        }
        assert_eq!(
            server["disk_mount"].as_str().map(str::len).map(|l| l > 0),
            Some(true),
            "{server}"
        );
    }
    for top in ["cpu", "mem", "disk_io"] {
        let listed = fleet["top"][top].as_array().map_or(0, Vec::len);
        assert_eq!(listed, 5, "top 5 by {top}: {}", fleet["top"]);
    }

    // Timed: from the request to the last byte of the answer (parsing it
    // is the client's work, done after).
    let mut took: Vec<Duration> = (0..REQUESTS)
        .map(|_| {
            let started = Instant::now();
            let text = http
                .get(&url)
                .header("Authorization", &auth)
                .call()
                .expect("GET /api/v1/fleet")
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .expect("body");
            let elapsed = started.elapsed();
            let body: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(body["counts"]["servers"], AGENTS);
            elapsed
        })
        .collect();
    took.sort();
    let rank = |p: f64| took[((p * REQUESTS as f64).ceil() as usize).clamp(1, REQUESTS) - 1];
    let (p50, p99) = (rank(0.50), rank(0.99));
    println!(
        "fleet of {AGENTS} servers, {REQUESTS} requests: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        took[REQUESTS - 1].as_secs_f64() * 1e3
    );
    assert!(
        p99 < P99_LIMIT,
        "GET /api/v1/fleet p99 {p99:?} (p50 {p50:?}) is over {P99_LIMIT:?}"
    );

    // The same fleet as Prometheus scrapes it: every series of every
    // agent, once, in one answer.
    let started = Instant::now();
    let text = http
        .get(format!("http://{}/metrics", collector.http))
        .header("Authorization", &auth)
        .call()
        .expect("GET /metrics")
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .expect("body");
    let took = started.elapsed();
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    let series = result["series"].as_u64().expect("series per agent") as usize;
    println!(
        "/metrics of {AGENTS} servers: {samples} samples, {:.1} MB, {:.0} ms",
        text.len() as f64 / 1e6,
        took.as_secs_f64() * 1e3
    );
    assert_eq!(samples, AGENTS * series, "every series of every agent once");
    assert!(took < Duration::from_secs(10), "/metrics took {took:?}");
}
