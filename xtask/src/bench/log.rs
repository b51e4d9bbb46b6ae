//! `cargo xtask bench log [--mb N] [--no-peer] [--json]`: the log agent
//! reading a large nginx access log from its start, beside `wc -l` on the
//! same file (the floor no reader beats) and beside rsyslog's `imfile`
//! shipping the same file to a local file (the peer), in the same run.
//!
//! Steps, one after the other on one generated file (`--mb`, default 600:
//! about 4 million lines of nginx's combined format, the same bytes every
//! run):
//! 1. `wc -l` on it, best of two.
//! 2. `sightline-log` (the shipped `agent` profile) from the file's start
//!    into `logsink` (`tests/src/bin/logsink.rs`): a null collector that
//!    speaks the real protocol and acks each batch at once without
//!    storing. Done when the sink has counted every line.
//! 3. `sightline-log` from the start into the real collector (release
//!    build, fresh project): done when the file's last line is found by
//!    `/api/v1/logs/search` (batches of one agent are stored in order),
//!    then the agent's own count of acked records is checked against the
//!    file's lines. Then LiveTail: lines written to a second file one
//!    every 25 ms, timed from the write to their arrival on
//!    `/api/v1/logs/tail`.
//! 4. Debian's rsyslog (installed if missing): `imfile` (inotify) on the
//!    same file from its start, `omfile` with the bare message to a file.
//!    Done when the output holds every line.
//!
//! CPU is every thread's time from `/proc/<pid>/task/*/schedstat`, peak
//! RSS `VmHWM`. Never measures a debug build; never leaves a process or the
//! scratch folder (under `target/`) behind.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    Goal, Row, Running, StartedCollector, api_get, build, cpu_seconds, http_client, peak_rss,
    print_json, print_table, start_collector,
};
use crate::apt::{Package, ensure};

const RSYSLOG: Package = Package {
    name: "rsyslog",
    provides: "/usr/sbin/rsyslogd",
};
/// The last line carries this word, so the bench can find it.
const END_MARK: &str = "benchend";
/// Lines written for the LiveTail latency.
const LIVE_LINES: u32 = 200;
/// Between two LiveTail lines.
const LIVE_GAP: Duration = Duration::from_millis(25);
/// Bound on every HTTP call the bench makes itself.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Options {
    mb: u64,
    peer: bool,
    json: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options {
            mb: 600,
            peer: true,
            json: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--json" => options.json = true,
                "--no-peer" => options.peer = false,
                "--mb" => {
                    let text = args.next().context("--mb needs a number")?;
                    options.mb = text
                        .parse()
                        .with_context(|| format!("--mb: '{text}' is not a whole number"))?;
                }
                other => bail!("bench log: unknown option {other}"),
            }
        }
        if options.mb == 0 {
            bail!("bench log: --mb must be above 0");
        }
        Ok(options)
    }

    /// How long any one reader may take over the file: 1 MB/s at worst.
    fn limit(&self) -> Duration {
        Duration::from_secs(60 + self.mb)
    }
}

/// The generated file.
#[derive(Debug, Clone)]
struct Input {
    path: PathBuf,
    bytes: u64,
    lines: u64,
}

/// One reader over the whole file.
#[derive(Debug, Clone, Copy)]
struct Pass {
    seconds: f64,
    cpu: f64,
    peak_rss: u64,
    lines: u64,
}

impl Pass {
    fn bytes_per_second(&self, input: &Input) -> f64 {
        input.bytes as f64 / self.seconds
    }
    fn lines_per_second(&self) -> f64 {
        self.lines as f64 / self.seconds
    }
}

