//! The delivery loop: takes due notifications from the store's queue,
//! sends each once, records the attempt and when to try again (backoff
//! from 1 s doubling to 5 min, at most [`MAX_ATTEMPTS`]).
//!
//! The queue is the store, so a notification queued before a crash (even
//! `kill -9`) is sent after the restart. A notification whose send was cut
//! by shutdown is left queued and sent again: at least once, never lost.
//! Bounded: at most [`BATCH`] notifications per round, sent side by side,
//! each within [`super::SEND_TIMEOUT`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::send;
use crate::alerts::{Attempt, Notification};
use crate::store::Store;

/// Attempts before a notification is given up.
pub const MAX_ATTEMPTS: u32 = 12;
/// Notifications sent per round at most.
const BATCH: i64 = 16;
/// How often the queue is looked at when nobody wakes it.
const POLL: Duration = Duration::from_secs(1);
const FIRST_RETRY_MS: i64 = 1000;
const MAX_RETRY_MS: i64 = 300_000;

/// How long after attempt `attempts` (from 1) the next one is.
pub fn backoff_ms(attempts: u32) -> i64 {
    let shift = attempts.saturating_sub(1).min(20);
    (FIRST_RETRY_MS << shift).min(MAX_RETRY_MS)
}

/// Sends `notification` once; the attempt to record.
pub async fn attempt(notification: &Notification, now_ms: i64) -> Attempt {
    let started = Instant::now();
    let result = send(&notification.config, &notification.payload).await;
    let elapsed_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let number = notification.attempts + 1;
    match result {
        Ok(status) => Attempt {
            notification_id: notification.id,
            time_ms: now_ms,
            elapsed_ms,
            ok: true,
            status: Some(status),
            error: None,
            retry_at_ms: None,
        },
        Err(e) => {
            let retry = !e.permanent && number < MAX_ATTEMPTS;
            Attempt {
                notification_id: notification.id,
                time_ms: now_ms,
                elapsed_ms,
                ok: false,
                status: e.status,
                error: Some(e.message),
                retry_at_ms: retry.then(|| crate::now_ms() + backoff_ms(number)),
            }
        }
    }
}

/// Delivers queued notifications until `shutdown`; `wake` makes it look at
/// once (the evaluator queued something).
pub async fn run<S: Store>(store: Arc<S>, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
        let due = match store.due_notifications(crate::now_ms(), BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the notification queue.");
                continue;
            }
        };
        // Sent side by side, so one slow channel does not hold the
        // others back: a round takes at most one SEND_TIMEOUT.
        let mut sending = tokio::task::JoinSet::new();
        for notification in due {
            sending.spawn(async move {
                let result = attempt(&notification, crate::now_ms()).await;
                (notification, result)
            });
        }
        loop {
            let done = tokio::select! {
                // Dropping the set aborts what is in flight; those rows
                // stay queued and are sent again.
                () = shutdown.cancelled() => return,
                d = sending.join_next() => d,
            };
            let Some(done) = done else { break };
            let Ok((notification, result)) = done else {
                continue;
            };
            if result.ok {
                tracing::info!(
                    notification = notification.id,
                    channel = %notification.channel_name,
                    attempt = notification.attempts + 1,
                    "Notification delivered."
                );
            } else {
                tracing::warn!(
                    notification = notification.id,
                    channel = %notification.channel_name,
                    attempt = notification.attempts + 1,
                    error = result.error.as_deref().unwrap_or(""),
                    retry = result.retry_at_ms.is_some(),
                    "Notification not delivered."
                );
            }
            if let Err(e) = store.record_attempt(&result).await {
                tracing::warn!(error = %e, "Cannot record a delivery attempt.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_second_to_five_minutes() {
        let waits: Vec<i64> = (1..=12).map(backoff_ms).collect();
        assert_eq!(&waits[..4], &[1000, 2000, 4000, 8000]);
        assert_eq!(waits[8], 256_000);
        assert!(waits[9..].iter().all(|&w| w == MAX_RETRY_MS));
    }
}
