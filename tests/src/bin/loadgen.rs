//! `loadgen`: a fleet of simulated agents for `cargo xtask bench collector`.
//!
//! `--target collector` speaks the real protocol as agents do: one HTTP/2
//! connection per agent, `Hello` (license, a distinct `oname`, a random
//! instance), then one `Push` stream with zstd, batches numbered from 1, each
//! one `Metrics` payload of `--series` samples (20 metric names × 10 label
//! values, values that change), at most [`WINDOW`] unacked, `slow_down_ms`
//! obeyed. `--shape infra` sends what a server agent sends instead (the
//! names and labels of `sightline-infra`: CPU in total and per core,
//! memory, load, two filesystems, two disks, two interfaces; `--series`
//! is then ignored), so the fleet views have CPU, memory and disk to show. `--target vm` sends the same points to VictoriaMetrics'
//! Prometheus-text import (`/api/v1/import/prometheus`), one request per
//! batch over one keep-alive HTTP/1.1 connection per agent.
//!
//! Phases: steady (each agent sends one batch every `--interval`, the fleet
//! spread evenly over the interval), then burst (each agent sends as fast as
//! acks allow). Steady batches carry the wall-clock time; burst batches are a
//! backlog being replayed, timed from `BACKLOG_INTERVALS` intervals before the
//! run, one interval apart, so no point overwrites another.
//!
//! It never runs unbounded: every wait has a timeout, every queue is
//! bounded, the runtime has two worker threads, and a watchdog ends the
//! process if the run overstays its plan. On stdout, one line each, for the
//! bench to read: `begin steady`, `begin burst`, `end burst`, then
//! `result {json}`. Diagnostics go to stderr.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sightline_proto::metadata;
use sightline_proto::v1::{self as pb, ingest_client::IngestClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Batches an agent may have unacked (as `agent-core`'s transport).
const WINDOW: usize = 32;
/// Bound on connecting, on each call, and on waiting for an ack.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on registering the whole fleet.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on collecting the acks still due after the burst (a collector
/// that acks 300 batches a second holds 1,000 agents × 32 in flight for
/// about 110 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Connections opened at once during setup.
const SETUP_CONCURRENCY: usize = 32;
/// Burst timestamps start this many intervals before the run (and an agent
/// stops its burst there, so the backlog never reaches the steady points).
const BACKLOG_INTERVALS: u64 = 9_000;
/// Largest HTTP response head or body read from VictoriaMetrics.
const MAX_HTTP_RESPONSE: usize = 1 << 20;

const METRICS: [(&str, &str, &str); 20] = [
    ("cpu_usage_pct", "cpu", "cpu"),
    ("cpu_iowait_pct", "cpu", "cpu"),
    ("cpu_steal_pct", "cpu", "cpu"),
    ("mem_used_bytes", "node", "numa"),
    ("mem_cached_bytes", "node", "numa"),
    ("disk_read_bytes", "device", "sd"),
    ("disk_write_bytes", "device", "sd"),
    ("disk_read_ops", "device", "sd"),
    ("disk_write_ops", "device", "sd"),
    ("disk_busy_pct", "device", "sd"),
    ("fs_used_bytes", "mount", "/srv/vol"),
    ("fs_free_bytes", "mount", "/srv/vol"),
    ("fs_inodes_used", "mount", "/srv/vol"),
    ("net_rx_bytes", "interface", "eth"),
    ("net_tx_bytes", "interface", "eth"),
    ("net_rx_packets", "interface", "eth"),
    ("net_tx_packets", "interface", "eth"),
    ("net_rx_errors", "interface", "eth"),
    ("tcp_connections", "state", "state_"),
    ("process_cpu_pct", "process", "worker-"),
];
/// Label values per metric name.
const VALUES_PER_NAME: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Collector,
    VictoriaMetrics,
}

/// Which series each simulated agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `--series` of 20 generic names.
    Generic,
    /// A server agent's names and labels.
    Infra,
}

#[derive(Debug, Clone)]
struct Plan {
    target: Target,
    shape: Shape,
    addr: String,
    license: String,
    agents: usize,
    series: usize,
    interval: Duration,
    steady: Duration,
    burst: Duration,
}

