//! `cargo xtask bench collector`: the collector's ingest under a simulated
//! fleet, with VictoriaMetrics single-node ingesting the same points as the
//! anchor, reported as ratios.
//!
//! Both targets get the same load from `loadgen` (`tests/src/bin/loadgen.rs`):
//! `--agents` agents of `--series` series each, one report every
//! `--interval` for `--steady` seconds (ack latency under the nominal fleet
//! load), then as fast as acks allow for `--burst` seconds (throughput). The
//! collector is the release build of this tree, started in a scratch folder
//! with a fresh project; it gets the real protocol (zstd, 32 batches in
//! flight per agent). VictoriaMetrics is Debian's `victoria-metrics`
//! (installed here if missing), started privately with its own data folder
//! and only its HTTP listener on loopback; it gets the same points through
//! `/api/v1/import/prometheus` (its cheapest text format), uncompressed, one
//! request per report on one keep-alive connection per agent. They run one
//! after the other, never together.
//!
//! CPU is every thread's time from `/proc/<pid>/task/*/schedstat` over each
//! phase, peak RSS is `VmHWM`, store bytes are the data folder's file sizes
//! after a clean stop (SIGTERM: SQLite checkpoints its WAL, VictoriaMetrics
//! flushes its parts). Points stored are counted after the run, never taken
//! from the load generator: for the collector, the delivery audit of every
//! agent × series (and one agent's points read back through the metrics API
//! as a check), for VictoriaMetrics a `count_over_time` query.
//!
//! Never measures a debug build; never leaves a process or the scratch
//! folder behind.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    Goal, Row, Running, StartedCollector, api_get, build, cpu_seconds, cpu_seconds_by_thread,
    free_port, http_client, now_ms, peak_rss, print_json, print_table, start_collector,
};
use crate::apt::{Package, ensure};
use crate::process::{terminate, wait_exit};

const VICTORIA_METRICS: Package = Package {
    name: "victoria-metrics",
    provides: "/usr/bin/victoria-metrics",
};
/// How long a target may take to start or stop.
const START_STOP_LIMIT: Duration = Duration::from_secs(60);
/// Bound on every HTTP call the bench makes itself.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// The fleet to simulate.
#[derive(Debug, Clone)]
struct Options {
    agents: u32,
    series: u32,
    interval: u32,
    steady: u32,
    burst: u32,
    vm: bool,
    json: bool,
    /// A collector binary to measure instead of the one this task builds
    /// (`--collector target/x86_64-unknown-linux-musl/release/sightline-collector`:
    /// the packaged static build).
    collector: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            agents: 1000,
            series: 200,
            interval: 5,
            steady: 60,
            burst: 20,
            vm: true,
            json: false,
            collector: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut number = || -> Result<u32> {
                let text = args
                    .next()
                    .with_context(|| format!("{arg} needs a number"))?;
                text.parse()
                    .with_context(|| format!("{arg}: '{text}' is not a whole number"))
            };
            match arg.as_str() {
                "--json" => options.json = true,
                "--no-vm" => options.vm = false,
                "--quick" => {
                    options.agents = 100;
                    options.steady = 10;
                    options.burst = 10;
                }
                "--agents" => options.agents = number()?,
                "--series" => options.series = number()?,
                "--interval" => options.interval = number()?,
                "--steady" => options.steady = number()?,
                "--burst" => options.burst = number()?,
                "--collector" => {
                    let path = args.next().context("--collector needs a path")?;
                    options.collector = Some(PathBuf::from(path));
                }
                other => bail!("bench collector: unknown option {other}"),
            }
        }
        if options.agents == 0 || options.series == 0 || options.interval == 0 {
            bail!("bench collector: --agents, --series and --interval must be above 0");
        }
        Ok(options)
    }

    fn loadgen_args(&self) -> Vec<String> {
        [
            ("--agents", self.agents),
            ("--series", self.series),
            ("--interval", self.interval),
            ("--steady", self.steady),
            ("--burst", self.burst),
        ]
        .iter()
        .flat_map(|(flag, value)| [(*flag).to_string(), value.to_string()])
        .collect()
    }
}

