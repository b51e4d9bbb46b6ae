//! The console's product screens (Database, Logs, URL checks, Events and
//! alerts) in a real browser (Debian's headless chromium over the DevTools
//! protocol, `sightline_e2e::browser`) against a real collector on
//! loopback, fed by real agents where they are cheap (`sightline-url`
//! probing a loopback HTTP server, `sightline-log` tailing a file) and by
//! the scripted wire agent for a database snapshot holding a lock tree.
//!
//! What it proves, as a user sees it:
//! - URL checks: the table lists each target with its state, code and
//!   elapsed time (the refused one down, with its reason); a target's page
//!   draws its phase chart with points (uPlot's data and the canvas's
//!   pixels) and lists its checks;
//! - Logs: a line written to the tailed file appears in LiveTail within
//!   seconds; a line holding `<script>` shows as text and runs nothing;
//!   a paused view holds new lines until resumed; search finds the line;
//!   patterns count it;
//! - Database: the list links the db agent; its page draws the lock tree
//!   nested (waiters under their blocker), the root blocker marked, the
//!   waits' times shown, a cycle marked; another moment picked on the
//!   timeline shows that moment's sessions and no lock tree;
//! - Alerts: a channel is created and tested from the page (the loopback
//!   receiver gets it), a rule is created (a bad one refused with the
//!   parser's column), edited and deleted, a firing alert appears live
//!   without a reload, and an agent is paused and resumed from the page
//!   (the API agrees);
//! - the Fleet links the URL agent to the checks of its region and the
//!   log agent to its records, each screen filtered by the link;
//! - no page raised an error or a CSP violation, or asked anything of
//!   another host; each screen's screenshot is not blank (copies in
//!   `target/console-screenshots/`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sightline_e2e::browser::{Browser, PHONE, Page, js_string, screenshot};
use sightline_e2e::webhook::WebhookReceiver;
use sightline_e2e::wire_agent::{self, connect};
use sightline_e2e::{Agent, Collector, Scratch, agent_conf, create_project, now_ms, wait_for};
use sightline_proto::v1 as pb;

const WAIT: Duration = Duration::from_secs(15);

/// Signs in through the form with `token` and waits for the console.
fn sign_in(page: &Page<'_>, base: &str, token: &str) {
    page.navigate(&format!("{base}/"));
    page.wait_for("#token", WAIT);
    page.type_into("#token", token);
    page.click("form button[type=submit]");
    page.wait_until(
        "the console after sign-in",
        WAIT,
        "!!document.querySelector('#nav') && document.querySelector('#project')?.textContent !== ''",
    );
}

/// Opens `#/<route>` in the signed-in console.
fn open(page: &Page<'_>, route: &str) {
    page.eval(&format!("location.hash = {}", js_string(route)));
}

/// Asserts the page raised no error and no CSP violation but the
/// `expected` ones (a refusal the test provoked), and asked only `base`
/// for anything.
fn assert_clean(page: &Page<'_>, base: &str, expected: &[&str]) {
    let errors: Vec<String> = page
        .errors()
        .into_iter()
        // A stream cut by a navigation is the page working, not failing.
        .filter(|e| !e.contains("net::ERR_ABORTED"))
        .filter(|e| !expected.iter().any(|x| e.contains(x)))
        .collect();
    assert!(errors.is_empty(), "page errors: {errors:#?}");
    let foreign: Vec<String> = page
        .requested_urls()
        .into_iter()
        .filter(|u| !u.starts_with(base) && !u.starts_with("data:"))
        .collect();
    assert!(foreign.is_empty(), "requests elsewhere: {foreign:?}");
}

/// How many of a canvas's pixels under `selector` are not background
/// (the chart drew something).
fn inked_pixels(page: &Page<'_>, selector: &str) -> u64 {
    page.eval(&format!(
        "(() => {{ const c = document.querySelector({}); if (!c) return 0; \
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
         for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && !(d[i] > 245 && d[i + 1] > 245 && d[i + 2] > 245)) n++; \
         return n; }})()",
        js_string(selector)
    ))
    .as_u64()
    .unwrap_or(0)
}

/// An HTTP server on loopback answering `GET /shop` with 200 and a body
/// of 2,048 bytes, anything else 404.
fn serve_shop() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let body = "x".repeat(2048);
                let (status, body) = if text.starts_with("GET /shop ") {
                    ("200 OK", body.as_str())
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
    addr
}

fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("opens the log file");
    writeln!(f, "{line}").expect("writes the line");
}

