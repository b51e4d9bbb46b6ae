//! What the transport tests share: a scratch folder, the pipeline in front
//! of a spool, and a transport pointed at a scripted server on loopback.
//! Never a real collector: each test file scripts its own fake.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_core::health::AgentCounters;
use agent_core::license::License;
use agent_core::pipeline::{self, Output, SharedSpool};
use agent_core::settings::{Compression, ServerSettings};
use agent_core::spool::SpoolFull;
use agent_core::transport::{AgentIdentity, Transport};
use tokio_util::sync::CancellationToken;

/// An empty folder for one test, named after the test file and `name`.
pub fn temp_dir(file: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sl-{file}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts the pipeline spooling into `spool` (dropping the oldest when
/// full), and returns the output of the source named `source`.
pub fn start_pipeline(
    spool: &SharedSpool,
    counters: &Arc<AgentCounters>,
    source: &'static str,
) -> Output {
    let (out, inbox) = Output::channel(source, counters.clone());
    tokio::spawn(pipeline::run(
        inbox,
        spool.clone(),
        counters.clone(),
        SpoolFull::DropOldest,
        source,
        CancellationToken::new(),
    ));
    out
}

/// A transport delivering `spool` to a server on `127.0.0.1:port`, without
/// compression, with a 3 s bound on every wait.
pub fn transport(
    port: u16,
    dir: &Path,
    spool: SharedSpool,
    counters: Arc<AgentCounters>,
    interval: Duration,
) -> Transport {
    Transport {
        server: ServerSettings {
            host: "127.0.0.1".into(),
            port,
            tls: None,
            compression: Compression::None,
            timeout: Duration::from_secs(3),
        },
        license: License::generate().expect("license"),
        identity: AgentIdentity {
            product: "infra",
            oname: "test".into(),
            hostname: "test".into(),
            os: "linux".into(),
            version: "0",
            boot_time_ms: 0,
            created_time: String::new(),
            // Set per session from the spool.
            instance: String::new(),
            interval,
            boot_id: agent_core::identity::boot_id(),
        },
        spool,
        counters,
        data_dir: dir.to_path_buf(),
    }
}
