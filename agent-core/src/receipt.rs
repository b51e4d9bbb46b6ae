//! Delivery receipts: what became of what a source sent (after Vector's
//! end-to-end acknowledgements). A send gets a [`Receipt`]; the spool and
//! the transport hold its [`Tracker`] and resolve it, in two stages:
//! spooled (or dropped before it could be), then settled (acked by the
//! collector, or dropped, with why).
//!
//! Invariants:
//! - A receipt never blocks or leaks anything: a source that does not care
//!   drops it, and the tracker's updates then go nowhere.
//! - A send split into several batches settles once every part has, and
//!   is dropped if any part was.
//! - A tracker that goes away unresolved (the agent stopped with the batch
//!   still spooled) resolves its receipt as dropped for [`DropReason::Shutdown`]:
//!   it is not lost, but this process will never learn its fate.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Why a batch left the spool without being stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The spool was full; the oldest batches made room.
    SpoolFull,
    /// The collector refused it for good (its `Ack.error`).
    Refused(String),
    /// Larger than a batch may be.
    TooLarge,
    /// Its spool file was damaged, written by an older agent, or could not
    /// be written at all.
    Damaged,
    /// The agent stopped before it could be spooled (or, for a receipt,
    /// before its fate was known).
    Shutdown,
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::SpoolFull => f.write_str("spool full"),
            DropReason::Refused(why) => write!(f, "refused by the collector: {why}"),
            DropReason::TooLarge => f.write_str("larger than a batch may be"),
            DropReason::Damaged => f.write_str("spool file damaged or unwritable"),
            DropReason::Shutdown => f.write_str("agent stopped"),
        }
    }
}

/// What finally became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// The collector stored it (or had already).
    Acked,
    /// It will never be stored.
    Dropped(DropReason),
}

#[derive(Debug, Clone, Default)]
struct Stage {
    /// `Some` once every part is spooled or was dropped before it could be.
    spooled: Option<Result<(), DropReason>>,
    /// `Some` once every part is settled.
    fate: Option<Fate>,
}

#[derive(Debug)]
struct Parts {
    unspooled: usize,
    unsettled: usize,
    dropped_unspooled: Option<DropReason>,
    dropped: Option<DropReason>,
}

/// The spool's and transport's side of a receipt: one per send, shared by
/// the batches it was split into.
#[derive(Debug)]
pub struct Tracker {
    parts: Mutex<Parts>,
    tx: watch::Sender<Stage>,
}

/// A source's side: awaits what became of one send.
#[derive(Debug)]
pub struct Receipt {
    rx: watch::Receiver<Stage>,
}

impl Tracker {
    /// A tracker for a send of one batch (see [`Tracker::expect_parts`])
    /// and its receipt.
    pub fn new() -> (Arc<Tracker>, Receipt) {
        let (tx, rx) = watch::channel(Stage::default());
        let tracker = Tracker {
            parts: Mutex::new(Parts {
                unspooled: 1,
                unsettled: 1,
                dropped_unspooled: None,
                dropped: None,
            }),
            tx,
        };
        (Arc::new(tracker), Receipt { rx })
    }

