//! Which agents have a live `Push` stream, and from which host (boot id):
//! two hosts configured with the same `oname` (cloned VMs) would share one
//! agent id and interleave their data, so while one holds a stream, a
//! `Hello` from another boot id for the same (project, product, oname) is
//! refused.
//!
//! Invariants: a reconnect from the same boot id is never refused; an empty
//! boot id (an older agent) never conflicts; the map holds only agents with
//! a live stream (an entry goes with its last stream), so it is bounded by
//! the stream limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The identity `Hello` and the store share: project, product, oname.
pub type AgentKey = (i64, String, String);

/// The host holding an agent's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The agent id.
    pub oid: i64,
    /// Its boot id.
    pub boot_id: String,
    /// Its host name.
    pub hostname: String,
    /// Its address, when known.
    pub address: Option<SocketAddr>,
    /// Since when it holds the stream, unix ms.
    pub since_ms: i64,
}

#[derive(Debug)]
struct Live {
    holder: Holder,
    streams: usize,
    /// Whether this episode's conflict was reported as an event.
    reported: bool,
}

/// Live streams by agent.
#[derive(Debug, Default)]
pub struct Presence {
    live: Mutex<HashMap<AgentKey, Live>>,
}

/// A conflict found by [`Presence::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Who holds the stream.
    pub holder: Holder,
    /// True the first time in this episode: raise the event now.
    pub first: bool,
}

impl Presence {
    /// Whether a `Hello` from `boot_id` may register `key`.
    pub fn check(&self, key: &AgentKey, boot_id: &str) -> Result<(), Conflict> {
        if boot_id.is_empty() {
            return Ok(());
        }
        let Ok(mut live) = self.live.lock() else {
            return Ok(());
        };
        match live.get_mut(key) {
            Some(l) if !l.holder.boot_id.is_empty() && l.holder.boot_id != boot_id => {
                let first = !l.reported;
                l.reported = true;
                Err(Conflict {
                    holder: l.holder.clone(),
                    first,
                })
            }
            _ => Ok(()),
        }
    }

    /// Records a live stream of `key` from `holder`; it counts until the
    /// returned guard drops.
    pub fn enter(self: &Arc<Self>, key: AgentKey, holder: Holder) -> StreamGuard {
        if let Ok(mut live) = self.live.lock() {
            let entry = live.entry(key.clone()).or_insert_with(|| Live {
                holder: holder.clone(),
                streams: 0,
                reported: false,
            });
            if entry.holder.boot_id != holder.boot_id {
                // The registered host changed (its Hello was accepted while
                // no stream was live): the newest stream's host holds it.
                entry.holder = holder;
                entry.reported = false;
            }
            entry.streams += 1;
        }
        StreamGuard {
            presence: self.clone(),
            key,
        }
    }

    fn leave(&self, key: &AgentKey) {
        if let Ok(mut live) = self.live.lock()
            && let Some(l) = live.get_mut(key)
        {
            l.streams = l.streams.saturating_sub(1);
            if l.streams == 0 {
                live.remove(key);
            }
        }
    }
}

/// Ends a stream's presence when dropped.
#[derive(Debug)]
pub struct StreamGuard {
    presence: Arc<Presence>,
    key: AgentKey,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.presence.leave(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(boot_id: &str) -> Holder {
        Holder {
            oid: 1,
            boot_id: boot_id.into(),
            hostname: "web-1".into(),
            address: None,
            since_ms: 0,
        }
    }

    #[test]
    fn another_boot_is_refused_while_a_stream_lives_and_reported_once() {
        let presence = Arc::new(Presence::default());
        let key: AgentKey = (1, "infra".into(), "web-1".into());
        assert!(presence.check(&key, "b").is_ok(), "nobody holds it yet");
        let guard = presence.enter(key.clone(), holder("a"));
        assert!(
            presence.check(&key, "a").is_ok(),
            "a reconnect of the same host"
        );
        assert!(
            presence.check(&key, "").is_ok(),
            "an older agent without boot id"
        );
        let first = presence.check(&key, "b").expect_err("another host");
        assert!(first.first);
        assert_eq!(first.holder.hostname, "web-1");
        let again = presence.check(&key, "b").expect_err("still");
        assert!(!again.first, "one event per episode");
        drop(guard);
        assert!(
            presence.check(&key, "b").is_ok(),
            "free once the stream ended"
        );
        let _guard = presence.enter(key.clone(), holder("a"));
        assert!(presence.check(&key, "b").expect_err("new episode").first);
    }
}