impl Plan {
    fn parse(args: &[String]) -> Result<Plan, String> {
        let mut plan = Plan {
            target: Target::Collector,
            shape: Shape::Generic,
            addr: String::new(),
            license: String::new(),
            agents: 1000,
            series: 200,
            interval: Duration::from_secs(5),
            steady: Duration::from_secs(60),
            burst: Duration::from_secs(20),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let number = |text: String| -> Result<u64, String> {
                text.parse::<u64>()
                    .map_err(|_| format!("{flag}: '{text}' is not a whole number"))
            };
            match flag.as_str() {
                "--target" => {
                    plan.target = match value()?.as_str() {
                        "collector" => Target::Collector,
                        "vm" => Target::VictoriaMetrics,
                        other => return Err(format!("--target: '{other}' is not collector or vm")),
                    }
                }
                "--shape" => {
                    plan.shape = match value()?.as_str() {
                        "generic" => Shape::Generic,
                        "infra" => Shape::Infra,
                        other => return Err(format!("--shape: '{other}' is not generic or infra")),
                    }
                }
                "--addr" => plan.addr = value()?,
                "--license" => plan.license = value()?,
                "--agents" => plan.agents = usize::try_from(number(value()?)?).unwrap_or(1),
                "--series" => plan.series = usize::try_from(number(value()?)?).unwrap_or(1),
                "--interval" => plan.interval = Duration::from_secs(number(value()?)?),
                "--steady" => plan.steady = Duration::from_secs(number(value()?)?),
                "--burst" => plan.burst = Duration::from_secs(number(value()?)?),
                other => return Err(format!("unknown option {other}")),
            }
        }
        if plan.addr.is_empty() {
            return Err("--addr HOST:PORT is required".into());
        }
        if plan.target == Target::Collector && plan.license.is_empty() {
            return Err("--license is required with --target collector".into());
        }
        if plan.agents == 0 || plan.series == 0 || plan.interval.is_zero() {
            return Err("--agents, --series and --interval must be above 0".into());
        }
        if plan.shape == Shape::Infra {
            plan.series = SeriesSet::infra().series.len();
        }
        Ok(plan)
    }
}

/// When each phase starts and ends, shared by every agent.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    steady_start: Instant,
    burst_start: Instant,
    burst_end: Instant,
    /// Unix ms of the first backlog point.
    backlog_start_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Steady = 0,
    Burst = 1,
}

impl Timeline {
    fn phase_at(&self, at: Instant) -> Option<Phase> {
        if at >= self.steady_start && at < self.burst_start {
            Some(Phase::Steady)
        } else if at >= self.burst_start && at < self.burst_end {
            Some(Phase::Burst)
        } else {
            None
        }
    }
}

/// What one agent saw.
#[derive(Debug, Default)]
struct AgentStats {
    /// Batches sent, by phase.
    sent: [u64; 2],
    /// Acks received during each phase.
    acked_in: [u64; 2],
    /// Every ack, whenever it came.
    acked: u64,
    duplicates: u64,
    refused: u64,
    slow_downs: u64,
    /// Connections opened again (VictoriaMetrics).
    reconnects: u64,
    /// Steady ticks missed because the window was full (an agent would
    /// have spooled them).
    skipped: u64,
    /// Ack latency in microseconds, by the phase the batch was sent in.
    latency_us: [Vec<u32>; 2],
    /// Ack latency of the steady phase's batches after each agent's first
    /// (the first creates the agent's series in the target's index).
    later_steady_us: Vec<u32>,
    error: Option<String>,
}

/// The label set of every series, the same for every agent.
struct SeriesSet {
    /// (metric name, labels).
    series: Vec<(String, Vec<(String, String)>)>,
    /// Every value a percentage that wanders (the infra shape), rather
    /// than gauges and counters.
    all_gauges: bool,
}

