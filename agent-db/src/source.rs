//! The database agent's loop: every interval, one [`Monitor::cycle`], sent
//! as one batch (metrics, the snapshot, the events). Stops within the
//! shutdown's bound: a cycle in flight is dropped (its connection with it).

use std::time::SystemTime;

use agent_core::domain::{Metrics, Payload};
use agent_core::{OutBatch, SourceContext, SourceError};
use tokio::time::{MissedTickBehavior, interval};

use crate::monitor::Monitor;
use crate::settings::DbSettings;
use crate::wire::snapshot_payload;

/// Runs until shutdown.
pub async fn run(settings: DbSettings, cx: SourceContext) -> Result<(), SourceError> {
    let mut tick = interval(settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut monitor = Monitor::new(settings);
    loop {
        tokio::select! {
            () = cx.shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let cycle = tokio::select! {
            () = cx.shutdown.cancelled() => break,
            c = monitor.cycle() => c,
        };
        let time = SystemTime::now();
        let records = cycle.samples.len() as u64
            + cycle
                .snapshot
                .as_ref()
                .map_or(0, |s| s.sessions.len() as u64);
        cx.out.records_read(records);
        let mut payloads = vec![Payload::Metrics(Metrics {
            time,
            samples: cycle.samples,
        })];
        if let Some(snapshot) = cycle.snapshot {
            payloads.push(snapshot_payload(snapshot));
        }
        if !cycle.events.is_empty() {
            payloads.push(Payload::Events(cycle.events));
        }
        tokio::select! {
            () = cx.shutdown.cancelled() => break,
            sent = cx.out.send(OutBatch { payloads, cursor: None, records }) => {
                if sent.is_err() { break }
            }
        }
    }
    // Bounded: a hung server cannot hold the exit.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(300), monitor.close()).await;
    Ok(())
}
