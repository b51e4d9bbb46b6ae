//! `cargo xtask bench url [--targets N] [--rate R] [--window S] [--windows N]
//! [--json]`: sightline-url and Debian's `prometheus-blackbox-exporter`
//! checking the same local HTTP and HTTPS servers in the same run, reported
//! as ratios;
//! `cargo xtask bench url --scale [--targets N] [--window S] [--json]`: one
//! agent checking 10,000 targets on a 60 s interval, its share of a core
//! and its peak RSS against the goals.
//!
//! The targets are served by this process (the bench's own CPU is not
//! measured): a few HTTP listeners and a few HTTPS ones whose certificate
//! is signed by a CA generated for the run, each answering `200` with a
//! three-byte body to every request. Every target has its own path (and
//! the targets are spread over the ports), one tool's paths apart from the
//! other's, so nothing is served from a cache and the servers count each
//! tool's checks separately: a check is counted when its request reached
//! the server, which for HTTPS means the certificate was verified. One
//! target in four is HTTPS.
//!
//! The comparison: blackbox_exporter with an `http_2xx` and an `https_2xx`
//! module (the CA as `tls_config.ca_file`, IPv4), each target probed once
//! an interval (`GET /probe?target=...&module=...`, spread over the
//! interval as Prometheus spreads its scrapes), beside the agent with the
//! same targets (paths apart) on the same interval, so both do the same
//! number of checks. The agent reports to a real collector, which stores
//! its checks (the collector is not measured).
//! CPU is every thread's time (`/proc/<pid>/task/*/schedstat`) over a
//! window, divided by the checks the servers counted for that tool in the
//! window; peak RSS is `VmHWM`. After one interval of warm-up, the
//! comparison measures several consecutive windows (5 of 30 s by default),
//! both tools running through each, so a window's ratio compares the two
//! on the same seconds of the same machine (the machine is shared; what
//! else runs moves both tools' CPU per check); the table shows the window
//! of median ratio and the title the least and most. A run where a tool
//! fell short of its checks in a window, a probe failed, or the collector
//! does not list every one of the agent's targets as `up` is an error, not
//! a table.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{
    Goal, Row, Running, StartedCollector, build, cpu_seconds, cpu_seconds_by_thread, free_port,
    http_client, peak_rss, print_json, print_table, start_collector,
};

const EXPORTER: &str = "/usr/bin/prometheus-blackbox-exporter";
/// Names an agent binary to measure instead of building the worktree's.
const AGENT_BINARY_ENV: &str = "SIGHTLINE_BENCH_URL_AGENT";
/// One target in this many is HTTPS.
const HTTPS_EVERY: usize = 4;
/// The servers' answer to every request.
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
/// Connections served at once; beyond it a connection is closed unread.
const MAX_CONNECTIONS: usize = 1024;
/// How long a server waits for a request on an open connection.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Threads probing blackbox_exporter (each probe waits for its answer).
const SCRAPERS: usize = 8;
/// Fewer checks than this share of the expected ones fails the run.
const LEAST_SHARE_OF_CHECKS: f64 = 0.9;

/// Which tool a request came from, by the first segment of its path.
#[derive(Debug, Clone, Copy)]
enum Tool {
    Agent,
    Exporter,
}

impl Tool {
    fn path(self) -> &'static str {
        match self {
            Tool::Agent => "agent",
            Tool::Exporter => "exporter",
        }
    }
}