impl SeriesSet {
    fn new(count: usize) -> SeriesSet {
        let series = (0..count)
            .map(|i| {
                let group = i / VALUES_PER_NAME;
                let (name, key, prefix) = METRICS[group % METRICS.len()];
                let name = if group < METRICS.len() {
                    name.to_string()
                } else {
                    format!("{name}_{}", group / METRICS.len())
                };
                let value = format!("{prefix}{}", i % VALUES_PER_NAME);
                (name, vec![(key.to_string(), value)])
            })
            .collect();
        SeriesSet {
            series,
            all_gauges: false,
        }
    }

    /// What `sightline-infra` sends on a 4-core host with two
    /// filesystems, two disks and two interfaces (names and labels as in
    /// `agent-infra/src/linux/sensors/`).
    fn infra() -> SeriesSet {
        let label = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mut series: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let cpu_parts = [
            "usage", "user", "nice", "system", "iowait", "irq", "softirq", "steal", "idle", "guest",
        ];
        for core in [None, Some("0"), Some("1"), Some("2"), Some("3")] {
            for part in cpu_parts {
                let labels = core.map(|c| vec![label("cpu", c)]).unwrap_or_default();
                series.push((format!("cpu.{part}"), labels));
            }
        }
        for name in [
            "mem.used_pct",
            "mem.used_bytes",
            "mem.available_bytes",
            "swap.used_pct",
            "load.1m",
            "load.5m",
            "load.15m",
            "proc.runnable",
        ] {
            series.push((name.to_string(), Vec::new()));
        }
        for (mount, device) in [("/", "/dev/sda1"), ("/var", "/dev/sdb1")] {
            for part in ["total_bytes", "used_bytes", "avail_bytes", "used_pct"] {
                series.push((
                    format!("disk.{part}"),
                    vec![
                        label("device", device),
                        label("fstype", "ext4"),
                        label("mount", mount),
                    ],
                ));
            }
        }
        for device in ["sda", "sdb"] {
            for part in [
                "read_bytes_per_sec",
                "write_bytes_per_sec",
                "util_pct",
                "await_ms",
            ] {
                series.push((format!("diskio.{part}"), vec![label("device", device)]));
            }
        }
        for interface in ["eth0", "eth1"] {
            for part in ["rx_bytes_per_sec", "tx_bytes_per_sec"] {
                series.push((format!("net.{part}"), vec![label("interface", interface)]));
            }
        }
        SeriesSet {
            series,
            all_gauges: true,
        }
    }