/// What one target did under the load.
#[derive(Debug)]
struct Measured {
    /// The load generator's `result` line.
    load: Value,
    /// The target's CPU seconds in the steady and the burst phase.
    cpu: [f64; 2],
    /// The load generator's own CPU seconds, same phases.
    loadgen_cpu: [f64; 2],
    /// The target's CPU seconds in the burst by thread name, most first.
    burst_threads: Vec<(String, f64)>,
    peak_rss: u64,
    store_bytes: u64,
    points_stored: f64,
}

impl Measured {
    fn phase(&self, phase: &str, key: &str) -> f64 {
        self.load[phase][key].as_f64().unwrap_or(f64::NAN)
    }

    fn cpu_per_million(&self, index: usize, phase: &str) -> f64 {
        self.cpu[index] / (self.phase(phase, "points_acked") / 1e6)
    }
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    if options.vm {
        ensure(&[VICTORIA_METRICS])?;
    }
    build(root, "release", "sightline-collector", None)?;
    build(root, "release", "sightline-e2e", Some("loadgen"))?;
    let mut bin = root.join("target/release");
    let scratch = root.join(format!("target/bench-collector-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    if let Some(collector) = &options.collector {
        // The measured collector beside the loadgen just built.
        let chosen = scratch.join("bin");
        fs::create_dir_all(&chosen)?;
        let collector = fs::canonicalize(collector)
            .with_context(|| format!("--collector {}", collector.display()))?;
        std::os::unix::fs::symlink(collector, chosen.join("sightline-collector"))?;
        std::os::unix::fs::symlink(bin.join("loadgen"), chosen.join("loadgen"))?;
        bin = chosen;
    }
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let result = (|| -> Result<(Measured, Option<Measured>)> {
        let ours = measure_collector(&bin, &scratch, &options)?;
        let peer = if options.vm {
            Some(measure_vm(&bin, &scratch, &options)?)
        } else {
            None
        };
        Ok((ours, peer))
    })();
    let _ = fs::remove_dir_all(&scratch);
    let (ours, peer) = result?;
    let rows = rows(&ours, peer.as_ref());
    if options.json {
        return print_json(&rows);
    }
    let Options {
        agents,
        series,
        interval,
        steady,
        burst,
        ..
    } = options;
    println!();
    println!(
        "sightline-collector vs VictoriaMetrics: {agents} agents × {series} series, every {interval} s for {steady} s, then a {burst} s burst; this machine, one after the other"
    );
    println!(
        "load average before: {}",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    print_table("sightline-collector", "VictoriaMetrics", &rows);
    println!();
    for (name, m) in [
        ("collector", Some(&ours)),
        ("VictoriaMetrics", peer.as_ref()),
    ] {
        let Some(m) = m else { continue };
        println!(
            "{name}: {:.0} points acked, {:.0} stored; last ack {:.1} s after the burst; loadgen CPU {:.1} s steady, {:.1} s burst; steady reports skipped (window full) {}; slow-downs {}; reconnects {}; agents failed {} {}",
            m.load["points_acked"].as_f64().unwrap_or(f64::NAN),
            m.points_stored,
            m.load["drain_seconds"].as_f64().unwrap_or(f64::NAN),
            m.loadgen_cpu[0],
            m.loadgen_cpu[1],
            m.load["steady_skipped"],
            m.load["slow_downs"],
            m.load["reconnects"],
            m.load["agents_failed"],
            m.load["first_error"].as_str().unwrap_or(""),
        );
        let threads: Vec<String> = m
            .burst_threads
            .iter()
            .map(|(name, seconds)| format!("{name} {seconds:.1} s"))
            .collect();
        println!("{name}: CPU in the burst by thread: {}", threads.join(", "));
    }
    Ok(())
}

fn rows(ours: &Measured, peer: Option<&Measured>) -> Vec<Row> {
    let figure = |f: &dyn Fn(&Measured) -> f64| (f(ours), peer.map_or(f64::NAN, f));
    let mut rows = Vec::new();
    let mut row = |name, label, scale, (value, peer_value): (f64, f64), goal| {
        rows.push(Row {
            name,
            label,
            scale,
            value,
            peer_value,
            goal,
        });
    };
    row(
        "points_acked_per_second_burst",
        "points acked per s, burst",
        1.0,
        figure(&|m| m.phase("burst", "points_acked_per_second")),
        Some(Goal::AtLeast(300_000.0)),
    );
    row(
        "points_acked_per_second_steady",
        "points acked per s, steady",
        1.0,
        figure(&|m| m.phase("steady", "points_acked_per_second")),
        None,
    );
    row(
        "points_stored_per_second",
        "points stored per s, to the last ack",
        1.0,
        figure(&|m| {
            let drain = m.load["drain_seconds"].as_f64().unwrap_or(f64::NAN);
            m.points_stored / (m.phase("steady", "seconds") + m.phase("burst", "seconds") + drain)
        }),
        None,
    );
    row(
        "ack_latency_p50_seconds_steady",
        "ack latency p50, steady (ms)",
        1000.0,
        figure(&|m| m.phase("steady", "latency_p50_seconds")),
        None,
    );
    row(
        "ack_latency_p99_seconds_steady",
        "ack latency p99, steady (ms)",
        1000.0,
        figure(&|m| m.phase("steady", "latency_p99_seconds")),
        Some(Goal::AtMost(1000.0)),
    );
    row(
        "ack_latency_p99_seconds_steady_after_first",
        "ack latency p99, steady, after each agent's first batch (ms)",
        1000.0,
        figure(&|m| {
            m.load["steady_after_first_latency_p99_seconds"]
                .as_f64()
                .unwrap_or(f64::NAN)
        }),
        None,
    );
    row(
        "ack_latency_p99_seconds_burst",
        "ack latency p99, burst (ms)",
        1000.0,
        figure(&|m| m.phase("burst", "latency_p99_seconds")),
        None,
    );
    row(
        "cpu_seconds_per_million_points_steady",
        "CPU s per million points, steady",
        1.0,
        figure(&|m| m.cpu_per_million(0, "steady")),
        None,
    );
    row(
        "cpu_seconds_per_million_points_burst",
        "CPU s per million points, burst",
        1.0,
        figure(&|m| m.cpu_per_million(1, "burst")),
        None,
    );
    row(
        "peak_rss_bytes",
        "peak RSS (MiB)",
        1.0 / f64::from(1 << 20),
        figure(&|m| m.peak_rss as f64),
        None,
    );
    row(
        "store_bytes_per_point",
        "store bytes per point",
        1.0,
        figure(&|m| m.store_bytes as f64 / m.points_stored),
        Some(Goal::AtMost(24.0)),
    );
    rows
}

/// Runs the load generator against the process `target`; CPU is read at
/// each phase boundary it announces.
fn drive(bin: &Path, target_pid: u32, args: &[String]) -> Result<Driven> {
    let mut loadgen = Command::new(bin.join("loadgen"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting loadgen")?;
    let loadgen_pid = loadgen.id();
    let stdout = loadgen.stdout.take().context("loadgen stdout")?;
    let _running = Running(vec![loadgen]);
    let mut marks: Vec<(f64, f64)> = Vec::new();
    let mut threads = Vec::new();
    let mut result = None;
    // loadgen bounds its own run (a watchdog ends it), so this read ends.
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(json) = line.strip_prefix("result ") {
            result = Some(serde_json::from_str::<Value>(json)?);
        } else if line.starts_with("begin ") || line.starts_with("end ") {
            marks.push((cpu_seconds(target_pid)?, cpu_seconds(loadgen_pid)?));
            threads.push(cpu_seconds_by_thread(target_pid)?);
            eprintln!("loadgen: {line}");
        }
    }
    let result = result.context("loadgen ended without a result; see its errors above")?;
    let [steady, burst, end] = marks[..] else {
        bail!("loadgen announced {} phase marks, not 3", marks.len());
    };
    let mut burst_threads: Vec<(String, f64)> = threads[2]
        .iter()
        .map(|(name, &end)| {
            let start = threads[1].get(name).copied().unwrap_or(0.0);
            (name.clone(), end - start)
        })
        .filter(|(_, seconds)| *seconds >= 0.01)
        .collect();
    burst_threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Driven {
        load: result,
        cpu: [burst.0 - steady.0, end.0 - burst.0],
        loadgen_cpu: [burst.1 - steady.1, end.1 - burst.1],
        burst_threads,
    })
}

/// What [`drive`] read.
struct Driven {
    load: Value,
    cpu: [f64; 2],
    loadgen_cpu: [f64; 2],
    burst_threads: Vec<(String, f64)>,
}

/// Total size of the files under `dir`.
fn folder_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += folder_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// SIGTERM, then waits for a clean exit.
fn stop(child: &mut Child, what: &str) -> Result<()> {
    terminate(child);
    match wait_exit(child, START_STOP_LIMIT) {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("{what} exited with {status} on SIGTERM"),
        None => bail!("{what} did not stop within {START_STOP_LIMIT:?} of SIGTERM"),
    }
}

fn measure_collector(bin: &Path, scratch: &Path, options: &Options) -> Result<Measured> {
    let data = scratch.join("collector");
    let StartedCollector {
        child: collector,
        license,
        token,
        grpc,
        http,
    } = start_collector(
        bin,
        &data,
        fs::File::create(scratch.join("collector.log"))?.into(),
    )?;
    let pid = collector.id();
    let mut running = Running(vec![collector]);
    eprintln!(
        "collector: grpc={grpc} http={http}, data in {}",
        data.display()
    );
    let mut args = vec![
        "--target".to_string(),
        "collector".into(),
        "--addr".into(),
        grpc,
        "--license".into(),
        license,
    ];
    args.extend(options.loadgen_args());
    let Driven {
        load,
        cpu,
        loadgen_cpu,
        burst_threads,
    } = drive(bin, pid, &args)?;
    let points_stored = collector_points_stored(&http, &token, &load, options)?;
    let peak_rss = peak_rss(pid)?;
    let Some(mut collector) = running.0.pop() else {
        bail!("the collector's handle is gone");
    };
    stop(&mut collector, "the collector")?;
    Ok(Measured {
        load,
        cpu,
        loadgen_cpu,
        burst_threads,
        peak_rss,
        store_bytes: folder_bytes(&data)?,
        points_stored,
    })
}

/// Points the collector holds: every agent's stored batches (the delivery
/// audit) × series. One agent's points are also read back through the
/// metrics API, and a mismatch is an error: it would mean the audit counts
/// batches whose points were not kept.
fn collector_points_stored(
    http: &str,
    token: &str,
    load: &Value,
    options: &Options,
) -> Result<f64> {
    let client = http_client(HTTP_TIMEOUT);
    let get = |path: &str| api_get(&client, http, token, path);
    let agents = get("/api/v1/agents")?;
    let agents = agents["agents"].as_array().context("agents")?;
    let mut batches: u64 = 0;
    let mut first: Option<(i64, u64)> = None;
    for agent in agents {
        let oid = agent["oid"].as_i64().context("oid")?;
        let delivery = get(&format!("/api/v1/agents/{oid}/delivery"))?;
        let stored: u64 = delivery["instances"]
            .as_array()
            .context("instances")?
            .iter()
            .filter_map(|i| i["batches"].as_u64())
            .sum();
        batches += stored;
        first.get_or_insert((oid, stored));
    }
    let series = u64::from(options.series);
    if let Some((oid, stored)) = first {
        let from = load["backlog_start_ms"]
            .as_i64()
            .context("backlog_start_ms")?
            - 60_000;
        let to = now_ms() + 60_000;
        let names = get(&format!("/api/v1/agents/{oid}/metrics"))?;
        let mut points = 0;
        for name in names["names"].as_array().context("names")? {
            let name = name.as_str().context("name")?;
            let read = get(&format!(
                "/api/v1/agents/{oid}/metrics?name={name}&from={from}&to={to}"
            ))?;
            if !read["step_ms"].is_null() {
                bail!("the API downsampled the check read; points cannot be counted");
            }
            points += read["series"]
                .as_array()
                .context("series")?
                .iter()
                .filter_map(|s| s["points"].as_array().map(Vec::len))
                .sum::<usize>();
        }
        if points as u64 != stored * series {
            bail!(
                "agent {oid}: the delivery audit says {stored} batches × {series} series, the metrics API returns {points} points"
            );
        }
        eprintln!("collector: agent {oid}'s {points} points read back, as its delivery audit says");
    }
    Ok((batches * series) as f64)
}

fn measure_vm(bin: &Path, scratch: &Path, options: &Options) -> Result<Measured> {
    let data = scratch.join("victoria-metrics");
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let log = fs::File::create(scratch.join("victoria-metrics.log"))?;
    let vm = Command::new(VICTORIA_METRICS.provides)
        .arg(format!("-storageDataPath={}", data.display()))
        .arg(format!("-httpListenAddr={addr}"))
        // Points just written are visible to the count at once.
        .arg("-search.latencyOffset=0s")
        .arg("-loggerLevel=ERROR")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", VICTORIA_METRICS.provides))?;
    let pid = vm.id();
    let mut running = Running(vec![vm]);
    let client = http_client(HTTP_TIMEOUT);
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("http://{addr}/health")).call()
            && r.status().is_success()
        {
            break;
        }
        if started.elapsed() > START_STOP_LIMIT {
            bail!("VictoriaMetrics did not answer /health within {START_STOP_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("victoria-metrics: http={addr}, data in {}", data.display());
    let mut args = vec![
        "--target".to_string(),
        "vm".into(),
        "--addr".into(),
        addr.clone(),
    ];
    args.extend(options.loadgen_args());
    let Driven {
        load,
        cpu,
        loadgen_cpu,
        burst_threads,
    } = drive(bin, pid, &args)?;
    let flushed = client
        .get(format!("http://{addr}/internal/force_flush"))
        .call()?;
    if !flushed.status().is_success() {
        bail!("/internal/force_flush: {}", flushed.status());
    }
    let points_stored = vm_points_stored(&client, &addr, &load)?;
    let peak_rss = peak_rss(pid)?;
    let Some(mut vm) = running.0.pop() else {
        bail!("VictoriaMetrics' handle is gone");
    };
    stop(&mut vm, "VictoriaMetrics")?;
    Ok(Measured {
        load,
        cpu,
        loadgen_cpu,
        burst_threads,
        peak_rss,
        store_bytes: folder_bytes(&data)?,
        points_stored,
    })
}

/// Every raw sample VictoriaMetrics holds, by `count_over_time` over a
/// window that covers the whole run.
fn vm_points_stored(client: &ureq::Agent, addr: &str, load: &Value) -> Result<f64> {
    let from = load["backlog_start_ms"]
        .as_i64()
        .context("backlog_start_ms")?
        - 3_600_000;
    let at = now_ms() + 60_000;
    let window_s = (at - from) / 1000;
    let query = format!("sum(count_over_time({{__name__=~\".+\"}}[{window_s}s]))");
    let mut response = client
        .get(format!("http://{addr}/api/v1/query"))
        .query("query", &query)
        .query("time", (at / 1000).to_string())
        .call()?;
    let status = response.status();
    let body: Value = response.body_mut().read_json()?;
    if !status.is_success() {
        bail!("VictoriaMetrics query {query}: {status}: {body}");
    }
    body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no count in {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(&args.iter().map(|a| (*a).to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_are_the_issues_fleet_and_quick_is_small() {
        let full = parse(&[]).expect("no options");
        assert_eq!(
            (
                full.agents,
                full.series,
                full.interval,
                full.steady,
                full.burst
            ),
            (1000, 200, 5, 60, 20)
        );
        assert!(full.vm && !full.json);
        let quick = parse(&["--quick", "--agents", "7", "--no-vm"]).expect("parses");
        assert_eq!((quick.agents, quick.steady, quick.burst), (7, 10, 10));
        assert!(!quick.vm);
        assert_eq!(
            quick.loadgen_args(),
            [
                "--agents",
                "7",
                "--series",
                "200",
                "--interval",
                "5",
                "--steady",
                "10",
                "--burst",
                "10"
            ]
        );
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        let error = |args: &[&str]| parse(args).expect_err("refused").to_string();
        assert!(error(&["--agnets", "3"]).contains("--agnets"));
        assert!(error(&["--agents", "many"]).contains("'many'"));
        assert!(error(&["--agents"]).contains("needs a number"));
        assert!(error(&["--interval", "0"]).contains("above 0"));
    }
}
