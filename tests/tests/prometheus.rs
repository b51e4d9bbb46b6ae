//! Prometheus users: Debian's `prometheus`, started privately (its own
//! data folder, a loopback port, a scrape config with the project's API
//! token as bearer and a 1 s interval), scrapes `GET /metrics` of a
//! collector fed by a real `sightline-infra`, and the series are read back
//! through Prometheus' own HTTP query API with the values the collector
//! stored.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sightline_e2e::{
    Agent, Collector, Scratch, agent_conf, create_project, free_addrs, the_agent, wait_for,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A private Prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: std::net::SocketAddr, token: &str) -> Prometheus {
        std::fs::create_dir_all(dir).expect("dir");
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).expect("token file");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: sightline
    scrape_interval: 1s
    scrape_timeout: 1s
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials_file: {}
    static_configs:
      - targets: ['{target}']
",
                token_file.display()
            ),
        )
        .expect("config");
        let (listen, _) = free_addrs();
        let log = dir.join("prometheus.log");
        let stderr = std::fs::File::create(&log).expect("log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starts prometheus");
        Prometheus {
            child,
            base: format!("http://{listen}"),
            log,
        }
    }

    fn get(&self, path: &str) -> Option<Value> {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        http.get(format!("{}{path}", self.base))
            .call()
            .ok()?
            .body_mut()
            .read_json()
            .ok()
    }

    /// The result vector of an instant query.
    fn query(&self, promql: &str) -> Vec<Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.get(&format!("/api/v1/query?query={encoded}"))
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value_of(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a value")
}

#[test]
fn prometheus_scrapes_the_projects_latest_series_with_the_token() {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: `cargo xtask test` installs Debian's prometheus"
    );
    let scratch = Scratch::new("prometheus");
    let data = scratch.join("collector");
    let creds = create_project(&data, "scraped");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let agent_dir = scratch.join("agent");
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &agent_dir.join("data"),
        &[("oname", "promhost")],
    );
    let _agent = Agent::infra(&agent_dir, &conf);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    wait_for("memory points", Duration::from_secs(20), || {
        (api.points(oid, "mem.used_pct").len() >= 2).then_some(())
    });

    // The endpoint itself: refused without the token, the format with it.
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("http://{}/metrics", collector.http);
    let refused = http.get(&url).call().expect("GET /metrics");
    assert_eq!(refused.status().as_u16(), 401);
    let other = create_project(&data, "other");
    let mut theirs = http
        .get(&url)
        .header("Authorization", format!("Bearer {}", other.token))
        .call()
        .expect("GET /metrics");
    let theirs = theirs.body_mut().read_to_string().expect("text");
    assert!(
        !theirs.contains("promhost"),
        "another project's token sees none of it"
    );
    let mut ours = http
        .get(&url)
        .header("Authorization", format!("Bearer {}", creds.token))
        .call()
        .expect("GET /metrics");
    assert_eq!(
        ours.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = ours.body_mut().read_to_string().expect("text");
    assert!(text.contains("# TYPE mem_used_pct gauge\n"), "{text:.2000}");

    let prometheus = Prometheus::start(&scratch.join("prometheus"), collector.http, &creds.token);
    let up = wait_for(
        "Prometheus to scrape the collector",
        Duration::from_secs(60),
        || {
            let up = prometheus.query("up{job=\"sightline\"}");
            up.first().filter(|s| value_of(s) == 1.0).cloned()
        },
    );
    assert_eq!(
        value_of(&up),
        1.0,
        "{}",
        std::fs::read_to_string(&prometheus.log).unwrap_or_default()
    );

    // Read back through Prometheus: the host's memory with the agent's
    // labels, and a value the collector stored for it.
    let mem = wait_for(
        "mem_used_pct in Prometheus",
        Duration::from_secs(30),
        || {
            prometheus
                .query("mem_used_pct{oname=\"promhost\"}")
                .into_iter()
                .next()
        },
    );
    assert_eq!(mem["metric"]["oid"], oid.to_string(), "{mem}");
    assert_eq!(mem["metric"]["product"], "infra", "{mem}");
    let scraped = value_of(&mem);
    let stored: Vec<f64> = api
        .points(oid, "mem.used_pct")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(
        stored.iter().any(|v| (v - scraped).abs() < 1e-9),
        "Prometheus holds {scraped}, a value the collector stored: {stored:?}"
    );
    // A series with its own labels: the first core's CPU.
    let core = prometheus.query("cpu_usage{oname=\"promhost\",cpu=\"0\"}");
    assert_eq!(core.len(), 1, "{core:?}");
    assert!((0.0..=100.0).contains(&value_of(&core[0])), "{core:?}");
    // Prometheus read the TYPE and HELP lines.
    let meta = prometheus
        .get("/api/v1/metadata?metric=mem_used_pct")
        .expect("metadata");
    assert_eq!(meta["data"]["mem_used_pct"][0]["type"], "gauge", "{meta}");
    let series = prometheus.query("count({job=\"sightline\",oname=\"promhost\"})");
    println!(
        "Prometheus holds {} series of the agent",
        series.first().map_or(0.0, value_of)
    );
}