    /// The value of series `i` of `agent` at its `k`th report: gauges
    /// (even series) wander with two decimals, counters (odd) grow.
    fn value(&self, agent: usize, i: usize, k: u64) -> f64 {
        let (agent, i) = (agent as u64, i as u64);
        if self.all_gauges || i % 2 == 0 {
            let x = agent
                .wrapping_mul(31)
                .wrapping_add(i.wrapping_mul(17))
                .wrapping_add(k.wrapping_mul(7919));
            (x % 10_000) as f64 / 100.0
        } else {
            (agent * 1_000 + i * 100) as f64 + k as f64 * ((i % 7 + 1) * 1024) as f64
        }
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn random_hex32() -> String {
    let state = RandomState::new();
    format!("{:016x}{:016x}", state.hash_one(1u8), state.hash_one(2u8))
}

fn oname(index: usize) -> String {
    format!("bench-agent-{index:05}")
}

/// Nearest-rank percentile of sorted microseconds, in seconds.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1]) / 1e6
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = match Plan::parse(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    // The whole run is bounded: setup, phases, drain, and a margin.
    let limit = SETUP_TIMEOUT + plan.steady + plan.burst + DRAIN_TIMEOUT + Duration::from_secs(30);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("loadgen: the run overstayed {limit:?}; stopping");
        std::process::exit(3);
    });
    let result = runtime.block_on(run(plan));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// A simulated agent, ready for the phases.
enum Ready {
    Collector {
        client: IngestClient<Channel>,
        oid: u64,
        instance: String,
    },
    Vm(HttpConnection),
}

async fn run(plan: Plan) -> Result<(), String> {
    let plan = Arc::new(plan);
    let series = Arc::new(match plan.shape {
        Shape::Generic => SeriesSet::new(plan.series),
        Shape::Infra => SeriesSet::infra(),
    });
    let setup_started = Instant::now();
    let slots = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut setups = tokio::task::JoinSet::new();
    for index in 0..plan.agents {
        let (plan, slots) = (plan.clone(), slots.clone());
        setups.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            let ready = match plan.target {
                Target::Collector => register(&plan, index).await?,
                Target::VictoriaMetrics => Ready::Vm(HttpConnection::open(&plan.addr).await?),
            };
            Ok::<_, String>((index, ready))
        });
    }
    let mut ready: Vec<Option<Ready>> = (0..plan.agents).map(|_| None).collect();
    let deadline = setup_started + SETUP_TIMEOUT;
    while let Some(joined) = timeout_at_or(deadline, setups.join_next()).await? {
        let (index, agent) = joined.map_err(|e| format!("setup task: {e}"))??;
        ready[index] = Some(agent);
    }
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "loadgen: {} agents ready in {setup_seconds:.1} s",
        plan.agents
    );

    let steady_start = Instant::now() + Duration::from_secs(1);
    let burst_start = steady_start + plan.steady;
    let timeline = Timeline {
        steady_start,
        burst_start,
        burst_end: burst_start + plan.burst,
        backlog_start_ms: now_unix_ms()
            - i64::try_from(plan.interval.as_millis()).unwrap_or(5_000)
                * i64::try_from(BACKLOG_INTERVALS).unwrap_or(0),
    };
    let mut agents = tokio::task::JoinSet::new();
    for (index, agent) in ready.into_iter().enumerate() {
        let Some(agent) = agent else { continue };
        let (plan, series) = (plan.clone(), series.clone());
        agents.spawn(async move {
            let mut stats = AgentStats::default();
            let sim = Simulated {
                plan: &plan,
                series: &series,
                timeline,
                index,
            };
            let outcome = match agent {
                Ready::Collector {
                    client,
                    oid,
                    instance,
                } => sim.push(client, oid, &instance, &mut stats).await,
                Ready::Vm(connection) => sim.import(connection, &mut stats).await,
            };
            if let Err(e) = outcome {
                stats.error = Some(e);
            }
            stats
        });
    }
    sleep_until(timeline.steady_start).await;
    say("begin steady");
    sleep_until(timeline.burst_start).await;
    say("begin burst");
    sleep_until(timeline.burst_end).await;
    say("end burst");
    let mut all = Vec::with_capacity(plan.agents);
    let deadline = timeline.burst_end + DRAIN_TIMEOUT + CALL_TIMEOUT;
    while let Some(joined) = timeout_at_or(deadline, agents.join_next()).await? {
        all.push(joined.map_err(|e| format!("agent task: {e}"))?);
    }
    let drain_seconds = timeline.burst_end.elapsed().as_secs_f64();
    say(&format!(
        "result {}",
        summary(&plan, &timeline, setup_seconds, drain_seconds, all)
    ));
    Ok(())
}

async fn timeout_at_or<T>(
    deadline: Instant,
    future: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    tokio::time::timeout_at(deadline, future)
        .await
        .map_err(|_| "the fleet did not finish in time".to_string())
}