/// What the run measured.
struct Measured {
    input: Input,
    wc_seconds: f64,
    null: Pass,
    stored: Pass,
    collector_cpu: f64,
    acked_by_health: Option<u64>,
    live_p50: f64,
    live_p99: f64,
    live_missed: usize,
    peer: Option<Pass>,
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    if options.peer {
        ensure(&[RSYSLOG])?;
    }
    build(root, "agent", "sightline-log", None)?;
    build(root, "release", "sightline-collector", None)?;
    build(root, "release", "sightline-e2e", Some("logsink"))?;
    let bin = root.join("target/release");
    let agent_bin = root.join("target/agent/sightline-log");
    let scratch = root.join(format!("target/bench-log-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let result = measure(&bin, &agent_bin, &scratch, &options);
    if std::env::var_os("BENCH_KEEP_DIRS").is_none() {
        let _ = fs::remove_dir_all(&scratch);
    }
    let m = result?;
    let rows = rows(&m);
    if options.json {
        return print_json(&rows);
    }
    println!();
    println!(
        "sightline-log vs rsyslog imfile: {:.0} MB, {} lines of nginx access log, read from the start; this machine, one after the other",
        m.input.bytes as f64 / 1e6,
        m.input.lines
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
    print_table("sightline-log", "rsyslog", &rows);
    println!();
    let wc_rate = m.input.bytes as f64 / m.wc_seconds;
    println!(
        "floor: `wc -l` {:.0} MB/s ({:.2} s); the agent into the null sink reads at {:.2}× wc's time, stored at {:.2}×",
        wc_rate / 1e6,
        m.wc_seconds,
        m.null.seconds / m.wc_seconds,
        m.stored.seconds / m.wc_seconds
    );
    println!(
        "collector: {:.1} s of CPU storing {} lines; the agent's health says {} records acked; LiveTail p50 {:.0} ms, {} of {LIVE_LINES} lines missed",
        m.collector_cpu,
        m.stored.lines,
        m.acked_by_health
            .map_or_else(|| "no count of".to_string(), |n| n.to_string()),
        m.live_p50 * 1000.0,
        m.live_missed
    );
    Ok(())
}

fn rows(m: &Measured) -> Vec<Row> {
    let peer = |f: &dyn Fn(&Pass) -> f64| m.peer.as_ref().map_or(f64::NAN, f);
    let mb = 1e-6;
    vec![
        Row {
            name: "null_sink_bytes_per_second",
            label: "file → null sink (MB/s)",
            scale: mb,
            value: m.null.bytes_per_second(&m.input),
            peer_value: peer(&|p| p.bytes_per_second(&m.input)),
            goal: Some(Goal::AtLeast(500.0)),
        },
        Row {
            name: "stored_bytes_per_second",
            label: "file → collector, acked and stored (MB/s)",
            scale: mb,
            value: m.stored.bytes_per_second(&m.input),
            peer_value: peer(&|p| p.bytes_per_second(&m.input)),
            goal: Some(Goal::AtLeast(200.0)),
        },
        Row {
            name: "null_sink_lines_per_second",
            label: "file → null sink (lines/s)",
            scale: 1.0,
            value: m.null.lines_per_second(),
            peer_value: peer(&Pass::lines_per_second),
            goal: None,
        },
        Row {
            name: "stored_lines_per_second",
            label: "file → collector (lines/s)",
            scale: 1.0,
            value: m.stored.lines_per_second(),
            peer_value: peer(&Pass::lines_per_second),
            goal: None,
        },
        Row {
            name: "null_sink_cpu_seconds",
            label: "agent CPU, file → null sink (s)",
            scale: 1.0,
            value: m.null.cpu,
            peer_value: peer(&|p| p.cpu),
            goal: None,
        },
        Row {
            name: "stored_cpu_seconds",
            label: "agent CPU, file → collector (s)",
            scale: 1.0,
            value: m.stored.cpu,
            peer_value: peer(&|p| p.cpu),
            goal: None,
        },
        // On a shared machine wall time waits for a core; CPU time does not.
        Row {
            name: "null_sink_bytes_per_cpu_second",
            label: "MB per agent CPU second, file → null sink",
            scale: mb,
            value: m.input.bytes as f64 / m.null.cpu,
            peer_value: peer(&|p| m.input.bytes as f64 / p.cpu),
            goal: None,
        },
        Row {
            name: "stored_bytes_per_cpu_second",
            label: "MB per agent CPU second, file → collector",
            scale: mb,
            value: m.input.bytes as f64 / m.stored.cpu,
            peer_value: peer(&|p| m.input.bytes as f64 / p.cpu),
            goal: None,
        },
        Row {
            name: "peak_rss_bytes",
            label: "agent peak RSS (MiB)",
            scale: 1.0 / f64::from(1 << 20),
            value: m.null.peak_rss.max(m.stored.peak_rss) as f64,
            peer_value: peer(&|p| p.peak_rss as f64),
            goal: Some(Goal::AtMost(64.0)),
        },
        Row {
            name: "livetail_latency_p99_seconds",
            label: "LiveTail latency p99 (ms)",
            scale: 1000.0,
            value: m.live_p99,
            peer_value: f64::NAN,
            goal: Some(Goal::AtMost(1000.0)),
        },
        Row {
            name: "wc_bytes_per_second",
            label: "`wc -l`, the floor (MB/s)",
            scale: mb,
            value: m.input.bytes as f64 / m.wc_seconds,
            peer_value: f64::NAN,
            goal: None,
        },
    ]
}

fn measure(bin: &Path, agent_bin: &Path, scratch: &Path, options: &Options) -> Result<Measured> {
    let input = generate(&scratch.join("access.log"), options.mb)?;
    eprintln!(
        "generated {} ({:.0} MB, {} lines)",
        input.path.display(),
        input.bytes as f64 / 1e6,
        input.lines
    );
    let wc_seconds = wc(&input)?;
    eprintln!("wc -l: {wc_seconds:.2} s");
    let collector = start_collector(
        bin,
        &scratch.join("collector"),
        File::create(scratch.join("collector.log"))?.into(),
    )?;
    let null = null_pass(bin, agent_bin, scratch, &collector.license, &input, options)?;
    eprintln!(
        "agent → null sink: {:.2} s, {:.1} s CPU, peak RSS {:.1} MiB",
        null.seconds,
        null.cpu,
        null.peak_rss as f64 / f64::from(1 << 20)
    );
    let stored = stored_pass(agent_bin, scratch, collector, &input, options)?;
    eprintln!(
        "agent → collector: {:.2} s, {:.1} s CPU, peak RSS {:.1} MiB; LiveTail p99 {:.0} ms",
        stored.pass.seconds,
        stored.pass.cpu,
        stored.pass.peak_rss as f64 / f64::from(1 << 20),
        stored.live_p99 * 1000.0
    );
    let peer = if options.peer {
        let peer = rsyslog_pass(scratch, &input, options)?;
        eprintln!(
            "rsyslog imfile → omfile: {:.2} s, {:.1} s CPU, peak RSS {:.1} MiB",
            peer.seconds,
            peer.cpu,
            peer.peak_rss as f64 / f64::from(1 << 20)
        );
        Some(peer)
    } else {
        None
    };
    Ok(Measured {
        input,
        wc_seconds,
        null,
        stored: stored.pass,
        collector_cpu: stored.collector_cpu,
        acked_by_health: stored.acked_by_health,
        live_p50: stored.live_p50,
        live_p99: stored.live_p99,
        live_missed: stored.live_missed,
        peer,
    })
}

/// Deterministic noise.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "curl/7.88.1",
    "kube-probe/1.30",
    "Go-http-client/1.1",
];

/// One access-log line in nginx's combined format (no line end).
fn access_line(rng: &mut XorShift, n: u64, out: &mut String) {
    use std::fmt::Write as _;
    let second = n / 200;
    let (h, m, s) = ((second / 3600) % 24, (second / 60) % 60, second % 60);
    let method = if rng.below(10) < 8 { "GET" } else { "POST" };
    let status = match rng.below(100) {
        0..=84 => 200,
        85..=91 => 304,
        92..=97 => 404,
        _ => 500,
    };
    let _ = write!(
        out,
        "10.{}.{}.{} - - [24/Nov/2026:{h:02}:{m:02}:{s:02} +0000] \"{method} ",
        rng.below(256),
        rng.below(256),
        rng.below(256)
    );
    let _ = match rng.below(4) {
        0 => write!(out, "/api/users/{}", rng.below(1_000_000)),
        1 => write!(
            out,
            "/api/orders/{}/items?page={}",
            rng.below(10_000_000),
            rng.below(20)
        ),
        2 => write!(out, "/static/app.{:08x}.js", rng.next() as u32),
        _ => write!(out, "/health"),
    };
    let referer = if rng.below(3) == 0 {
        "https://shop.example.com/cart"
    } else {
        "-"
    };
    let agent = AGENTS[rng.below(AGENTS.len() as u64) as usize];
    let _ = write!(
        out,
        " HTTP/1.1\" {status} {} \"{referer}\" \"{agent}\"",
        rng.below(50_000)
    );
}

/// Writes about `mb` MB of access log to `path`; the last line carries
/// [`END_MARK`].
fn generate(path: &Path, mb: u64) -> Result<Input> {
    let target = mb * 1_000_000;
    let mut file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut rng = XorShift(0x5eed_1095);
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut line = String::with_capacity(512);
    while bytes < target {
        line.clear();
        access_line(&mut rng, lines, &mut line);
        if bytes + line.len() as u64 + 1 >= target {
            line.push(' ');
            line.push_str(END_MARK);
        }
        line.push('\n');
        file.write_all(line.as_bytes())?;
        bytes += line.len() as u64;
        lines += 1;
    }
    file.flush()?;
    Ok(Input {
        path: path.to_path_buf(),
        bytes,
        lines,
    })
}

/// `wc -l` on the input, best of two (the first also warms the cache);
/// checks its count.
fn wc(input: &Input) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let started = Instant::now();
        let out = Command::new("wc").arg("-l").arg(&input.path).output()?;
        let seconds = started.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&out.stdout);
        let count: u64 = text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("wc -l printed '{text}'"))?;
        if count != input.lines {
            bail!("wc -l counts {count} lines, {} were written", input.lines);
        }
        best = best.min(seconds);
    }
    Ok(best)
}

