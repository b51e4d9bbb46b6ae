//! The URL agent as its user meets it: `sightline-url test` prints a table
//! of every target, and state changes (a target going DOWN, coming back UP)
//! reach a real collector as events; the agent stops within a second of
//! SIGTERM. (The collector's /api/v1/url routes land with its store; the
//! checks themselves are asserted at the agent's wire edge and in
//! agent-url's probe tests.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

use sightline_e2e::{Agent, Collector, Scratch, agent_conf, binary, create_project, wait_for};

/// A plain HTTP/1.1 server on loopback: `/ok` answers 200, anything else 404.
fn serve(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let (status, body) = if text.starts_with("GET /ok ") {
                    ("200 OK", "fine")
                } else {
                    ("404 Not Found", "nope")
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
}

fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[test]
fn test_prints_a_table_of_every_target_and_no_secret() {
    let scratch = Scratch::new("url-test");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let web = listener.local_addr().expect("addr");
    serve(listener);
    let refused = closed_port();
    let collector = closed_port();
    let conf = scratch.join("url.conf");
    std::fs::write(
        &conf,
        format!(
            "license=sl1-AAAAAAAAAAAAAAAAAAAAAAAAAA-0000000\nserver.host=127.0.0.1\nserver.port={}\nserver.timeout=1s\n\
             target.home.url=http://{web}/ok\ntarget.home.auth.token_env=URL_TEST_TOKEN\n\
             target.missing.url=http://{web}/missing\n\
             target.gone.url=http://{refused}/\n",
            collector.port()
        ),
    )
    .expect("write conf");
    let out = Command::new(binary("sightline-url"))
        .args(["test", "--conf"])
        .arg(&conf)
        .env("URL_TEST_TOKEN", "tok-9f8e7d6c5b4a")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing target fails `test`:\n{stdout}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(stdout.contains("Targets (3):"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("TARGET ") && l.contains("FIRST_BYTE")),
        "{stdout}"
    );
    let home = row("home");
    assert_eq!(&home[1..4], ["ok", "200", "HTTP/1.1"], "{stdout}");
    assert_eq!(home[10], "4", "body bytes: {stdout}");
    let missing = row("missing");
    assert_eq!(&missing[1..3], ["status", "404"], "{stdout}");
    let gone = row("gone");
    assert_eq!(&gone[1..3], ["connection", "refused"], "{stdout}");
    assert!(
        stdout.contains("missing: status 404, expected 200-399"),
        "{stdout}"
    );
    assert!(!stdout.contains("tok-9f8e7d6c5b4a"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("tok-9f8e7d6c5b4a"));
}

#[test]
fn a_bad_expression_refuses_to_start_with_file_and_line() {
    let scratch = Scratch::new("url-bad");
    let creds = create_project(&scratch.join("collector"), "url-bad");
    let conf = scratch.join("url.conf");
    std::fs::write(
        &conf,
        format!(
            "license={}\ntarget.a.url=http://127.0.0.1:9/\ntarget.a.expect.json=$.status = \"ok\"\n",
            creds.license
        ),
    )
    .expect("write conf");
    for sub in ["run", "test"] {
        let out = Command::new(binary("sightline-url"))
            .args([sub, "--conf"])
            .arg(&conf)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{sub}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "url.conf:3: target.a.expect.json: expected one of == != < <= > >= at column 10"
            ),
            "{sub}: {stderr}"
        );
    }
}

fn url_events(api: &sightline_e2e::Api, name: &str) -> Vec<serde_json::Value> {
    api.events()
        .into_iter()
        .filter(|e| e["kind"] == name)
        .collect()
}