#[test]
fn url_checks_and_logs_show_what_real_agents_report() {
    let scratch = Scratch::new("console-products");
    let data = scratch.join("collector");
    let creds = create_project(&data, "shop");
    let collector = Collector::start(&data);
    let base = format!("http://{}", collector.http);
    let api = collector.api(&creds.token);

    // A URL agent probing a loopback server: one target up, one refused.
    let web = serve_shop();
    let refused = closed_port();
    let url_dir = scratch.join("url");
    let shop_url = format!("http://{web}/shop");
    let gone_url = format!("http://{refused}/");
    let _url_agent = Agent::start(
        "sightline-url",
        &url_dir,
        &agent_conf(
            &creds.license,
            collector.grpc,
            &url_dir.join("data"),
            &[
                ("oname", "eu-west"),
                ("target.shop.url", &shop_url),
                ("target.shop.interval", "1s"),
                ("target.gone.url", &gone_url),
                ("target.gone.interval", "1s"),
                ("target.gone.down_interval", "1s"),
                ("target.gone.fail_after", "1"),
                ("target.gone.timeout", "1s"),
            ],
        ),
    );

    // A log agent tailing a file.
    let log_dir = scratch.join("log");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let app_log = log_dir.join("app.log");
    append(
        &app_log,
        "2026-11-24 07:00:00 INFO service started port=8080",
    );
    let _log_agent = Agent::log(
        &log_dir.join("agent"),
        &agent_conf(
            &creds.license,
            collector.grpc,
            &log_dir.join("data"),
            &[
                ("oname", "app-1"),
                ("file.app.path", &app_log.display().to_string()),
                ("file.app.start", "beginning"),
            ],
        ),
    );

    wait_for("checks of both targets", WAIT * 2, || {
        let (_, body) = api.get("/api/v1/url/checks");
        let targets = body["targets"].as_array().cloned().unwrap_or_default();
        let state = |name: &str| {
            targets
                .iter()
                .find(|t| t["name"] == name)
                .map(|t| t["state"].as_str().unwrap_or("").to_string())
        };
        (state("shop").as_deref() == Some("up") && state("gone").as_deref() == Some("down"))
            .then_some(())
    });
    // A few checks of shop, for the chart.
    wait_for("three checks of shop", WAIT * 2, || {
        let (_, body) = api.get("/api/v1/url/checks/shop/results");
        (body["agents"][0]["results"].as_array().map_or(0, Vec::len) >= 3).then_some(())
    });

    let browser = Browser::launch(scratch.path());
    let page = browser.page();
    sign_in(&page, &base, &creds.token);

    // --- URL checks: the table.
    open(&page, "#/url");
    page.wait_until(
        "the shop row, up, with its elapsed time",
        WAIT,
        "(() => { const r = document.querySelector('tr[data-target=\"shop\"]'); \
         return r && r.querySelector('.badge')?.textContent === 'up' \
           && /\\d ms$|\\d s$/.test(r.children[5].textContent) && r.children[4].textContent === '200'; })()",
    );
    let shop_row = page.eval(
        "[...document.querySelector('tr[data-target=\"shop\"]').children].map(c => c.textContent)",
    );
    assert_eq!(shop_row[2], "eu-west", "region: {shop_row}");
    assert_eq!(shop_row[6], "2 KiB", "body length: {shop_row}");
    let gone_row = page.eval(
        "[...document.querySelector('tr[data-target=\"gone\"]').children].map(c => c.textContent)",
    );
    assert_eq!(gone_row[0], "down", "{gone_row}");
    assert!(
        gone_row[10]
            .as_str()
            .is_some_and(|r| r.contains("connection refused")),
        "the reason is shown: {gone_row}"
    );
    // Down first, by default.
    assert_eq!(
        page.eval("document.querySelector('tbody tr').dataset.target"),
        "gone"
    );
    // The filter narrows the table.
    page.type_into("input[type=search]", "sho");
    page.wait_until(
        "one row after filtering",
        WAIT,
        "document.querySelectorAll('tbody tr[data-target]').length === 1",
    );
    screenshot(&page, &scratch, "url-checks");

    // --- A target's history: the phase chart with points.
    page.click("tr[data-target=\"shop\"] a");
    page.wait_until(
        "the phase chart with at least three checks",
        WAIT,
        "(document.querySelector('.phase-chart figure.chart')?.uplot?.data?.[0]?.length || 0) >= 3",
    );
    let series = page.eval(
        "document.querySelector('.phase-chart figure.chart').uplot.series.slice(1).map(s => s.label)",
    );
    assert_eq!(
        series,
        json!(["DNS", "Connect", "TLS", "First byte", "Transfer"])
    );
    let total_ok = page.eval(
        "(() => { const d = document.querySelector('.phase-chart figure.chart').uplot.data; \
         return d[5].every(v => v != null && v >= 0); })()",
    );
    assert_eq!(total_ok, true, "the stacked top is every check's total");
    assert!(
        inked_pixels(&page, ".phase-chart canvas") > 200,
        "the chart drew its areas"
    );
    page.wait_for(".target-region .table-wrap tbody tr td", WAIT);
    assert!(
        page.text(".target-region .table-wrap tbody")
            .contains("200"),
        "the checks are listed with their code"
    );
    screenshot(&page, &scratch, "url-target");

    // The refused target's checks say why.
    open(&page, "#/url/gone");
    page.wait_until(
        "the refused target's checks with their reason",
        WAIT,
        "[...document.querySelectorAll('.target-region .table-wrap tbody td.reason')].some(td => td.textContent.startsWith('connection refused'))",
    );
    assert_eq!(page.text(".target-region .target-title .badge"), "down");
    screenshot(&page, &scratch, "url-target-down");

    // --- Logs: LiveTail.
    open(&page, "#/logs?tab=tail");
    page.wait_until(
        "LiveTail connected",
        WAIT,
        "!!document.querySelector('.tail-bar .live-dot.on')",
    );
    let written = Instant::now();
    append(
        &app_log,
        "2026-11-24 07:01:00 WARN checkout slow order=4711 <script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">",
    );
    page.wait_until(
        "the new line in LiveTail",
        Duration::from_secs(10),
        "[...document.querySelectorAll('.tail .log-text')].some(e => e.textContent.includes('order=4711'))",
    );
    let took = written.elapsed();
    println!("LiveTail: a written line shown after {took:?}");
    assert!(took < Duration::from_secs(5), "LiveTail took {took:?}");
    let shown = page.eval(
        "[...document.querySelectorAll('.tail .log-text')].find(e => e.textContent.includes('order=4711')).textContent",
    );
    assert!(
        shown
            .as_str()
            .is_some_and(|t| t.contains("<script>window.__pwned=1</script>")),
        "the line is shown as text: {shown}"
    );
    assert_eq!(
        page.eval("typeof window.__pwned"),
        "undefined",
        "nothing ran"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#main script, #main img').length"),
        0,
        "no element was made from the line"
    );

    // Paused: a new line waits, and shows on resume.
    page.click("button.pause");
    append(&app_log, "2026-11-24 07:02:00 INFO held while paused");
    page.wait_until(
        "the paused view counting a held line",
        Duration::from_secs(10),
        "document.querySelector('.held')?.textContent.includes('1 new line waiting')",
    );
    assert_eq!(
        page.eval(
            "[...document.querySelectorAll('.tail .log-text')].some(e => e.textContent.includes('held while paused'))"
        ),
        false,
        "a paused view does not move"
    );
    screenshot(&page, &scratch, "logs-tail-paused");
    page.click("button.pause");
    page.wait_until(
        "the held line after resume",
        WAIT,
        "[...document.querySelectorAll('.tail .log-text')].some(e => e.textContent.includes('held while paused'))",
    );
    screenshot(&page, &scratch, "logs-tail");

    // A filtered tail shows only the lines holding its words.
    open(&page, "#/logs?tab=tail&q=payment");
    page.wait_until(
        "the filtered LiveTail connected",
        WAIT,
        "!!document.querySelector('.tail-bar .live-dot.on') && document.querySelector('input.query').value === 'payment'",
    );
    append(&app_log, "2026-11-24 07:02:30 INFO unrelated cache refresh");
    append(
        &app_log,
        "2026-11-24 07:02:31 WARN payment declined order=4712",
    );
    page.wait_until(
        "the payment line",
        WAIT,
        "[...document.querySelectorAll('.tail .log-text')].some(e => e.textContent.includes('payment declined'))",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('.tail .log-line').length"),
        1,
        "only the line with the word: {}",
        page.text(".tail")
    );

    // Search finds the stored line, as text.
    page.click("#tab-search");
    page.eval("document.querySelector('input.query').value = ''");
    page.type_into("input.query", "checkout");
    page.click(".log-filters button.go");
    page.wait_until(
        "the search result",
        WAIT,
        "(() => { const t = [...document.querySelectorAll('.log-lines .log-text')]; \
         return t.length > 0 && t.every(e => e.textContent.includes('checkout')); })()",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('.log-lines .log-line').length"),
        1,
        "only the line holding the word"
    );
    screenshot(&page, &scratch, "logs-search");

    // Patterns count the lines.
    page.click("#tab-patterns");
    page.wait_until(
        "the patterns table",
        WAIT,
        "document.querySelectorAll('code.pattern').length >= 3",
    );
    screenshot(&page, &scratch, "logs-patterns");

    assert_eq!(page.eval("typeof window.__pwned"), "undefined");

    // The fleet links each product agent to its own screen: the URL
    // agent to the checks of its region, the log agent to its records.
    let oid_of = |oname: &str| {
        api.agents()
            .into_iter()
            .find(|a| a["oname"] == oname)
            .and_then(|a| a["oid"].as_i64())
            .unwrap_or_else(|| panic!("{oname} listed"))
    };
    let (url_oid, log_oid) = (oid_of("eu-west"), oid_of("app-1"));
    let link = |oid: i64| format!("table.fleet tr[data-oid='{oid}'] a.agent-link");
    open(&page, "#/fleet");
    page.wait_for(&link(log_oid), WAIT);
    let href = |oid: i64| {
        page.eval(&format!(
            "document.querySelector({}).getAttribute('href')",
            js_string(&link(oid))
        ))
    };
    assert_eq!(href(url_oid), "#/url?q=eu-west");
    assert_eq!(href(log_oid), format!("#/logs?oid={log_oid}"));
    page.click(&link(url_oid));
    page.wait_until(
        "the checks of eu-west, filtered by the link",
        WAIT,
        "document.querySelector('.filters input[type=search]')?.value === 'eu-west' \
         && document.querySelectorAll('tbody tr[data-target]').length === 2 \
         && [...document.querySelectorAll('tbody tr[data-target]')].every(r => r.dataset.region === 'eu-west')",
    );
    open(&page, "#/fleet");
    page.wait_for(&link(log_oid), WAIT);
    page.click(&link(log_oid));
    page.wait_until(
        "app-1's records, filtered by the link",
        WAIT,
        &format!(
            "document.querySelector('select[name=oid]')?.value === '{log_oid}' \
             && document.querySelectorAll('.log-lines .log-line').length > 0 \
             && [...document.querySelectorAll('.log-lines .log-line')].every(l => l.dataset.oid === '{log_oid}')"
        ),
    );
    screenshot(&page, &scratch, "logs-of-agent");

    // On a phone.
    page.set_viewport(PHONE, true);
    open(&page, "#/url");
    page.wait_for("tr[data-target=\"shop\"]", WAIT);
    screenshot(&page, &scratch, "url-checks-phone");
    open(&page, "#/logs?tab=tail");
    page.wait_for(".tail-bar .live-dot.on", WAIT);
    append(&app_log, "2026-11-24 07:03:00 INFO seen on a phone");
    page.wait_until(
        "the line on the phone",
        WAIT,
        "[...document.querySelectorAll('.tail .log-text')].some(e => e.textContent.includes('seen on a phone'))",
    );
    screenshot(&page, &scratch, "logs-tail-phone");
    assert_clean(&page, &base, &[]);
}

