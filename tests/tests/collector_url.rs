//! The collector's URL routes against scripted gRPC clients pushing
//! hand-made `UrlChecks` and a `url.state` event to the real collector
//! binary over loopback, as two URL agents (regions) would: the list of
//! targets down first with their last status, elapsed time, body length,
//! failure and certificate (a document, snapshot-tested), filters by state
//! and agent, a target's results grouped by agent with phases and paged
//! with a limit, a resent batch stored once, a bad check refused by count,
//! 400 naming the parameter, 404 for an unknown target, scoping to the
//! token's project, and retention by age and by size across restarts.

use std::time::Duration;

use serde_json::Value;
use sightline_e2e::wire_agent::{self, Client, connect};
use sightline_e2e::{Api, Collector, Scratch, create_project, now_ms, wait_for};
use sightline_proto::v1 as pb;

const MINUTE_MS: i64 = 60_000;

/// One agent's identity on the wire.
struct Sender {
    license: String,
    oid: u64,
    instance: String,
}

/// Says hello as the URL agent `oname`.
async fn hello(client: &mut Client, license: &str, oname: &str, instance: &str) -> Sender {
    let oid = wire_agent::hello(client, license, "url", oname, instance, 60_000).await;
    Sender {
        license: license.into(),
        oid,
        instance: instance.into(),
    }
}

/// Pushes `batches` on one stream and returns their acks.
async fn push(client: &mut Client, who: &Sender, batches: Vec<pb::Batch>) -> Vec<pb::Ack> {
    wire_agent::push(client, &who.license, who.oid, &who.instance, batches).await
}

fn batch(seq: u64, payloads: Vec<pb::Payload>) -> pb::Batch {
    pb::Batch {
        seq,
        time_ms: now_ms(),
        health: None,
        payloads,
        liveness: false,
    }
}

fn url(checks: Vec<pb::UrlCheck>) -> pb::Payload {
    pb::Payload {
        kind: Some(pb::payload::Kind::Url(pb::UrlChecks { checks })),
    }
}

/// A check that passed: 200, phases adding up to the total.
fn up(target: &str, time_ms: i64, first_byte_us: u64) -> pb::UrlCheck {
    let (dns, connect, tls, transfer) = (800, 300, 2_500, 400);
    pb::UrlCheck {
        target: target.into(),
        url: format!("https://{target}.example/health"),
        method: "GET".into(),
        time_ms,
        state: pb::UrlState::Up as i32,
        ok: true,
        failure: pb::UrlFailure::None as i32,
        detail: String::new(),
        dns_us: dns,
        connect_us: connect,
        tls_us: tls,
        first_byte_us,
        transfer_us: transfer,
        total_us: dns + connect + tls + first_byte_us + transfer,
        status_code: 200,
        http_version: "HTTP/1.1".into(),
        body_bytes: 2_048,
        redirects: 0,
        final_url: String::new(),
        remote_ip: "127.0.0.1".into(),
        certificate: Some(pb::UrlCertificate {
            subject: format!("CN={target}.example"),
            issuer: "CN=Sightline Test CA".into(),
            not_after_ms: 1_800_000_000_000,
            days_left: 45,
            chain_days_left: 45,
        }),
    }
}

/// A check that failed with a 503.
fn failed(target: &str, time_ms: i64, state: pb::UrlState) -> pb::UrlCheck {
    pb::UrlCheck {
        state: state as i32,
        ok: false,
        failure: pb::UrlFailure::Status as i32,
        detail: "status 503, expected 200-399".into(),
        status_code: 503,
        body_bytes: 19,
        ..up(target, time_ms, 9_000)
    }
}

/// A check that answered but slower than `.expect.max_time`.
fn slow(target: &str, time_ms: i64) -> pb::UrlCheck {
    pb::UrlCheck {
        state: pb::UrlState::Degraded as i32,
        ok: true,
        failure: pb::UrlFailure::TooSlow as i32,
        detail: "1.50 s, more than expect.max_time 1 s".into(),
        ..up(target, time_ms, 1_496_000)
    }
}

fn state_event(time_ms: i64, target: &str) -> pb::Payload {
    pb::Payload {
        kind: Some(pb::payload::Kind::Events(pb::AgentEvents {
            events: vec![pb::AgentEvent {
                time_ms,
                name: "url.state".into(),
                severity: pb::Severity::Critical as i32,
                message: format!("{target} is DOWN: status 503, expected 200-399"),
                ..pb::AgentEvent::default()
            }],
        })),
    }
}

