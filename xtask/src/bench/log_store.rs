//! `cargo xtask bench log-store [--lines N] [--json]`: the collector's log
//! store alone. `logload` (`tests/src/bin/logload.rs`) pushes N synthetic
//! nginx access lines (default 10,000,000, about 200 bytes each) to the
//! release collector over gRPC as one log agent does (zstd, chunks of 512
//! KiB, 32 in flight); the bench reports ingest MB/s and lines/s from the
//! first send to the last ack, the collector's CPU per GB, bytes stored per
//! line (the data folder after a clean stop), and the latency (p50, p99 of
//! a few runs) of a selective-term search (one trace id: one line of N), a
//! category and one-second time window search (a page of 100), and
//! patterns over everything.
//!
//! Lines stored are counted through the API (the patterns' counts add up to
//! every record stored), never taken from the load generator. Never
//! measures a debug build; never leaves a process or the scratch folder
//! behind.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    Running, StartedCollector, api_get, build, cpu_seconds, http_client, peak_rss, start_collector,
};
use crate::process::{terminate, wait_exit};

const HTTP_TIMEOUT: Duration = Duration::from_secs(120);
/// Runs of each query.
const RUNS: usize = 7;

struct Options {
    lines: u64,
    json: bool,
}

fn options(args: &[String]) -> Result<Options> {
    let mut out = Options {
        lines: 10_000_000,
        json: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => out.json = true,
            "--lines" => {
                let text = it.next().context("--lines needs a number")?;
                out.lines = text
                    .parse()
                    .with_context(|| format!("--lines: '{text}' is not a whole number"))?;
            }
            other => bail!(
                "unknown option {other}; usage: cargo xtask bench log-store [--lines N] [--json]"
            ),
        }
    }
    Ok(out)
}

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = options(args)?;
    build(root, "release", "sightline-collector", None)?;
    build(root, "release", "sightline-e2e", Some("logload"))?;
    let bin = root.join("target/release");
    let scratch = root.join(format!("target/bench-log-store-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = measure(&bin, &scratch, &options);
    let _ = fs::remove_dir_all(&scratch);
    let report = result?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// `GET path` with the token: the body and how long it took.
fn timed_get(agent: &ureq::Agent, base: &str, token: &str, path: &str) -> Result<(Value, f64)> {
    let started = Instant::now();
    let body = api_get(agent, base, token, path)?;
    Ok((body, started.elapsed().as_secs_f64()))
}

/// p50 and p99 (nearest rank) of `samples`, in seconds.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    (at(0.50), at(0.99))
}

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

fn trace_id(k: u64) -> String {
    // As logload's.
    let mut x = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", x ^ (x >> 31))
}

fn measure(bin: &Path, scratch: &Path, options: &Options) -> Result<Value> {
    let data = scratch.join("collector");
    let StartedCollector {
        child,
        license,
        token,
        grpc,
        http: api,
    } = start_collector(
        bin,
        &data,
        fs::File::create(scratch.join("collector.log"))?.into(),
    )?;
    let pid = child.id();
    let mut running = Running(vec![child]);
    eprintln!(
        "collector: grpc={grpc} http={api}; pushing {} lines",
        options.lines
    );
    let cpu_before = cpu_seconds(pid)?;
    let mut load = Command::new(bin.join("logload"))
        .args(["--grpc", &grpc, "--license", &license, "--lines"])
        .arg(options.lines.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting logload")?;
    let load_pid = load.id();
    let stdout = load.stdout.take().context("logload stdout")?;
    let mut load_cpu = 0.0;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(text) = line.strip_prefix("result ") {
            load_cpu = cpu_seconds(load_pid).unwrap_or(0.0);
            result = Some(serde_json::from_str::<Value>(text)?);
        }
    }
    let status = load.wait()?;
    let result = result.with_context(|| format!("logload ended ({status}) without a result"))?;
    let cpu = cpu_seconds(pid)? - cpu_before;
    let seconds = result["seconds"].as_f64().context("seconds")?;
    let bytes = result["bytes"].as_f64().context("bytes")?;
    let (start_ms, end_ms) = (
        result["start_ms"].as_i64().context("start_ms")?,
        result["end_ms"].as_i64().context("end_ms")?,
    );
    eprintln!("logload: {result}");

    let agent = http_client(HTTP_TIMEOUT);
    // Every line stored once: the patterns' counts add up to them.
    let (patterns, _) = timed_get(
        &agent,
        &api,
        &token,
        "/api/v1/logs/patterns?category=access&from=0&limit=1000",
    )?;
    let stored: u64 = patterns["patterns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["count"].as_u64())
        .sum();
    if stored != options.lines {
        bail!("{stored} lines stored of {} pushed", options.lines);
    }
    let mut selective = Vec::new();
    for run in 0..RUNS as u64 {
        let k = options.lines * (2 * run + 1) / (2 * RUNS as u64);
        let path = format!("/api/v1/logs/search?q={}", trace_id(k));
        let (body, s) = timed_get(&agent, &api, &token, &path)?;
        let found = body["records"].as_array().map_or(0, Vec::len);
        if found != 1 {
            bail!("the trace id of line {k} found {found} records, not 1");
        }
        selective.push(s);
    }
    let mut window = Vec::new();
    for run in 0..RUNS as i64 {
        // The second before a point of the run (chunks are timed when
        // made, which may be well before the last ack).
        let to = start_ms + (end_ms - start_ms) * (run + 1) / (RUNS as i64 + 1);
        let from = to - 1000;
        let path = format!("/api/v1/logs/search?category=access&from={from}&to={to}&limit=100");
        let (body, s) = timed_get(&agent, &api, &token, &path)?;
        if body["records"].as_array().map_or(0, Vec::len) == 0 {
            bail!("nothing found in the second from {from}");
        }
        window.push(s);
    }
    let mut pattern_runs = Vec::new();
    for _ in 0..RUNS {
        let (_, s) = timed_get(
            &agent,
            &api,
            &token,
            "/api/v1/logs/patterns?category=access&from=0&limit=50",
        )?;
        pattern_runs.push(s);
    }
    let rss = peak_rss(pid)?;
    let Some(mut collector) = running.0.pop() else {
        bail!("the collector is gone");
    };
    terminate(&collector);
    match wait_exit(&mut collector, Duration::from_secs(60)) {
        Some(s) if s.success() => {}
        other => bail!("the collector did not stop cleanly: {other:?}"),
    }
    let stored_bytes = folder_bytes(&data)?;
    let lines = options.lines as f64;
    let (sel50, sel99) = percentiles(selective);
    let (win50, win99) = percentiles(window);
    let (pat50, pat99) = percentiles(pattern_runs);
    Ok(json!({
        "lines": options.lines,
        "text_bytes": bytes,
        "bytes_per_line": bytes / lines,
        "ingest_seconds": seconds,
        "ingest_mb_per_second": bytes / seconds / 1e6,
        "ingest_lines_per_second": lines / seconds,
        "collector_cpu_seconds": cpu,
        "collector_cpu_seconds_per_gb": cpu / (bytes / 1e9),
        "logload_cpu_seconds": load_cpu,
        "collector_peak_rss_bytes": rss,
        "store_bytes": stored_bytes,
        "store_bytes_per_line": stored_bytes as f64 / lines,
        "search_selective_p50_seconds": sel50,
        "search_selective_p99_seconds": sel99,
        "search_category_window_p50_seconds": win50,
        "search_category_window_p99_seconds": win99,
        "patterns_p50_seconds": pat50,
        "patterns_p99_seconds": pat99,
    }))
}

fn print_report(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{} lines, {:.0} MB of text ({:.0} bytes per line)\n",
        r["lines"],
        f("text_bytes") / 1e6,
        f("bytes_per_line")
    );
    println!("| figure | value | goal |");
    println!("| --- | ---: | ---: |");
    let rows: [(&str, String, &str); 11] = [
        (
            "ingest, MB/s (first send to last ack)",
            format!("{:.1}", f("ingest_mb_per_second")),
            "≥ 200",
        ),
        (
            "ingest, lines/s",
            format!("{:.0}", f("ingest_lines_per_second")),
            "",
        ),
        (
            "collector CPU s per GB",
            format!("{:.2}", f("collector_cpu_seconds_per_gb")),
            "",
        ),
        (
            "logload CPU s",
            format!("{:.1}", f("logload_cpu_seconds")),
            "",
        ),
        (
            "collector peak RSS, MiB",
            format!("{:.0}", f("collector_peak_rss_bytes") / 1048576.0),
            "",
        ),
        (
            "store bytes per line",
            format!("{:.1}", f("store_bytes_per_line")),
            "",
        ),
        (
            "search, one trace id of all lines, p50 ms",
            format!("{:.0}", f("search_selective_p50_seconds") * 1e3),
            "",
        ),
        (
            "search, one trace id, p99 ms",
            format!("{:.0}", f("search_selective_p99_seconds") * 1e3),
            "< 1000",
        ),
        (
            "search, category + 1 s window, p50 / p99 ms",
            format!(
                "{:.0} / {:.0}",
                f("search_category_window_p50_seconds") * 1e3,
                f("search_category_window_p99_seconds") * 1e3
            ),
            "",
        ),
        (
            "patterns over all lines, p50 ms",
            format!("{:.0}", f("patterns_p50_seconds") * 1e3),
            "",
        ),
        (
            "patterns, p99 ms",
            format!("{:.0}", f("patterns_p99_seconds") * 1e3),
            "",
        ),
    ];
    for (name, value, goal) in rows {
        println!("| {name} | {value} | {goal} |");
    }
}