// ------------------------------------------------------------- database

const DB_INSTANCE: &str = "44444444444444444444444444444444";

fn session(id: u64, user: &str, query: &str) -> pb::DbSession {
    pb::DbSession {
        id,
        user: user.into(),
        host: format!("10.0.0.{id}:51000"),
        db: "shop".into(),
        command: if query.is_empty() { "Sleep" } else { "Query" }.into(),
        state: if query.is_empty() { "" } else { "Updating" }.into(),
        time_ms: 1000 * id,
        query: query.into(),
        trx: Some(pb::DbTransaction {
            id: format!("{}", 1000 + id),
            state: if query.is_empty() {
                "RUNNING"
            } else {
                "LOCK WAIT"
            }
            .into(),
            age_ms: 30_000,
            rows_locked: 1,
            rows_modified: u64::from(query.is_empty()),
            tables_locked: 1,
            idle_ms: if query.is_empty() { 25_000 } else { 0 },
            last_query: if query.is_empty() {
                "update accounts set balance = balance - # where id = #".into()
            } else {
                String::new()
            },
        }),
        ..pb::DbSession::default()
    }
}

fn waits(session_id: u64, parent_id: u64, depth: u32, wait_ms: u64) -> pb::LockNode {
    pb::LockNode {
        session_id,
        parent_id,
        depth,
        wait: Some(pb::LockWait {
            kind: "RECORD".into(),
            mode: "X".into(),
            holder_mode: "X".into(),
            table: "`shop`.`accounts`".into(),
            index: "PRIMARY".into(),
            data: "1".into(),
            wait_ms,
        }),
        ..pb::LockNode::default()
    }
}