fn summary(
    plan: &Plan,
    timeline: &Timeline,
    setup_seconds: f64,
    drain_seconds: f64,
    mut all: Vec<AgentStats>,
) -> serde_json::Value {
    let points = plan.series as f64;
    let phases = [Phase::Steady, Phase::Burst].map(|phase| {
        let p = phase as usize;
        let seconds = match phase {
            Phase::Steady => timeline.burst_start - timeline.steady_start,
            Phase::Burst => timeline.burst_end - timeline.burst_start,
        }
        .as_secs_f64();
        let mut latency: Vec<u32> = all
            .iter_mut()
            .flat_map(|a| std::mem::take(&mut a.latency_us[p]))
            .collect();
        latency.sort_unstable();
        let acked: u64 = all.iter().map(|a| a.acked_in[p]).sum();
        serde_json::json!({
            "seconds": seconds,
            "batches_sent": all.iter().map(|a| a.sent[p]).sum::<u64>(),
            "batches_acked": acked,
            "points_acked": acked as f64 * points,
            "points_acked_per_second": acked as f64 * points / seconds,
            "latency_p50_seconds": percentile(&latency, 0.50),
            "latency_p99_seconds": percentile(&latency, 0.99),
            "latency_max_seconds": latency.last().map_or(f64::NAN, |&us| f64::from(us) / 1e6),
        })
    });
    let mut later: Vec<u32> = all
        .iter_mut()
        .flat_map(|a| std::mem::take(&mut a.later_steady_us))
        .collect();
    later.sort_unstable();
    let errors: Vec<&str> = all.iter().filter_map(|a| a.error.as_deref()).collect();
    let acked: u64 = all.iter().map(|a| a.acked).sum();
    serde_json::json!({
        "target": match plan.target { Target::Collector => "collector", Target::VictoriaMetrics => "vm" },
        "agents": plan.agents,
        "series": plan.series,
        "interval_seconds": plan.interval.as_secs_f64(),
        "setup_seconds": setup_seconds,
        "steady_after_first_latency_p99_seconds": percentile(&later, 0.99),
        "backlog_start_ms": timeline.backlog_start_ms,
        "drain_seconds": drain_seconds,
        "steady": phases[0],
        "burst": phases[1],
        "batches_acked": acked,
        "points_acked": acked as f64 * points,
        "duplicates": all.iter().map(|a| a.duplicates).sum::<u64>(),
        "refused": all.iter().map(|a| a.refused).sum::<u64>(),
        "slow_downs": all.iter().map(|a| a.slow_downs).sum::<u64>(),
        "reconnects": all.iter().map(|a| a.reconnects).sum::<u64>(),
        "steady_skipped": all.iter().map(|a| a.skipped).sum::<u64>(),
        "agents_failed": errors.len(),
        "first_error": errors.first().copied(),
    })
}

/// Connects and says `Hello` as agent `index`.
async fn register(plan: &Plan, index: usize) -> Result<Ready, String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", plan.addr))
        .map_err(|e| format!("bad address {}: {e}", plan.addr))?
        .connect_timeout(CALL_TIMEOUT)
        .tcp_nodelay(true);
    let channel = timeout(CALL_TIMEOUT, endpoint.connect())
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("connecting to {}: {e}", plan.addr))?;
    let mut client = IngestClient::new(channel)
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd);
    let instance = random_hex32();
    let mut hello = tonic::Request::new(pb::HelloRequest {
        product: "infra".into(),
        oname: oname(index),
        hostname: oname(index),
        os: "Linux 6.1 (loadgen)".into(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        boot_time_ms: now_unix_ms() - 86_400_000,
        created_time: String::new(),
        instance: instance.clone(),
        interval_ms: u32::try_from(plan.interval.as_millis()).unwrap_or(u32::MAX),
        probe: false,
        boot_id: random_hex32(),
    });
    hello.set_timeout(CALL_TIMEOUT);
    insert(&mut hello, metadata::LICENSE, &plan.license)?;
    let reply = timeout(CALL_TIMEOUT, client.hello(hello))
        .await
        .map_err(|_| "Hello timed out".to_string())?
        .map_err(|s| format!("Hello refused: {:?} {}", s.code(), s.message()))?
        .into_inner();
    Ok(Ready::Collector {
        client,
        oid: reply.oid,
        instance,
    })
}

fn insert<T>(
    request: &mut tonic::Request<T>,
    key: &'static str,
    value: &str,
) -> Result<(), String> {
    let value = MetadataValue::try_from(value).map_err(|_| format!("{key} is not ASCII"))?;
    request.metadata_mut().insert(key, value);
    Ok(())
}

/// Batches waiting for the Push stream, as a stream tonic can send.
struct Outbox(mpsc::Receiver<pb::Batch>);

impl tonic::codegen::tokio_stream::Stream for Outbox {
    type Item = pb::Batch;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<pb::Batch>> {
        self.0.poll_recv(cx)
    }
}

/// One simulated agent during the phases.
struct Simulated<'a> {
    plan: &'a Plan,
    series: &'a SeriesSet,
    timeline: Timeline,
    index: usize,
}

