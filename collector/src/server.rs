//! `serve`: binds both ports, then runs gRPC ingest, the group-commit
//! writer, the HTTP API and the background jobs (no-data watch, retention,
//! alert evaluation and notification delivery)
//! until shutdown. Generic over the store; `main` picks the backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::{MissedTickBehavior, interval, timeout};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::api::{self, ApiState};
use crate::auth::ProjectCache;
use crate::ingest::IngestService;
use crate::ingest::liveness::Liveness;
use crate::listen::{Guarded, accept_loop};
use crate::model::EventRow;
use crate::settings::ServeSettings;
use crate::store::group::{GroupLimits, GroupWriter};
use crate::store::{Store, StoreError};
use crate::time_text::format_ms;

/// The largest message accepted, compressed or decompressed.
pub use crate::ingest::MAX_MESSAGE_BYTES;
/// How often agents are checked for missed intervals.
const WATCH_EVERY: Duration = Duration::from_secs(5);
/// How often retention runs.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// How often log retention runs (its size cap needs a short period).
const LOG_PURGE_EVERY: Duration = Duration::from_secs(60);

/// Why the collector could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// TLS files could not be read or used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// A collector with its ports bound, not yet serving.
#[derive(Debug)]
pub struct Collector<S> {
    settings: ServeSettings,
    store: Arc<S>,
    grpc: TcpListener,
    http: TcpListener,
}

impl<S: Store> Collector<S> {
    /// Binds both ports, to serve from `store` (opened by the caller).
    pub async fn bind(settings: ServeSettings, store: S) -> Result<Collector<S>, ServeError> {
        let store = Arc::new(store);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let grpc = bind(settings.grpc).await?;
        let http = bind(settings.http).await?;
        Ok(Collector {
            settings,
            store,
            grpc,
            http,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let Collector {
            settings,
            store,
            grpc,
            http,
        } = self;
        let tls = match &settings.tls {
            None => None,
            Some((cert, key)) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| ServeError::Tls(format!("{}: {e}", p.display())))
                };
                Some(
                    ServerTlsConfig::new()
                        .identity(Identity::from_pem(read(cert)?, read(key)?))
                        .timeout(Duration::from_secs(10)),
                )
            }
        };
        // HTTP/2 windows of 4 MiB (hyper's default is 1 MiB): an agent's
        // stream of large log batches keeps going while this process is
        // briefly off the CPU instead of stalling on window updates
        // (measured by `bench log`). At most 4 MiB per connection waits
        // unread.
        let mut builder = tonic::transport::Server::builder()
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(4 << 20))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .max_concurrent_streams(Some(16));
        if let Some(tls) = tls {
            builder = builder
                .tls_config(tls)
                .map_err(|e| ServeError::Tls(agent_core::transport::error_chain(&e)))?;
        }
        let (writer, writer_task) =
            GroupWriter::start(store.clone(), GroupLimits::default(), shutdown.clone());
        let writes = writer.stats_handle();
        let (liveness, liveness_task) = Liveness::start(store.clone(), shutdown.clone());
        let ingest = IngestService::new(
            store.clone(),
            writer,
            liveness,
            Arc::new(ProjectCache::default()),
            settings.ingest_limits,
            shutdown.clone(),
        )
        .into_server();
        let incoming = ReceiverStream::new(accept_loop(
            grpc,
            settings.max_connections,
            shutdown.clone(),
        ))
        .map(Ok::<Guarded, std::io::Error>);
        let grpc_server = builder
            .add_service(ingest)
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());

        let hub = crate::alerts::AlertsHub::default();
        let evaluator =
            crate::alerts::evaluate::Evaluator::start(store.clone(), hub.clone()).await?;
        let evaluate =
            tokio::spawn(evaluator.run(settings.alerts_tick, writes.clone(), shutdown.clone()));
        let deliver = tokio::spawn(crate::alerts::notify::queue::run(
            store.clone(),
            hub.wake_queue.clone(),
            shutdown.clone(),
        ));
        let state = Arc::new(ApiState {
            store: store.clone(),
            tokens: ProjectCache::default(),
            writes,
            sessions: crate::console::session::Sessions::default(),
            alerts: hub,
            public_origin: settings.console_origin.clone(),
        });
        let routes = api::router(state.clone())
            .merge(crate::console::router(state))
            .layer(axum::middleware::map_response(
                crate::console::security_headers,
            ));
        let http_server = serve_http(
            routes,
            accept_loop(http, settings.max_connections, shutdown.clone()),
            shutdown.clone(),
        );
        let watch = tokio::spawn(watch_quiet_agents(store.clone(), shutdown.clone()));
        let purge = tokio::spawn(enforce_retention(
            store.clone(),
            settings.retention,
            shutdown.clone(),
        ));

        let purge_logs = tokio::spawn(enforce_log_retention(
            store.clone(),
            settings.log_retention,
            settings.log_max_bytes,
            shutdown.clone(),
        ));

        let purge_db = tokio::spawn(enforce_db_retention(
            store.clone(),
            settings.db_retention,
            settings.db_max_bytes,
            shutdown.clone(),
        ));

        let purge_url = tokio::spawn(enforce_url_retention(
            store.clone(),
            settings.url_retention,
            settings.url_max_bytes,
            shutdown.clone(),
        ));

        let (grpc_result, ()) = tokio::join!(grpc_server, http_server);
        let _ = tokio::join!(
            watch,
            purge,
            purge_logs,
            purge_db,
            purge_url,
            evaluate,
            deliver,
            writer_task,
            liveness_task
        );
        store.close().await;
        grpc_result.map_err(ServeError::from)
    }
}

