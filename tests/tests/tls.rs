//! gRPC over TLS (rustls on both sides), with the CA given to the agent.

use std::process::Command;
use std::time::Duration;

use sightline_e2e::{
    Agent, Collector, Scratch, agent_conf, binary, create_project, the_agent, tls_files, wait_for,
};

fn tls_collector(
    scratch: &Scratch,
) -> (
    Collector,
    sightline_e2e::Credentials,
    sightline_e2e::TlsFiles,
) {
    let data = scratch.join("collector");
    let creds = create_project(&data, "tls");
    let files = tls_files(&scratch.join("pki"), "good");
    let collector = Collector::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--tls-cert",
            files.cert.to_str().expect("utf-8"),
            "--tls-key",
            files.key.to_str().expect("utf-8"),
        ],
    );
    (collector, creds, files)
}

#[test]
fn an_agent_delivers_over_tls_and_test_checks_the_handshake() {
    let scratch = Scratch::new("tls");
    let (collector, creds, files) = tls_collector(&scratch);
    let ca = files.ca.display().to_string();
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &scratch.join("data"),
        &[
            ("server.tls", "true"),
            ("server.ca", &ca),
            ("server.compression", "gzip"),
        ],
    );
    let agent = Agent::infra(&scratch.join("agent"), &conf);
    let api = collector.api(&creds.token);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    wait_for("metrics over TLS", Duration::from_secs(10), || {
        (!api.points(oid, "mem.used_pct").is_empty()).then_some(())
    });

    let out = Command::new(binary("sightline-infra"))
        .args(["test", "--conf"])
        .arg(&agent.conf)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let tls = stdout
        .lines()
        .find(|l| l.contains(" tls "))
        .expect("tls line");
    assert!(tls.starts_with("OK"), "{stdout}");
    assert!(tls.contains("certificate trusted"), "{stdout}");
    assert_eq!(api.agents().len(), 1, "test registered nothing");
}

#[test]
fn a_collector_certificate_from_another_ca_fails_the_tls_step() {
    let scratch = Scratch::new("tls-wrong-ca");
    let (collector, creds, _) = tls_collector(&scratch);
    let other = tls_files(&scratch.join("pki"), "other");
    let ca = other.ca.display().to_string();
    let conf = scratch.join("infra.conf");
    std::fs::write(
        &conf,
        agent_conf(
            &creds.license,
            collector.grpc,
            &scratch.join("data"),
            &[("server.tls", "true"), ("server.ca", &ca)],
        ),
    )
    .expect("write");
    let out = Command::new(binary("sightline-infra"))
        .args(["test", "--conf"])
        .arg(&conf)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let tls = stdout
        .lines()
        .find(|l| l.contains(" tls "))
        .expect("tls line");
    assert!(tls.starts_with("FAIL"), "{stdout}");
    assert!(stdout.contains("hint: check server.ca"), "{stdout}");
    let tcp = stdout
        .lines()
        .find(|l| l.contains(" tcp "))
        .expect("tcp line");
    assert!(tcp.starts_with("OK"), "TCP itself is fine: {stdout}");
}