/// The agent's config: the input as group `bench` from its start, and an
/// empty `live.log` as group `live` (read from its end: what is written
/// later).
fn agent_conf(license: &str, grpc: &str, data_dir: &Path, input: &Input, live: &Path) -> String {
    let (host, port) = grpc.rsplit_once(':').unwrap_or((grpc, "6600"));
    format!(
        "license={license}\nserver.host={host}\nserver.port={port}\ndata.dir={}\ninterval=1s\nlog.level=warn\n\
         file.bench.path={}\nfile.bench.start=beginning\n\
         file.live.path={}\n",
        data_dir.display(),
        input.path.display(),
        live.display()
    )
}

fn start_agent(agent_bin: &Path, dir: &Path, conf: &str) -> Result<Child> {
    fs::create_dir_all(dir)?;
    let path = dir.join("sightline-log.conf");
    fs::write(&path, conf)?;
    Command::new(agent_bin)
        .arg("--conf")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("agent.log"))?)
        .spawn()
        .with_context(|| format!("starting {}", agent_bin.display()))
}

/// The agent into `logsink`.
fn null_pass(
    bin: &Path,
    agent_bin: &Path,
    scratch: &Path,
    license: &str,
    input: &Input,
    options: &Options,
) -> Result<Pass> {
    let mut sink = Command::new(bin.join("logsink"))
        .args(["--for", &options.limit().as_secs().to_string()])
        .stdout(Stdio::piped())
        .stderr(File::create(scratch.join("logsink.log"))?)
        .spawn()
        .context("starting logsink")?;
    let stdout = sink.stdout.take().context("logsink stdout")?;
    let running_sink = Running(vec![sink]);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().context("logsink printed nothing")??;
    let grpc = first
        .strip_prefix("listening grpc=")
        .with_context(|| format!("logsink said '{first}'"))?
        .to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let records = line
                .strip_prefix("records ")
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok());
            if let Some(records) = records
                && tx.send((Instant::now(), records)).is_err()
            {
                return;
            }
        }
    });
    let dir = scratch.join("agent-null");
    let live = dir.join("live.log");
    fs::create_dir_all(&dir)?;
    File::create(&live)?;
    let started = Instant::now();
    let agent = start_agent(
        agent_bin,
        &dir,
        &agent_conf(license, &grpc, &dir.join("data"), input, &live),
    )?;
    let pid = agent.id();
    let _running = Running(vec![agent]);
    let deadline = started + options.limit();
    let mut seen = 0;
    let done = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((at, records)) => {
                seen = records;
                if records >= input.lines {
                    break at;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("logsink stopped after {seen} records of {}", input.lines)
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the null sink got {seen} of {} lines in {:?}; see {}",
                input.lines,
                options.limit(),
                dir.join("agent.log").display()
            );
        }
    };
    if seen > input.lines {
        bail!(
            "the null sink got {seen} records, the file has {}",
            input.lines
        );
    }
    let pass = Pass {
        seconds: (done - started).as_secs_f64(),
        cpu: cpu_seconds(pid)?,
        peak_rss: peak_rss(pid)?,
        lines: seen,
    };
    drop(running_sink);
    Ok(pass)
}