/// Session 1 holds a row lock idle in its transaction; 2 and 3 wait on
/// it; 4 waits on 3. Sessions 5 and 6 wait on each other (a cycle).
fn lock_snapshot(time_ms: i64) -> pb::DbSnapshot {
    let mut cycle_root = waits(6, 5, 1, 3_000);
    cycle_root.in_cycle = true;
    pb::DbSnapshot {
        time_ms,
        reason: "db.lock_wait".into(),
        flavor: "mariadb".into(),
        version: "10.11.6-MariaDB-0+deb12u1".into(),
        sessions: vec![
            session(1, "app_a", ""),
            session(2, "app_b", "update accounts set balance = # where id = #"),
            session(3, "app_c", "select * from accounts where id = # for update"),
            session(4, "app_d", "update accounts set note = # where id = #"),
            session(5, "batch_e", "update stock set n = n - # where sku = #"),
            session(6, "batch_f", "update stock set n = n + # where sku = #"),
        ],
        sessions_omitted: 0,
        locks_read: true,
        locks: vec![
            pb::LockNode {
                session_id: 1,
                root_blocker: true,
                ..pb::LockNode::default()
            },
            waits(2, 1, 1, 12_000),
            waits(3, 1, 1, 9_000),
            waits(4, 3, 2, 4_000),
            pb::LockNode {
                session_id: 5,
                in_cycle: true,
                ..pb::LockNode::default()
            },
            cycle_root,
        ],
        variables: [
            ("max_connections".to_string(), "151".to_string()),
            ("innodb_lock_wait_timeout".to_string(), "50".to_string()),
        ]
        .into(),
    }
}

fn quiet_snapshot(time_ms: i64) -> pb::DbSnapshot {
    pb::DbSnapshot {
        time_ms,
        reason: "periodic".into(),
        flavor: "mariadb".into(),
        version: "10.11.6-MariaDB-0+deb12u1".into(),
        sessions: vec![pb::DbSession {
            id: 7,
            user: "report".into(),
            host: "10.0.0.7:51000".into(),
            db: "shop".into(),
            command: "Query".into(),
            state: "Sending data".into(),
            time_ms: 2500,
            query: "select count(*) from orders where day = #".into(),
            ..pb::DbSession::default()
        }],
        ..pb::DbSnapshot::default()
    }
}

