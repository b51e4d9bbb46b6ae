//! Alerts end to end: the real collector (evaluating every 200 ms), a
//! scripted server agent on the wire driving `mem.used_pct`, a webhook
//! receiver and an SMTP sink on loopback. What a user checks: a crossing
//! tells the receiver once and its resolve once; a failing receiver gets
//! the third attempt and every attempt is listed; a notification queued
//! when the collector is killed -9 arrives after the restart; a paused
//! agent tells nothing until resumed; mail arrives over STARTTLS with the
//! login; secrets never come back from the API or reach the log.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sightline_e2e::smtp_sink::SmtpSink;
use sightline_e2e::webhook::WebhookReceiver;
use sightline_e2e::wire_agent::{Client, connect, hello, push};
use sightline_e2e::{Api, Collector, Credentials, Scratch, create_project, wait_for};
use sightline_proto::v1 as pb;

const INSTANCE: &str = "a1e2a1e2a1e2a1e2a1e2a1e2a1e2a1e2";
const SECRET_PATH: &str = "/hook/T0KEN-secret-0123456789abcdef";

/// A collector evaluating rules every 200 ms, with its project.
struct Setup {
    scratch: Scratch,
    collector: Collector,
    credentials: Credentials,
    conf: PathBuf,
}

impl Setup {
    fn start(name: &str) -> Setup {
        let scratch = Scratch::new(name);
        let data = scratch.join("data");
        let credentials = create_project(&data, "shop");
        let conf = scratch.join("collector.conf");
        std::fs::write(&conf, "alerts.tick=200ms\n").expect("conf");
        let collector = Setup::collector(&data, &conf);
        Setup {
            scratch,
            collector,
            credentials,
            conf,
        }
    }

    fn collector(data: &std::path::Path, conf: &std::path::Path) -> Collector {
        let conf = conf.display().to_string();
        Collector::start_with(data, "127.0.0.1:0", "127.0.0.1:0", &["--conf", &conf])
    }

    fn restart(&mut self) {
        self.collector = Setup::collector(&self.scratch.join("data"), &self.conf);
    }

    fn api(&self) -> Api {
        self.collector.api(&self.credentials.token)
    }