/// What the agent sends next: the `k`th report of `phase`, at `time_ms`.
struct Report {
    phase: Phase,
    k: u64,
    time_ms: i64,
}

impl Simulated<'_> {
    /// When the agent's first steady report is due: the fleet spread evenly
    /// over one interval.
    fn first_tick(&self) -> Instant {
        let offset = self.plan.interval.as_secs_f64() * self.index as f64 / self.plan.agents as f64;
        self.timeline.steady_start + Duration::from_secs_f64(offset)
    }

    fn backlog_time(&self, k: u64) -> i64 {
        let interval_ms = i64::try_from(self.plan.interval.as_millis()).unwrap_or(5_000);
        self.timeline.backlog_start_ms + interval_ms * i64::try_from(k).unwrap_or(0)
    }

    fn metrics(&self, report: &Report) -> pb::Metrics {
        // Steady reports count on from where the backlog's values stop, so
        // counters keep growing.
        let k = match report.phase {
            Phase::Burst => report.k,
            Phase::Steady => BACKLOG_INTERVALS + report.k,
        };
        pb::Metrics {
            samples: self
                .series
                .series
                .iter()
                .enumerate()
                .map(|(i, (name, labels))| pb::Sample {
                    name: name.clone(),
                    labels: labels
                        .iter()
                        .map(|(key, value)| pb::Label {
                            key: key.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    value: self.series.value(self.index, i, k),
                })
                .collect(),
            time_ms: report.time_ms,
        }
    }

    /// The collector: one Push stream for both phases.
    async fn push(
        &self,
        mut client: IngestClient<Channel>,
        oid: u64,
        instance: &str,
        stats: &mut AgentStats,
    ) -> Result<(), String> {
        let (tx, rx) = mpsc::channel::<pb::Batch>(WINDOW);
        let mut request = tonic::Request::new(Outbox(rx));
        insert(&mut request, metadata::LICENSE, &self.plan.license)?;
        insert(&mut request, metadata::OID, &oid.to_string())?;
        insert(&mut request, metadata::INSTANCE, instance)?;
        let mut acks = timeout(CALL_TIMEOUT, client.push(request))
            .await
            .map_err(|_| "opening Push timed out".to_string())?
            .map_err(|s| format!("Push refused: {:?} {}", s.code(), s.message()))?
            .into_inner();
        let tl = self.timeline;
        let mut in_flight: VecDeque<(u64, Instant, Phase)> = VecDeque::new();
        let mut seq = 0u64;
        let (mut steady_k, mut burst_k) = (0u64, 0u64);
        let mut next_tick = self.first_tick();
        let mut paused_until: Option<Instant> = None;
        let mut ack_deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let now = Instant::now();
            if now >= tl.burst_end && in_flight.is_empty() {
                break;
            }
            if now >= tl.burst_end + DRAIN_TIMEOUT {
                return Err(format!(
                    "{} acks still due after the drain",
                    in_flight.len()
                ));
            }
            if paused_until.is_some_and(|t| now >= t) {
                paused_until = None;
            }
            let mut due = Vec::new();
            if now < tl.burst_start {
                if now >= next_tick {
                    if in_flight.len() < WINDOW && paused_until.is_none() {
                        due.push(Report {
                            phase: Phase::Steady,
                            k: steady_k,
                            time_ms: now_unix_ms(),
                        });
                        steady_k += 1;
                    } else {
                        stats.skipped += 1;
                    }
                    next_tick += self.plan.interval;
                }
            } else if now < tl.burst_end && paused_until.is_none() {
                while in_flight.len() + due.len() < WINDOW && burst_k < BACKLOG_INTERVALS {
                    due.push(Report {
                        phase: Phase::Burst,
                        k: burst_k,
                        time_ms: self.backlog_time(burst_k),
                    });
                    burst_k += 1;
                }
            }
            for report in due {
                seq += 1;
                let batch = pb::Batch {
                    seq,
                    time_ms: report.time_ms,
                    health: Some(pb::AgentHealth {
                        batches_sent: seq,
                        batches_acked: stats.acked,
                        ..pb::AgentHealth::default()
                    }),
                    payloads: vec![pb::Payload {
                        kind: Some(pb::payload::Kind::Metrics(self.metrics(&report))),
                    }],
                    liveness: false,
                };
                timeout(CALL_TIMEOUT, tx.send(batch))
                    .await
                    .map_err(|_| "the Push stream stopped taking batches".to_string())?
                    .map_err(|_| "the Push stream closed".to_string())?;
                if in_flight.is_empty() {
                    ack_deadline = Instant::now() + CALL_TIMEOUT;
                }
                in_flight.push_back((seq, Instant::now(), report.phase));
                stats.sent[report.phase as usize] += 1;
            }
            let wake = if now < tl.burst_start {
                next_tick.min(tl.burst_start)
            } else {
                tl.burst_end
            };
            tokio::select! {
                message = acks.message() => {
                    let ack = message
                        .map_err(|s| format!("Push failed: {:?} {}", s.code(), s.message()))?
                        .ok_or_else(|| "the collector ended the Push stream".to_string())?;
                    let received = Instant::now();
                    while in_flight.front().is_some_and(|&(s, _, _)| s <= ack.seq) {
                        if let Some((seq, sent, phase)) = in_flight.pop_front() {
                            let us = u32::try_from((received - sent).as_micros()).unwrap_or(u32::MAX);
                            stats.latency_us[phase as usize].push(us);
                            if seq > 1 && phase == Phase::Steady {
                                stats.later_steady_us.push(us);
                            }
                            stats.acked += 1;
                            if let Some(p) = tl.phase_at(received) {
                                stats.acked_in[p as usize] += 1;
                            }
                        }
                    }
                    ack_deadline = received + CALL_TIMEOUT;
                    stats.duplicates += u64::from(ack.duplicate);
                    stats.refused += u64::from(!ack.error.is_empty());
                    if ack.slow_down_ms > 0 {
                        stats.slow_downs += 1;
                        paused_until = Some(received + Duration::from_millis(ack.slow_down_ms.into()));
                    }
                }
                () = sleep_until(ack_deadline), if !in_flight.is_empty() => {
                    return Err(format!("no ack within {CALL_TIMEOUT:?}"));
                }
                () = sleep_until(wake), if in_flight.len() < WINDOW && now < tl.burst_end => {}
                () = sleep_until(paused_until.unwrap_or(wake)), if paused_until.is_some() => {}
            }
        }
        drop(tx);
        Ok(())
    }

    /// VictoriaMetrics: one import request per report, waited for.
    async fn import(
        &self,
        mut connection: HttpConnection,
        stats: &mut AgentStats,
    ) -> Result<(), String> {
        let tl = self.timeline;
        let agent = oname(self.index);
        // `name{key="value",agent="..."} `: everything but value and time.
        let prefixes: Vec<String> = self
            .series
            .series
            .iter()
            .map(|(name, labels)| {
                // Prometheus names take no dots.
                let name = name.replace('.', "_");
                let mut text = format!("{name}{{");
                for (key, value) in labels {
                    text.push_str(&format!("{key}=\"{value}\","));
                }
                text.push_str(&format!("agent=\"{agent}\"}} "));
                text
            })
            .collect();
        let (mut steady_k, mut burst_k) = (0u64, 0u64);
        let mut next_tick = self.first_tick();
        let mut body = String::with_capacity(prefixes.iter().map(|p| p.len() + 40).sum());
        loop {
            let now = Instant::now();
            let report = if now >= tl.burst_end {
                break;
            } else if now < tl.burst_start {
                if now < next_tick {
                    sleep_until(next_tick.min(tl.burst_start)).await;
                    continue;
                }
                // Ticks that fell due while a report was in flight are
                // skipped (an agent would have spooled them).
                next_tick += self.plan.interval;
                while next_tick <= now {
                    next_tick += self.plan.interval;
                    stats.skipped += 1;
                }
                steady_k += 1;
                Report {
                    phase: Phase::Steady,
                    k: BACKLOG_INTERVALS + steady_k - 1,
                    time_ms: now_unix_ms(),
                }
            } else if burst_k < BACKLOG_INTERVALS {
                burst_k += 1;
                Report {
                    phase: Phase::Burst,
                    k: burst_k - 1,
                    time_ms: self.backlog_time(burst_k - 1),
                }
            } else {
                sleep(tl.burst_end - now).await;
                continue;
            };
            body.clear();
            for (i, prefix) in prefixes.iter().enumerate() {
                use std::fmt::Write as _;
                let value = self.series.value(self.index, i, report.k);
                let _ = writeln!(body, "{prefix}{value} {}", report.time_ms);
            }
            stats.sent[report.phase as usize] += 1;
            let sent = Instant::now();
            let status = connection
                .post("/api/v1/import/prometheus", body.as_bytes())
                .await?;
            let received = Instant::now();
            if status / 100 != 2 {
                stats.refused += 1;
                return Err(format!("VictoriaMetrics answered HTTP {status}"));
            }
            stats.reconnects = connection.reconnects;
            let us = u32::try_from((received - sent).as_micros()).unwrap_or(u32::MAX);
            stats.latency_us[report.phase as usize].push(us);
            if stats.acked > 0 && report.phase == Phase::Steady {
                stats.later_steady_us.push(us);
            }
            stats.acked += 1;
            if let Some(p) = tl.phase_at(received) {
                stats.acked_in[p as usize] += 1;
            }
        }
        Ok(())
    }
}

