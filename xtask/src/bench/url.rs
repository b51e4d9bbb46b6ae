//! `cargo xtask bench url [--targets N] [--rate R] [--window S] [--json]`:
//! sightline-url and Debian's `prometheus-blackbox-exporter` checking the
//! same local HTTP and HTTPS servers in the same run, reported as ratios;
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
//! CPU is every thread's time (`/proc/<pid>/task/*/schedstat`) over the
//! window after one interval of warm-up, divided by the checks the servers
//! counted for that tool in the window; peak RSS is `VmHWM`. A run where a
//! tool fell short of its checks, a probe failed, or the collector does not
//! list every one of the agent's targets as `up` is an error, not a table.

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
    window: Duration,
    json: bool,
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut args = args.iter();
    let mut scale = false;
    let mut targets = None;
    let mut rate: f64 = 50.0;
    let mut window = None;
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--scale" => scale = true,
            "--targets" => {
                targets = Some(args.next().context("--targets needs a number")?.parse()?);
            }
            "--rate" => rate = args.next().context("--rate needs a number")?.parse()?,
            "--window" => {
                window = Some(Duration::from_secs(
                    args.next().context("--window needs seconds")?.parse()?,
                ));
            }
            other => bail!("bench url: unknown option {other}"),
        }
    }
    let options = Options {
        scale,
        targets: targets.unwrap_or(if scale { 10_000 } else { 500 }),
        rate,
        window: window.unwrap_or(Duration::from_secs(if scale { 150 } else { 60 })),
        json,
    };
    if options.targets == 0 || options.rate <= 0.0 || options.window.is_zero() {
        bail!("bench url: --targets, --rate and --window must be above zero");
    }
    crate::test::ensure_packages()?;
    build(root, "agent", "sightline-url", None)?;
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
    let (title, rows) = result?;
    if options.json {
        return print_json(&rows);
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
fn compare(root: &Path, scratch: &Path, options: &Options) -> Result<(String, Vec<Row>)> {
    // Whole seconds, at least one: the agent's interval is a duration key.
    let interval_s = ((options.targets as f64 / options.rate).round() as u64).max(1);
    let interval = Duration::from_secs(interval_s);
    let servers = TargetServers::start(scratch, 2, 1)?;
    let agent_targets = servers.targets(Tool::Agent, options.targets);
    let exporter_targets = servers.targets(Tool::Exporter, options.targets);

    let mut agent = start_agent(root, scratch, &servers, &agent_targets, interval)?;
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
        warm_up + options.window + Duration::from_secs(1),
    );
    eprintln!(
        "{} targets each, every {interval_s} s ({:.0} checks/s per tool); warming up {} s, then measuring {} s...",
        options.targets,
        options.targets as f64 / interval_s as f64,
        warm_up.as_secs(),
        options.window.as_secs()
    );
    std::thread::sleep(warm_up);
    let agent_before = cpu_seconds(agent.pid)?;
    let agent_threads_before = cpu_seconds_by_thread(agent.pid)?;
    let exporter_before = cpu_seconds(exporter_pid)?;
    let served_before = servers.served.snapshot();
    let begin = Instant::now();
    std::thread::sleep(options.window);
    let agent_cpu = cpu_seconds(agent.pid)? - agent_before;
    let agent_threads = cpu_seconds_by_thread(agent.pid)?;
    let exporter_cpu = cpu_seconds(exporter_pid)? - exporter_before;
    let served = servers.served.snapshot().minus(&served_before);
    let seconds = begin.elapsed().as_secs_f64();
    let (probes_ok, probes_failed) = scraper.finish();
    agent.running.check_alive(scratch)?;

    let expected = options.targets as f64 * seconds / interval_s as f64;
    for tool in [Tool::Agent, Tool::Exporter] {
        served.check(tool, expected)?;
    }
    agent.wait_all_up(options.targets)?;
    if probes_failed > 0 {
        bail!(
            "{probes_failed} of {} blackbox probes failed (no `probe_success 1`); its log:\n{}",
            probes_ok + probes_failed,
            fs::read_to_string(scratch.join("blackbox.log")).unwrap_or_default()
        );
    }
    let agent_checks = served.total(Tool::Agent) as f64;
    let exporter_checks = served.total(Tool::Exporter) as f64;
    eprintln!(
        "in {seconds:.1} s: the agent made {agent_checks} checks ({} HTTPS), blackbox_exporter {exporter_checks} ({} HTTPS), {expected:.0} expected each; agent CPU {agent_cpu:.2} s, exporter CPU {exporter_cpu:.2} s",
        served.https(Tool::Agent),
        served.https(Tool::Exporter),
    );
    // Where the agent's time went, for whoever makes it cheaper.
    let by_thread: Vec<String> = agent_threads
        .iter()
        .map(|(name, after)| {
            let before = agent_threads_before.get(name).copied().unwrap_or(0.0);
            format!("{name} {:.0} ms", (after - before) * 1000.0)
        })
        .collect();
    eprintln!("agent CPU by thread: {}", by_thread.join(", "));
    let title = format!(
        "sightline-url vs blackbox_exporter: {} local targets each (1 in {HTTPS_EVERY} HTTPS), every {interval_s} s, {:.0} s window, this machine, same run",
        options.targets, seconds
    );
    let rows = vec![
        Row {
            name: "cpu_seconds_per_check",
            label: "CPU per check (ms)",
            scale: 1000.0,
            value: agent_cpu / agent_checks,
            peer_value: exporter_cpu / exporter_checks,
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
            value: agent_checks / seconds,
            peer_value: exporter_checks / seconds,
            goal: None,
        },
    ];
    drop(agent);
    drop(servers);
    Ok((title, rows))
}

/// One agent, many targets, a long interval: its share of a core.
fn scale_run(root: &Path, scratch: &Path, options: &Options) -> Result<(String, Vec<Row>)> {
    let interval = Duration::from_secs(60);
    let servers = TargetServers::start(scratch, 6, 2)?;
    let targets = servers.targets(Tool::Agent, options.targets);
    let mut agent = start_agent(root, scratch, &servers, &targets, interval)?;
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
    Ok((title, rows))
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
    let agent = Command::new(root.join("target/agent/sightline-url"))
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
