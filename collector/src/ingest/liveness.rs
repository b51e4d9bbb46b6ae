//! Liveness signals, coalesced: an agent with nothing to send says it is
//! there once an interval, and a thousand of them must not cost a thousand
//! durable writes. Signals are kept in memory (the newest per agent) and
//! written together every [`FLUSH_EVERY`].
//!
//! Invariants: at most one entry per agent (bounded by the agents with a
//! stream); the flusher ends on shutdown after one last write; a failed
//! write is logged and dropped (a liveness signal is not data: the next
//! one comes an interval later).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use crate::store::{Registry, Touch};

/// How often noted signals are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Liveness signals waiting to be written.
#[derive(Debug, Default)]
pub struct Liveness {
    pending: Mutex<HashMap<i64, Touch>>,
}

impl Liveness {
    /// Starts the flusher over `store`; it ends on `shutdown`.
    pub fn start<S: Registry>(
        store: Arc<S>,
        shutdown: CancellationToken,
    ) -> (Arc<Liveness>, tokio::task::JoinHandle<()>) {
        let liveness = Arc::new(Liveness::default());
        let task = tokio::spawn(liveness.clone().run(store, shutdown));
        (liveness, task)
    }

    /// Notes that an agent is alive; the newest signal per agent wins.
    pub fn note(&self, touch: Touch) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(touch.oid, touch);
        }
    }

    fn take(&self) -> Vec<Touch> {
        self.pending
            .lock()
            .map(|mut p| p.drain().map(|(_, t)| t).collect())
            .unwrap_or_default()
    }

    async fn run<S: Registry>(self: Arc<Self>, store: Arc<S>, shutdown: CancellationToken) {
        let mut tick = interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                () = shutdown.cancelled() => true,
                _ = tick.tick() => false,
            };
            let touches = self.take();
            if !touches.is_empty()
                && let Err(e) = store.touch_agents(&touches).await
            {
                tracing::warn!(error = %e, agents = touches.len(), "Cannot record liveness signals.");
            }
            if stopping {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentHealth, AgentHello};
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn signals_are_coalesced_per_agent_and_written_on_shutdown() {
        let dir = std::env::temp_dir().join(format!("sl-liveness-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(SqliteStore::open(&dir).await.expect("opens"));
        let p = store.create_project("p", b"l", b"t").await.expect("p");
        let hello = AgentHello {
            product: "log".into(),
            oname: "h".into(),
            hostname: "h".into(),
            os: String::new(),
            version: String::new(),
            boot_time_ms: 0,
            created_time: String::new(),
            instance: "0123456789abcdef0123456789abcdef".into(),
            interval_ms: 1000,
            boot_id: String::new(),
        };
        let r = store.register_agent(p.id, &hello, 0).await.expect("r");
        let shutdown = CancellationToken::new();
        let (liveness, task) = Liveness::start(store.clone(), shutdown.clone());
        for (seen_ms, acked) in [(10_000, 1), (20_000, 2)] {
            liveness.note(Touch {
                project_id: p.id,
                oid: r.oid,
                health: Some(AgentHealth {
                    batches_acked: acked,
                    ..AgentHealth::default()
                }),
                seen_ms,
            });
        }
        assert_eq!(liveness.pending.lock().map(|p| p.len()).ok(), Some(1));
        shutdown.cancel();
        task.await.expect("the flusher ends on shutdown");
        let agent = store.agent(p.id, r.oid).await.expect("q").expect("agent");
        assert_eq!(agent.last_seen_ms, 20_000, "written before it ended");
        assert_eq!(agent.health.map(|h| h.batches_acked), Some(2), "the newest");
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
