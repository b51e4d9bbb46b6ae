//! `cargo xtask bench infra [--cycles N] [--json]`: sightline-infra and
//! node_exporter side by side on this machine, over the same number of
//! cycles, reported as ratios.
//!
//! A cycle is one collection: one agent interval (1 s here), or one scrape
//! of node_exporter's `/metrics`, as Prometheus would do it. Both run on
//! the same host at the same time, release builds, node_exporter with its
//! default collectors (what a user gets). The agent also delivers every
//! cycle to a collector (encoding, zstd, gRPC); node_exporter is scraped
//! asking for gzip, as Prometheus does. The collector is not measured. The
//! agent is built with the `agent` profile (size-optimised, what ships). CPU is the nanoseconds the kernel accounted to every thread
//! of each process (`/proc/<pid>/task/*/schedstat`), after three warm-up
//! cycles; peak RSS is `VmHWM`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{
    Goal, Row, Running, StartedCollector, build, cpu_seconds, free_port, peak_rss, print_json,
    print_table, start_collector,
};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const WARM_UP_CYCLES: u32 = 3;

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut args = args.iter();
    let mut cycles: u32 = 30;
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--cycles" => cycles = args.next().context("--cycles needs a number")?.parse()?,
            other => bail!("bench infra: unknown option {other}"),
        }
    }
    crate::test::ensure_packages()?;
    build(root, "agent", "sightline-infra", None)?;
    build(root, "release", "sightline-collector", None)?;
    let bin = root.join("target/release");
    let agent_bin = root.join("target/agent");
    let scratch = root.join(format!("target/bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = measure(&bin, &agent_bin, &scratch, cycles);
    let _ = fs::remove_dir_all(&scratch);
    let (rows, samples, series) = result?;
    if json {
        return print_json(&rows);
    }
    println!();
    println!("sightline-infra vs node_exporter: {cycles} cycles of 1 s, this machine, same time");
    println!();
    print_table("sightline-infra", "node_exporter", &rows);
    println!("| values per cycle | {samples} | {series} | | |");
    Ok(())
}

fn measure(
    bin: &Path,
    agent_bin: &Path,
    scratch: &Path,
    cycles: u32,
) -> Result<(Vec<Row>, usize, usize)> {
    let data = scratch.join("collector");
    let StartedCollector {
        child: collector,
        license,
        token,
        grpc,
        http,
    } = start_collector(bin, &data, Stdio::null())?;
    let port = grpc.rsplit_once(':').map(|(_, p)| p).context("port")?;
    let conf = scratch.join("infra.conf");
    fs::write(
        &conf,
        format!(
            "license={license}\nserver.port={port}\ndata.dir={}\ninterval=1s\nlog.level=warn\n",
            scratch.join("agent").display()
        ),
    )?;
    let agent = Command::new(agent_bin.join("sightline-infra"))
        .arg("--conf")
        .arg(&conf)
        .stderr(Stdio::null())
        .spawn()?;
    let exporter_port = free_port()?;
    let exporter = Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {NODE_EXPORTER}"))?;
    let (agent_pid, exporter_pid) = (agent.id(), exporter.id());
    let _running = Running(vec![agent, exporter, collector]);

    let client: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    // As Prometheus scrapes: asking for gzip, which node_exporter does.
    let scrape = || -> Result<usize> {
        let body = client
            .get(format!("http://127.0.0.1:{exporter_port}/metrics"))
            .header("Accept-Encoding", "gzip")
            .call()?
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()?;
        Ok(body.len())
    };
    let count_series = || -> Result<usize> {
        let body = client
            .get(format!("http://127.0.0.1:{exporter_port}/metrics"))
            .call()?
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()?;
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count())
    };
    let started = Instant::now();
    while scrape().is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("node_exporter did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("warming up for {WARM_UP_CYCLES} cycles, then measuring {cycles}...");
    for _ in 0..WARM_UP_CYCLES {
        scrape()?;
        std::thread::sleep(Duration::from_secs(1));
    }
    let agent_before = cpu_seconds(agent_pid)?;
    let exporter_before = cpu_seconds(exporter_pid)?;
    let begin = Instant::now();
    for cycle in 0..cycles {
        scrape()?;
        let next = begin + Duration::from_secs(u64::from(cycle) + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let agent_cpu = cpu_seconds(agent_pid)? - agent_before;
    let exporter_cpu = cpu_seconds(exporter_pid)? - exporter_before;
    // The agent's cycles are its intervals; count what actually ran.
    let agent_cycles = begin.elapsed().as_secs_f64().floor().max(1.0);
    let samples = samples_per_cycle(&http, &token)?;
    let series = count_series()?;
    let rows = vec![
        Row {
            name: "cpu_seconds_per_cycle",
            label: "CPU per cycle (ms)",
            scale: 1000.0,
            value: agent_cpu / agent_cycles,
            peer_value: exporter_cpu / f64::from(cycles),
            goal: Some(Goal::RatioAtMost(0.2)),
        },
        Row {
            name: "peak_rss_bytes",
            label: "peak RSS (MiB)",
            scale: 1.0 / f64::from(1 << 20),
            value: peak_rss(agent_pid)? as f64,
            peer_value: peak_rss(exporter_pid)? as f64,
            goal: Some(Goal::RatioAtMost(0.4)),
        },
    ];
    Ok((rows, samples, series))
}

/// How many values the agent reported in its latest metrics batch: the
/// number of series the collector holds for it.
fn samples_per_cycle(http: &str, token: &str) -> Result<usize> {
    let client: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let get = |path: &str| -> Result<serde_json::Value> {
        Ok(client
            .get(format!("http://{http}{path}"))
            .header("Authorization", format!("Bearer {token}"))
            .call()?
            .body_mut()
            .read_json()?)
    };
    let agents = get("/api/v1/agents")?;
    let oid = agents["agents"][0]["oid"]
        .as_i64()
        .context("the agent registered")?;
    let names = get(&format!("/api/v1/agents/{oid}/metrics"))?;
    let mut total = 0;
    for name in names["names"].as_array().context("names")? {
        let name = name.as_str().context("name")?;
        let series = get(&format!("/api/v1/agents/{oid}/metrics?name={name}"))?;
        total += series["series"].as_array().map_or(0, Vec::len);
    }
    Ok(total)
}