/// What the pass into the real collector measured.
struct StoredPass {
    pass: Pass,
    collector_cpu: f64,
    acked_by_health: Option<u64>,
    live_p50: f64,
    live_p99: f64,
    live_missed: usize,
}

/// The agent into the real collector, then LiveTail.
fn stored_pass(
    agent_bin: &Path,
    scratch: &Path,
    collector: StartedCollector,
    input: &Input,
    options: &Options,
) -> Result<StoredPass> {
    let StartedCollector {
        child,
        license,
        token,
        grpc,
        http,
    } = collector;
    let collector_pid = child.id();
    let _collector = Running(vec![child]);
    let collector_cpu_before = cpu_seconds(collector_pid)?;
    let dir = scratch.join("agent-collector");
    let live = dir.join("live.log");
    fs::create_dir_all(&dir)?;
    File::create(&live)?;
    let started = Instant::now();
    let agent = start_agent(
        agent_bin,
        &dir,
        &agent_conf(&license, &grpc, &dir.join("data"), input, &live),
    )?;
    let pid = agent.id();
    let _agent = Running(vec![agent]);
    let client = http_client(HTTP_TIMEOUT);
    let deadline = started + options.limit();
    let last_line = format!(
        "/api/v1/logs/search?q={END_MARK}&category=bench&from=0&to={}&limit=1",
        super::now_ms() + 86_400_000
    );
    let done = loop {
        let body = api_get(&client, &http, &token, &last_line)?;
        if body["records"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["text"].as_str().is_some_and(|t| t.ends_with(END_MARK)))
        }) {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!(
                "the collector did not store the file's last line within {:?}; see {}",
                options.limit(),
                dir.join("agent.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = (done - started).as_secs_f64();
    let cpu = cpu_seconds(pid)?;
    let collector_cpu = cpu_seconds(collector_pid)? - collector_cpu_before;
    // The agent's own count, as its health reaches the collector (it is
    // sent with batches and liveness signals, so it may lag a little).
    let mut acked_by_health = None;
    let health_deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < health_deadline {
        let agents = api_get(&client, &http, &token, "/api/v1/agents")?;
        acked_by_health = agents["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| {
                a["health"]["sources"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|s| s["name"].as_str().is_some_and(|n| n.contains("bench")))
            .filter_map(|s| s["records_acked"].as_u64())
            .max();
        if acked_by_health.is_some_and(|n| n >= input.lines) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if let Some(acked) = acked_by_health
        && acked > input.lines
    {
        bail!(
            "the agent says {acked} records acked, the file has {} lines",
            input.lines
        );
    }
    let (live_p50, live_p99, live_missed) = live_tail(&http, &token, &live)?;
    Ok(StoredPass {
        pass: Pass {
            seconds,
            cpu,
            peak_rss: peak_rss(pid)?,
            lines: input.lines,
        },
        collector_cpu,
        acked_by_health,
        live_p50,
        live_p99,
        live_missed,
    })
}

/// Lines appended to `live` one every [`LIVE_GAP`], each timed from its
/// write to its arrival on `/api/v1/logs/tail?category=live`: p50, p99
/// (a line that never arrives counts as infinitely late) and how many
/// never arrived.
fn live_tail(http: &str, token: &str, live: &Path) -> Result<(f64, f64, usize)> {
    let stream = TcpStream::connect(http)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0: the body is the rest of the connection, not chunked.
    write!(
        &stream,
        "GET /api/v1/logs/tail?category=live HTTP/1.0\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    if !status.contains(" 200") {
        let mut rest = String::new();
        let _ = reader.take(4096).read_to_string(&mut rest);
        bail!("GET /api/v1/logs/tail: {status} {rest}");
    }
    let (tx, rx) = mpsc::channel();
    let reading = std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { return };
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(record) = serde_json::from_str::<Value>(data.trim()) else {
                continue;
            };
            let n = record["text"]
                .as_str()
                .and_then(|t| t.strip_prefix("live line "))
                .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok());
            if let Some(n) = n
                && tx.send((n, Instant::now())).is_err()
            {
                return;
            }
        }
    });
    // Let the subscription settle before the first line.
    std::thread::sleep(Duration::from_millis(500));
    let mut file = fs::OpenOptions::new().append(true).open(live)?;
    let mut written = Vec::with_capacity(LIVE_LINES as usize);
    let begin = Instant::now();
    for n in 0..LIVE_LINES {
        file.write_all(format!("live line {n} of the tail latency\n").as_bytes())?;
        written.push(Instant::now());
        std::thread::sleep((begin + LIVE_GAP * (n + 1)).saturating_duration_since(Instant::now()));
    }
    let mut arrived: Vec<Option<Instant>> = vec![None; LIVE_LINES as usize];
    let deadline = Instant::now() + Duration::from_secs(5);
    while arrived.iter().any(Option::is_none) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left) {
            Ok((n, at)) => {
                if let Some(slot) = arrived.get_mut(n as usize) {
                    slot.get_or_insert(at);
                }
            }
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reading.join();
    let mut latencies: Vec<f64> = arrived
        .iter()
        .zip(&written)
        .map(|(at, w)| {
            at.map_or(f64::INFINITY, |at| {
                at.saturating_duration_since(*w).as_secs_f64()
            })
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let missed = latencies.iter().filter(|l| l.is_infinite()).count();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1)];
    Ok((at(0.50), at(0.99), missed))
}

