//! The database agent facing what goes wrong in the field, through the real
//! `sightline-db` binary and a real, private MariaDB server: a wrong
//! password, nothing listening, a user without PROCESS, a hung server
//! (SIGSTOP). `test` names each clearly with a hint; `run` logs it, keeps
//! retrying, raises `db.unreachable` (and `db.reachable` when the server
//! answers again), and still stops within a second of SIGTERM.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sightline_e2e::mariadb::{MONITOR_PASSWORD, MariaDb};
use sightline_e2e::{
    Agent, Api, Collector, Scratch, agent_conf, binary, create_project, the_agent, wait_for,
};

/// Runs `sightline-db test` with `db_lines` after a license and collector
/// address that point nowhere (agent-core's own lines fail; the database
/// lines are what is checked). Returns the output and how long it took.
fn db_test(dir: &Path, db_lines: &str) -> (String, Duration) {
    std::fs::create_dir_all(dir).expect("dir");
    let conf = dir.join("db.conf");
    std::fs::write(
        &conf,
        format!(
            "license=sl1-7K3M9QW2XH8D4R6TBN1PZC5VFA-0H4K2PM\nserver.host=127.0.0.1\nserver.port=1\nserver.timeout=1s\ndata.dir={}\n{db_lines}",
            dir.join("data").display()
        ),
    )
    .expect("conf");
    let started = Instant::now();
    let out = Command::new(binary("sightline-db"))
        .arg("test")
        .arg("--conf")
        .arg(&conf)
        .output()
        .expect("runs sightline-db test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "test fails with a bad input: {text}");
    (text, started.elapsed())
}

fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"))
}

#[test]
fn test_names_each_bad_input_with_a_hint_and_reports_a_good_cycle() {
    let scratch = Scratch::new("db-test");
    let mut db = MariaDb::start();
    let url = db.url();

    // A good setup: login, privileges, one cycle's cost.
    let (good, _) = db_test(
        &scratch.join("good"),
        &format!("db.url={url}\ndb.password={MONITOR_PASSWORD}\n"),
    );
    assert!(
        line(&good, "OK    db ").contains("as 'sightline'") && good.contains("MariaDB 10."),
        "{good}"
    );
    assert!(
        line(&good, "OK    db-privs").contains("PROCESS and SELECT"),
        "{good}"
    );
    let cycle = line(&good, "OK    db-cycle");
    assert!(cycle.contains("one cycle: 2 statements"), "{good}");
    assert!(
        !good.contains(MONITOR_PASSWORD),
        "the password is never shown"
    );

    // A wrong password.
    let (wrong, _) = db_test(
        &scratch.join("wrong"),
        &format!("db.url={url}\ndb.password=not-the-password\n"),
    );
    let fail = line(&wrong, "FAIL  db ");
    assert!(
        fail.contains("the server refused the login of 'sightline'"),
        "{wrong}"
    );
    assert!(fail.contains("Access denied"), "{wrong}");
    assert!(
        wrong.contains("hint: check db.user and db.password"),
        "{wrong}"
    );
    assert!(!wrong.contains("not-the-password"), "{wrong}");
    assert!(line(&wrong, "SKIP  db-privs").contains("not logged in"));

    // Nothing listening.
    let closed = sightline_e2e::free_addrs().0.port();
    let (refused, _) = db_test(
        &scratch.join("refused"),
        &format!("db.url=mysql://sightline@127.0.0.1:{closed}/\ndb.password=x\n"),
    );
    let fail = line(&refused, "FAIL  db ");
    assert!(
        fail.contains(&format!("cannot connect to 127.0.0.1:{closed}")),
        "{refused}"
    );
    assert!(refused.contains("hint: is the server running"), "{refused}");

    // A user without PROCESS.
    db.sql(
        "CREATE USER 'noproc'@'%' IDENTIFIED BY 'noproc-pw'; GRANT SELECT ON *.* TO 'noproc'@'%';",
    );
    let (noproc, _) = db_test(
        &scratch.join("noproc"),
        &format!(
            "db.url=mysql://noproc@127.0.0.1:{}/\ndb.password=noproc-pw\n",
            db.port()
        ),
    );
    assert!(
        line(&noproc, "OK    db ").contains("as 'noproc'"),
        "{noproc}"
    );
    let fail = line(&noproc, "FAIL  db-privs");
    assert!(fail.contains("'noproc' lacks PROCESS"), "{noproc}");
    assert!(
        noproc.contains("hint: GRANT PROCESS ON *.* TO 'noproc'"),
        "{noproc}"
    );

    // A hung server: the login waits no longer than db.connect_timeout.
    db.sigstop();
    let (hung, took) = db_test(
        &scratch.join("hung"),
        &format!("db.url={url}\ndb.password={MONITOR_PASSWORD}\ndb.connect_timeout=2s\n"),
    );
    db.sigcont();
    let fail = line(&hung, "FAIL  db ");
    assert!(
        fail.contains("did not complete the login within 2s"),
        "{hung}"
    );
    assert!(
        hung.contains("hint: the server accepted nothing in time"),
        "{hung}"
    );
    assert!(
        took < Duration::from_secs(8),
        "test took {took:?} against a hung server"
    );
    db.stop();
}