    /// A webhook channel to `url`; its id.
    fn webhook(&self, url: &str) -> i64 {
        let (status, body) = self.api().call(
            "POST",
            "/api/v1/alerts/channels",
            Some(&json!({ "name": "ops", "kind": "webhook", "url": url })),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().expect("channel id")
    }

    /// The rule `memory high`: `mem.used_pct > 90 for 1s`, telling `channels`.
    fn memory_rule(&self, channels: &[i64]) -> i64 {
        let (status, body) = self.api().call(
            "POST",
            "/api/v1/alerts/rules",
            Some(&json!({
                "name": "memory high",
                "expr": "mem.used_pct > 90 for 1s",
                "severity": "critical",
                "channels": channels,
            })),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().expect("rule id")
    }
}

/// A server agent on the wire that reports one series, `mem.used_pct`.
struct MemAgent {
    runtime: tokio::runtime::Runtime,
    client: Client,
    license: String,
    oid: u64,
    seq: u64,
}

impl MemAgent {
    fn connect(collector: &Collector, license: &str) -> MemAgent {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (client, oid) = runtime.block_on(async {
            let mut client = connect(collector).await;
            let oid = hello(&mut client, license, "infra", "web-1", INSTANCE, 1000).await;
            (client, oid)
        });
        MemAgent {
            runtime,
            client,
            license: license.into(),
            oid,
            seq: 0,
        }
    }

    /// Reconnects to a restarted collector (same store: same oid).
    fn reconnect(&mut self, collector: &Collector) {
        let license = self.license.clone();
        let (client, oid) = self.runtime.block_on(async {
            let mut client = connect(collector).await;
            let oid = hello(&mut client, &license, "infra", "web-1", INSTANCE, 1000).await;
            (client, oid)
        });
        assert_eq!(oid, self.oid);
        self.client = client;
    }

    /// Sends `value` every 200 ms for `span`.
    fn report(&mut self, value: f64, span: Duration) {
        let until = Instant::now() + span;
        loop {
            let now = sightline_e2e::now_ms();
            self.send(
                now,
                pb::payload::Kind::Metrics(pb::Metrics {
                    time_ms: now,
                    samples: vec![pb::Sample {
                        name: "mem.used_pct".into(),
                        labels: vec![],
                        value,
                    }],
                }),
            );
            if Instant::now() >= until {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends one event as the server agent does (`name`, the `threshold`
    /// attribute `key`) stamped `time_ms`.
    fn event(&mut self, name: &str, key: &str, time_ms: i64) {
        self.send(
            time_ms,
            pb::payload::Kind::Events(pb::AgentEvents {
                events: vec![pb::AgentEvent {
                    time_ms,
                    name: name.into(),
                    message: format!("{name} {key}"),
                    attrs: [("threshold".to_string(), key.to_string())].into(),
                    ..pb::AgentEvent::default()
                }],
            }),
        );
    }

    /// Pushes one batch of `payload` stamped `time_ms` and waits for its ack.
    fn send(&mut self, time_ms: i64, payload: pb::payload::Kind) {
        self.seq += 1;
        let batch = pb::Batch {
            seq: self.seq,
            time_ms,
            health: None,
            payloads: vec![pb::Payload {
                kind: Some(payload),
            }],
            liveness: false,
        };
        let acks = self.runtime.block_on(push(
            &mut self.client,
            &self.license,
            self.oid,
            INSTANCE,
            vec![batch],
        ));
        assert_eq!(acks.len(), 1, "batch {} acked", self.seq);
    }

    /// Sends `value` every 200 ms until `done` says so (at most 20 s).
    fn report_until(&mut self, value: f64, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.report(value, Duration::ZERO);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn list(api: &Api, path: &str, key: &str) -> Vec<Value> {
    api.ok(path)[key].as_array().cloned().unwrap_or_default()
}

/// Reads `/api/v1/alerts/stream` on a thread: each `data:` line of a
/// `transition` event, parsed.
fn subscribe(collector: &Collector, token: &str) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    let mut stream = TcpStream::connect(collector.http).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        stream,
        "GET /api/v1/alerts/stream HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    std::thread::spawn(move || {
        let mut event = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ")
                && event == "transition"
                && let Ok(v) = serde_json::from_str(data)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    rx
}

#[test]
fn a_crossing_tells_the_webhook_once_then_its_resolve() {
    let setup = Setup::start("alerts-once");
    let api = setup.api();
    let receiver = WebhookReceiver::start();
    let channel = setup.webhook(&receiver.url(SECRET_PATH));
    let listed = api.ok("/api/v1/alerts/channels").to_string();
    assert!(
        !listed.contains("T0KEN-secret"),
        "the webhook URL's token is masked: {listed}"
    );
    setup.memory_rule(&[channel]);
    let transitions = subscribe(&setup.collector, &setup.credentials.token);
    let other = create_project(&setup.scratch.join("data"), "other");
    let others_transitions = subscribe(&setup.collector, &other.token);

    let mut agent = MemAgent::connect(&setup.collector, &setup.credentials.license);
    agent.report(50.0, Duration::from_secs(1));
    assert!(receiver.received().is_empty(), "nothing crossed yet");

    agent.report_until(95.0, "the firing notification", || {
        !receiver.received().is_empty()
    });
    // It keeps crossing: still one notification.
    agent.report(95.0, Duration::from_secs(2));
    let got = receiver.delivered();
    assert_eq!(
        got.len(),
        1,
        "exactly one notification while firing: {got:?}"
    );
    let firing = &got[0];
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["rule"]["name"], "memory high");
    assert_eq!(firing["rule"]["severity"], "critical");
    assert_eq!(firing["agent"]["oname"], "web-1");
    assert_eq!(firing["value"], 95.0);
    assert_eq!(firing["project"], "shop");
    assert_eq!(receiver.received()[0].path, SECRET_PATH);
    let now_firing = list(&api, "/api/v1/alerts/firing", "firing");
    assert_eq!(now_firing.len(), 1, "{now_firing:?}");
    assert_eq!(now_firing[0]["oname"], "web-1");
    assert_eq!(now_firing[0]["state"], "firing");

    agent.report_until(40.0, "the resolve notification", || {
        receiver.received().len() >= 2
    });
    agent.report(40.0, Duration::from_secs(1));
    let got = receiver.delivered();
    assert_eq!(got.len(), 2, "one firing, one resolve: {got:?}");
    assert_eq!(got[1]["state"], "resolved");
    assert_eq!(got[1]["value"], 40.0);
    assert!(list(&api, "/api/v1/alerts/firing", "firing").is_empty());

    let history = list(&api, "/api/v1/alerts/history", "history");
    let states: Vec<&str> = history.iter().filter_map(|h| h["state"].as_str()).collect();
    assert_eq!(states, ["resolved", "firing"], "newest first: {history:?}");
    assert!(history.iter().all(|h| h["notified"] == true));
    let deliveries = list(&api, "/api/v1/alerts/deliveries", "deliveries");
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    assert!(
        deliveries
            .iter()
            .all(|d| d["ok"] == true && d["status"] == 200)
    );

    let seen: Vec<Value> = (0..2)
        .map(|_| {
            transitions
                .recv_timeout(Duration::from_secs(5))
                .expect("a transition on the stream")
        })
        .collect();
    assert_eq!(seen[0]["state"], "firing");
    assert_eq!(seen[1]["state"], "resolved");
    assert_eq!(seen[0]["rule"], "memory high");
    assert!(
        others_transitions
            .recv_timeout(Duration::from_millis(500))
            .is_err(),
        "another project's stream hears nothing"
    );
    assert!(
        !setup.collector.log_text().contains("T0KEN-secret"),
        "the webhook URL's token is never logged"
    );
}

#[test]
fn a_failing_receiver_gets_the_third_attempt_and_each_is_listed() {
    let setup = Setup::start("alerts-retry");
    let api = setup.api();
    let receiver = WebhookReceiver::start();
    receiver.fail_next(2, 500);
    let channel = setup.webhook(&receiver.url("/hook"));
    setup.memory_rule(&[channel]);
    let mut agent = MemAgent::connect(&setup.collector, &setup.credentials.license);
    agent.report_until(95.0, "a delivered notification", || {
        !receiver.delivered().is_empty()
    });
    let received = receiver.received();
    let answers: Vec<u16> = received.iter().map(|r| r.answered).collect();
    assert_eq!(answers, [500, 500, 200], "{received:?}");
    assert!(
        received.iter().all(|r| r.body == received[2].body),
        "the same notification each time"
    );
    let mut deliveries = list(&api, "/api/v1/alerts/deliveries", "deliveries");
    deliveries.reverse();
    let summary: Vec<(i64, bool, i64, &str)> = deliveries
        .iter()
        .map(|d| {
            (
                d["attempt"].as_i64().unwrap_or(0),
                d["ok"].as_bool().unwrap_or(false),
                d["status"].as_i64().unwrap_or(0),
                d["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, false, 500, "sent"),
            (2, false, 500, "sent"),
            (3, true, 200, "sent")
        ],
        "{deliveries:?}"
    );
    assert!(
        deliveries
            .iter()
            .all(|d| d["notification_id"] == deliveries[0]["notification_id"])
    );
    let first = deliveries[0]["time_ms"].as_i64().unwrap_or(0);
    let third = deliveries[2]["time_ms"].as_i64().unwrap_or(0);
    assert!(
        third - first >= 2500,
        "backoff of 1 s then 2 s: {}",
        third - first
    );
}

#[test]
fn a_notification_queued_at_a_kill_9_is_sent_after_the_restart() {
    let mut setup = Setup::start("alerts-kill");
    // A port with nobody listening yet: attempts fail and stay queued.
    let (addr, _) = sightline_e2e::free_addrs();
    let channel = setup.webhook(&format!("http://{addr}/hook"));
    setup.memory_rule(&[channel]);
    let mut agent = MemAgent::connect(&setup.collector, &setup.credentials.license);
    let api = setup.api();
    agent.report_until(95.0, "a failed attempt", || {
        !list(&api, "/api/v1/alerts/deliveries", "deliveries").is_empty()
    });
    let failed = list(&api, "/api/v1/alerts/deliveries", "deliveries");
    assert_eq!(failed[0]["ok"], false, "{failed:?}");
    assert_eq!(failed[0]["state"], "queued", "{failed:?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "{failed:?}"
    );
    setup.collector.kill9();

    let receiver = WebhookReceiver::start_on(addr);
    setup.restart();
    agent.reconnect(&setup.collector);
    let api = setup.api();
    wait_for(
        "the queued notification after the restart",
        Duration::from_secs(20),
        || (!receiver.delivered().is_empty()).then_some(()),
    );
    // Still crossing after the restart: the alert fired before, so
    // nothing more is told.
    agent.report(95.0, Duration::from_secs(2));
    let got = receiver.delivered();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["state"], "firing");
    let deliveries = list(&api, "/api/v1/alerts/deliveries", "deliveries");
    assert_eq!(deliveries[0]["ok"], true, "{deliveries:?}");
    assert_eq!(deliveries[0]["state"], "sent");
    assert!(deliveries[0]["attempt"].as_i64().unwrap_or(0) >= 2);
    assert_eq!(list(&api, "/api/v1/alerts/firing", "firing").len(), 1);
}

#[test]
fn a_paused_agent_tells_nothing_until_resumed() {
    let setup = Setup::start("alerts-pause");
    let api = setup.api();
    let receiver = WebhookReceiver::start();
    let channel = setup.webhook(&receiver.url("/hook"));
    setup.memory_rule(&[channel]);
    let mut agent = MemAgent::connect(&setup.collector, &setup.credentials.license);
    agent.report(50.0, Duration::ZERO);
    let oid = agent.oid;

    let (status, body) = api.call("POST", &format!("/api/v1/agents/{oid}/pause"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], true);
    let agents = api.agents();
    assert_eq!(agents[0]["paused"], true, "{agents:?}");
    let fleet = api.ok("/api/v1/fleet");
    assert_eq!(fleet["servers"][0]["paused"], true, "{fleet}");

    // It crosses and fires, quietly; its data is still stored.
    agent.report_until(95.0, "the alert to fire while paused", || {
        !list(&api, "/api/v1/alerts/firing", "firing").is_empty()
    });
    agent.report(95.0, Duration::from_secs(2));
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());
    let history = list(&api, "/api/v1/alerts/history", "history");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["notified"], false);
    assert!(
        api.points(i64::try_from(oid).expect("oid"), "mem.used_pct")
            .iter()
            .any(|p| p.1 == 95.0),
        "data is still collected"
    );

    let (status, body) = api.call("POST", &format!("/api/v1/agents/{oid}/resume"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.agents()[0]["paused"], false);
    agent.report_until(95.0, "the firing told after the resume", || {
        !receiver.delivered().is_empty()
    });
    let got = receiver.delivered();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["state"], "firing");
    assert_eq!(got[0]["reminder"], true);

    // A pause until a time shows it; one in the past is refused.
    let until = sightline_collector::time_text::format_ms(sightline_e2e::now_ms() + 3_600_000);
    let (status, body) = api.call(
        "POST",
        &format!("/api/v1/agents/{oid}/pause"),
        Some(&json!({ "until": until })),
    );
    assert_eq!(status, 200, "{body}");
    assert!(api.agents()[0]["paused_until_ms"].as_i64().is_some());
    let (status, _) = api.call(
        "POST",
        &format!("/api/v1/agents/{oid}/pause"),
        Some(&json!({ "until": "2001-01-01T00:00:00Z" })),
    );
    assert_eq!(status, 400);
    let (status, _) = api.call("POST", "/api/v1/agents/999999/pause", None);
    assert_eq!(status, 404);
}

#[test]
fn mail_reaches_an_smtp_sink_over_starttls_with_the_login() {
    let setup = Setup::start("alerts-mail");
    let api = setup.api();
    let tls = sightline_e2e::tls_files(setup.scratch.path(), "smtp");
    let sink = SmtpSink::start(&tls.cert, &tls.key);
    let ca = std::fs::read_to_string(&tls.ca).expect("ca");
    let (status, body) = api.call(
        "POST",
        "/api/v1/alerts/channels",
        Some(&json!({
            "name": "mail",
            "kind": "email",
            "host": "127.0.0.1",
            "port": sink.addr.port(),
            "tls": "starttls",
            "username": "alerts",
            "password": "s3cret-pass-word",
            "from": "Sightline <alerts@example.com>",
            "to": ["ops@example.com"],
            "ca_pem": ca,
        })),
    );
    assert_eq!(status, 201, "{body}");
    let channel = body["id"].as_i64().expect("id");
    let listed = api.ok("/api/v1/alerts/channels");
    assert_eq!(listed["channels"][0]["password_set"], true);
    assert!(!listed.to_string().contains("s3cret"), "{listed}");

    let (status, test) = api.call(
        "POST",
        &format!("/api/v1/alerts/channels/{channel}/test"),
        None,
    );
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(test["status"], 250, "{test}");
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].tls, "STARTTLS before anything else");
    assert_eq!(mails[0].login.as_deref(), Some("alerts:s3cret-pass-word"));
    assert_eq!(mails[0].from, "alerts@example.com");
    assert_eq!(mails[0].to, ["ops@example.com"]);
    assert!(
        mails[0].data.contains("Subject: [TEST]"),
        "{}",
        mails[0].data
    );
    assert!(mails[0].data.contains("A test of channel 'mail'"));

    // A rule telling the mail channel.
    setup.memory_rule(&[channel]);
    let mut agent = MemAgent::connect(&setup.collector, &setup.credentials.license);
    agent.report_until(95.0, "the alert's mail", || sink.mails().len() >= 2);
    let mail = &sink.mails()[1];
    assert!(
        mail.data.contains("[FIRING] memory high on web-1"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("mem.used_pct > 90 for 1s"));
    // An update without the password keeps it.
    let (status, body) = api.call(
        "PUT",
        &format!("/api/v1/alerts/channels/{channel}"),
        Some(&json!({
            "name": "mail",
            "kind": "email",
            "host": "127.0.0.1",
            "port": sink.addr.port(),
            "username": "alerts",
            "from": "alerts@example.com",
            "to": ["ops@example.com", "oncall@example.com"],
            "ca_pem": std::fs::read_to_string(&tls.ca).expect("ca"),
        })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["password_set"], true, "{body}");
    let (_, test) = api.call(
        "POST",
        &format!("/api/v1/alerts/channels/{channel}/test"),
        None,
    );
    assert_eq!(test["ok"], true, "{test}");
    let last = sink.mails().last().cloned().expect("a mail");
    assert_eq!(last.login.as_deref(), Some("alerts:s3cret-pass-word"));
    assert_eq!(last.to.len(), 2);
    assert!(
        !setup.collector.log_text().contains("s3cret"),
        "the password is never logged"
    );

    // A server that stops offering STARTTLS is refused: no login, no mail
    // in the clear.
    sink.offer_no_tls();
    let before = sink.commands().len();
    let mails = sink.mails().len();
    let (_, test) = api.call(
        "POST",
        &format!("/api/v1/alerts/channels/{channel}/test"),
        None,
    );
    assert_eq!(test["ok"], false, "{test}");
    let after = sink.commands();
    assert!(
        after[before..]
            .iter()
            .all(|c| !c.to_ascii_uppercase().starts_with("AUTH") && !c.starts_with("MAIL")),
        "{:?}",
        &after[before..]
    );
    assert_eq!(sink.mails().len(), mails);
    assert!(after.len() > before, "the client did connect");
}

#[test]
fn rules_are_checked_and_scoped_to_their_project() {
    let setup = Setup::start("alerts-rules");
    let api = setup.api();
    let (status, body) = api.call(
        "POST",
        "/api/v1/alerts/rules",
        Some(&json!({ "name": "bad", "expr": "mem.used_pct > ninety for 1m" })),
    );
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "rule 'bad', column 16: expected a number, found 'ninety'"
    );
    let (status, body) = api.call(
        "POST",
        "/api/v1/alerts/rules",
        Some(&json!({ "name": "x", "expr": "no data", "channels": [12345] })),
    );
    assert_eq!(status, 400, "{body}");
    let (status, rule) = api.call(
        "POST",
        "/api/v1/alerts/rules",
        Some(&json!({ "name": "quiet", "expr": "no data", "renotify": "30m" })),
    );
    assert_eq!(status, 201, "{rule}");
    let id = rule["id"].as_i64().expect("id");
    let (status, _) = api.call(
        "POST",
        "/api/v1/alerts/rules",
        Some(&json!({ "name": "quiet", "expr": "rebooted" })),
    );
    assert_eq!(status, 400, "a name is unique in its project");
    let (status, updated) = api.call(
        "PUT",
        &format!("/api/v1/alerts/rules/{id}"),
        Some(&json!({ "name": "quiet", "expr": "url down \"home\"", "severity": "info" })),
    );
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        api.ok(&format!("/api/v1/alerts/rules/{id}"))["expr"],
        "url down \"home\""
    );

    // Another project sees none of it.
    let other = create_project(&setup.scratch.join("data"), "other");
    let other_api = setup.collector.api(&other.token);
    assert!(list(&other_api, "/api/v1/alerts/rules", "rules").is_empty());
    let (status, _) = other_api.get(&format!("/api/v1/alerts/rules/{id}"));
    assert_eq!(status, 404);
    let (status, _) = other_api.call("DELETE", &format!("/api/v1/alerts/rules/{id}"), None);
    assert_eq!(status, 404);
    let (status, _) = api.get_with("/api/v1/alerts/rules", None);
    assert_eq!(status, 401);
    let (status, _) = api.get_with("/api/v1/alerts/firing", Some("slt-wrong"));
    assert_eq!(status, 401);
    let (status, _) = api.get_with("/api/v1/alerts/stream", None);
    assert_eq!(status, 401);

    let (status, _) = api.call("DELETE", &format!("/api/v1/alerts/rules/{id}"), None);
    assert_eq!(status, 204);
    assert!(list(&api, "/api/v1/alerts/rules", "rules").is_empty());
}

/// The real server agent's own threshold event is a rule's input: with
/// `threshold.mem=1` its memory is over the limit at once, it raises
/// `threshold.exceeded`, and the rule `threshold "mem"` tells the webhook
/// with the agent's sentence.
#[test]
fn the_server_agents_threshold_event_fires_a_rule() {
    let setup = Setup::start("alerts-infra");
    let api = setup.api();
    let receiver = WebhookReceiver::start();
    let channel = setup.webhook(&receiver.url("/hook"));
    let (status, body) = api.call(
        "POST",
        "/api/v1/alerts/rules",
        Some(&json!({
            "name": "server memory",
            "expr": "threshold \"mem\"",
            "product": "infra",
            "channels": [channel],
        })),
    );
    assert_eq!(status, 201, "{body}");
    let agent_dir = setup.scratch.join("agent");
    let conf = sightline_e2e::agent_conf(
        &setup.credentials.license,
        setup.collector.grpc,
        &agent_dir.join("data"),
        &[
            ("oname", "real-1"),
            ("threshold.cpu", "0"),
            ("threshold.mem", "1"),
            ("threshold.disk", "0"),
            ("threshold.for", "1s"),
        ],
    );
    let _agent = sightline_e2e::Agent::infra(&agent_dir, &conf);
    let got = wait_for(
        "the threshold's notification",
        Duration::from_secs(30),
        || receiver.delivered().pop(),
    );
    assert_eq!(got["state"], "firing", "{got}");
    assert_eq!(got["agent"]["oname"], "real-1");
    assert_eq!(got["agent"]["product"], "infra");
    assert_eq!(got["target"], "mem");
    assert!(
        got["message"]
            .as_str()
            .is_some_and(|m| m.contains("Memory") && m.contains("1%")),
        "{got}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.delivered().len(), 1, "told once");
}

/// A Slack-format channel gets Slack's `{"text": ...}`; a test to a
/// channel nobody answers says why, and both tests are listed as attempts.
#[test]
fn a_slack_channel_gets_a_text_body_and_tests_are_attempts() {
    let setup = Setup::start("alerts-slack");
    let api = setup.api();
    let receiver = WebhookReceiver::start();
    let (status, slack) = api.call(
        "POST",
        "/api/v1/alerts/channels",
        Some(&json!({
            "name": "slack",
            "kind": "webhook",
            "url": receiver.url("/services/T000/B000/XXXXXXXXXXXX"),
            "format": "slack",
        })),
    );
    assert_eq!(status, 201, "{slack}");
    let (status, test) = api.call(
        "POST",
        &format!("/api/v1/alerts/channels/{}/test", slack["id"]),
        None,
    );
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["ok"], true, "{test}");
    let got = receiver.delivered();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0],
        json!({ "text": "[TEST] test: A test of channel 'slack' from Sightline." })
    );

    let (nobody, _) = sightline_e2e::free_addrs();
    let (status, dead) = api.call(
        "POST",
        "/api/v1/alerts/channels",
        Some(&json!({ "name": "dead", "kind": "webhook", "url": format!("http://{nobody}/x") })),
    );
    assert_eq!(status, 201, "{dead}");
    let (status, test) = api.call(
        "POST",
        &format!("/api/v1/alerts/channels/{}/test", dead["id"]),
        None,
    );
    assert_eq!(status, 200, "{test}");
    assert_eq!(test["ok"], false, "{test}");
    assert!(
        test["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect")),
        "{test}"
    );
    let deliveries = list(&api, "/api/v1/alerts/deliveries", "deliveries");
    let seen: Vec<(&str, bool, &str, &str)> = deliveries
        .iter()
        .map(|d| {
            (
                d["channel"].as_str().unwrap_or(""),
                d["ok"].as_bool().unwrap_or(true),
                d["kind"].as_str().unwrap_or(""),
                d["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("dead", false, "test", "failed"),
            ("slack", true, "test", "sent")
        ],
        "a test is tried once"
    );
    let (status, _) = api.call("POST", "/api/v1/alerts/channels/99999/test", None);
    assert_eq!(status, 404);
    let (status, _) = api.call(
        "DELETE",
        &format!("/api/v1/alerts/channels/{}", dead["id"]),
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(list(&api, "/api/v1/alerts/channels", "channels").len(), 1);
}

/// The real log agent's records feed both log rules: a text count and a
/// shape count (written as a line of that shape), each firing once the
/// window holds more than the limit.
#[test]
fn log_records_fire_a_text_rule_and_a_pattern_rule() {
    let setup = Setup::start("alerts-logs");
    let api = setup.api();
    let receiver = WebhookReceiver::start();
    let channel = setup.webhook(&receiver.url("/hook"));
    for (name, expr) in [
        ("timeouts", "log \"upstream timed out\" > 2 in 5m"),
        (
            "slow orders",
            "log pattern \"order 17 took 250ms\" > 3 in 5m",
        ),
    ] {
        let (status, body) = api.call(
            "POST",
            "/api/v1/alerts/rules",
            Some(&json!({ "name": name, "expr": expr, "channels": [channel] })),
        );
        assert_eq!(status, 201, "{body}");
    }
    let logs = setup.scratch.join("logs");
    std::fs::create_dir_all(&logs).expect("dir");
    let file = logs.join("app.log");
    let glob = format!("{}/*.log", logs.display());
    let agent_dir = setup.scratch.join("log-agent");
    let conf = sightline_e2e::agent_conf(
        &setup.credentials.license,
        setup.collector.grpc,
        &agent_dir.join("data"),
        &[
            ("file.app.path", glob.as_str()),
            ("file.app.start", "beginning"),
            ("log.linger", "50ms"),
            ("log.rescan", "1s"),
        ],
    );
    // Two of each: under both limits.
    std::fs::write(
        &file,
        "upstream timed out (1)\norder 1 took 12ms\nupstream timed out (2)\norder 2 took 40ms\nall good\n",
    )
    .expect("write");
    let _agent = sightline_e2e::Agent::log(&agent_dir, &conf);
    wait_for("the first lines stored", Duration::from_secs(20), || {
        let body = api.ok("/api/v1/logs/search?q=good&from=0");
        (!body["records"].as_array()?.is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());

    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open");
    more.write_all(b"upstream timed out (3)\norder 3 took 7ms\norder 4 took 9ms\n")
        .expect("append");
    drop(more);
    wait_for("both log alerts", Duration::from_secs(20), || {
        (receiver.delivered().len() >= 2).then_some(())
    });
    let mut rules: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|b| format!("{} {}", b["rule"]["name"], b["value"]))
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        ["\"slow orders\" 4.0", "\"timeouts\" 3.0"],
        "{rules:?}"
    );
}

/// An `https://` webhook is told over TLS, trusting the channel's
/// `ca_pem`; without it the same endpoint is refused (unknown issuer), and
/// nothing is sent in the clear.
#[test]
fn an_https_webhook_is_told_when_its_ca_is_trusted() {
    let setup = Setup::start("alerts-https");
    let api = setup.api();
    let tls = sightline_e2e::tls_files(setup.scratch.path(), "hook");
    let receiver = WebhookReceiver::start_tls(&tls.cert, &tls.key);
    let url = format!("https://127.0.0.1:{}/hook", receiver.addr.port());
    let ca = std::fs::read_to_string(&tls.ca).expect("ca");
    let mut ids = Vec::new();
    for (name, ca_pem) in [("trusted", Some(ca)), ("untrusted", None)] {
        let (status, body) = api.call(
            "POST",
            "/api/v1/alerts/channels",
            Some(&json!({ "name": name, "kind": "webhook", "url": url, "ca_pem": ca_pem })),
        );
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["ca_pem_set"], ca_pem.is_some());
        ids.push(body["id"].as_i64().expect("id"));
    }
    let (_, trusted) = api.call(
        "POST",
        &format!("/api/v1/alerts/channels/{}/test", ids[0]),
        None,
    );
    assert_eq!(trusted["ok"], true, "{trusted}");
    assert_eq!(receiver.delivered().len(), 1);
    assert_eq!(receiver.delivered()[0]["state"], "test");
    let (_, untrusted) = api.call(
        "POST",
        &format!("/api/v1/alerts/channels/{}/test", ids[1]),
        None,
    );
    assert_eq!(untrusted["ok"], false, "{untrusted}");
    assert!(
        untrusted["error"]
            .as_str()
            .is_some_and(|e| e.contains("TLS")),
        "{untrusted}"
    );
    assert_eq!(receiver.received().len(), 1, "nothing more arrived");
}

/// The real URL agent's target going down fires `url down "web"` once,
/// and coming back resolves it.
#[test]
fn a_url_target_down_then_up_fires_and_resolves() {
    let setup = Setup::start("alerts-url");
    let api = setup.api();
    let receiver = WebhookReceiver::start();
    let channel = setup.webhook(&receiver.url("/hook"));
    let (status, body) = api.call(
        "POST",
        "/api/v1/alerts/rules",
        Some(&json!({ "name": "web down", "expr": "url down \"web\"", "channels": [channel] })),
    );
    assert_eq!(status, 201, "{body}");
    let target = WebhookReceiver::start();
    let target_addr = target.addr;
    let url = format!("http://{target_addr}/health");
    let agent_dir = setup.scratch.join("url-agent");
    let conf = sightline_e2e::agent_conf(
        &setup.credentials.license,
        setup.collector.grpc,
        &agent_dir.join("data"),
        &[
            ("oname", "probe-eu"),
            ("target.web.url", url.as_str()),
            ("target.web.interval", "1s"),
            ("target.web.down_interval", "1s"),
            ("target.web.fail_after", "1"),
            ("target.web.timeout", "1s"),
        ],
    );
    let _agent = sightline_e2e::Agent::start("sightline-url", &agent_dir, &conf);
    wait_for("the target listed up", Duration::from_secs(20), || {
        let body = api.ok("/api/v1/url/checks");
        let up = body.to_string().contains("\"up\"");
        up.then_some(())
    });
    assert!(receiver.received().is_empty());

    drop(target);
    let firing = wait_for("the down notification", Duration::from_secs(20), || {
        receiver.delivered().pop()
    });
    assert_eq!(firing["state"], "firing", "{firing}");
    assert_eq!(firing["target"], "web");
    assert_eq!(firing["agent"]["oname"], "probe-eu");
    assert_eq!(firing["agent"]["product"], "url");

    let _target = WebhookReceiver::start_on(target_addr);
    wait_for("the resolve notification", Duration::from_secs(20), || {
        (receiver.delivered().len() >= 2).then_some(())
    });
    let got = receiver.delivered();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["state"], "resolved");
}

/// A channel whose server never answers does not hold back another: the
/// rule tells both, the live one hears at once, the hung one's attempt
/// ends at the send timeout (10 s) as a failure, retried.
#[test]
fn a_hung_channel_does_not_hold_back_another() {
    let setup = Setup::start("alerts-hung");
    let api = setup.api();
    // Accepts connections (the kernel's backlog) and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hung_url = format!("http://{}/hook", hung.local_addr().expect("addr"));
    let receiver = WebhookReceiver::start();
    let (status, body) = api.call(
        "POST",
        "/api/v1/alerts/channels",
        Some(&json!({ "name": "hung", "kind": "webhook", "url": hung_url })),
    );
    assert_eq!(status, 201, "{body}");
    let hung_id = body["id"].as_i64().expect("id");
    let live_id = setup.webhook(&receiver.url("/hook"));
    setup.memory_rule(&[hung_id, live_id]);
    let mut agent = MemAgent::connect(&setup.collector, &setup.credentials.license);
    agent.report_until(95.0, "the live channel's notification", || {
        !receiver.delivered().is_empty()
    });
    let fired_ms = list(&api, "/api/v1/alerts/firing", "firing")[0]["since_ms"]
        .as_i64()
        .expect("since");
    let delivered_ms = sightline_e2e::now_ms();
    assert!(
        delivered_ms - fired_ms < 5000,
        "the live channel waited {} ms",
        delivered_ms - fired_ms
    );
    let hung_attempt = wait_for("the hung attempt to end", Duration::from_secs(20), || {
        list(&api, "/api/v1/alerts/deliveries", "deliveries")
            .into_iter()
            .find(|d| d["channel"] == "hung")
    });
    assert_eq!(hung_attempt["ok"], false);
    assert_eq!(hung_attempt["state"], "queued", "retried later");
    assert!(
        hung_attempt["elapsed_ms"].as_i64().unwrap_or(0) >= 9_000,
        "{hung_attempt}"
    );
    drop(hung);
}

/// `/api/v1/alerts/stream` opened with the console's cookie ends when the
/// session does (sign-out), as the event stream does; it stays open while
/// the session lives.
#[test]
fn the_stream_opened_with_a_cookie_ends_with_its_session() {
    let setup = Setup::start("alerts-session");
    let base = format!("http://{}", setup.collector.http);
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let login = http
        .post(format!("{base}/login"))
        .header("Origin", &base)
        .send_form([("token", setup.credentials.token.as_str())])
        .expect("POST /login");
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sightline_session=") && !v.starts_with("sightline_session=;"))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    let mut stream = http
        .get(format!("{base}/api/v1/alerts/stream"))
        .header("Cookie", &cookie)
        .call()
        .expect("alerts stream");
    assert_eq!(stream.status().as_u16(), 200);
    let (ended_tx, ended_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut body = stream.body_mut().as_reader();
        let result = std::io::copy(&mut body, &mut std::io::sink());
        let _ = ended_tx.send(result.map_err(|e| e.to_string()));
    });
    assert!(
        ended_rx.recv_timeout(Duration::from_secs(3)).is_err(),
        "open while the session lives"
    );
    let logout = http
        .post(format!("{base}/logout"))
        .header("Origin", &base)
        .header("Cookie", &cookie)
        .send_empty()
        .expect("POST /logout");
    assert!(logout.status().as_u16() < 400, "{}", logout.status());
    let ended = ended_rx
        .recv_timeout(Duration::from_secs(8))
        .expect("the alerts stream ends with its session");
    assert!(ended.is_ok(), "the stream ends cleanly: {ended:?}");
}

