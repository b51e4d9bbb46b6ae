//! `cargo xtask bench log-framing [--mb N] [--runs N] [--json]`: how fast
//! the log agent's framer cuts an nginx access log into records and
//! packs them into wire chunks, from memory, beside `wc -l` reading the
//! same file from the page cache (the floor no line reader beats).
//!
//! The data: N MB (100 by default) of nginx `combined` lines with a
//! request time, generated with a fixed seed into the scratch folder.
//! The framer runs in `agent-log/examples/log_framing.rs`, built with the
//! `agent` profile (what ships); it reads the file into memory first, so
//! no I/O is timed, and reports the best of `--runs` in CPU time of its
//! thread (the machine is shared: wall time would count waits for a
//! core). `wc -l` is timed by the wall clock, best of `--runs` after a
//! warm-up. Never leaves its scratch folder behind.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{Goal, Row, print_json, print_table};
use crate::process::cargo;

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut args = args.iter();
    let mut mb: usize = 100;
    let mut runs: u32 = 3;
    let mut json = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--mb" => mb = args.next().context("--mb needs a number")?.parse()?,
            "--runs" => runs = args.next().context("--runs needs a number")?.parse()?,
            other => bail!("bench log-framing: unknown option {other}"),
        }
    }
    cargo(
        root,
        &[
            "build",
            "--profile",
            "agent",
            "--locked",
            "-p",
            "sightline-log",
            "--example",
            "log_framing",
        ],
    )?;
    let scratch = root.join(format!("target/bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = measure(root, &scratch, mb, runs);
    let _ = fs::remove_dir_all(&scratch);
    let (rows, lines, bytes) = result?;
    if json {
        return print_json(&rows);
    }
    println!();
    println!(
        "log framing, from memory: {:.0} MB, {lines} nginx lines, best of {runs}, this machine",
        bytes as f64 / 1e6
    );
    println!();
    print_table("sightline-log", "wc -l", &rows);
    Ok(())
}

fn measure(root: &Path, scratch: &Path, mb: usize, runs: u32) -> Result<(Vec<Row>, u64, u64)> {
    let file = scratch.join("access.log");
    let lines = write_access_log(&file, mb * 1_000_000)?;
    let bytes = fs::metadata(&file)?.len();

    // `wc -l`: the file read from the page cache and its line ends
    // counted; the first run warms the cache.
    let mut wc_best = f64::INFINITY;
    for _ in 0..=runs {
        let started = Instant::now();
        let out = Command::new("wc").arg("-l").arg(&file).output()?;
        let seconds = started.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("wc -l failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let counted: u64 = String::from_utf8(out.stdout)?
            .split_whitespace()
            .next()
            .context("wc printed nothing")?
            .parse()?;
        if counted != lines {
            bail!("wc -l counted {counted} lines, {lines} written");
        }
        wc_best = wc_best.min(seconds);
    }

    let out = Command::new(root.join("target/agent/examples/log_framing"))
        .arg(&file)
        .args(["--runs", &runs.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "log_framing failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let seconds = |mode: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("mode={mode} ")))
            .with_context(|| format!("no {mode} in log_framing's output:\n{text}"))?;
        let value = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .with_context(|| format!("no {key} in '{line}'"))
        };
        let records: u64 = value("records=")?.parse()?;
        if records != lines {
            bail!("{mode}: {records} records from {lines} lines");
        }
        let wall: f64 = value("seconds=")?.parse()?;
        let cpu: f64 = value("cpu_seconds=")?.parse()?;
        // CPU time when the kernel gave it: the machine is shared, and
        // waiting for a core is not the framer's cost.
        Ok(if cpu.is_finite() && cpu > 0.0 {
            cpu
        } else {
            wall
        })
    };
    let wc_mb_s = bytes as f64 / wc_best / 1e6;
    let wc_lines_s = lines as f64 / wc_best;
    let mut rows = Vec::new();
    for (mode, name, label, goal) in [
        ("framer", "framer_mb_per_s", "framer alone, MB/s", None),
        (
            "plain",
            "plain_mb_per_s",
            "framer + chunks, MB/s",
            Some(Goal::AtLeast(500.0)),
        ),
        (
            "parse",
            "parse_mb_per_s",
            "framer + nginx parse + chunks, MB/s",
            None,
        ),
    ] {
        let s = seconds(mode)?;
        rows.push(Row {
            name,
            label,
            scale: 1.0,
            value: bytes as f64 / s / 1e6,
            peer_value: wc_mb_s,
            goal,
        });
        if mode != "framer" {
            rows.push(Row {
                name: if mode == "plain" {
                    "plain_lines_per_s"
                } else {
                    "parse_lines_per_s"
                },
                label: if mode == "plain" {
                    "framer + chunks, million lines/s"
                } else {
                    "framer + nginx parse + chunks, million lines/s"
                },
                scale: 1e-6,
                value: lines as f64 / s,
                peer_value: wc_lines_s,
                goal: None,
            });
        }
    }
    Ok((rows, lines, bytes))
}

/// Writes about `size` bytes of nginx access log lines to `path`, from a
/// fixed seed; returns how many lines.
fn write_access_log(path: &Path, size: usize) -> Result<u64> {
    const METHODS: [&str; 4] = ["GET", "GET", "POST", "PUT"];
    const PATHS: [&str; 5] = [
        "/api/users/",
        "/api/orders/",
        "/static/app.js?v=",
        "/health",
        "/api/search?q=term",
    ];
    const AGENTS: [&str; 3] = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        "curl/8.5.0",
        "Go-http-client/1.1",
    ];
    const STATUS: [u32; 6] = [200, 200, 200, 304, 404, 500];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        // xorshift64*: fixed, fast, good enough for test data.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut out = String::with_capacity(size + 4096);
    let mut lines = 0;
    while out.len() < size {
        let r = next();
        let ip = (r >> 8) as u32;
        let (sec, min) = (r % 60, (r >> 6) % 60);
        let _ = writeln!(
            out,
            "10.{}.{}.{} - - [24/Nov/2026:01:{min:02}:{sec:02} +0000] \"{} {}{} HTTP/1.1\" {} {} \"-\" \"{}\" {}.{:03}",
            ip % 256,
            (ip >> 8) % 256,
            (ip >> 16) % 256,
            METHODS[(r >> 20) as usize % 4],
            PATHS[(r >> 24) as usize % 5],
            (r >> 32) % 100_000,
            STATUS[(r >> 40) as usize % 6],
            (r >> 44) % 50_000,
            AGENTS[(r >> 52) as usize % 3],
            (r >> 56) % 2,
            (r >> 48) % 1000,
        );
        lines += 1;
    }
    fs::write(path, out)?;
    Ok(lines)
}
