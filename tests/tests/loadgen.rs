//! The load generator of `cargo xtask bench collector`, against a real
//! collector: what it counts as acked is what the collector stores, so the
//! bench's figures can be trusted, and a protocol change that breaks it fails
//! here rather than in a bench nobody ran.

use std::process::Command;

use serde_json::Value;
use sightline_e2e::{Collector, Scratch, binary, create_project, now_ms};

const SERIES: u64 = 20;

#[test]
fn every_batch_loadgen_counts_as_acked_is_stored_with_all_its_points() {
    let scratch = Scratch::new("loadgen");
    let data = scratch.join("collector");
    let creds = create_project(&data, "bench");
    let collector = Collector::start(&data);
    let out = Command::new(binary("loadgen"))
        .args(["--target", "collector", "--addr"])
        .arg(collector.grpc.to_string())
        .args(["--license", &creds.license])
        .args(["--agents", "3", "--series", &SERIES.to_string()])
        .args(["--interval", "1", "--steady", "2", "--burst", "1"])
        .output()
        .expect("runs loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let marks: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("result "))
        .collect();
    assert_eq!(marks, ["begin steady", "begin burst", "end burst"]);
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .map(|json| serde_json::from_str(json).expect("result is JSON"))
        .expect("a result line");
    assert_eq!(result["agents_failed"], 0, "{result}");
    assert_eq!(result["refused"], 0, "{result}");
    assert_eq!(result["duplicates"], 0, "{result}");
    let sent = |phase: &str| result[phase]["batches_sent"].as_u64().expect("sent");
    assert!(
        sent("steady") >= 3,
        "each agent reports in steady: {result}"
    );
    assert!(
        sent("burst") > sent("steady"),
        "the burst sends more: {result}"
    );
    let acked = result["batches_acked"].as_u64().expect("acked");
    assert_eq!(acked, sent("steady") + sent("burst"), "{result}");

    let api = collector.api(&creds.token);
    let agents = api.agents();
    assert_eq!(agents.len(), 3);
    let mut stored = 0;
    for agent in &agents {
        let oid = agent["oid"].as_i64().expect("oid");
        let delivery = api.ok(&format!("/api/v1/agents/{oid}/delivery"));
        let instances = delivery["instances"].as_array().expect("instances");
        assert_eq!(instances.len(), 1, "one instance per agent: {delivery}");
        assert_eq!(instances[0]["missing"], 0, "{delivery}");
        stored += instances[0]["batches"].as_u64().expect("batches");
    }
    assert_eq!(stored, acked, "the collector holds every acked batch");

    // Burst points are a backlog from hours ago; read the whole span raw.
    let oid = agents[0]["oid"].as_i64().expect("oid");
    let from = result["backlog_start_ms"].as_i64().expect("backlog start") - 60_000;
    let to = now_ms() + 60_000;
    let names = api.ok(&format!("/api/v1/agents/{oid}/metrics"));
    let names = names["names"].as_array().expect("names");
    assert_eq!(names.len(), 2, "20 series are 2 names × 10 label values");
    let mut points = 0;
    for name in names {
        let name = name.as_str().expect("name");
        let read = api.ok(&format!(
            "/api/v1/agents/{oid}/metrics?name={name}&from={from}&to={to}"
        ));
        assert!(read["step_ms"].is_null(), "raw points: {read}");
        points += read["series"]
            .as_array()
            .expect("series")
            .iter()
            .map(|s| s["points"].as_array().map_or(0, Vec::len))
            .sum::<usize>();
    }
    let batches = api.ok(&format!("/api/v1/agents/{oid}/delivery"))["instances"][0]["batches"]
        .as_u64()
        .expect("batches");
    assert_eq!(
        points as u64,
        batches * SERIES,
        "no point overwrote another"
    );
}