/// A `threshold "mem"` alert fires on the agent's `threshold.exceeded`;
/// its `threshold.recovered`, stamped before a collector restart and sent
/// after it (as a spooling agent does), resolves it and is told.
#[test]
fn a_threshold_recovery_sent_after_a_restart_resolves_the_alert() {
    let mut setup = Setup::start("alerts-recovery");
    let receiver = WebhookReceiver::start();
    let channel = setup.webhook(&receiver.url("/hook"));
    let (status, body) = setup.api().call(
        "POST",
        "/api/v1/alerts/rules",
        Some(&json!({
            "name": "server memory",
            "expr": "threshold \"mem\"",
            "channels": [channel],
        })),
    );
    assert_eq!(status, 201, "{body}");
    let mut agent = MemAgent::connect(&setup.collector, &setup.credentials.license);
    let exceeded_ms = sightline_e2e::now_ms();
    agent.event("threshold.exceeded", "mem", exceeded_ms);
    let fired = wait_for("the firing", Duration::from_secs(20), || {
        receiver.delivered().first().cloned()
    });
    assert_eq!(fired["state"], "firing", "{fired}");
    let recovered_ms = sightline_e2e::now_ms();
    setup.restart();
    agent.reconnect(&setup.collector);
    agent.event("threshold.recovered", "mem", recovered_ms);
    let resolved = wait_for("the resolve", Duration::from_secs(20), || {
        receiver.delivered().get(1).cloned()
    });
    assert_eq!(resolved["state"], "resolved", "{resolved}");
    assert_eq!(resolved["target"], "mem");
    assert!(list(&setup.api(), "/api/v1/alerts/firing", "firing").is_empty());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.delivered().len(), 2, "told once each");
}