#[test]
fn a_target_going_down_and_up_raises_events_at_the_collector() {
    let scratch = Scratch::new("url-events");
    let data = scratch.join("collector");
    let creds = create_project(&data, "url-events");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let target = closed_port();
    let agent_dir = scratch.join("agent");
    let url = format!("http://{target}/ok");
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &agent_dir.join("data"),
        &[
            ("target.web.url", url.as_str()),
            ("target.web.interval", "2s"),
            ("target.web.down_interval", "1s"),
            ("target.web.fail_after", "2"),
            ("target.web.timeout", "1s"),
        ],
    );
    let mut agent = Agent::start("sightline-url", &agent_dir, &conf);
    let down = wait_for("url.down", Duration::from_secs(15), || {
        url_events(&api, "url.down").pop()
    });
    assert_eq!(down["attrs"]["target"], "web");
    assert_eq!(down["attrs"]["failure"], "connection refused");
    assert_eq!(down["attrs"]["url"], url);
    // The server comes up: the next check (DOWN: every second) finds it.
    let listener = TcpListener::bind(target).expect("rebind the target's port");
    serve(listener);
    let up = wait_for("url.up", Duration::from_secs(10), || {
        url_events(&api, "url.up").pop()
    });
    assert_eq!(up["attrs"]["from"], "down");
    assert_eq!(up["attrs"]["status"], "200");
    assert_eq!(
        url_events(&api, "url.down").len(),
        1,
        "one DOWN, announced once"
    );

    // The seed's list and table, from what the real agent sent: the target
    // UP now, its checks newest first with the refused ones before it.
    let listed = wait_for("web listed up", Duration::from_secs(10), || {
        let (status, list) = api.get("/api/v1/url/checks");
        assert_eq!(status, 200, "{list}");
        let web = list["targets"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == "web")?
            .clone();
        (web["state"] == "up").then_some(web)
    });
    assert_eq!(listed["status_code"], 200);
    assert_eq!(listed["url"], url);
    assert_eq!(listed["body_bytes"], 4, "the server answers \"fine\"");
    assert!(listed["elapsed_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    let (status, results) = api.get("/api/v1/url/checks/web/results");
    assert_eq!(status, 200, "{results}");
    let rows = results["agents"][0]["results"]
        .as_array()
        .expect("the agent's results");
    let passed = rows
        .iter()
        .find(|r| r["ok"] == true)
        .expect("a passing check");
    let phases = &passed["phases_ms"];
    let sum: f64 = ["dns", "connect", "tls", "first_byte", "transfer"]
        .iter()
        .map(|p| phases[p].as_f64().expect("a phase"))
        .sum();
    let total = phases["total"].as_f64().expect("total");
    assert!(
        (sum - total).abs() < 0.01 + total * 0.01,
        "phases {phases} add up to the total"
    );
    assert!(
        rows.iter()
            .any(|r| r["reason"] == "connection_refused" && r["state"] == "down"),
        "the refused checks are in the table: {results}"
    );

    let stopped = agent.terminate_within(Duration::from_secs(1));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "{:?}\n{}",
        stopped,
        agent.log_text()
    );
}

#[test]
fn the_targets_file_is_reloaded_without_a_restart_and_a_bad_one_keeps_the_old_targets() {
    let scratch = Scratch::new("url-reload");
    let data = scratch.join("collector");
    let creds = create_project(&data, "url-reload");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let targets = scratch.join("targets.conf");
    let line = |name: &str| {
        format!(
            "target.{name}.url=http://{}/\ntarget.{name}.interval=1s\ntarget.{name}.fail_after=1\n",
            closed_port()
        )
    };
    std::fs::write(&targets, line("first")).expect("write targets");
    let agent_dir = scratch.join("agent");
    let file = targets.display().to_string();
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &agent_dir.join("data"),
        &[("url.targets", file.as_str())],
    );
    let mut agent = Agent::start("sightline-url", &agent_dir, &conf);
    let down_of = |name: &str| {
        url_events(&api, "url.down")
            .into_iter()
            .any(|e| e["attrs"]["target"] == name)
            .then_some(())
    };
    wait_for("first down", Duration::from_secs(15), || down_of("first"));
    // A bad file: logged with its line, and nothing changes.
    std::fs::write(
        &targets,
        format!("{}target.second.expect.status=999\n", line("second")),
    )
    .expect("write bad targets");
    wait_for("the refusal in the log", Duration::from_secs(10), || {
        let log = agent.log_text();
        (log.contains("Targets file refused")
            && log.contains("targets.conf:4: target.second.expect.status"))
        .then_some(())
    });
    // A good file: its new target is checked without a restart.
    std::fs::write(&targets, line("third")).expect("write targets");
    wait_for("third down", Duration::from_secs(15), || down_of("third"));
    assert!(
        down_of("second").is_none(),
        "the bad file's targets never ran"
    );
    assert!(agent.terminate_within(Duration::from_secs(1)).is_some());
}