fn kinds(api: &Api, kind: &str) -> Vec<serde_json::Value> {
    api.events()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[test]
fn run_keeps_retrying_raises_unreachable_and_reachable_and_stops_while_the_server_hangs() {
    let scratch = Scratch::new("db-run");
    let db = MariaDb::start();
    let data = scratch.join("collector");
    let creds = create_project(&data, "db");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);

    // A wrong password: the agent runs on, logs why, and says so once.
    let wrong_dir = scratch.join("wrong");
    let url = db.url();
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &wrong_dir.join("data"),
        &[("db.url", &url), ("db.password", "not-the-password")],
    );
    let mut wrong = Agent::start("sightline-db", &wrong_dir, &conf);
    the_agent(&api);
    let event = wait_for("db.unreachable", Duration::from_secs(15), || {
        kinds(&api, "db.unreachable").pop()
    });
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused the login of 'sightline'")),
        "{event}"
    );
    wait_for("a second attempt", Duration::from_secs(15), || {
        (wrong
            .log_text()
            .matches("Cannot connect to the database.")
            .count()
            >= 2)
            .then_some(())
    });
    assert!(wrong.try_wait().is_none(), "the agent keeps running");
    assert_eq!(
        kinds(&api, "db.unreachable").len(),
        1,
        "raised once per outage"
    );
    let log = wrong.log_text();
    assert!(log.contains("Access denied"), "{log}");
    assert!(!log.contains("not-the-password"), "{log}");
    assert!(wrong.terminate_within(Duration::from_secs(2)).is_some());

    // A good agent; the server hangs, then answers again.
    let dir = scratch.join("good");
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &dir.join("data"),
        &[
            ("db.url", &url),
            ("db.password", MONITOR_PASSWORD),
            ("db.connect_timeout", "2s"),
        ],
    );
    let mut agent = Agent::start("sightline-db", &dir, &conf);
    let oid = wait_for("the good agent", Duration::from_secs(15), || {
        api.agents()
            .into_iter()
            .filter_map(|a| a["oid"].as_i64())
            .find(|oid| !api.points(*oid, "db.questions_per_sec").is_empty())
    });
    let before = kinds(&api, "db.unreachable").len();
    db.sigstop();
    let hung_at = Instant::now();
    wait_for(
        "db.unreachable for the hang",
        Duration::from_secs(20),
        || (kinds(&api, "db.unreachable").len() > before).then_some(()),
    );
    let noticed = hung_at.elapsed();
    assert!(
        noticed < Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    let log = agent.log_text();
    assert!(
        log.contains("took longer than") || log.contains("did not complete the login"),
        "{log}"
    );
    // db.up is 0 while it hangs.
    wait_for("db.up = 0", Duration::from_secs(10), || {
        api.points(oid, "db.up")
            .iter()
            .any(|p| p.1 == 0.0)
            .then_some(())
    });
    db.sigcont();
    let event = wait_for("db.reachable", Duration::from_secs(90), || {
        kinds(&api, "db.reachable").pop()
    });
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("answers again"))
    );

    // SIGTERM while the server hangs: out within a second.
    db.sigstop();
    std::thread::sleep(Duration::from_millis(1500));
    let stopping = Instant::now();
    assert!(
        agent.terminate_within(Duration::from_secs(1)).is_some(),
        "the agent hung with its server"
    );
    assert!(stopping.elapsed() < Duration::from_secs(1));
    db.sigcont();
}
