//! Bad input gets a clear error and loses nothing; nothing from the network
//! stops the collector serving everyone else.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use prost::Message;
use sightline_collector::server::MAX_MESSAGE_BYTES;
use sightline_e2e::{
    Agent, Collector, Scratch, agent_conf, binary, create_project, noise, the_agent, wait_for,
};
use sightline_proto::metadata;
use sightline_proto::v1 as pb;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;

fn infra(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("sightline-infra"))
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_config_line_exits_2_naming_file_and_line() {
    let scratch = Scratch::new("badline");
    let conf = scratch.join("infra.conf");
    std::fs::write(&conf, "license=x\n# fine\nserver.host 10.0.0.1\n").expect("write");
    let (code, _, stderr) = infra(&["--conf", conf.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3: expected key=value", conf.display())),
        "{stderr}"
    );
}

/// A license pasted without `license=`: refused with file and line, and
/// the error shows no 8 characters in a row of the key's secret.
#[test]
fn a_license_pasted_without_its_key_is_refused_without_echoing_it() {
    let scratch = Scratch::new("barekey");
    let creds = create_project(&scratch.join("collector"), "bare");
    let conf = scratch.join("infra.conf");
    std::fs::write(&conf, format!("server.host=127.0.0.1\n{}\n", creds.license)).expect("write");
    let (code, stdout, stderr) = infra(&["--conf", conf.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2: expected key=value", conf.display())),
        "{stderr}"
    );
    // The 26 characters between `sl1-` and the checksum are the secret.
    let secret = &creds.license[4..30];
    for start in 0..=secret.len() - 8 {
        let run = &secret[start..start + 8];
        assert!(
            !stderr.to_ascii_uppercase().contains(run) && !stdout.contains(run),
            "shows '{run}': {stderr}"
        );
    }
}

#[test]
fn an_unknown_key_warns_with_the_nearest_known_key() {
    let scratch = Scratch::new("typo");
    let data = scratch.join("collector");
    let creds = create_project(&data, "typo");
    let collector = Collector::start(&data);
    let mut conf = agent_conf(&creds.license, collector.grpc, &scratch.join("data"), &[]);
    conf.push_str("spool.maxx=1MiB\n");
    let mut agent = Agent::infra(&scratch.join("agent"), &conf);
    wait_for("the warning", Duration::from_secs(5), || {
        agent
            .log_text()
            .contains("unknown key 'spool.maxx', ignored; did you mean 'spool.max'?")
            .then_some(())
    });
    // A warning, not a refusal: the agent runs and reports.
    the_agent(&collector.api(&creds.token));
    assert!(agent.try_wait().is_none());
    let line = agent
        .log_text()
        .lines()
        .find(|l| l.contains("spool.maxx"))
        .map(String::from)
        .unwrap_or_default();
    // Line 1 is the harness's comment, lines 2 to 7 its keys.
    assert!(
        line.contains("infra.conf:8:"),
        "names file and line: {line}"
    );
}

/// A mistyped license is refused before any connection is made, and the
/// key is never printed whole.
#[test]
fn a_mistyped_license_is_refused_before_connecting() {
    let scratch = Scratch::new("mistyped");
    let data = scratch.join("collector");
    let creds = create_project(&data, "typo");
    // A port that records whether anyone connects.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let mut typo = creds.license.clone().into_bytes();
    let at = typo.len() - 3;
    typo[at] = if typo[at] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).expect("ascii");
    let conf = agent_conf(
        &typo,
        listener.local_addr().expect("addr"),
        &scratch.join("data"),
        &[],
    );
    std::fs::write(scratch.join("infra.conf"), conf).expect("write");
    let (code, stdout, stderr) = infra(&[
        "--conf",
        scratch.join("infra.conf").to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("fails its checksum"), "{stderr}");
    assert!(
        stderr.contains("infra.conf:2: license:"),
        "names where the key came from: {stderr}"
    );
    assert!(
        !stderr.contains(&typo) && !stdout.contains(&typo),
        "never printed whole: {stderr}"
    );
    assert!(!stderr.contains(&typo[4..typo.len() - 4]));
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection was attempted"
    );
    assert!(!scratch.join("data").exists(), "nothing was created either");
}

/// A well-formed key that no project has: the collector refuses it, the
/// running agent says so, and `test` names the failing step.
#[test]
fn an_unknown_license_is_refused_by_the_collector_and_test_says_so() {
    let scratch = Scratch::new("unknown");
    let data = scratch.join("collector");
    let _ours = create_project(&data, "ours");
    // A key from another collector's store: well-formed, unknown here.
    let theirs = create_project(&scratch.join("elsewhere"), "theirs");
    let collector = Collector::start(&data);
    let conf = agent_conf(&theirs.license, collector.grpc, &scratch.join("data"), &[]);
    let agent = Agent::infra(&scratch.join("agent"), &conf);
    wait_for(
        "the refusal in the agent's log",
        Duration::from_secs(10),
        || {
            agent
                .log_text()
                .contains("the collector refused the license")
                .then_some(())
        },
    );
    assert!(!agent.log_text().contains(&theirs.license));
    assert!(collector.log_text().contains("Refused an unknown license."));
    assert!(!collector.log_text().contains(&theirs.license));

    let (code, stdout, _) = infra(&["test", "--conf", agent.conf.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{stdout}");
    let hello = stdout
        .lines()
        .find(|l| l.contains("hello"))
        .expect("a hello line");
    assert!(hello.starts_with("FAIL"), "{stdout}");
    assert!(hello.contains("does not know the license"), "{stdout}");
    assert!(
        stdout.contains("hint: the key is well-formed but was not created by this collector"),
        "{stdout}"
    );
    assert!(!stdout.contains(&theirs.license));
    for step in ["config", "license", "dns", "tcp"] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!(" {step} ")))
            .expect(step);
        assert!(line.starts_with("OK"), "{step}: {stdout}");
    }
}