struct Options {
    scale: bool,
    targets: usize,
    /// Checks per second per tool (the comparison).
    rate: f64,
    /// One measured window (the comparison measures `windows` of them).
    window: Duration,
    windows: usize,
    json: bool,
    /// The agent binary measured.
    agent_binary: PathBuf,
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut args = args.iter();
    let mut scale = false;
    let mut targets = None;
    let mut rate: f64 = 50.0;
    let mut window = None;
    let mut windows: usize = 5;
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--scale" => scale = true,
            "--targets" => {
                targets = Some(args.next().context("--targets needs a number")?.parse()?);
            }
            "--rate" => rate = args.next().context("--rate needs a number")?.parse()?,
            "--windows" => {
                windows = args.next().context("--windows needs a number")?.parse()?;
            }
            "--window" => {
                window = Some(Duration::from_secs(
                    args.next().context("--window needs seconds")?.parse()?,
                ));
            }
            other => bail!("bench url: unknown option {other}"),
        }
    }
    crate::test::ensure_packages()?;
    // Another build of the agent to measure (an older commit's, to compare
    // a change under the same load): used as it is, not rebuilt.
    let agent_binary = match std::env::var_os(AGENT_BINARY_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            build(root, "agent", "sightline-url", None)?;
            root.join("target/agent/sightline-url")
        }
    };
    let options = Options {
        scale,
        targets: targets.unwrap_or(if scale { 10_000 } else { 500 }),
        rate,
        window: window.unwrap_or(Duration::from_secs(if scale { 150 } else { 30 })),
        windows,
        json,
        agent_binary,
    };
    if options.targets == 0
        || options.rate <= 0.0
        || options.window.is_zero()
        || options.windows == 0
    {
        bail!("bench url: --targets, --rate, --window and --windows must be above zero");
    }
    build(root, "release", "sightline-collector", None)?;
    let scratch = root.join(format!("target/bench-url-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = if options.scale {
        scale_run(root, &scratch, &options)
    } else {
        compare(root, &scratch, &options)
    };
    let _ = fs::remove_dir_all(&scratch);
    let (title, rows, spread) = result?;
    if options.json {
        return match spread {
            None => print_json(&rows),
            Some(spread) => {
                // The rows as every bench prints them; the CPU row also
                // carries its windows and their spread.
                let rows: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| {
                        let mut row = serde_json::json!({
                            "name": r.name,
                            "value": r.value,
                            "peer_value": r.peer_value,
                            "ratio": r.value / r.peer_value,
                        });
                        if r.name == "cpu_seconds_per_check" {
                            row["spread"] = spread.clone();
                        }
                        row
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
                Ok(())
            }
        };
    }
    println!();
    println!("{title}");
    println!();
    if options.scale {
        print_own_table(&rows);
    } else {
        print_table("sightline-url", "blackbox_exporter", &rows);
    }
    Ok(())
}

/// A bench's title and rows, and for the comparison the spread of its
/// windows' CPU ratios.
type Outcome = (String, Vec<Row>, Option<serde_json::Value>);

/// Rows without a peer as a Markdown table: figure | ours | goal.
fn print_own_table(rows: &[Row]) {
    println!("| figure | sightline-url | goal |");
    println!("| --- | ---: | ---: |");
    for r in rows {
        let goal = r.goal.map_or_else(String::new, Goal::text);
        println!("| {} | {:.2} | {goal} |", r.label, r.value * r.scale);
    }
}

/// The agent and blackbox_exporter over the same targets.
fn compare(root: &Path, scratch: &Path, options: &Options) -> Result<Outcome> {
    // Whole seconds, at least one: the agent's interval is a duration key.
    let interval_s = ((options.targets as f64 / options.rate).round() as u64).max(1);
    let interval = Duration::from_secs(interval_s);
    let servers = TargetServers::start(scratch, 2, 1)?;
    let agent_targets = servers.targets(Tool::Agent, options.targets);
    let exporter_targets = servers.targets(Tool::Exporter, options.targets);

    let mut agent = start_agent(
        root,
        scratch,
        &servers,
        &agent_targets,
        interval,
        &options.agent_binary,
    )?;
    let exporter_port = free_port()?;
    let exporter_conf = scratch.join("blackbox.yml");
    fs::write(
        &exporter_conf,
        format!(
            "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n\
             \x20 https_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n      fail_if_not_ssl: true\n      tls_config:\n        ca_file: {}\n",
            servers.ca_pem.display()
        ),
    )?;
    let exporter = Command::new(EXPORTER)
        .arg(format!("--config.file={}", exporter_conf.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(scratch.join("blackbox.log"))?)
        .spawn()
        .with_context(|| format!("starting {EXPORTER}"))?;
    let exporter_pid = exporter.id();
    agent.running.0.insert(0, exporter);
    let client = http_client(Duration::from_secs(10));
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{exporter_port}/-/healthy"))
        .call()
        .map_or(true, |r| !r.status().is_success())
    {
        if started.elapsed() > Duration::from_secs(10) {
            bail!(
                "blackbox_exporter did not start; its log:\n{}",
                fs::read_to_string(scratch.join("blackbox.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_first_check(&servers, Tool::Agent, scratch)?;

    let warm_up = interval.max(Duration::from_secs(5));
    let scraper = Scraper::start(
        client,
        exporter_port,
        exporter_targets,
        interval,
        warm_up + options.window * options.windows as u32 + Duration::from_secs(1),
    );
    eprintln!(
        "{} targets each, every {interval_s} s ({:.0} checks/s per tool); warming up {} s, then measuring {} windows of {} s...",
        options.targets,
        options.targets as f64 / interval_s as f64,
        warm_up.as_secs(),
        options.windows,
        options.window.as_secs()
    );
    std::thread::sleep(warm_up);
    let agent_threads_before = cpu_seconds_by_thread(agent.pid)?;
    let mut windows = Vec::with_capacity(options.windows);
    let begin = Instant::now();
    for n in 1..=options.windows {
        let window = measure_window(&agent, exporter_pid, &servers, options.window)?;
        let expected = options.targets as f64 * window.seconds / interval_s as f64;
        for tool in [Tool::Agent, Tool::Exporter] {
            window.served.check(tool, expected)?;
        }
        eprintln!(
            "window {n}/{}: {:.1} s, agent {} checks ({} HTTPS) {:.3} ms CPU each, blackbox_exporter {} ({} HTTPS) {:.3} ms each, ratio {:.3}; load average {}",
            options.windows,
            window.seconds,
            window.served.total(Tool::Agent),
            window.served.https(Tool::Agent),
            window.agent_per_check() * 1000.0,
            window.served.total(Tool::Exporter),
            window.served.https(Tool::Exporter),
            window.exporter_per_check() * 1000.0,
            window.ratio(),
            load_average(),
        );
        windows.push(window);
    }
    let seconds = begin.elapsed().as_secs_f64();
    let agent_threads = cpu_seconds_by_thread(agent.pid)?;
    let (probes_ok, probes_failed) = scraper.finish();
    agent.running.check_alive(scratch)?;
    agent.wait_all_up(options.targets)?;
    if probes_failed > 0 {
        bail!(
            "{probes_failed} of {} blackbox probes failed (no `probe_success 1`); its log:\n{}",
            probes_ok + probes_failed,
            fs::read_to_string(scratch.join("blackbox.log")).unwrap_or_default()
        );
    }
    // Where the agent's time went, for whoever makes it cheaper.
    let by_thread: Vec<String> = agent_threads
        .iter()
        .map(|(name, after)| {
            let before = agent_threads_before.get(name).copied().unwrap_or(0.0);
            format!("{name} {:.0} ms", (after - before) * 1000.0)
        })
        .collect();
    eprintln!("agent CPU by thread: {}", by_thread.join(", "));
    let spread = Spread::of(&windows);
    eprintln!(
        "CPU ratio per window: {}; median {:.3}, from {:.3} to {:.3}",
        windows
            .iter()
            .map(|w| format!("{:.3}", w.ratio()))
            .collect::<Vec<_>>()
            .join(", "),
        spread.median.ratio(),
        spread.least,
        spread.most,
    );
    let agent_checks: u64 = windows.iter().map(|w| w.served.total(Tool::Agent)).sum();
    let exporter_checks: u64 = windows.iter().map(|w| w.served.total(Tool::Exporter)).sum();
    let title = format!(
        "sightline-url vs blackbox_exporter: {} local targets each (1 in {HTTPS_EVERY} HTTPS), every {interval_s} s, {} windows of {} s, both tools in every window, this machine; CPU per check from the window of median ratio (ratios {:.2} to {:.2})",
        options.targets,
        options.windows,
        options.window.as_secs(),
        spread.least,
        spread.most,
    );
    let median = spread.median;
    let rows = vec![
        Row {
            name: "cpu_seconds_per_check",
            label: "CPU per check (ms)",
            scale: 1000.0,
            value: median.agent_per_check(),
            peer_value: median.exporter_per_check(),
            goal: Some(Goal::RatioAtMost(0.2)),
        },
        Row {
            name: "peak_rss_bytes",
            label: "peak RSS (MiB)",
            scale: 1.0 / f64::from(1 << 20),
            value: peak_rss(agent.pid)? as f64,
            peer_value: peak_rss(exporter_pid)? as f64,
            goal: None,
        },
        Row {
            name: "checks_per_second",
            label: "checks per second",
            scale: 1.0,
            value: agent_checks as f64 / seconds,
            peer_value: exporter_checks as f64 / seconds,
            goal: None,
        },
    ];
    drop(agent);
    drop(servers);
    Ok((title, rows, Some(spread.summary(&windows))))
}

/// Both tools over one window: CPU seconds and the checks the servers
/// counted.
#[derive(Debug, Clone, Copy)]
struct Window {
    seconds: f64,
    agent_cpu: f64,
    exporter_cpu: f64,
    served: ServedCounts,
}

impl Window {
    fn agent_per_check(&self) -> f64 {
        self.agent_cpu / self.served.total(Tool::Agent) as f64
    }

    fn exporter_per_check(&self) -> f64 {
        self.exporter_cpu / self.served.total(Tool::Exporter) as f64
    }

    /// The agent's CPU per check over the exporter's, in this window.
    fn ratio(&self) -> f64 {
        self.agent_per_check() / self.exporter_per_check()
    }
}

/// Reads both tools' CPU and the servers' counts before and after
/// `length`: the same seconds of the same machine for both.
fn measure_window(
    agent: &StartedAgent,
    exporter_pid: u32,
    servers: &TargetServers,
    length: Duration,
) -> Result<Window> {
    let agent_before = cpu_seconds(agent.pid)?;
    let exporter_before = cpu_seconds(exporter_pid)?;
    let served_before = servers.served.snapshot();
    let begin = Instant::now();
    std::thread::sleep(length);
    let agent_cpu = cpu_seconds(agent.pid)? - agent_before;
    let exporter_cpu = cpu_seconds(exporter_pid)? - exporter_before;
    let served = servers.served.snapshot().minus(&served_before);
    Ok(Window {
        seconds: begin.elapsed().as_secs_f64(),
        agent_cpu,
        exporter_cpu,
        served,
    })
}

/// The windows' CPU ratios: the window of median ratio, the least and the
/// most.
struct Spread {
    median: Window,
    least: f64,
    most: f64,
}

impl Spread {
    fn of(windows: &[Window]) -> Spread {
        let mut sorted = windows.to_vec();
        sorted.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        // The lower middle of an even count: a real window, not an average.
        let median = sorted[(sorted.len() - 1) / 2];
        Spread {
            median,
            least: sorted.first().map_or(f64::NAN, Window::ratio),
            most: sorted.last().map_or(f64::NAN, Window::ratio),
        }
    }

    /// For `--json`: every window's figures and the spread.
    fn summary(&self, windows: &[Window]) -> serde_json::Value {
        serde_json::json!({
            "ratio_median": self.median.ratio(),
            "ratio_least": self.least,
            "ratio_most": self.most,
            "windows": windows.iter().map(|w| serde_json::json!({
                "seconds": w.seconds,
                "agent_cpu_seconds_per_check": w.agent_per_check(),
                "exporter_cpu_seconds_per_check": w.exporter_per_check(),
                "ratio": w.ratio(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The 1-minute load average, for the record (`?` when unreadable).
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// One agent, many targets, a long interval: its share of a core.
fn scale_run(root: &Path, scratch: &Path, options: &Options) -> Result<Outcome> {
    let interval = Duration::from_secs(60);
    let servers = TargetServers::start(scratch, 6, 2)?;
    let targets = servers.targets(Tool::Agent, options.targets);
    let mut agent = start_agent(
        root,
        scratch,
        &servers,
        &targets,
        interval,
        &options.agent_binary,
    )?;
    wait_for_first_check(&servers, Tool::Agent, scratch)?;
    let warm_up = Duration::from_secs(10);
    eprintln!(
        "{} targets every 60 s; warming up {} s, then measuring {} s...",
        options.targets,
        warm_up.as_secs(),
        options.window.as_secs()
    );
    std::thread::sleep(warm_up);
    let cpu_before = cpu_seconds(agent.pid)?;
    let served_before = servers.served.snapshot();
    let begin = Instant::now();
    std::thread::sleep(options.window);
    let cpu = cpu_seconds(agent.pid)? - cpu_before;
    let served = servers.served.snapshot().minus(&served_before);
    let seconds = begin.elapsed().as_secs_f64();
    agent.running.check_alive(scratch)?;
    let expected = options.targets as f64 * seconds / interval.as_secs_f64();
    served.check(Tool::Agent, expected)?;
    agent.wait_all_up(options.targets)?;
    let checks = served.total(Tool::Agent) as f64;
    eprintln!(
        "in {seconds:.1} s: {checks} checks ({} HTTPS), {expected:.0} expected; CPU {cpu:.2} s",
        served.https(Tool::Agent)
    );
    let title = format!(
        "sightline-url at scale: {} local targets (1 in {HTTPS_EVERY} HTTPS) every 60 s from one agent, {seconds:.0} s window, this machine",
        options.targets
    );
    let rows = vec![
        Row {
            name: "cpu_share_of_one_core",
            label: "CPU, share of one core (%)",
            scale: 100.0,
            value: cpu / seconds,
            peer_value: f64::NAN,
            goal: Some(Goal::AtMost(10.0)),
        },
        Row {
            name: "peak_rss_bytes",
            label: "peak RSS (MiB)",
            scale: 1.0 / f64::from(1 << 20),
            value: peak_rss(agent.pid)? as f64,
            peer_value: f64::NAN,
            goal: Some(Goal::AtMost(64.0)),
        },
        Row {
            name: "cpu_seconds_per_check",
            label: "CPU per check (ms)",
            scale: 1000.0,
            value: cpu / checks,
            peer_value: f64::NAN,
            goal: None,
        },
        Row {
            name: "checks_per_second",
            label: "checks per second",
            scale: 1.0,
            value: checks / seconds,
            peer_value: f64::NAN,
            goal: Some(Goal::AtLeast(
                (options.targets as f64 / 60.0 * LEAST_SHARE_OF_CHECKS).floor(),
            )),
        },
    ];
    drop(agent);
    drop(servers);
    Ok((title, rows, None))
}

/// The agent and the collector it reports to, stopped in that order.
struct StartedAgent {
    pid: u32,
    running: Running,
    /// `host:port` of the collector's HTTP API, and a token for it.
    http: String,
    token: String,
}

impl StartedAgent {
    /// Waits (at most 15 s) until the collector lists all `targets` of the
    /// agent as `up`: its checks passed, by its own account, and reached
    /// the store. Fails naming the states otherwise.
    fn wait_all_up(&self, targets: usize) -> Result<()> {
        let client = http_client(Duration::from_secs(30));
        let started = Instant::now();
        loop {
            let list = super::api_get(&client, &self.http, &self.token, "/api/v1/url/checks")?;
            let counts = &list["counts"];
            if counts["up"].as_u64() == Some(targets as u64) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(15) {
                bail!("the collector lists the agent's {targets} targets as {counts}, not all up");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Starts a collector and sightline-url with `targets` (URLs) in its
/// targets file, each on `interval`, HTTPS ones trusting the run's CA.
fn start_agent(
    root: &Path,
    scratch: &Path,
    servers: &TargetServers,
    targets: &[String],
    interval: Duration,
    binary: &Path,
) -> Result<StartedAgent> {
    let StartedCollector {
        child: collector,
        license,
        token,
        grpc,
        http,
    } = start_collector(
        &root.join("target/release"),
        &scratch.join("collector"),
        Stdio::null(),
    )?;
    let mut running = Running(vec![collector]);
    let port = grpc.rsplit_once(':').map(|(_, p)| p).context("port")?;
    let mut file = String::new();
    for (i, url) in targets.iter().enumerate() {
        file.push_str(&format!(
            "target.t{i}.url={url}\ntarget.t{i}.interval={}s\n",
            interval.as_secs()
        ));
        if url.starts_with("https:") {
            file.push_str(&format!(
                "target.t{i}.tls.ca={}\n",
                servers.ca_pem.display()
            ));
        }
    }
    // In a folder of its own, as in /etc/sightline: the agent watches the
    // file's folder, and the logs written beside it would wake the watcher.
    let targets_dir = scratch.join("targets");
    fs::create_dir_all(&targets_dir)?;
    let targets_file = targets_dir.join("targets.conf");
    fs::write(&targets_file, file)?;
    let conf = scratch.join("url.conf");
    fs::write(
        &conf,
        format!(
            "license={license}\nserver.port={port}\ndata.dir={}\nlog.level=warn\nurl.targets={}\n",
            scratch.join("agent").display(),
            targets_file.display()
        ),
    )?;
    let agent = Command::new(binary)
        .arg("--conf")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(fs::File::create(scratch.join("agent.log"))?)
        .spawn()
        .context("starting sightline-url")?;
    let pid = agent.id();
    // Stopped before the collector.
    running.0.insert(0, agent);
    Ok(StartedAgent {
        pid,
        running,
        http,
        token,
    })
}

/// Waits until `tool` has reached a server (at most 30 s).
fn wait_for_first_check(servers: &TargetServers, tool: Tool, scratch: &Path) -> Result<()> {
    let started = Instant::now();
    while servers.served.snapshot().total(tool) == 0 {
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "no check from the {} reached the servers in 30 s; its log:\n{}",
                tool.path(),
                fs::read_to_string(scratch.join("agent.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

impl Running {
    /// Fails when a process has exited: its figures would be cut short.
    fn check_alive(&mut self, scratch: &Path) -> Result<()> {
        for child in &mut self.0 {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "pid {} exited during the bench ({status}); agent log:\n{}",
                    child.id(),
                    fs::read_to_string(scratch.join("agent.log")).unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

// ---- The exporter's scraper. ----

/// Threads probing blackbox_exporter: each target once an interval, at its
/// own offset in the interval, until `run_for` has passed.
struct Scraper {
    threads: Vec<JoinHandle<()>>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Scraper {
    fn start(
        client: ureq::Agent,
        exporter_port: u16,
        targets: Vec<String>,
        interval: Duration,
        run_for: Duration,
    ) -> Scraper {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(targets);
        let begin = Instant::now();
        let end = begin + run_for;
        let threads = (0..SCRAPERS)
            .map(|thread| {
                let (client, targets) = (client.clone(), Arc::clone(&targets));
                let (ok, failed, stop) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let n = targets.len() as u32;
                    for round in 0u32.. {
                        for i in (thread..targets.len()).step_by(SCRAPERS) {
                            let offset = interval * i as u32 / n;
                            let due = begin + interval * round + offset;
                            if due >= end || stop.load(Ordering::Relaxed) {
                                return;
                            }
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            let url = &targets[i];
                            let module = if url.starts_with("https:") {
                                "https_2xx"
                            } else {
                                "http_2xx"
                            };
                            let passed = client
                                .get(format!(
                                    "http://127.0.0.1:{exporter_port}/probe?target={url}&module={module}"
                                ))
                                .call()
                                .and_then(|mut r| r.body_mut().read_to_string())
                                .is_ok_and(|body| body.lines().any(|l| l == "probe_success 1"));
                            if passed {
                                ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Scraper {
            threads,
            ok,
            failed,
            stop,
        }
    }

    /// Stops the threads; probes that passed and failed.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

// ---- The target servers. ----

/// Requests served, by tool and scheme.
#[derive(Debug, Default)]
struct Served {
    /// `[tool][https]`.
    counts: [[AtomicU64; 2]; 2],
    /// Requests to a path of neither tool.
    other: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct ServedCounts([[u64; 2]; 2]);

impl Served {
    fn snapshot(&self) -> ServedCounts {
        let c = &self.counts;
        let get = |t: usize, s: usize| c[t][s].load(Ordering::Relaxed);
        ServedCounts([[get(0, 0), get(0, 1)], [get(1, 0), get(1, 1)]])
    }
}

impl ServedCounts {
    fn minus(&self, before: &ServedCounts) -> ServedCounts {
        let mut out = *self;
        for (row, before) in out.0.iter_mut().zip(before.0) {
            for (v, b) in row.iter_mut().zip(before) {
                *v -= b;
            }
        }
        out
    }

    fn total(&self, tool: Tool) -> u64 {
        self.0[tool as usize].iter().sum()
    }

    fn https(&self, tool: Tool) -> u64 {
        self.0[tool as usize][1]
    }

    /// Fails when `tool` made too few checks, or none over HTTPS.
    fn check(&self, tool: Tool, expected: f64) -> Result<()> {
        let total = self.total(tool) as f64;
        if total < expected * LEAST_SHARE_OF_CHECKS {
            bail!(
                "the {} made {total} checks in the window, {expected:.0} expected: its figures would not be per check",
                tool.path()
            );
        }
        if self.https(tool) == 0 {
            bail!("no HTTPS check of the {} reached the servers", tool.path());
        }
        Ok(())
    }
}

/// The HTTP and HTTPS listeners, served by threads of this process until
/// dropped.
struct TargetServers {
    http_ports: Vec<u16>,
    https_ports: Vec<u16>,
    ca_pem: PathBuf,
    served: Arc<Served>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl TargetServers {
    /// `http` plain listeners and `https` TLS ones, with a CA written to
    /// `scratch/ca.pem`.
    fn start(scratch: &Path, http: usize, https: usize) -> Result<TargetServers> {
        let (tls, ca_pem) = tls_config(scratch)?;
        let served = Arc::new(Served::default());
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let mut servers = TargetServers {
            http_ports: Vec::new(),
            https_ports: Vec::new(),
            ca_pem,
            served,
            stop,
            threads: Vec::new(),
        };
        for n in 0..http + https {
            let tls = (n >= http).then(|| Arc::clone(&tls));
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            if tls.is_some() {
                servers.https_ports.push(port);
            } else {
                servers.http_ports.push(port);
            }
            let (served, stop, active) = (
                Arc::clone(&servers.served),
                Arc::clone(&servers.stop),
                Arc::clone(&active),
            );
            servers.threads.push(std::thread::spawn(move || {
                accept(&listener, tls, &served, &stop, &active);
            }));
        }
        Ok(servers)
    }

    /// `count` URLs of `tool`, spread over the ports, one in
    /// [`HTTPS_EVERY`] HTTPS.
    fn targets(&self, tool: Tool, count: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                let (scheme, ports) = if i % HTTPS_EVERY == HTTPS_EVERY - 1 {
                    ("https", &self.https_ports)
                } else {
                    ("http", &self.http_ports)
                };
                let port = ports[(i / HTTPS_EVERY) % ports.len()];
                format!("{scheme}://127.0.0.1:{port}/{}/{i}", tool.path())
            })
            .collect()
    }
}

impl Drop for TargetServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes each accept loop so it sees the flag.
        for port in self.http_ports.iter().chain(&self.https_ports) {
            let _ = TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], *port)),
                Duration::from_secs(1),
            );
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn accept(
    listener: &TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    served: &Arc<Served>,
    stop: &AtomicBool,
    active: &Arc<AtomicUsize>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if active.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::Relaxed);
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let (tls, served, active) = (tls.clone(), Arc::clone(served), Arc::clone(active));
        // One short-lived thread a connection, ended by the client's close
        // or the read timeout.
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
            let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
            let _ = stream.set_nodelay(true);
            match tls.map(rustls::ServerConnection::new) {
                None => serve(stream, false, &served),
                Some(Ok(conn)) => serve(rustls::StreamOwned::new(conn, stream), true, &served),
                Some(Err(_)) => {}
            }
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Answers every request on `stream` with [`RESPONSE`], counting it by
/// the tool its path names, until the client closes.
fn serve(mut stream: impl Read + Write, https: bool, served: &Served) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > 16 << 10 {
                return;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let path = buf[..end].split(|&b| b == b' ').nth(1).unwrap_or_default();
        let tool = if path.starts_with(b"/agent/") {
            Some(Tool::Agent)
        } else if path.starts_with(b"/exporter/") {
            Some(Tool::Exporter)
        } else {
            None
        };
        match tool {
            Some(tool) => {
                served.counts[tool as usize][usize::from(https)].fetch_add(1, Ordering::Relaxed)
            }
            None => served.other.fetch_add(1, Ordering::Relaxed),
        };
        if stream
            .write_all(RESPONSE)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
        buf.drain(..end);
    }
}

/// A CA for the run (its PEM written to `scratch/ca.pem`) and a server
/// config with a leaf it signed for `127.0.0.1` and `localhost`.
fn tls_config(scratch: &Path) -> Result<(Arc<rustls::ServerConfig>, PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "sightline bench url CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let ca_pem = scratch.join("ca.pem");
    fs::write(&ca_pem, ca.pem())?;
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate()?;
    let leaf = params.signed_by(&key, &ca)?;
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok((Arc::new(config), ca_pem))
}