fn counters(time_ms: i64, running: f64) -> pb::Payload {
    let sample = |name: &str, value: f64| pb::Sample {
        name: name.into(),
        labels: Vec::new(),
        value,
    };
    pb::Payload {
        kind: Some(pb::payload::Kind::Metrics(pb::Metrics {
            samples: vec![
                sample("db.threads_running", running),
                sample("db.threads_connected", 12.0 + running),
                sample("db.questions_per_sec", 250.0 + 10.0 * running),
                sample("db.innodb_row_lock_current_waits", (running - 2.0).max(0.0)),
            ],
            time_ms,
        })),
    }
}

/// A database agent on the wire: ten minutes of counters, a quiet
/// snapshot five minutes ago and one with the lock tree a minute ago.
fn feed_database(collector: &Collector, license: &str) -> (u64, i64, i64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = connect(collector).await;
        let oid =
            wire_agent::hello(&mut client, license, "db", "orders-db", DB_INSTANCE, 5000).await;
        let now = now_ms();
        let quiet_at = now - 5 * 60_000;
        let locks_at = now - 60_000;
        let mut batches = Vec::new();
        for i in 0..20u32 {
            let t = now - 10 * 60_000 + i64::from(i) * 30_000;
            let running = f64::from(2 + (i % 5));
            let mut payloads = vec![counters(t, running)];
            if t == quiet_at {
                payloads.push(pb::Payload {
                    kind: Some(pb::payload::Kind::Db(quiet_snapshot(t))),
                });
            }
            if t == locks_at {
                payloads.push(pb::Payload {
                    kind: Some(pb::payload::Kind::Db(lock_snapshot(t))),
                });
            }
            batches.push(pb::Batch {
                seq: u64::from(i) + 1,
                time_ms: t,
                health: None,
                payloads,
                liveness: false,
            });
        }
        let acks = wire_agent::push(&mut client, license, oid, DB_INSTANCE, batches).await;
        assert_eq!(acks.len(), 20);
        (oid, quiet_at, locks_at)
    })
}

#[test]
fn the_database_screen_draws_the_lock_tree_with_the_root_blocker_marked() {
    let scratch = Scratch::new("console-db");
    let data = scratch.join("collector");
    let creds = create_project(&data, "shop");
    let collector = Collector::start(&data);
    let base = format!("http://{}", collector.http);
    let (oid, quiet_at, locks_at) = feed_database(&collector, &creds.license);
    // Both snapshots are in the API before the page opens.
    let api = collector.api(&creds.token);
    let (status, body) = api.get(&format!("/api/v1/db/{oid}/snapshots"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["snapshots"].as_array().map_or(0, Vec::len),
        2,
        "{body}"
    );

    let browser = Browser::launch(scratch.path());
    let page = browser.page();
    sign_in(&page, &base, &creds.token);

    // The list links the database agent.
    open(&page, "#/db");
    page.wait_for(&format!("a[href=\"#/db/{oid}\"]"), WAIT);
    assert_eq!(page.text(&format!("a[href=\"#/db/{oid}\"]")), "orders-db");
    page.click(&format!("a[href=\"#/db/{oid}\"]"));

    // The newest moment: the lock tree.
    page.wait_for("ul.lock-tree", WAIT);
    let tree = page.eval(
        "(() => { const walk = (ul) => [...ul.children].map(li => ({ s: Number(li.dataset.session), \
           root: li.querySelector(':scope > .lock-node').classList.contains('root-blocker'), \
           cycle: li.querySelector(':scope > .lock-node').classList.contains('in-cycle'), \
           kids: li.querySelector(':scope > ul') ? walk(li.querySelector(':scope > ul')) : [] })); \
           return walk(document.querySelector('ul.lock-tree')); })()",
    );
    assert_eq!(
        tree,
        json!([
            { "s": 1, "root": true, "cycle": false, "kids": [
                { "s": 2, "root": false, "cycle": false, "kids": [] },
                { "s": 3, "root": false, "cycle": false, "kids": [
                    { "s": 4, "root": false, "cycle": false, "kids": [] }
                ] }
            ] },
            { "s": 5, "root": false, "cycle": true, "kids": [
                { "s": 6, "root": false, "cycle": true, "kids": [] }
            ] }
        ]),
        "the tree as drawn"
    );
    let root = page.text("li[data-session=\"1\"] > .lock-node .lock-title");
    assert!(root.contains("root blocker"), "root marked: {root}");
    assert!(root.contains("app_a@10.0.0.1:51000"), "who: {root}");
    let wait = page.text("li[data-session=\"2\"] > .lock-node .lock-wait");
    assert!(
        wait.contains("waits 12 s") && wait.contains("`shop`.`accounts`"),
        "the wait: {wait}"
    );
    assert!(
        page.text("li[data-session=\"5\"] > .lock-node .lock-title")
            .contains("cycle"),
        "the cycle is marked"
    );
    assert!(
        page.text("li[data-session=\"1\"] > .lock-node")
            .contains("last: update accounts set balance = balance - # where id = #"),
        "the blocker's last statement is shown"
    );
    let blockers = page.eval(
        "[...document.querySelectorAll('.moment .stat')].map(s => s.querySelector('.label').textContent + '=' + s.querySelector('.value').textContent)",
    );
    assert!(
        blockers
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "Root blockers=1")),
        "{blockers}"
    );
    assert_eq!(
        page.eval("[...document.querySelectorAll('.moment .stat')].find(s => s.textContent.startsWith('Root blockers')).querySelector('.note').textContent"),
        "session 1"
    );
    // Counters charted with points.
    page.wait_until(
        "the threads chart with its points",
        WAIT,
        "[...document.querySelectorAll('figure.chart')].some(f => f.querySelector('figcaption')?.textContent === 'Threads' && f.uplot?.data[0].length === 20)",
    );
    // The charts mark the moment the tables show.
    page.wait_until(
        "every chart marking the moment shown",
        WAIT,
        &format!(
            "(() => {{ const f = [...document.querySelectorAll('.charts figure.chart')]; \
             return f.length >= 3 && f.every(x => x.dataset.moment === '{locks_at}'); }})()"
        ),
    );
    // The timeline holds both snapshots, the lock one marked as an alert's.
    let marks = page.eval(
        "[...document.querySelectorAll('.timeline .mark')].map(m => [Number(m.dataset.time), m.classList.contains('alert')])",
    );
    assert_eq!(marks, json!([[quiet_at, false], [locks_at, true]]));
    screenshot(&page, &scratch, "db");
    page.eval("document.querySelector('.moment-head').scrollIntoView({ block: 'start' })");
    screenshot(&page, &scratch, "db-lock-tree");
    page.eval("window.scrollTo(0, 0)");

    // Another moment: its session, and no lock tree.
    page.click(&format!(".timeline .mark[data-time=\"{quiet_at}\"]"));
    page.wait_until(
        "the quiet moment's session",
        WAIT,
        "[...document.querySelectorAll('.moment td')].some(td => td.textContent.includes('select count(*) from orders'))",
    );
    assert_eq!(
        page.eval("document.querySelectorAll('ul.lock-tree').length"),
        0
    );
    assert!(
        page.eval("location.hash")
            .as_str()
            .is_some_and(|h| h.contains(&format!("at={quiet_at}"))),
        "the moment is in the address, to share"
    );
    assert!(
        page.eval(&format!(
            "[...document.querySelectorAll('.charts figure.chart')].every(x => x.dataset.moment === '{quiet_at}')"
        )) == true,
        "the charts follow the moment picked"
    );
    screenshot(&page, &scratch, "db-quiet");

    // On a phone.
    page.set_viewport(PHONE, true);
    // Back to the lock moment (a tap on an 8 px mark of a phone-wide
    // timeline is the page's business, not this layout check's).
    page.eval(&format!(
        "document.querySelector('.timeline .mark[data-time=\"{locks_at}\"]').click()"
    ));
    page.wait_for("ul.lock-tree", WAIT);
    page.eval("document.querySelector('.lock-tree').scrollIntoView({ block: 'start' })");
    screenshot(&page, &scratch, "db-phone");
    assert_clean(&page, &base, &[]);
}

