//! When each target is due: a fixed-rate grid per target, anchored at a
//! stable offset from the target's name, plus a small jitter per check that
//! never accumulates. Pure arithmetic on instants; the loop in
//! [`crate::source`] keeps the due times in one heap, so thousands of
//! targets cost one timer, not a task each.
//!
//! Invariant: the grid does not drift. A check's due time is
//! `anchor + k * period + jitter_k`, whatever the checks took; a check that
//! overran skips the slots it missed rather than bunching them up.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::time::Instant;

/// A stable hash of a target's name (FNV-1a: the same on every run and
/// every build, unlike std's `DefaultHasher` which may change).
pub fn stable_hash(name: &str) -> u64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    name.hash(&mut h);
    h.finish()
}

/// The offset of `name` within `period`: spreads targets over the period.
pub fn offset(name: &str, period: Duration) -> Duration {
    let nanos = period.as_nanos().max(1) as u64;
    Duration::from_nanos(stable_hash(name) % nanos)
}

/// The most jitter added to one check: 1 % of the period, at most 500 ms.
pub fn max_jitter(period: Duration) -> Duration {
    (period / 100).min(Duration::from_millis(500))
}

/// How close together checks are started, at most: a check due between two
/// ticks starts on the later one, with every other check due by then. One
/// wake-up of the loop then serves all of them, and their connections'
/// waits overlap; on a loaded machine each wake-up of a sleeping thread
/// costs more CPU than a plain HTTP check's own work.
pub const WAKE_TICK: Duration = Duration::from_millis(50);

/// The tick of a target checked every `period`: [`WAKE_TICK`], or its
/// [`max_jitter`] when that is shorter, so the wait for a tick is never
/// longer than the jitter a check may have anyway.
pub fn tick(period: Duration) -> Duration {
    WAKE_TICK.min(max_jitter(period))
}

/// The first tick of `tick` counted from `epoch` that is not before `at`
/// (`at` itself when `tick` is zero or `at` precedes `epoch`).
pub fn on_tick(epoch: Instant, at: Instant, tick: Duration) -> Instant {
    let step = tick.as_nanos();
    if step == 0 || at <= epoch {
        return at;
    }
    let since = (at - epoch).as_nanos();
    let ticks = since.div_ceil(step);
    let nanos = ticks.saturating_mul(step);
    epoch + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX / 2))
}

/// One target's grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Slot 0.
    pub anchor: Instant,
    /// Time between slots.
    pub period: Duration,
    /// The slot last used.
    pub slot: u64,
}

impl Grid {
    /// The grid of `name` starting at `start`: its first slot is at the
    /// name's offset within the period.
    pub fn new(name: &str, start: Instant, period: Duration) -> Grid {
        Grid {
            anchor: start + offset(name, period),
            period,
            slot: 0,
        }
    }

    /// A grid of `period` whose next slot is one `period` after `now`
    /// (a target that changed state keeps its rhythm from here).
    pub fn restart(now: Instant, period: Duration) -> Grid {
        Grid {
            anchor: now,
            period,
            slot: 0,
        }
    }

    /// The start of slot `slot`.
    pub fn at(&self, slot: u64) -> Instant {
        let nanos = self.period.as_nanos().saturating_mul(u128::from(slot));
        self.anchor + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX / 2))
    }

    /// Moves to the first slot after the current one that is not before
    /// `now`, and returns its start.
    pub fn advance(&mut self, now: Instant) -> Instant {
        let mut next = self.slot + 1;
        let at = self.at(next);
        if at < now {
            let behind = (now - self.anchor).as_nanos() / self.period.as_nanos().max(1);
            next = u64::try_from(behind).unwrap_or(u64::MAX / 2) + 1;
        }
        self.slot = next;
        self.at(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stable_and_spread() {
        let p = Duration::from_secs(60);
        assert_eq!(offset("home", p), offset("home", p));
        let mut buckets = [0u32; 6];
        for i in 0..6000 {
            let o = offset(&format!("target-{i}"), p);
            assert!(o < p);
            buckets[(o.as_secs() / 10) as usize] += 1;
        }
        // 1,000 expected per 10 s bucket.
        assert!(
            buckets.iter().all(|b| (850..1150).contains(b)),
            "{buckets:?}"
        );
    }

    #[test]
    fn the_grid_does_not_drift_and_skips_missed_slots() {
        let start = Instant::now();
        let p = Duration::from_secs(10);
        let mut g = Grid {
            anchor: start,
            period: p,
            slot: 0,
        };
        // Checks that took 3 s each do not push the grid.
        assert_eq!(g.advance(start + Duration::from_secs(3)), start + p);
        assert_eq!(g.advance(start + p + Duration::from_secs(3)), start + 2 * p);
        // A check that overran by 25 s lands on the next free slot.
        assert_eq!(g.advance(start + Duration::from_secs(45)), start + 5 * p);
        assert_eq!(g.slot, 5);
    }

    #[test]
    fn due_times_move_to_the_next_tick_never_earlier_and_never_a_tick_late() {
        let epoch = Instant::now();
        let tick = WAKE_TICK;
        let ms = Duration::from_millis;
        assert_eq!(on_tick(epoch, epoch + ms(120), tick), epoch + ms(150));
        assert_eq!(on_tick(epoch, epoch + ms(150), tick), epoch + ms(150));
        assert_eq!(on_tick(epoch, epoch + ms(151), tick), epoch + ms(200));
        assert_eq!(on_tick(epoch, epoch + ms(7), Duration::ZERO), epoch + ms(7));
        // Short intervals wait at most their jitter for a tick.
        assert_eq!(tick_for_test(Duration::from_secs(60)), ms(50));
        assert_eq!(tick_for_test(Duration::from_secs(2)), ms(20));
        for n in 0..1000u64 {
            let at = epoch + Duration::from_micros(n * 997);
            let moved = on_tick(epoch, at, tick);
            assert!(moved >= at && moved - at < tick, "{n}");
        }
    }

    fn tick_for_test(period: Duration) -> Duration {
        super::tick(period)
    }

    #[test]
    fn jitter_is_small() {
        assert_eq!(
            max_jitter(Duration::from_secs(60)),
            Duration::from_millis(500)
        );
        assert_eq!(
            max_jitter(Duration::from_secs(10)),
            Duration::from_millis(100)
        );
    }
}
