//! CPU per check of [`sightline_url::probe::check`], measured in-process:
//! `cargo run --profile agent -p sightline-url --example check_cost
//! [rate] [seconds]` runs checks at `rate` a second (one in four HTTPS)
//! against a plain and a TLS server on loopback served by other threads of
//! this process, on a current-thread runtime like the agent's, and prints
//! the runtime thread's CPU time per check. For comparing changes to the
//! probe quickly; `cargo xtask bench url` is the figure that counts.
//!
//! Never a test: its figure depends on the machine's load.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_core::config::{Config, MapEnv};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sightline_url::TARGET_KEYS;
use tokio::task::JoinSet;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

fn serve(mut stream: impl Read + Write) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.clear();
        if stream
            .write_all(RESPONSE)
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
}

fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let tls = tls.clone();
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                match tls {
                    None => serve(stream),
                    Some(tls) => {
                        if let Ok(conn) = rustls::ServerConnection::new(tls) {
                            serve(rustls::StreamOwned::new(conn, stream));
                        }
                    }
                }
            });
        }
    });
    port
}

fn thread_cpu_ns() -> u64 {
    // The calling thread's schedstat (run time in ns).
    let tid = rustix_tid();
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn rustix_tid() -> String {
    // /proc/thread-self points at the calling thread's task folder.
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100.0);
    let seconds: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20.0);
    // Checks started together on each tick (the rate stays the same).
    let batch: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    let dir = std::env::temp_dir().join(format!("check-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "check cost CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).expect("write ca");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let leaf = params.signed_by(&key, &ca).expect("leaf");
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("cert");
    let http = listen(None);
    let https = listen(Some(Arc::new(tls)));
    let mut text = String::new();
    for i in 0..200 {
        if i % 4 == 3 {
            text.push_str(&format!(
                "target.t{i}.url=https://127.0.0.1:{https}/a/{i}\ntarget.t{i}.tls.ca={}\n",
                ca_pem.display()
            ));
        } else {
            text.push_str(&format!("target.t{i}.url=http://127.0.0.1:{http}/a/{i}\n"));
        }
    }
    let config = Config::from_text(Path::new("t.conf"), &text, TARGET_KEYS).expect("config");
    let targets: Vec<Arc<sightline_url::Target>> =
        sightline_url::settings::targets(&config, &MapEnv::new([]))
            .expect("targets")
            .into_values()
            .map(Arc::new)
            .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let total = (rate * seconds) as usize;
    let (checks, failed, cpu) = runtime.block_on(async move {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate));
        let mut set = JoinSet::new();
        // Warm-up: one round over every target.
        for t in &targets {
            let t = t.clone();
            set.spawn(async move { sightline_url::probe::check(&t).await.failure.is_some() });
        }
        while set.join_next().await.is_some() {}
        let before = thread_cpu_ns();
        let mut failed = 0;
        for n in 0..total {
            if n % batch == 0 {
                tick.tick().await;
            }
            while let Some(Some(joined)) = set.try_join_next().map(Some) {
                failed += usize::from(joined.unwrap_or(true));
            }
            let t = targets[n % targets.len()].clone();
            set.spawn(async move { sightline_url::probe::check(&t).await.failure.is_some() });
        }
        while let Some(joined) = set.join_next().await {
            failed += usize::from(joined.unwrap_or(true));
        }
        (total, failed, thread_cpu_ns() - before)
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{checks} checks at {rate}/s, {failed} failed: {:.1} µs CPU per check",
        cpu as f64 / 1000.0 / checks as f64
    );
}