// --------------------------------------------------------------- alerts

const INFRA_INSTANCE: &str = "55555555555555555555555555555555";

#[test]
fn alerts_are_managed_from_the_page_and_a_firing_shows_up_live() {
    let scratch = Scratch::new("console-alerts");
    let data = scratch.join("collector");
    let creds = create_project(&data, "shop");
    let conf = scratch.join("collector.conf");
    std::fs::write(&conf, "alerts.tick=200ms\n").expect("conf");
    let collector = Collector::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--conf", &conf.display().to_string()],
    );
    let base = format!("http://{}", collector.http);
    let api = collector.api(&creds.token);
    let receiver = WebhookReceiver::start();

    // A server agent on the wire, reporting memory.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut client = runtime.block_on(connect(&collector));
    let oid = runtime.block_on(wire_agent::hello(
        &mut client,
        &creds.license,
        "infra",
        "web-1",
        INFRA_INSTANCE,
        1000,
    ));
    let mut seq = 0;
    let mut report = |value: f64| {
        seq += 1;
        let now = now_ms();
        let batch = pb::Batch {
            seq,
            time_ms: now,
            health: None,
            payloads: vec![pb::Payload {
                kind: Some(pb::payload::Kind::Metrics(pb::Metrics {
                    time_ms: now,
                    samples: vec![pb::Sample {
                        name: "mem.used_pct".into(),
                        labels: vec![],
                        value,
                    }],
                })),
            }],
            liveness: false,
        };
        let acks = runtime.block_on(wire_agent::push(
            &mut client,
            &creds.license,
            oid,
            INFRA_INSTANCE,
            vec![batch],
        ));
        assert_eq!(acks.len(), 1);
    };
    report(40.0);

    let browser = Browser::launch(scratch.path());
    let page = browser.page();
    sign_in(&page, &base, &creds.token);

    // A channel, created and tested from the page.
    open(&page, "#/alerts/channels");
    page.wait_for(".firing .all-clear", WAIT);
    page.click(".panel .row button.primary");
    page.wait_for("form.editor input[name=name]", WAIT);
    page.type_into("form.editor input[name=name]", "ops hook");
    page.type_into(
        "form.editor input[name=url]",
        &receiver.url("/hook/secret-token-123"),
    );
    page.click("form.editor button[type=submit]");
    page.wait_for("tr[data-channel=\"ops hook\"]", WAIT);
    let shown = page.text("tr[data-channel=\"ops hook\"]");
    assert!(
        !shown.contains("secret-token-123"),
        "the URL is shown masked: {shown}"
    );
    page.click("tr[data-channel=\"ops hook\"] button.test");
    page.wait_until(
        "the test delivered",
        WAIT,
        "document.querySelector('tr[data-channel=\"ops hook\"] .test-result')?.textContent.startsWith('delivered')",
    );
    assert_eq!(receiver.received().len(), 1, "the receiver got the test");
    screenshot(&page, &scratch, "alerts-channels");

    // A rule: a bad condition refused with the parser's words, then a
    // good one created and listed.
    open(&page, "#/alerts/rules");
    page.wait_for(".panel .row button.primary", WAIT);
    page.click(".panel .row button.primary");
    page.wait_for("form.editor input[name=name]", WAIT);
    page.type_into("form.editor input[name=name]", "memory high");
    page.type_into("form.editor input[name=expr]", "mem.used_pct >> 90");
    page.click("form.editor label.check input[type=checkbox][value]");
    page.click("form.editor button[type=submit]");
    page.wait_until(
        "the parse error",
        WAIT,
        "document.querySelector('form.editor .notice.error:not([hidden])')?.textContent.includes('column')",
    );
    screenshot(&page, &scratch, "alerts-rule-refused");
    page.eval("document.querySelector('form.editor input[name=expr]').value = ''");
    page.type_into("form.editor input[name=expr]", "mem.used_pct > 90 for 1s");
    page.click("form.editor button[type=submit]");
    page.wait_for("tr[data-rule=\"memory high\"]", WAIT);
    assert_eq!(page.text(".tab-body .panel h2 .muted"), "1 rule");
    let rules = api.ok("/api/v1/alerts/rules");
    let rule = &rules["rules"][0];
    assert_eq!(rule["expr"], "mem.used_pct > 90 for 1s", "{rules}");
    assert_eq!(
        rule["channels"].as_array().map_or(0, Vec::len),
        1,
        "{rules}"
    );
    screenshot(&page, &scratch, "alerts-rules");

    // The series crosses: the alert shows as firing without a reload.
    let marker = page.eval("window.__same_page = 1");
    assert_eq!(marker, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        report(97.0);
        let firing = page
            .eval("!!document.querySelector('.firing-item[data-rule=\"memory high\"]')")
            .as_bool()
            .unwrap_or(false);
        if firing {
            break;
        }
        assert!(Instant::now() < deadline, "no firing shown");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        page.eval("window.__same_page"),
        1,
        "shown live, not by a reload"
    );
    wait_for("the firing notification", WAIT, || {
        (receiver.delivered().len() >= 2).then_some(())
    });
    screenshot(&page, &scratch, "alerts-firing");

    // Edit the rule, then delete it.
    page.click("tr[data-rule=\"memory high\"] .row-actions button");
    page.wait_for("form.editor select[name=severity]", WAIT);
    page.eval(
        "(() => { const s = document.querySelector('form.editor select[name=severity]'); s.value = 'critical'; return true; })()",
    );
    page.click("form.editor button[type=submit]");
    page.wait_until(
        "the rule marked critical",
        WAIT,
        "document.querySelector('tr[data-rule=\"memory high\"]')?.textContent.includes('critical')",
    );
    assert_eq!(
        api.ok("/api/v1/alerts/rules")["rules"][0]["severity"],
        "critical"
    );

    // History lists the firing.
    open(&page, "#/alerts/history");
    page.wait_until(
        "the firing in the history",
        WAIT,
        "[...document.querySelectorAll('.tab-body tbody tr')].some(r => r.textContent.includes('memory high') && r.textContent.includes('firing'))",
    );
    screenshot(&page, &scratch, "alerts-history");

    // Pause the agent from the page: the API agrees; then resume.
    open(&page, "#/alerts/agents");
    let row = format!("tr[data-oid=\"{oid}\"]");
    page.wait_for(&format!("{row} button.pause"), WAIT);
    page.click(&format!("{row} button.pause"));
    page.wait_until(
        "the agent shown paused",
        WAIT,
        &format!(
            "document.querySelector({})?.querySelector('.badge')?.textContent === 'paused'",
            js_string(&row)
        ),
    );
    let agent: Value = api.ok(&format!("/api/v1/agents/{oid}"));
    assert_eq!(agent["paused"], true, "{agent}");
    screenshot(&page, &scratch, "alerts-agents");
    page.click(&format!("{row} button.resume"));
    page.wait_until(
        "the agent shown up again",
        WAIT,
        &format!(
            "document.querySelector({})?.querySelector('.badge')?.textContent === 'up'",
            js_string(&row)
        ),
    );
    assert_eq!(api.ok(&format!("/api/v1/agents/{oid}"))["paused"], false);

    // Deliveries list both attempts.
    open(&page, "#/alerts/deliveries");
    page.wait_until(
        "two delivered attempts",
        WAIT,
        "[...document.querySelectorAll('.tab-body tbody tr')].filter(r => r.textContent.includes('delivered')).length >= 2",
    );
    screenshot(&page, &scratch, "alerts-deliveries");

    page.set_viewport(PHONE, true);
    screenshot(&page, &scratch, "alerts-phone");
    page.set_viewport(sightline_e2e::browser::DESKTOP, false);

    // Delete the rule (asked twice).
    open(&page, "#/alerts/rules");
    page.wait_for("tr[data-rule=\"memory high\"] button.danger", WAIT);
    page.click("tr[data-rule=\"memory high\"] button.danger");
    page.click("tr[data-rule=\"memory high\"] button.confirm-yes");
    page.wait_until(
        "the rule gone",
        WAIT,
        "!document.querySelector('tr[data-rule=\"memory high\"]')",
    );
    assert_eq!(
        api.ok("/api/v1/alerts/rules")["rules"]
            .as_array()
            .map_or(1, Vec::len),
        0
    );
    // The bad rule's refusal is the one error.
    let refused = format!("400 (Bad Request) {base}/api/v1/alerts/rules");
    assert_clean(&page, &base, &[&refused]);
}