    /// The send became `n` batches (at least one).
    pub fn expect_parts(&self, n: usize) {
        let mut parts = self.lock();
        parts.unspooled = n.max(1);
        parts.unsettled = n.max(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One part is in the spool.
    pub fn part_spooled(&self) {
        let mut parts = self.lock();
        parts.unspooled = parts.unspooled.saturating_sub(1);
        self.publish(&parts);
    }

    /// One part was dropped before it could be spooled.
    pub fn part_dropped_unspooled(&self, reason: DropReason) {
        let mut parts = self.lock();
        parts.unspooled = parts.unspooled.saturating_sub(1);
        parts.unsettled = parts.unsettled.saturating_sub(1);
        parts.dropped_unspooled.get_or_insert(reason.clone());
        parts.dropped.get_or_insert(reason);
        self.publish(&parts);
    }

    /// One spooled part is settled.
    pub fn part_settled(&self, fate: Fate) {
        let mut parts = self.lock();
        parts.unsettled = parts.unsettled.saturating_sub(1);
        if let Fate::Dropped(reason) = fate {
            parts.dropped.get_or_insert(reason);
        }
        self.publish(&parts);
    }

    fn publish(&self, parts: &Parts) {
        let spooled = (parts.unspooled == 0).then(|| match &parts.dropped_unspooled {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        });
        let fate = (parts.unsettled == 0).then(|| match &parts.dropped {
            None => Fate::Acked,
            Some(reason) => Fate::Dropped(reason.clone()),
        });
        // Works with no receiver left: a source may not care.
        self.tx.send_replace(Stage { spooled, fate });
    }
}

impl Receipt {
    /// Resolves once the send is in the spool (`Ok`), or was dropped
    /// before it could be (`Err` with why).
    pub async fn spooled(&mut self) -> Result<(), DropReason> {
        match self.rx.wait_for(|s| s.spooled.is_some()).await {
            Ok(stage) => stage.spooled.clone().unwrap_or(Ok(())),
            Err(_) => Err(DropReason::Shutdown),
        }
    }

    /// Resolves once the collector has stored the send, or it was dropped.
    pub async fn settled(mut self) -> Fate {
        match self.rx.wait_for(|s| s.fate.is_some()).await {
            Ok(stage) => stage.fate.clone().unwrap_or(Fate::Acked),
            Err(_) => Fate::Dropped(DropReason::Shutdown),
        }
    }

    /// The fate, if already known.
    pub fn fate(&self) -> Option<Fate> {
        self.rx.borrow().fate.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_receipt_resolves_in_two_stages() {
        let (tracker, mut receipt) = Tracker::new();
        assert_eq!(receipt.fate(), None);
        tracker.part_spooled();
        assert_eq!(receipt.spooled().await, Ok(()));
        assert_eq!(receipt.fate(), None, "spooled is not settled");
        tracker.part_settled(Fate::Acked);
        assert_eq!(receipt.settled().await, Fate::Acked);
    }

    #[tokio::test]
    async fn a_split_send_settles_when_every_part_has_and_is_dropped_if_one_was() {
        let (tracker, mut receipt) = Tracker::new();
        tracker.expect_parts(3);
        tracker.part_spooled();
        tracker.part_spooled();
        assert_eq!(
            receipt.rx.borrow().spooled,
            None,
            "one part still unspooled"
        );
        tracker.part_spooled();
        assert_eq!(receipt.spooled().await, Ok(()));
        tracker.part_settled(Fate::Acked);
        tracker.part_settled(Fate::Dropped(DropReason::SpoolFull));
        assert_eq!(receipt.fate(), None, "the last part is pending");
        tracker.part_settled(Fate::Acked);
        assert_eq!(
            receipt.settled().await,
            Fate::Dropped(DropReason::SpoolFull)
        );
    }

    #[tokio::test]
    async fn dropped_before_spooling_resolves_both_stages() {
        let (tracker, mut receipt) = Tracker::new();
        tracker.part_dropped_unspooled(DropReason::TooLarge);
        assert_eq!(receipt.spooled().await, Err(DropReason::TooLarge));
        assert_eq!(receipt.settled().await, Fate::Dropped(DropReason::TooLarge));
    }

    #[tokio::test]
    async fn a_tracker_gone_unresolved_reads_as_shutdown_and_a_dropped_receipt_blocks_nothing() {
        let (tracker, receipt) = Tracker::new();
        drop(tracker);
        assert_eq!(receipt.settled().await, Fate::Dropped(DropReason::Shutdown));
        let (tracker, receipt) = Tracker::new();
        drop(receipt);
        tracker.part_spooled();
        tracker.part_settled(Fate::Acked);
    }
}