/// A keep-alive HTTP/1.1 connection, one request at a time: enough for
/// VictoriaMetrics' import, which answers `204 No Content`. A request that
/// fails on a connection the server may have closed (VictoriaMetrics closes
/// one that sends nothing for 5 s after it opened) is sent once more on a
/// new connection, as HTTP clients do.
struct HttpConnection {
    addr: String,
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
    reconnects: u64,
}

impl HttpConnection {
    async fn open(addr: &str) -> Result<HttpConnection, String> {
        let mut connection = HttpConnection {
            addr: addr.to_string(),
            stream: None,
            buffer: Vec::with_capacity(1024),
            reconnects: 0,
        };
        connection.connect().await?;
        Ok(connection)
    }

    async fn connect(&mut self) -> Result<&mut TcpStream, String> {
        let stream = timeout(CALL_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| format!("connecting to {} timed out", self.addr))?
            .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(self.stream.insert(stream))
    }

    /// POSTs `body` to `path`; the response status. The response body is
    /// read (bounded) and discarded.
    async fn post(&mut self, path: &str, body: &[u8]) -> Result<u16, String> {
        let reused = self.stream.is_some();
        match self.try_post(path, body).await {
            Err(_) if reused => {
                self.reconnects += 1;
                self.try_post(path, body).await
            }
            outcome => outcome,
        }
    }