// ---------------------------------------------- a real server's lock tree

#[test]
fn a_real_mariadb_lock_chain_is_drawn_with_its_root_blocker() {
    use sightline_e2e::mariadb::{MONITOR_PASSWORD, MariaDb, Session};
    let scratch = Scratch::new("console-mariadb");
    let db = MariaDb::start();
    db.create_shop();
    let data = scratch.join("collector");
    let creds = create_project(&data, "shop");
    let collector = Collector::start(&data);
    let base = format!("http://{}", collector.http);
    let api = collector.api(&creds.token);
    let dir = scratch.join("agent");
    let url = db.url();
    let _agent = Agent::start(
        "sightline-db",
        &dir,
        &agent_conf(
            &creds.license,
            collector.grpc,
            &dir.join("data"),
            &[
                ("oname", "mariadb-1"),
                ("db.url", &url),
                ("db.password", MONITOR_PASSWORD),
                ("db.lock_wait.alert", "2s"),
            ],
        ),
    );
    let oid = sightline_e2e::the_agent(&api)["oid"].as_i64().expect("oid");

    // The holder keeps row 1 in an idle transaction; the waiter and c
    // queue on it (c holding row 2), d waits on c.
    let mut holder = Session::open(&db);
    holder.exec("BEGIN; UPDATE shop.orders SET v = 1 WHERE id = 1");
    let mut c = Session::open(&db);
    c.exec("BEGIN; UPDATE shop.orders SET v = 1 WHERE id = 2");
    let mut waiter = Session::open(&db);
    waiter.exec("BEGIN");
    waiter.send("UPDATE shop.orders SET v = 2 WHERE id = 1");
    std::thread::sleep(Duration::from_millis(300));
    c.send("UPDATE shop.orders SET v = 3 WHERE id = 1");
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Session::open(&db);
    d.send("UPDATE shop.orders SET v = 4 WHERE id = 2");
    wait_for("the chain in the API", Duration::from_secs(20), || {
        let (status, body) = api.get(&format!("/api/v1/db/{oid}/locks"));
        (status == 200 && body["waiting"].as_u64() == Some(3)).then_some(())
    });

    let browser = Browser::launch(scratch.path());
    let page = browser.page();
    sign_in(&page, &base, &creds.token);
    open(&page, &format!("#/db/{oid}"));
    let holder_node = format!(
        "ul.lock-tree > li[data-session=\"{}\"] > .lock-node.root-blocker",
        holder.id()
    );
    page.wait_until(
        "the holder drawn as the root blocker with three waiting",
        WAIT,
        &format!(
            "!!document.querySelector({}) && document.querySelectorAll('ul.lock-tree li').length >= 4",
            js_string(&holder_node)
        ),
    );
    assert!(page.text(&holder_node).contains("root blocker"));
    // The waiter directly under the holder, waiting on row 1 of the table.
    let waiter_node = format!(
        "ul.lock-tree > li[data-session=\"{}\"] > ul > li[data-session=\"{}\"] > .lock-node",
        holder.id(),
        waiter.id()
    );
    let text = page.text(&waiter_node);
    assert!(
        text.contains("record lock")
            && text.contains("`shop`.`orders`")
            && text.contains("UPDATE shop.orders SET v = 2 WHERE id = 1"),
        "the waiter's wait and statement: {text}"
    );
    // d under c, c under the waiter; c repeated under the holder.
    let d_node = format!(
        "li[data-session=\"{}\"] > ul > li[data-session=\"{}\"] > .lock-node",
        c.id(),
        d.id()
    );
    page.wait_for(&d_node, WAIT);
    assert!(
        page.text(&d_node)
            .contains("UPDATE shop.orders SET v = 4 WHERE id = 2")
    );
    screenshot(&page, &scratch, "db-mariadb");
    page.eval("document.querySelector('.moment-head').scrollIntoView({ block: 'start' })");
    screenshot(&page, &scratch, "db-mariadb-lock-tree");
    assert_clean(&page, &base, &[]);
}
