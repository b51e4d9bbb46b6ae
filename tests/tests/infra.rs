//! The server agent's events and the collector's fleet views, end to end:
//! reboots, thresholds with their load snapshot, `/fleet` and
//! `/processes/top`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sightline_e2e::{Agent, Collector, Scratch, agent_conf, create_project, the_agent, wait_for};

fn kinds(api: &sightline_e2e::Api, kind: &str) -> Vec<serde_json::Value> {
    api.events()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// A reboot is told by the kernel's boot id, not by the boot time: change
/// the remembered one and restart, and exactly one reboot event arrives.
#[test]
fn a_changed_boot_id_raises_exactly_one_reboot_event() {
    let scratch = Scratch::new("reboot");
    let data = scratch.join("collector");
    let creds = create_project(&data, "reboot");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let agent_dir = scratch.join("agent");
    let data_dir = agent_dir.join("data");
    let conf = agent_conf(&creds.license, collector.grpc, &data_dir, &[]);
    let mut agent = Agent::infra(&agent_dir, &conf);
    the_agent(&api);
    assert!(agent.terminate_within(Duration::from_secs(2)).is_some());
    let current = std::fs::read_to_string(data_dir.join("boot_id")).expect("boot id remembered");
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("kernel boot id");
    assert_eq!(current.trim(), kernel.trim());
    assert!(
        kinds(&api, "host.rebooted").is_empty(),
        "a first start is not a reboot"
    );

    std::fs::write(
        data_dir.join("boot_id"),
        "00000000-0000-0000-0000-000000000000\n",
    )
    .expect("simulate");
    let mut agent = Agent::infra(&agent_dir, &conf);
    let event = wait_for("the reboot event", Duration::from_secs(10), || {
        kinds(&api, "host.rebooted").pop()
    });
    assert_eq!(
        event["attrs"]["previous_boot_id"],
        "00000000-0000-0000-0000-000000000000"
    );
    assert_eq!(event["attrs"]["boot_id"], kernel.trim());
    assert_eq!(event["message"], "System rebooted.");
    assert!(agent.terminate_within(Duration::from_secs(2)).is_some());

    // Another restart on the same boot is not another reboot.
    let _agent = Agent::infra(&agent_dir, &conf);
    wait_for("the restart", Duration::from_secs(10), || {
        (kinds(&api, "agent.started").len() == 3).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(kinds(&api, "host.rebooted").len(), 1);
}

/// Busy loops on every core, killed when dropped.
struct Burners(Vec<Child>);

impl Burners {
    fn start() -> Burners {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Burners(
            (0..cores)
                .map(|_| {
                    Command::new("yes")
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("starts yes")
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU above the threshold for the configured time raises one event with a
/// process snapshot naming the culprits; back below for as long raises one
/// recovery event.
#[test]
fn a_crossed_threshold_raises_one_event_with_a_snapshot_and_one_recovery() {
    let scratch = Scratch::new("threshold");
    let data = scratch.join("collector");
    let creds = create_project(&data, "threshold");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let agent_dir = scratch.join("agent");
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &agent_dir.join("data"),
        &[
            ("threshold.cpu", "60"),
            ("threshold.mem", "0"),
            ("threshold.disk", "0"),
            ("threshold.for", "3s"),
        ],
    );
    let _agent = Agent::infra(&agent_dir, &conf);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    wait_for("cpu.usage", Duration::from_secs(10), || {
        (!api.points(oid, "cpu.usage").is_empty()).then_some(())
    });
    assert!(kinds(&api, "threshold.exceeded").is_empty());

    let burners = Burners::start();
    let event = wait_for("the threshold event", Duration::from_secs(20), || {
        kinds(&api, "threshold.exceeded").pop()
    });
    assert_eq!(event["attrs"]["threshold"], "cpu");
    assert_eq!(event["severity"], "critical");
    assert!(
        event["attrs"]["top_cpu"]
            .as_str()
            .expect("top")
            .contains("yes["),
        "{event}"
    );
    let value: f64 = event["attrs"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert!(value >= 60.0, "{event}");
    let snapshot_ms = event["attrs"]["snapshot_ms"]
        .as_str()
        .expect("a snapshot was taken");

    let body = api.ok(&format!(
        "/api/v1/agents/{oid}/processes?at={snapshot_ms}&reason=threshold"
    ));
    let snapshot = &body["snapshot"];
    assert_eq!(snapshot["reason"], "threshold");
    let processes = snapshot["processes"].as_array().expect("processes");
    assert_eq!(
        processes.len() as u64,
        snapshot["total"].as_u64().expect("total"),
        "the full list"
    );
    let yes: Vec<&serde_json::Value> = processes.iter().filter(|p| p["name"] == "yes").collect();
    assert_eq!(yes.len(), burners.0.len());
    assert!(
        yes.iter()
            .all(|p| p["cpu_pct"].as_f64().expect("cpu") > 20.0),
        "{yes:?}"
    );

    drop(burners);
    let recovered = wait_for("the recovery event", Duration::from_secs(30), || {
        kinds(&api, "threshold.recovered").pop()
    });
    assert_eq!(recovered["attrs"]["threshold"], "cpu");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        kinds(&api, "threshold.exceeded").len(),
        1,
        "one event, not one per cycle"
    );
    assert_eq!(kinds(&api, "threshold.recovered").len(), 1);
}

/// The fleet view and the process view across servers.
#[test]
fn fleet_and_process_views_show_the_server() {
    let scratch = Scratch::new("fleet");
    let data = scratch.join("collector");
    let creds = create_project(&data, "fleet");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let agent_dir = scratch.join("agent");
    // Every process of the host, not the top 5: whether the agent is among
    // the busiest or largest depends on what else runs here (builds, other
    // tests' agents), and the view is checked for the agent itself.
    let _agent = Agent::infra(
        &agent_dir,
        &agent_conf(
            &creds.license,
            collector.grpc,
            &agent_dir.join("data"),
            &[("process.top", "100000")],
        ),
    );
    let agent = the_agent(&api);
    let server = wait_for("a complete fleet row", Duration::from_secs(15), || {
        let fleet = api.ok("/api/v1/fleet");
        let row = fleet["servers"].as_array()?.first()?.clone();
        (row["cpu_pct"].is_number() && row["disk_io_bytes_per_sec"].is_number()).then_some(row)
    });
    assert_eq!(server["oname"], agent["oname"]);
    assert_eq!(server["status"], "up");
    let mem = server["mem_pct"].as_f64().expect("mem");
    assert!(mem > 0.0 && mem < 100.0);
    assert!(server["disk_used_pct"].as_f64().expect("disk") > 0.0);
    assert!(server["disk_mount"].is_string());
    let fleet = api.ok("/api/v1/fleet");
    assert_eq!(fleet["counts"]["up"], 1);
    for list in ["cpu", "mem", "disk_io"] {
        assert_eq!(
            fleet["top"][list][0]["oname"], agent["oname"],
            "{list}: {fleet}"
        );
    }

    let top = api.ok("/api/v1/processes/top?sort=mem&limit=50");
    assert_eq!(top["servers_reporting"], 1);
    let groups = top["processes"].as_array().expect("groups");
    let me = groups
        .iter()
        .find(|g| g["name"] == "sightline-infra")
        .expect("the agent itself is listed");
    assert_eq!(me["servers"][0], agent["oname"]);
    assert!(me["rss_max_bytes"].as_u64().expect("rss") > 0);
    let (status, _) = api.get("/api/v1/processes/top?sort=disk");
    assert_eq!(status, 400);
}