/// `doc` with every time replaced by its distance from `base` (`t+90s`),
/// so the document does not depend on when the test runs.
fn relative(doc: &mut Value, base: i64) {
    match doc {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key.ends_with("_ms") && key != "elapsed_ms" && key != "not_after_ms" {
                    if let Some(t) = value.as_i64() {
                        *value = Value::String(format!("t{:+}s", (t - base) / 1000));
                    }
                } else {
                    relative(value, base);
                }
            }
            for text_time in ["since", "last_check", "time"] {
                map.remove(text_time);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| relative(v, base)),
        _ => {}
    }
}

fn names(doc: &Value) -> Vec<(String, String, String)> {
    doc["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().expect("name").to_string(),
                t["region"].as_str().expect("region").to_string(),
                t["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

fn result_times(group: &Value) -> Vec<i64> {
    group["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["time_ms"].as_i64().expect("time"))
        .collect()
}

fn error_of(api: &Api, path: &str) -> (u16, String) {
    let (status, body) = api.get(path);
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_targets_are_listed_down_first_and_their_results_paged() {
    let scratch = Scratch::new("url-store");
    let data = scratch.join("collector");
    let creds = create_project(&data, "urls");
    let other = create_project(&data, "other");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let lic = creds.license.as_str();
    let mut c = connect(&collector).await;
    let eu = hello(&mut c, lic, "eu-west", "44444444444444444444444444444444").await;
    let us = hello(&mut c, lic, "us-east", "55555555555555555555555555555555").await;

    // Five minutes of eu-west's checks, ten minutes ago: shop goes from up
    // to pending to down (with its event), api turns slow, blog stays up.
    let base = (now_ms() - 10 * MINUTE_MS) / 1000 * 1000;
    let t = |minute: i64| base + minute * MINUTE_MS;
    let going_down = batch(
        3,
        vec![
            url(vec![
                failed("shop", t(3), pb::UrlState::Down),
                slow("api", t(3)),
            ]),
            state_event(t(3), "shop"),
        ],
    );
    let acks = push(
        &mut c,
        &eu,
        vec![
            batch(
                1,
                vec![url(vec![
                    up("shop", t(0), 40_000),
                    up("api", t(0), 20_000),
                    up("blog", t(0), 5_000),
                ])],
            ),
            batch(
                2,
                vec![url(vec![
                    up("shop", t(1), 41_000),
                    failed("shop", t(2), pb::UrlState::Pending),
                ])],
            ),
            going_down.clone(),
            batch(
                4,
                vec![url(vec![
                    failed("shop", t(4), pb::UrlState::Down),
                    up("blog", t(4), 5_500),
                    // Not storable: no name, and no state.
                    up("", t(4), 1),
                    pb::UrlCheck {
                        state: pb::UrlState::Unspecified as i32,
                        ..up("blog", t(4), 1)
                    },
                ])],
            ),
        ],
    )
    .await;
    assert!(
        acks[..3]
            .iter()
            .all(|a| a.partial.is_none() && !a.duplicate),
        "{acks:?}"
    );
    let partial = acks[3].partial.clone().expect("two checks refused");
    assert_eq!(partial.rejected, 2, "{partial:?}");
    assert!(
        partial.message.contains("target name"),
        "{}",
        partial.message
    );
    assert!(
        partial.message.contains("known state"),
        "{}",
        partial.message
    );
    // The ack of batch 3 was lost: the agent sends it again.
    let again = push(&mut c, &eu, vec![going_down]).await;
    assert!(again[0].duplicate, "{again:?}");
    // us-east sees shop up all along.
    push(
        &mut c,
        &us,
        vec![batch(
            1,
            vec![url(vec![
                up("shop", t(0) + 500, 90_000),
                up("shop", t(4) + 500, 91_000),
            ])],
        )],
    )
    .await;

    // The list: down first, then degraded, then up by name and region.
    let mut list = api.ok("/api/v1/url/checks");
    assert_eq!(
        names(&list),
        [
            ("shop".into(), "eu-west".into(), "down".into()),
            ("api".into(), "eu-west".into(), "degraded".into()),
            ("blog".into(), "eu-west".into(), "up".into()),
            ("shop".into(), "us-east".into(), "up".into()),
        ]
    );
    let shop = &list["targets"][0];
    assert_eq!(
        shop["since_ms"].as_i64(),
        Some(t(3)),
        "down since the first down check"
    );
    assert_eq!(shop["last_check_ms"].as_i64(), Some(t(4)));
    assert_eq!(
        shop["since"],
        sightline_collector::time_text::format_ms(t(3))
    );
    relative(&mut list, base);
    insta::assert_snapshot!(serde_json::to_string_pretty(&list).expect("json"));

    // Pages: `limit` entries from `after` on, in the same order, with the
    // counts of them all on every page.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => "/api/v1/url/checks?limit=3".to_string(),
            Some(a) => format!(
                "/api/v1/url/checks?limit=3&after={}",
                sightline_e2e::logs::encode(a)
            ),
        };
        let page = api.ok(&path);
        assert_eq!(page["counts"], list["counts"]);
        assert!(names(&page).len() <= 3);
        paged.extend(names(&page));
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, names(&list), "pages of 3 give the whole list once");
    assert_eq!(
        names(&api.ok("/api/v1/url/checks?limit=1&after=down:0:zzz")),
        [("api".into(), "eu-west".into(), "degraded".into())],
        "after a place no entry holds: the next one in the order"
    );

    // Filters: by state, by agent name or oid, both.
    let down = api.ok("/api/v1/url/checks?state=down");
    assert_eq!(names(&down).len(), 1);
    assert_eq!(names(&api.ok("/api/v1/url/checks?state=up")).len(), 2);
    let us_only = api.ok("/api/v1/url/checks?agent=us-east");
    assert_eq!(
        names(&us_only),
        [("shop".into(), "us-east".into(), "up".into())]
    );
    let by_oid = api.ok(&format!(
        "/api/v1/url/checks?agent={}&state=degraded",
        eu.oid
    ));
    assert_eq!(
        names(&by_oid),
        [("api".into(), "eu-west".into(), "degraded".into())]
    );

    // A target's results, grouped by agent: each check once, newest first.
    let from = base - 1;
    let shop = api.ok(&format!("/api/v1/url/checks/shop/results?from={from}"));
    assert_eq!(shop["from_ms"].as_i64(), Some(from));
    let mut document = shop.clone();
    if let Some(map) = document.as_object_mut() {
        map.remove("to_ms"); // now, by default
    }
    relative(&mut document, base);
    insta::assert_snapshot!(
        "shop_results_by_region",
        serde_json::to_string_pretty(&document).expect("json")
    );
    let groups = shop["agents"].as_array().expect("agents");
    assert_eq!(groups.len(), 2, "{shop}");
    assert_eq!(groups[0]["region"], "eu-west");
    assert_eq!(result_times(&groups[0]), [t(4), t(3), t(2), t(1), t(0)]);
    assert_eq!(groups[1]["region"], "us-east");
    assert_eq!(result_times(&groups[1]), [t(4) + 500, t(0) + 500]);
    let newest = &groups[0]["results"][0];
    assert_eq!(newest["status_code"], 503);
    assert_eq!(newest["reason"], "status");
    assert_eq!(newest["state"], "down");
    assert_eq!(newest["body_bytes"], 19);
    let phases = &newest["phases_ms"];
    let sum: f64 = ["dns", "connect", "tls", "first_byte", "transfer"]
        .iter()
        .map(|p| phases[p].as_f64().expect("phase"))
        .sum();
    assert!((sum - newest["elapsed_ms"].as_f64().expect("elapsed")).abs() < 1e-9);
    let api_results = api.ok(&format!("/api/v1/url/checks/api/results?from={from}"));
    assert_eq!(api_results["agents"][0]["results"][0]["reason"], "too_slow");
    assert_eq!(
        api_results["agents"][0]["results"][0]["phases_ms"]["first_byte"],
        1_496.0
    );

    // Paged: two at a time for one agent, by name; next_to leads on.
    let page = |to: Option<i64>| {
        let to = to.map(|t| format!("&to={t}")).unwrap_or_default();
        api.ok(&format!(
            "/api/v1/url/checks/shop/results?agent=eu-west&limit=2&from={from}{to}"
        ))
    };
    let first = page(None);
    assert_eq!(first["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(result_times(&first["agents"][0]), [t(4), t(3)]);
    let next = first["agents"][0]["next_to"].as_i64().expect("more");
    let second = page(Some(next));
    assert_eq!(result_times(&second["agents"][0]), [t(2), t(1)]);
    let third = page(second["agents"][0]["next_to"].as_i64());
    assert_eq!(result_times(&third["agents"][0]), [t(0)]);
    assert_eq!(third["agents"][0]["next_to"], Value::Null, "the last page");
    let window = api.ok(&format!(
        "/api/v1/url/checks/shop/results?agent={}&from={}&to={}",
        eu.oid,
        t(1),
        rfc3339(t(3))
    ));
    assert_eq!(result_times(&window["agents"][0]), [t(3), t(2), t(1)]);

    // The state change event is an ordinary event.
    let events = api.ok(&format!("/api/v1/events?kind=url.state&from={from}"));
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(1),
        "{events}"
    );

    // Bad input names its parameter; unknowns are 404; scoped to the project.
    for (path, param) in [
        ("/api/v1/url/checks?state=sideways", "state: "),
        ("/api/v1/url/checks?agent=", "agent: "),
        ("/api/v1/url/checks/shop/results?from=yesterday", "from: "),
        ("/api/v1/url/checks/shop/results?to=noon", "to: "),
        ("/api/v1/url/checks/shop/results?limit=0", "limit: "),
        ("/api/v1/url/checks/shop/results?limit=many", "limit: "),
    ] {
        let (status, error) = error_of(&api, path);
        assert_eq!(status, 400, "{path}: {error}");
        assert!(error.starts_with(param), "{path}: {error}");
    }
    for path in [
        "/api/v1/url/checks/nosuch/results",
        "/api/v1/url/checks?agent=nowhere",
        "/api/v1/url/checks/blog/results?agent=us-east",
    ] {
        let (status, error) = error_of(&api, path);
        assert_eq!(status, 404, "{path}: {error}");
    }
    let (status, body) = api.get_with("/api/v1/url/checks", Some(&other.token));
    assert_eq!(status, 200);
    assert_eq!(
        body["targets"],
        Value::Array(Vec::new()),
        "another project's"
    );
    let (status, _) = api.get_with("/api/v1/url/checks/shop/results", Some(&other.token));
    assert_eq!(status, 404);
    let (status, _) = api.get_with(
        &format!("/api/v1/url/checks?agent={}", eu.oid),
        Some(&other.token),
    );
    assert_eq!(status, 404, "another project's agent");
    let (status, _) = api.get_with("/api/v1/url/checks", None);
    assert_eq!(status, 401);
}

/// RFC 3339 of a unix ms time, as a client would write it.
fn rfc3339(ms: i64) -> String {
    sightline_collector::time_text::format_ms(ms)
}

/// Keeps `key=value` lines in a config file for the collector.
fn conf(scratch: &Scratch, name: &str, text: &str) -> String {
    let path = scratch.join(name);
    std::fs::write(&path, text).expect("conf");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_checks_go_by_age_and_by_size() {
    let scratch = Scratch::new("url-retention");
    let data = scratch.join("collector");
    let creds = create_project(&data, "urls");
    let lic = creds.license.as_str();
    let hour = conf(&scratch, "hour.conf", "url.retention=1h\n");
    // Stored first under the default retention: with an hour's, the pass at
    // start may run after the push and take the old checks before they are
    // counted.
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let mut c = connect(&collector).await;
    let eu = hello(&mut c, lic, "eu-west", "44444444444444444444444444444444").await;
    let now = now_ms();
    let old = [now - 3 * 60 * MINUTE_MS, now - 2 * 60 * MINUTE_MS];
    let recent = [now - 20 * MINUTE_MS, now - 10 * MINUTE_MS];
    // "shop" is checked throughout; "retired" only in the old hours.
    let batches = old
        .iter()
        .chain(&recent)
        .enumerate()
        .map(|(i, &t)| {
            let mut checks = vec![up("shop", t, 10_000)];
            if t < now - 60 * MINUTE_MS {
                checks.push(up("retired", t, 10_000));
            }
            batch(i as u64 + 1, vec![url(checks)])
        })
        .collect();
    push(&mut c, &eu, batches).await;
    let shop_times = |api: &Api| {
        let (status, body) = api.get("/api/v1/url/checks/shop/results?from=0");
        if status == 404 {
            return Vec::new();
        }
        result_times(&body["agents"][0])
    };
    assert_eq!(shop_times(&api).len(), 4, "stored before retention looked");
    assert_eq!(names(&api.ok("/api/v1/url/checks")).len(), 2);

    // Retention runs at start (then every minute): the two older than an
    // hour go, and the target no longer checked leaves the list.
    drop(c);
    drop(collector);
    let collector = Collector::start_with(&data, "127.0.0.1:0", "127.0.0.1:0", &["--conf", &hour]);
    let api = collector.api(&creds.token);
    let kept = wait_for("url retention by age", Duration::from_secs(15), || {
        let t = shop_times(&api);
        (t.len() == 2).then_some(t)
    });
    assert_eq!(kept, [recent[1], recent[0]]);
    assert_eq!(
        names(&api.ok("/api/v1/url/checks")),
        [("shop".into(), "eu-west".into(), "up".into())]
    );
    let (status, _) = api.get("/api/v1/url/checks/retired/results?from=0");
    assert_eq!(status, 404, "a retired target is unknown");

    // A cap of one byte leaves nothing: the oldest first, until under it.
    drop(collector);
    let tiny = conf(&scratch, "tiny.conf", "url.retention=1h\nurl.max_bytes=1\n");
    let collector = Collector::start_with(&data, "127.0.0.1:0", "127.0.0.1:0", &["--conf", &tiny]);
    let api = collector.api(&creds.token);
    wait_for("url retention by size", Duration::from_secs(15), || {
        names(&api.ok("/api/v1/url/checks"))
            .is_empty()
            .then_some(())
    });
    let (status, _) = api.get("/api/v1/url/checks/shop/results?from=0");
    assert_eq!(status, 404);
}