#[test]
fn test_names_the_failing_step_when_the_collector_is_down() {
    let scratch = Scratch::new("test-down");
    let data = scratch.join("collector");
    let creds = create_project(&data, "down");
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let conf = scratch.join("infra.conf");
    std::fs::write(
        &conf,
        agent_conf(&creds.license, port, &scratch.join("data"), &[]),
    )
    .expect("write");
    let (code, stdout, _) = infra(&["test", "--conf", conf.to_str().expect("utf-8")]);
    assert_eq!(code, 1);
    let redacted = stdout
        .replace(&conf.display().to_string(), "<conf>")
        .replace(&port.port().to_string(), "<port>")
        .replace(&creds.license[creds.license.len() - 4..], "LAST");
    insta::assert_snapshot!(redacted, @r"
    OK    config   6 keys from <conf>
    OK    license  sl1-…LAST is well-formed
    OK    dns      127.0.0.1 resolves to 127.0.0.1
    FAIL  tcp      connect 127.0.0.1:<port>: Connection refused (os error 111)
                   hint: is the collector running there (`sightline-collector serve`)? is outbound TCP <port> open in the firewalls between?
    SKIP  tls      an earlier check failed
    SKIP  hello    an earlier check failed
    SKIP  clock    an earlier check failed
    ");
}

/// `server.host=HOST:PORT` in a file works as `--server HOST:PORT` does
/// (it used to be looked up in DNS as a host name, colon and all).
#[test]
fn server_host_with_a_port_reaches_the_collector() {
    let scratch = Scratch::new("host-port");
    let data = scratch.join("collector");
    let creds = create_project(&data, "hostport");
    let collector = Collector::start(&data);
    let conf = scratch.join("infra.conf");
    std::fs::write(
        &conf,
        format!(
            "license={}\nserver.host={}\ndata.dir={}\nserver.timeout=3s\n",
            creds.license,
            collector.grpc,
            scratch.join("data").display()
        ),
    )
    .expect("write");
    let (code, stdout, _) = infra(&["test", "--conf", conf.to_str().expect("utf-8")]);
    let line = |step: &str| {
        stdout
            .lines()
            .find(|l| l.contains(&format!(" {step} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("tcp").starts_with(&format!("OK    tcp      connected to {}", collector.grpc)),
        "{stdout}"
    );
    assert!(line("hello").starts_with("OK"), "{stdout}");
    assert_eq!(code, 0, "{stdout}");

    // The same port given twice, differently: refused at start, naming both.
    std::fs::write(
        &conf,
        format!(
            "license={}\nserver.host={}\nserver.port=1\ndata.dir={}\n",
            creds.license,
            collector.grpc,
            scratch.join("data").display()
        ),
    )
    .expect("write");
    let (code, _, stderr) = infra(&["--conf", conf.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:2: server.host: gives port {}, but server.port=1 ({}:3)",
            conf.display(),
            collector.grpc.port(),
            conf.display()
        )),
        "{stderr}"
    );
}

/// `test` pointed at the collector's HTTP API port says what the port is
/// and which key to fix, instead of "Unknown: transport error".
#[test]
fn test_pointed_at_the_api_port_says_so() {
    let scratch = Scratch::new("test-http");
    let data = scratch.join("collector");
    let creds = create_project(&data, "http");
    let collector = Collector::start(&data);
    let conf = scratch.join("infra.conf");
    std::fs::write(
        &conf,
        agent_conf(&creds.license, collector.http, &scratch.join("data"), &[]),
    )
    .expect("write");
    let (code, stdout, _) = infra(&["test", "--conf", conf.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{stdout}");
    let steady = stdout
        .replace(&conf.display().to_string(), "<conf>")
        .replace(&collector.http.port().to_string(), "<http>");
    let hello: Vec<&str> = steady
        .lines()
        .skip_while(|l| !l.contains(" hello "))
        .take(2)
        .collect();
    insta::assert_snapshot!(hello.join("\n"), @r"
    FAIL  hello    127.0.0.1:<http> speaks HTTP/1.1, not the collector's gRPC (is server.port the collector's API port? agents use the --grpc port, 6600 by default)
                   hint: set server.port (<conf>:4) to the collector's gRPC port: grpc= in the line it prints when it starts (`listening grpc=... http=...`), its grpc.listen key or --grpc flag
    ");
}

fn send_garbage(addr: std::net::SocketAddr, seed: u64) {
    if let Ok(mut s) = TcpStream::connect(addr) {
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(&noise(64 * 1024, seed));
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut sink = [0u8; 4096];
        let _ = s.read(&mut sink);
    }
}

/// Random bytes on both ports are dropped while the collector keeps
/// serving: the API answers and a real agent delivers.
#[test]
fn random_bytes_on_both_ports_do_not_stop_the_collector() {
    let scratch = Scratch::new("garbage");
    let data = scratch.join("collector");
    let creds = create_project(&data, "garbage");
    let mut collector = Collector::start(&data);
    for seed in 0..8 {
        send_garbage(collector.grpc, seed + 1);
        send_garbage(collector.http, seed + 100);
    }
    assert!(collector.is_running());
    let api = collector.api(&creds.token);
    assert_eq!(api.ok("/api/v1/health")["status"], "ok");
    let _agent = Agent::infra(
        &scratch.join("agent"),
        &agent_conf(&creds.license, collector.grpc, &scratch.join("data"), &[]),
    );
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    wait_for("metrics", Duration::from_secs(10), || {
        (!api.points(oid, "mem.used_pct").is_empty()).then_some(())
    });
}

/// A slow client holds neither port: others are served meanwhile, and the
/// slow connection is cut off.
#[test]
fn slow_clients_are_cut_off_while_others_are_served() {
    let scratch = Scratch::new("slow");
    let data = scratch.join("collector");
    let creds = create_project(&data, "slow");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    // Half a request on HTTP, nothing at all on gRPC.
    let mut http = TcpStream::connect(collector.http).expect("connect");
    http.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut grpc = TcpStream::connect(collector.grpc).expect("connect");
    let started = Instant::now();
    assert_eq!(api.ok("/api/v1/health")["status"], "ok");
    assert!(started.elapsed() < Duration::from_secs(1));
    for (name, stream) in [("http", &mut http), ("grpc", &mut grpc)] {
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = [0u8; 1024];
        // Read until the server closes (an error answer may come first).
        let closed = loop {
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break false;
                }
                Err(_) => break true,
            }
        };
        assert!(closed, "{name}: the slow connection was not cut off");
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

async fn registered_client(
    collector: &Collector,
    license: &str,
) -> (
    pb::ingest_client::IngestClient<tonic::transport::Channel>,
    u64,
) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", collector.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut client = pb::ingest_client::IngestClient::new(channel);
    let mut hello = tonic::Request::new(pb::HelloRequest {
        product: "infra".into(),
        oname: "raw-client".into(),
        instance: "00112233445566778899aabbccddeeff".into(),
        interval_ms: 1000,
        ..pb::HelloRequest::default()
    });
    hello.metadata_mut().insert(
        metadata::LICENSE,
        MetadataValue::try_from(license).expect("ascii"),
    );
    let reply = client.hello(hello).await.expect("hello").into_inner();
    (client, reply.oid)
}

fn push_request(
    license: &str,
    oid: u64,
    batch: pb::Batch,
) -> tonic::Request<tokio_stream_once::Once> {
    let mut request = tonic::Request::new(tokio_stream_once::Once(Some(batch)));
    let meta = request.metadata_mut();
    meta.insert(
        metadata::LICENSE,
        MetadataValue::try_from(license).expect("ascii"),
    );
    meta.insert(
        metadata::OID,
        MetadataValue::try_from(oid.to_string()).expect("ascii"),
    );
    meta.insert(
        metadata::INSTANCE,
        MetadataValue::from_static("00112233445566778899aabbccddeeff"),
    );
    request
}

/// One batch as a stream, without pulling in a stream crate for it.
mod tokio_stream_once {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(super) struct Once(pub(super) Option<sightline_proto::v1::Batch>);

    impl tonic::codegen::tokio_stream::Stream for Once {
        type Item = sightline_proto::v1::Batch;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.take())
        }
    }
}

/// The status a push was refused with: at once, or mid-stream.
async fn refusal(
    result: Result<tonic::Response<tonic::Streaming<pb::Ack>>, tonic::Status>,
) -> tonic::Status {
    match result {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("refused mid-stream"),
    }
}

fn huge_batch(bytes: usize) -> pb::Batch {
    let sample = |i: usize| pb::Sample {
        name: format!("x.{i}"),
        labels: vec![pb::Label {
            key: "pad".into(),
            value: "0".repeat(1000),
        }],
        value: 1.0,
    };
    pb::Batch {
        seq: 1,
        time_ms: 1,
        health: None,
        payloads: vec![pb::Payload {
            kind: Some(pb::payload::Kind::Metrics(pb::Metrics {
                samples: (0..bytes / 1000).map(sample).collect(),
                time_ms: 1,
            })),
        }],
        liveness: false,
    }
}

/// An oversized message, and one that is small compressed but huge
/// decompressed, are refused; the collector keeps serving.
#[tokio::test]
async fn oversized_and_decompression_bomb_messages_are_refused() {
    let scratch = Scratch::new("oversized");
    let data = scratch.join("collector");
    let creds = create_project(&data, "big");
    let mut collector = Collector::start(&data);
    let (client, oid) = registered_client(&collector, &creds.license).await;

    let mut plain = client.clone();
    let result = plain
        .push(push_request(&creds.license, oid, huge_batch(6 << 20)))
        .await;
    // tonic's decoder (tonic 0.14 `codec/decode.rs`) refuses a length
    // prefix over the limit with OUT_OF_RANGE, naming the limit; a panicking
    // or failing handler would give UNKNOWN or INTERNAL instead.
    let refused = refusal(result).await;
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(
        refused.message().contains(&format!(
            "decoded message length too large: found {} bytes, the limit is: {MAX_MESSAGE_BYTES} bytes",
            huge_batch(6 << 20).encoded_len()
        )),
        "names the size and the limit: {refused:?}"
    );

    // Small on the wire, over the limit once inflated: tonic stops
    // decompressing at the limit with RESOURCE_EXHAUSTED, naming it. Not the
    // collector's own RESOURCE_EXHAUSTED (backpressure), which carries a
    // retry-after.
    let mut compressed = client.clone().send_compressed(CompressionEncoding::Gzip);
    let result = compressed
        .push(push_request(&creds.license, oid, huge_batch(8 << 20)))
        .await;
    let refused = refusal(result).await;
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains(&format!(
            "size limit, of {MAX_MESSAGE_BYTES} bytes, exceeded while decompressing"
        )),
        "names the limit: {refused:?}"
    );
    assert!(
        refused.metadata().get(metadata::RETRY_AFTER_MS).is_none(),
        "{refused:?}"
    );

    assert!(collector.is_running());
    let api = collector.api(&creds.token);
    let delivery = api.ok(&format!("/api/v1/agents/{oid}/delivery"));
    assert_eq!(
        delivery["instances"].as_array().map(Vec::len),
        Some(0),
        "nothing was stored"
    );
    // A well-behaved agent is still served.
    let mut ok = client.clone().send_compressed(CompressionEncoding::Zstd);
    let small = pb::Batch {
        seq: 1,
        time_ms: 1,
        ..pb::Batch::default()
    };
    let mut acks = ok
        .push(push_request(&creds.license, oid, small))
        .await
        .expect("accepted")
        .into_inner();
    let ack = acks.message().await.expect("ack").expect("one ack");
    assert_eq!((ack.seq, ack.duplicate, ack.error.as_str()), (1, false, ""));
}

/// One project's token never reads another project's agent.
#[test]
fn a_token_cannot_read_another_projects_agent() {
    let scratch = Scratch::new("cross");
    let data = scratch.join("collector");
    let alpha = create_project(&data, "alpha");
    let beta = create_project(&data, "beta");
    let collector = Collector::start(&data);
    let _agent = Agent::infra(
        &scratch.join("agent"),
        &agent_conf(&beta.license, collector.grpc, &scratch.join("data"), &[]),
    );
    let beta_api = collector.api(&beta.token);
    let oid = the_agent(&beta_api)["oid"].as_i64().expect("oid");
    wait_for("data", Duration::from_secs(10), || {
        (!beta_api.points(oid, "mem.used_pct").is_empty()).then_some(())
    });

    // Times from the client that would overflow are refused, not wrapped.
    let (status, body) = beta_api.get(&format!(
        "/api/v1/agents/{oid}/metrics?name=mem.used_pct&from={}&to={}",
        i64::MIN,
        i64::MAX
    ));
    assert_eq!(status, 400, "{body}");
    let (status, _) = beta_api.get(&format!("/api/v1/events?to={}", i64::MIN));
    assert_eq!(
        status, 200,
        "a default `from` below the earliest time saturates"
    );

    let alpha_api = collector.api(&alpha.token);
    assert!(alpha_api.agents().is_empty());
    for path in [
        format!("/api/v1/agents/{oid}"),
        format!("/api/v1/agents/{oid}/metrics?name=mem.used_pct"),
        format!("/api/v1/agents/{oid}/processes"),
        format!("/api/v1/agents/{oid}/delivery"),
    ] {
        let (status, body) = alpha_api.get(&path);
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert!(alpha_api.events().is_empty());
    let (status, _) = alpha_api.get_with("/api/v1/agents", None);
    assert_eq!(status, 401);
    let (status, _) = alpha_api.get_with("/api/v1/agents", Some(&alpha.license));
    assert_eq!(status, 401, "a license is not a token");
}