/// Serves HTTP/1.1 on every accepted connection, with a bound on how long a
/// client may take to send its request headers.
async fn serve_http(
    router: axum::Router,
    mut connections: tokio::sync::mpsc::Receiver<Guarded>,
    shutdown: CancellationToken,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => return,
            c = connections.recv() => match c { Some(c) => c, None => return },
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024);
            let connection = builder.serve_connection(TokioIo::new(conn), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended with an error.");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = timeout(Duration::from_secs(1), connection).await;
                }
            }
        });
    }
}

/// Raises `agent.no_data` once for each agent that misses three intervals.
async fn watch_quiet_agents<S: Store>(store: Arc<S>, shutdown: CancellationToken) {
    let mut tick = interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = crate::now_ms();
        let quiet = match store.newly_quiet_agents(now).await {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!(error = %e, "No-data check failed.");
                continue;
            }
        };
        for agent in quiet {
            let event = EventRow {
                time_ms: now,
                kind: "agent.no_data".into(),
                severity: "critical".into(),
                message: format!(
                    "Agent {} ({}) has sent no data since {}: three intervals of {} s missed.",
                    agent.oname,
                    agent.product,
                    format_ms(agent.last_seen_ms),
                    agent.interval_ms / 1000
                ),
                attrs: [("last_seen_ms".to_string(), agent.last_seen_ms.to_string())].into(),
            };
            tracing::warn!(oid = agent.oid, oname = %agent.oname, "Agent sent no data for three intervals.");
            if let Err(e) = store
                .insert_event(agent.project_id, Some(agent.oid), &event)
                .await
            {
                tracing::warn!(error = %e, "Cannot record a no-data event.");
            }
        }
    }
}

/// Calls `purge` with the time `retention` ago, at start and then every
/// `every`, until shutdown: the one loop behind each kind of retention.
async fn purge_periodically<F, Fut>(
    retention: Duration,
    every: Duration,
    shutdown: CancellationToken,
    mut purge: F,
) where
    F: FnMut(i64, CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut tick = interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cutoff = crate::now_ms().saturating_sub(retention_ms);
        purge(cutoff, shutdown.clone()).await;
    }
}

/// Removes data older than `retention`, at start and then hourly.
async fn enforce_retention<S: Store>(
    store: Arc<S>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    purge_periodically(retention, PURGE_EVERY, shutdown, |cutoff, stop| {
        let store = Arc::clone(&store);
        async move {
            match store.purge_alerts(cutoff).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, before = %format_ms(cutoff), "Retention removed old alert history."),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Alert retention failed."),
            }
            match store.purge_before(cutoff, &stop).await {
                Ok(p) if p != crate::store::Purged::default() => tracing::info!(
                    points = p.points,
                    series = p.series,
                    snapshots = p.snapshots,
                    events = p.events,
                    batches = p.batches,
                    before = %format_ms(cutoff),
                    "Retention removed old data."
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Retention failed."),
            }
        }
    })
    .await;
}

/// Removes log blocks older than `retention`, then the oldest over
/// `max_bytes`, at start and then every [`LOG_PURGE_EVERY`].
async fn enforce_log_retention<S: Store>(
    store: Arc<S>,
    retention: Duration,
    max_bytes: u64,
    shutdown: CancellationToken,
) {
    purge_periodically(retention, LOG_PURGE_EVERY, shutdown, |cutoff, stop| {
        let store = Arc::clone(&store);
        async move {
            match store.purge_logs(cutoff, max_bytes, &stop).await {
                Ok(p) if p.blocks > 0 => tracing::info!(
                    blocks = p.blocks,
                    records = p.records,
                    bytes = p.bytes,
                    before = %format_ms(cutoff),
                    max_bytes,
                    "Log retention removed old records."
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Log retention failed."),
            }
        }
    })
    .await;
}

/// Removes database snapshots older than `retention`, then the oldest over
/// `max_bytes`, at start and then every [`LOG_PURGE_EVERY`].
async fn enforce_db_retention<S: Store>(
    store: Arc<S>,
    retention: Duration,
    max_bytes: u64,
    shutdown: CancellationToken,
) {
    purge_periodically(retention, LOG_PURGE_EVERY, shutdown, |cutoff, stop| {
        let store = Arc::clone(&store);
        async move {
            match store.purge_db(cutoff, max_bytes, &stop).await {
                Ok(p) if p.snapshots > 0 || p.variables > 0 => tracing::info!(
                    snapshots = p.snapshots,
                    bytes = p.bytes,
                    variables = p.variables,
                    before = %format_ms(cutoff),
                    max_bytes,
                    "Database retention removed old snapshots."
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "Database retention failed."),
            }
        }
    })
    .await;
}

/// Removes URL checks older than `retention`, then the oldest over
/// `max_bytes`, and targets no longer checked, at start and then every
/// [`LOG_PURGE_EVERY`].
async fn enforce_url_retention<S: Store>(
    store: Arc<S>,
    retention: Duration,
    max_bytes: u64,
    shutdown: CancellationToken,
) {
    purge_periodically(retention, LOG_PURGE_EVERY, shutdown, |cutoff, stop| {
        let store = Arc::clone(&store);
        async move {
            match store.purge_url(cutoff, max_bytes, &stop).await {
                Ok(p) if p.checks > 0 || p.targets > 0 => tracing::info!(
                    checks = p.checks,
                    bytes = p.bytes,
                    targets = p.targets,
                    before = %format_ms(cutoff),
                    max_bytes,
                    "URL retention removed old checks."
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "URL retention failed."),
            }
        }
    })
    .await;
}
