//! `run`: the life of an agent process. Takes the pid file, opens the spool,
//! starts the pipeline, the transport and the product's collection loop, and
//! on SIGTERM/SIGINT stops them all within a second, flushing what the loop
//! produced to the spool first; what cannot be spooled within the grace
//! period is counted as dropped (and reported), never lost silently.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::domain::{Event, Severity, event_names};
use crate::health::AgentCounters;
use crate::identity;
use crate::pidfile::{PidFile, PidFileError};
use crate::pipeline::{self, Output, SharedSpool};
use crate::settings::CommonSettings;
use crate::source::{SourceConfig, SourceContext, SourceError};
use crate::spool::{Spool, SpoolError, SpoolOptions};
use crate::transport::{AgentIdentity, Transport};

/// How long the collection loop has to return after shutdown.
const SOURCE_GRACE: Duration = Duration::from_millis(400);
/// How long the pipeline has to spool what is queued after that.
const DRAIN_GRACE: Duration = Duration::from_millis(300);
/// How long the pipeline has to count what it could not spool.
const COUNT_GRACE: Duration = Duration::from_millis(100);

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data folder cannot be used.
    #[error("data dir {dir}: {source}", dir = dir.display())]
    DataDir {
        /// The folder.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another agent holds the data folder.
    #[error(transparent)]
    PidFile(#[from] PidFileError),
    /// The spool cannot be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The collection loop failed.
    #[error("collection failed: {0}")]
    Source(#[from] SourceError),
}

/// Runs the agent until `shutdown` fires (or its loop fails).
pub async fn run<C: SourceConfig>(
    common: CommonSettings,
    product: C,
    config_path: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&common.data_dir).map_err(|source| AgentError::DataDir {
        dir: common.data_dir.clone(),
        source,
    })?;
    let _pid = PidFile::acquire(&common.data_dir, C::BINARY)?;
    let counters = Arc::new(AgentCounters::default());
    let spool_dir = common.data_dir.join("spool");
    let boot_id = identity::boot_id();
    let options = SpoolOptions {
        max_bytes: common.spool_max,
        sync: common.spool_sync,
        boot_id: (!boot_id.is_empty()).then(|| boot_id.clone()),
        counters: Some(counters.clone()),
    };
    // The instance lives in the spool's folder: wiping the spool (to free
    // space, say) starts a new instance, whose numbers cannot collide with
    // the old ones at the collector.
    let spool = tokio::task::spawn_blocking(move || Spool::open_with(&spool_dir, options))
        .await
        .map_err(|e| SpoolError::Io {
            path: "spool".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
    tracing::info!(
        product = C::PRODUCT,
        version = env!("CARGO_PKG_VERSION"),
        oname = %common.oname,
        collector = %common.server.authority(),
        license = %common.license,
        spooled = spool.len(),
        "Agent starting."
    );
    let spool = SharedSpool::new(spool, counters.clone())
        .compressed(common.server.compression == crate::settings::Compression::Zstd);

    let (out, inbox) = Output::channel(C::PRODUCT, counters.clone());
    let drain_stop = CancellationToken::new();
    let mut pipeline = tokio::spawn(pipeline::run(
        inbox,
        spool.clone(),
        counters.clone(),
        C::SPOOL_FULL,
        C::PRODUCT,
        drain_stop.clone(),
    ));

    let mut started = Event::now(
        event_names::AGENT_STARTED,
        Severity::Info,
        format!("{} {} started.", C::BINARY, env!("CARGO_PKG_VERSION")),
    )
    .attr("version", env!("CARGO_PKG_VERSION"))
    .attr("pid", std::process::id());
    if let Some(path) = &config_path {
        started = started.attr("config", path.display());
    }
    let _ = out.event(started).await;

    let interval = product.interval();
    let transport = Transport {
        server: common.server.clone(),
        license: common.license.clone(),
        identity: AgentIdentity {
            product: C::PRODUCT,
            oname: common.oname.clone(),
            hostname: identity::hostname(),
            os: identity::os(),
            version: env!("CARGO_PKG_VERSION"),
            boot_time_ms: identity::boot_time_ms(),
            created_time: common.created_time.clone(),
            instance: String::new(),
            interval,
            boot_id,
        },
        spool: spool.clone(),
        counters: counters.clone(),
        data_dir: common.data_dir.clone(),
    };
    let transport = tokio::spawn(transport.run(shutdown.clone()));

    let cx = SourceContext::new(
        shutdown.clone(),
        out,
        counters.clone(),
        common.data_dir.clone(),
        spool,
    );
    let mut source = tokio::spawn(product.build(cx)?);
    let finished = tokio::select! {
        () = shutdown.cancelled() => None,
        r = &mut source => Some(flatten(r)),
    };
    shutdown.cancel();
    tracing::info!("Agent stopping.");
    // The loop owns the last output; once it returns, the pipeline drains
    // what is queued and ends.
    let result = match finished {
        Some(result) => result,
        None => match timeout(SOURCE_GRACE, &mut source).await {
            Ok(r) => flatten(r),
            Err(_) => {
                source.abort();
                tracing::warn!("Collection loop did not stop in time; abandoned it.");
                Ok(())
            }
        },
    };
    if timeout(DRAIN_GRACE, &mut pipeline).await.is_err() {
        // Out of time: what is still queued is counted as dropped.
        drain_stop.cancel();
        let _ = timeout(COUNT_GRACE, pipeline).await;
    }
    let _ = timeout(Duration::from_millis(100), transport).await;
    let health = counters.snapshot();
    tracing::info!(
        spooled = health.spool_batches,
        acked = health.batches_acked,
        "Agent stopped."
    );
    result
}

fn flatten(
    joined: Result<Result<(), SourceError>, tokio::task::JoinError>,
) -> Result<(), AgentError> {
    match joined {
        Ok(r) => r.map_err(AgentError::from),
        Err(e) => Err(AgentError::Source(SourceError::msg(format!(
            "collection task failed: {e}"
        )))),
    }
}