    async fn try_post(&mut self, path: &str, body: &[u8]) -> Result<u16, String> {
        let outcome = self.exchange(path, body).await;
        if outcome.is_err() {
            self.stream = None;
        }
        outcome
    }

    async fn exchange(&mut self, path: &str, body: &[u8]) -> Result<u16, String> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let stream = match self.stream.as_mut() {
            Some(stream) => stream,
            None => self.connect().await?,
        };
        let write = async {
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await
        };
        timeout(CALL_TIMEOUT, write)
            .await
            .map_err(|_| "sending a request timed out".to_string())?
            .map_err(|e| format!("sending a request: {e}"))?;
        timeout(CALL_TIMEOUT, self.read_response())
            .await
            .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
    }

    async fn read_response(&mut self) -> Result<u16, String> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| "not connected".to_string())?;
        self.buffer.clear();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if self.buffer.len() > MAX_HTTP_RESPONSE {
                return Err("response head too large".into());
            }
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading a response: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {head:.60}"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if length > MAX_HTTP_RESPONSE {
            return Err("response body too large".into());
        }
        let mut have = self.buffer.len() - head_end;
        while have < length {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading a response: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            have += n;
        }
        if status / 100 != 2 {
            let body = String::from_utf8_lossy(&self.buffer[head_end..]).to_string();
            eprintln!("loadgen: HTTP {status}: {body:.200}");
        }
        Ok(status)
    }
}