/// rsyslog's imfile on the input, omfile to a file in the scratch folder.
fn rsyslog_pass(scratch: &Path, input: &Input, options: &Options) -> Result<Pass> {
    let dir = scratch.join("rsyslog");
    fs::create_dir_all(dir.join("work"))?;
    let out = dir.join("out.log");
    let conf = dir.join("rsyslog.conf");
    fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{work}\")
module(load=\"imfile\" mode=\"inotify\")
template(name=\"bare\" type=\"string\" string=\"%msg%\\n\")
ruleset(name=\"bench\") {{
    action(type=\"omfile\" file=\"{out}\" template=\"bare\")
}}
input(type=\"imfile\" file=\"{input}\" tag=\"bench\" ruleset=\"bench\" freshStartTail=\"off\")
",
            work = dir.join("work").display(),
            out = out.display(),
            input = input.path.display()
        ),
    )?;
    let check = Command::new(RSYSLOG.provides)
        .args(["-N1", "-f"])
        .arg(&conf)
        .output()?;
    if !check.status.success() {
        bail!(
            "rsyslogd -N1 refused the config: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let started = Instant::now();
    let child = Command::new(RSYSLOG.provides)
        .args(["-n", "-i"])
        .arg(dir.join("rsyslogd.pid"))
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("rsyslogd.log"))?)
        .spawn()
        .context("starting rsyslogd")?;
    let pid = child.id();
    let _running = Running(vec![child]);
    let deadline = started + options.limit();
    // The output is the input's lines, one for one: done at the input's
    // size (checked by counting lines after).
    let mut last_size = 0;
    let mut last_growth = Instant::now();
    let done = loop {
        let size = fs::metadata(&out).map_or(0, |m| m.len());
        if size >= input.bytes {
            break Instant::now();
        }
        if size > last_size {
            last_size = size;
            last_growth = Instant::now();
        }
        if Instant::now() > deadline || last_growth.elapsed() > Duration::from_secs(20) {
            break last_growth;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu = cpu_seconds(pid)?;
    let rss = peak_rss(pid)?;
    let mut lines = 0u64;
    let mut reader = BufReader::with_capacity(1 << 20, File::open(&out)?);
    loop {
        let buffer = reader.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        lines += buffer.iter().filter(|&&b| b == b'\n').count() as u64;
        let n = buffer.len();
        reader.consume(n);
    }
    if lines < input.lines {
        eprintln!(
            "rsyslog wrote {lines} of {} lines (stalled or over the time limit); its rate counts what it wrote",
            input.lines
        );
    }
    Ok(Pass {
        seconds: (done - started).as_secs_f64(),
        cpu,
        peak_rss: rss,
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options> {
        Options::parse(&args.iter().map(|a| (*a).to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_default_to_the_issues_600_mb_with_the_peer() {
        let o = parse(&[]).expect("defaults");
        assert_eq!((o.mb, o.peer, o.json), (600, true, false));
        let o = parse(&["--mb", "20", "--no-peer", "--json"]).expect("parses");
        assert_eq!((o.mb, o.peer, o.json), (20, false, true));
        let error = |args: &[&str]| parse(args).expect_err("refused").to_string();
        assert!(error(&["--mb", "lots"]).contains("'lots'"));
        assert!(error(&["--mb", "0"]).contains("above 0"));
        assert!(error(&["--gb"]).contains("--gb"));
    }

    #[test]
    fn the_generated_log_is_the_same_every_run_and_ends_with_the_mark() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-log-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let a = generate(&dir.join("a.log"), 1).expect("generate a");
        let b = generate(&dir.join("b.log"), 1).expect("generate b");
        let (ta, tb) = (
            fs::read_to_string(&a.path).expect("read a"),
            fs::read_to_string(&b.path).expect("read b"),
        );
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(ta, tb);
        assert_eq!(a.bytes, ta.len() as u64);
        assert!(a.bytes >= 1_000_000 && a.bytes < 1_001_000, "{}", a.bytes);
        assert_eq!(a.lines, ta.lines().count() as u64);
        assert!(ta.trim_end().ends_with(END_MARK));
        assert_eq!(ta.matches(END_MARK).count(), 1);
        // Lines of about 150 bytes: 600 MB is about 4 million of them.
        let mean = a.bytes / a.lines;
        assert!((120..=180).contains(&mean), "mean line {mean} bytes");
        let first = ta.lines().next().expect("a line");
        assert!(
            first.starts_with("10.") && first.contains("] \"") && first.contains(" HTTP/1.1\" "),
            "{first}"
        );
    }
}
