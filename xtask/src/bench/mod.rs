//! `cargo xtask bench <infra|collector|db|log|url>`: a Sightline program measured
//! beside the established tool that does the same job, on this machine, at
//! the same time, reported as ratios.
//!
//! - [`infra`]: the server agent beside node_exporter.
//! - [`collector`]: the collector's ingest beside VictoriaMetrics.
//! - [`db`]: the database agent beside mysqld_exporter.
//! - [`log`]: the log agent beside `wc -l` and rsyslog's imfile.
//! - [`log_framing`]: the log agent's framer beside `wc -l`.
//! - [`log_store`]: the collector's log store alone (ingest, search,
//!   patterns).
//! - [`url`]: the URL agent beside blackbox_exporter, and alone at 10,000
//!   targets.
//!
//! What every bench shares lives here: the processes it starts (killed when
//! dropped, so a failed bench leaves nothing running), CPU and RSS read from
//! `/proc`, and the table and `--json` output. A bench never measures a debug
//! build and never leaves its scratch folder behind.

mod collector;
mod db;
mod infra;
mod log;
mod log_framing;
mod log_store;
mod url;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::{cargo, terminate, wait_exit};

const USAGE: &str = "usage: cargo xtask bench infra [--cycles N] [--json]
       cargo xtask bench collector [--quick] [--agents N] [--series N] [--interval S] [--steady S] [--burst S] [--no-vm] [--json]
       cargo xtask bench db [--cycles N] [--no-agent] [--json]
       cargo xtask bench log [--mb N] [--no-peer] [--json]
       cargo xtask bench log-framing [--mb N] [--runs N] [--json]
       cargo xtask bench log-store [--lines N] [--json]
       cargo xtask bench url [--targets N] [--rate R] [--window S] [--windows N] [--json]
       cargo xtask bench url --scale [--targets N] [--window S] [--json]";

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    match args.split_first() {
        Some((target, rest)) if target == "infra" => infra::run(root, rest),
        Some((target, rest)) if target == "collector" => collector::run(root, rest),
        Some((target, rest)) if target == "db" => db::run(root, rest),
        Some((target, rest)) if target == "log" => log::run(root, rest),
        Some((target, rest)) if target == "log-framing" => log_framing::run(root, rest),
        Some((target, rest)) if target == "log-store" => log_store::run(root, rest),
        Some((target, rest)) if target == "url" => url::run(root, rest),
        _ => bail!("{USAGE}"),
    }
}

/// Builds one package (or one binary of it) with a cargo profile:
/// `release` for the collector and helpers, `agent` for what is shipped to
/// hosts.
fn build(root: &Path, profile: &str, package: &str, bin: Option<&str>) -> Result<()> {
    let mut args = vec!["build", "--profile", profile, "--locked", "-p", package];
    if let Some(bin) = bin {
        args.extend(["--bin", bin]);
    }
    cargo(root, &args)
}