/// What the agent sends, read back from its spool (the collector is away,
/// so every batch stays there): each check as a `UrlCheck` with its
/// phases adding up to the total and the server's known wait in its first
/// byte, several checks of a second in one batch, and the events beside.
#[test]
fn checks_travel_as_url_checks_with_phases_that_add_up() {
    use agent_core::spool::{Spool, Sync};
    use agent_core::transport::wire::decode_spooled;
    use sightline_proto::v1 as pb;

    let scratch = Scratch::new("url-wire");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let web = listener.local_addr().expect("addr");
    serve_slowly(listener, Duration::from_millis(80));
    let agent_dir = scratch.join("agent");
    let data_dir = agent_dir.join("data");
    let creds = create_project(&scratch.join("collector"), "url-wire");
    // No collector listens: every batch stays in the spool.
    let mut text = agent_conf(&creds.license, closed_port(), &data_dir, &[]);
    for i in 0..5 {
        text.push_str(&format!(
            "target.w{i}.url=http://{web}/ok\ntarget.w{i}.interval=1s\n"
        ));
    }
    text.push_str("target.missing.url=http://nothing.invalid/\ntarget.missing.fail_after=1\ntarget.missing.interval=1s\n");
    let mut agent = Agent::start("sightline-url", &agent_dir, &text);
    std::thread::sleep(Duration::from_millis(3500));
    assert!(agent.terminate_within(Duration::from_secs(1)).is_some());

    let mut spool = Spool::open(&data_dir.join("spool"), 64 << 20, Sync::Normal).expect("spool");
    let mut checks: Vec<(usize, pb::UrlCheck)> = Vec::new();
    let mut events: Vec<pb::AgentEvent> = Vec::new();
    let mut key = None;
    let mut batches = 0;
    while let Some(k) = spool.next_after(key) {
        key = Some(k);
        let Some(bytes) = spool.read(k).expect("read") else {
            continue;
        };
        let batch = decode_spooled(&bytes).expect("a batch");
        batches += 1;
        for p in batch.payloads {
            match p.kind {
                Some(pb::payload::Kind::Url(u)) => {
                    checks.extend(u.checks.into_iter().map(|c| (batches, c)))
                }
                Some(pb::payload::Kind::Events(e)) => events.extend(e.events),
                _ => {}
            }
        }
    }
    let ok: Vec<&pb::UrlCheck> = checks
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.target.starts_with('w'))
        .collect();
    assert!(
        ok.len() >= 10,
        "five targets every second for 3 s: {}",
        ok.len()
    );
    for c in &ok {
        assert!(c.ok, "{c:?}");
        assert_eq!(c.state, pb::UrlState::Up as i32);
        assert_eq!((c.status_code, c.body_bytes), (200, 4));
        assert_eq!(c.http_version, "HTTP/1.1");
        assert_eq!(c.url, format!("http://{web}/ok"));
        assert_eq!(c.method, "GET");
        assert_eq!(c.remote_ip, "127.0.0.1");
        assert_eq!(
            c.dns_us + c.connect_us + c.tls_us + c.first_byte_us + c.transfer_us,
            c.total_us
        );
        assert!(
            c.first_byte_us >= 80_000,
            "first byte {} µs for an 80 ms wait",
            c.first_byte_us
        );
    }
    // The best of them within 5 ms of the wait (the rest may carry a busy
    // machine's scheduling delay).
    let best = ok.iter().map(|c| c.first_byte_us).min().unwrap_or(0);
    assert!(
        (80_000..85_000).contains(&best),
        "best first byte {best} µs"
    );
    // Checks that finish in the same second share a batch.
    let mut per_batch = std::collections::BTreeMap::new();
    for (b, _) in &checks {
        *per_batch.entry(*b).or_insert(0) += 1;
    }
    assert!(per_batch.values().any(|n| *n >= 3), "{per_batch:?}");
    let missing: Vec<&pb::UrlCheck> = checks
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.target == "missing")
        .collect();
    assert!(!missing.is_empty());
    assert_eq!(missing[0].failure, pb::UrlFailure::Dns as i32);
    assert_eq!(missing[0].state, pb::UrlState::Down as i32);
    assert!(!missing[0].detail.is_empty());
    let down: Vec<&pb::AgentEvent> = events.iter().filter(|e| e.name == "url.down").collect();
    assert_eq!(down.len(), 1, "DOWN announced once: {events:?}");
}

/// Like [`serve`], waiting `wait` before answering.
fn serve_slowly(listener: TcpListener, wait: Duration) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                std::thread::sleep(wait);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nfine",
                );
            });
        }
    });
}

/// A check waiting on a server that has not answered does not hold the
/// agent up: SIGTERM ends it within a second.
#[test]
fn sigterm_with_checks_in_flight_stops_within_a_second() {
    let scratch = Scratch::new("url-stop");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let web = listener.local_addr().expect("addr");
    serve_slowly(listener, Duration::from_secs(20));
    let creds = create_project(&scratch.join("collector"), "url-stop");
    let agent_dir = scratch.join("agent");
    let mut text = agent_conf(&creds.license, closed_port(), &agent_dir.join("data"), &[]);
    for i in 0..20 {
        text.push_str(&format!(
            "target.s{i}.url=http://{web}/\ntarget.s{i}.interval=1s\ntarget.s{i}.timeout=30s\n"
        ));
    }
    let mut agent = Agent::start("sightline-url", &agent_dir, &text);
    std::thread::sleep(Duration::from_millis(2500));
    let stopped = agent.terminate_within(Duration::from_secs(1));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "{stopped:?}\n{}",
        agent.log_text()
    );
}
