//! `cargo xtask up`, the README's first command, run for real: its printed
//! commands show live data from this machine.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use sightline_e2e::{Scratch, binary, wait_exit};

#[test]
fn up_prints_commands_that_show_live_data() {
    let scratch = Scratch::new("up");
    let data = scratch.join("data");
    let mut up = Command::new(binary("xtask"))
        .args([
            "up",
            "--no-build",
            "--for",
            "3",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts xtask up");
    let stdout = up.stdout.take().expect("stdout");
    let mut printed = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("utf-8");
        let done = line.starts_with("Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    // Keep reading, as a terminal would, so `up` can print as it stops.
    std::thread::spawn(move || for _ in lines {});
    let text = printed.join("\n");
    assert!(text.contains("Sightline is up."), "{text}");
    let token = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("token"))
        .map(|t| t.trim().to_string())
        .expect("prints the token");
    let metrics_url = printed
        .iter()
        .find(|l| l.contains("metrics?name=cpu.usage"))
        .and_then(|l| l.split('\'').rev().nth(1))
        .expect("prints a metrics command")
        .to_string();
    // Do what the printed command does.
    let client: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let body: serde_json::Value = client
        .get(&metrics_url)
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .expect("the printed command works")
        .body_mut()
        .read_json()
        .expect("json");
    let points = body["series"][0]["points"]
        .as_array()
        .expect("a series with points");
    let usage = points[0][1].as_f64().expect("a value");
    assert!((0.0..=100.0).contains(&usage), "{body}");
    assert!(std::fs::metadata(data.join("local.credentials")).is_ok());
    // --for ends it, stopping everything cleanly.
    let status = wait_exit(&mut up, Duration::from_secs(30)).expect("up stops by itself");
    assert!(status.success());
}