/// A client for the collector's API: `timeout` on every call, an error
/// status returned as a value so [`api_get`] can say which path failed.
fn http_client(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// `GET path` of the collector's API with a project's token: the JSON
/// body, or an error naming the path, the status and the body.
fn api_get(client: &ureq::Agent, http: &str, token: &str, path: &str) -> Result<serde_json::Value> {
    let mut response = client
        .get(format!("http://{http}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .with_context(|| format!("GET {path}"))?;
    let status = response.status();
    let body: serde_json::Value = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_json()?;
    if !status.is_success() {
        bail!("GET {path}: {status}: {body}");
    }
    Ok(body)
}

/// Kills its processes when dropped (SIGTERM, then SIGKILL after 2 s).
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            terminate(child);
            if wait_exit(child, Duration::from_secs(2)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// CPU time of every thread of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let mut ns: u64 = 0;
    let mut found = false;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        if let Ok(text) = fs::read_to_string(&path)
            && let Some(first) = text.split_whitespace().next()
        {
            ns += first.parse::<u64>().unwrap_or(0);
            found = true;
        }
    }
    if found {
        return Ok(ns as f64 / 1e9);
    }
    // No schedstat: clock ticks of the whole group, coarser.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// CPU seconds of the threads of `pid`, summed by thread name (digits
/// dropped, so `tokio-rt-worker` pools add up), for seeing where a process
/// spends its time.
fn cpu_seconds_by_thread(pid: u32) -> Result<BTreeMap<String, f64>> {
    let mut by_name = BTreeMap::new();
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        let (Ok(name), Ok(stat)) = (
            fs::read_to_string(dir.join("comm")),
            fs::read_to_string(dir.join("schedstat")),
        ) else {
            continue;
        };
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let name: String = name
            .trim()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        *by_name.entry(name).or_insert(0.0) += ns as f64 / 1e9;
    }
    Ok(by_name)
}

/// `VmHWM` of `pid`, in bytes.
fn peak_rss(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmHWM")?;
    Ok(kib * 1024)
}

/// Now, in unix milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A collector started for a bench: a fresh project in `data`, both ports
/// picked by the kernel on loopback.
struct StartedCollector {
    child: Child,
    license: String,
    token: String,
    /// `host:port` of gRPC.
    grpc: String,
    /// `host:port` of the HTTP API.
    http: String,
}

/// Creates a project in `data` and starts `serve` on it, its stderr to
/// `log`; returns once it prints where it listens.
fn start_collector(bin: &Path, data: &Path, log: Stdio) -> Result<StartedCollector> {
    let out = Command::new(bin.join("sightline-collector"))
        .args(["project", "create", "bench", "--data"])
        .arg(data)
        .output()?;
    if !out.status.success() {
        bail!(
            "project create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let field = |key: &str| -> Result<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .with_context(|| format!("project create printed no {key}"))
    };
    let (license, token) = (field("license=")?, field("token=")?);
    let mut child = Command::new(bin.join("sightline-collector"))
        .args([
            "serve",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = |key: &str| -> Result<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
            .with_context(|| format!("no {key} in '{line}'"))
    };
    let (grpc, http) = (addr("grpc=")?, addr("http=")?);
    Ok(StartedCollector {
        child,
        license,
        token,
        grpc,
        http,
    })
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// What a figure should reach.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// The ratio to the peer, at most.
    RatioAtMost(f64),
    /// Our own value (in the table's unit), at least.
    AtLeast(f64),
    /// Our own value (in the table's unit), at most.
    AtMost(f64),
}

impl Goal {
    fn text(self) -> String {
        match self {
            Goal::RatioAtMost(g) => format!("≤ {g:.2}"),
            Goal::AtLeast(g) => format!("≥ {g}"),
            Goal::AtMost(g) => format!("≤ {g}"),
        }
    }
}

/// One compared figure, in the unit its `name` says (seconds, bytes).
struct Row {
    name: &'static str,
    label: &'static str,
    /// How to show it in the table (ms, MiB).
    scale: f64,
    value: f64,
    peer_value: f64,
    goal: Option<Goal>,
}

/// The rows as JSON: `name`, `value`, `peer_value`, `ratio`.
fn print_json(rows: &[Row]) -> Result<()> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "value": r.value,
                "peer_value": r.peer_value,
                "ratio": r.value / r.peer_value,
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&rows)?);
    Ok(())
}

/// The rows as a Markdown table: figure | ours | peer's | ratio | goal.
fn print_table(ours: &str, peer: &str, rows: &[Row]) {
    println!("| figure | {ours} | {peer} | ratio | goal |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    // A figure that was not measured (no peer run) shows as a dash.
    let cell = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "–".to_string()
        }
    };
    for r in rows {
        let goal = r.goal.map_or_else(String::new, Goal::text);
        println!(
            "| {} | {} | {} | {} | {goal} |",
            r.label,
            cell(r.value * r.scale),
            cell(r.peer_value * r.scale),
            cell(r.value / r.peer_value)
        );
    }
}
