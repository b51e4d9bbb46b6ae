//! One alert's state machine: pending while its condition holds for less
//! than the rule's `for`, firing, resolved. Pure (the caller passes the
//! time), so every path is tested without a clock or a store.
//!
//! Invariants: an alert notifies once when it fires and once when it
//! resolves; while it fires it notifies again only after the rule's
//! re-notify interval (never when that is 0); while its agent is paused
//! nothing notifies, and once the pause ends it tells what changed: a
//! firing it kept quiet, and the resolve of a firing told before the
//! pause (a "resolve owed"); a resolve is told only of a firing that was
//! told.

/// What the evaluator saw of an alert's condition at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    /// The condition holds, seen in data of time `at_ms`.
    Active {
        /// The data's time (a point's, an event's), unix ms.
        at_ms: i64,
    },
    /// The condition does not hold.
    Inactive,
    /// Nothing to say (no fresh data): the alert keeps its state.
    Unknown,
}

/// An alert's memory between ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertMemory {
    /// Since when the condition holds, while not yet firing.
    pub pending_since_ms: Option<i64>,
    /// Since when it fires.
    pub firing_since_ms: Option<i64>,
    /// When it last notified while firing (`None`: it fires unnoticed,
    /// its agent was paused).
    pub last_notified_ms: Option<i64>,
    /// A firing told before a pause resolved during it: its resolve is
    /// told at the first step after the pause.
    pub resolve_owed: bool,
}

/// What a tick did to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It started firing.
    Fired {
        /// Whether a notification goes out.
        notify: bool,
    },
    /// It still fires and is told again (re-notify interval, or the end of
    /// a pause).
    Reminded,
    /// It stopped firing.
    Resolved {
        /// Whether a notification goes out.
        notify: bool,
    },
}

impl Change {
    /// Whether the change sends notifications.
    pub fn notifies(self) -> bool {
        match self {
            Change::Fired { notify } | Change::Resolved { notify } => notify,
            Change::Reminded => true,
        }
    }

    /// `firing` or `resolved`: the alert's state after the change.
    pub fn state(self) -> &'static str {
        match self {
            Change::Fired { .. } | Change::Reminded => "firing",
            Change::Resolved { .. } => "resolved",
        }
    }
}

/// A rule's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the condition must hold before it fires, ms.
    pub for_ms: i64,
    /// How often a firing alert is told again, ms (0: never).
    pub renotify_ms: i64,
}

impl AlertMemory {
    /// Whether it fires.
    pub fn firing(&self) -> bool {
        self.firing_since_ms.is_some()
    }

    /// Whether the evaluator must keep it (it fires, waits, or owes a
    /// resolve).
    pub fn worth_keeping(&self) -> bool {
        self.firing() || self.pending_since_ms.is_some() || self.resolve_owed
    }

    /// Whether an `Active` observation at `at_ms` would make it fire
    /// (before a costly check confirms the condition held all along).
    pub fn would_fire(&self, at_ms: i64, timing: Timing) -> bool {
        !self.firing() && at_ms - self.pending_since_ms.unwrap_or(at_ms) >= timing.for_ms
    }

    /// The condition was seen not to hold at `at_ms`: it is pending again
    /// from just after.
    pub fn restart_pending(&mut self, at_ms: i64) {
        if !self.firing() {
            self.pending_since_ms = Some(at_ms + 1);
        }
    }

    /// Applies one observation at `now_ms`.
    pub fn step(
        &mut self,
        observed: Observed,
        now_ms: i64,
        timing: Timing,
        paused: bool,
    ) -> Option<Change> {
        if self.resolve_owed && !paused {
            // The pause is over: its resolve first, whatever is seen now
            // (the next step handles that).
            self.resolve_owed = false;
            return Some(Change::Resolved { notify: true });
        }
        match observed {
            Observed::Unknown => None,
            Observed::Inactive => {
                self.pending_since_ms = None;
                let was_told = self.last_notified_ms.is_some();
                self.firing_since_ms.take()?;
                self.last_notified_ms = None;
                if was_told && paused {
                    self.resolve_owed = true;
                }
                Some(Change::Resolved {
                    notify: was_told && !paused,
                })
            }
            Observed::Active { at_ms } => {
                if self.firing() {
                    if paused {
                        return None;
                    }
                    let due = match self.last_notified_ms {
                        None => true,
                        Some(last) => timing.renotify_ms > 0 && now_ms - last >= timing.renotify_ms,
                    };
                    if due {
                        self.last_notified_ms = Some(now_ms);
                        return Some(Change::Reminded);
                    }
                    return None;
                }
                let since = *self.pending_since_ms.get_or_insert(at_ms);
                if at_ms - since < timing.for_ms {
                    return None;
                }
                self.pending_since_ms = None;
                self.firing_since_ms = Some(now_ms);
                self.last_notified_ms = (!paused).then_some(now_ms);
                Some(Change::Fired { notify: !paused })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T: Timing = Timing {
        for_ms: 60_000,
        renotify_ms: 0,
    };

    fn active(at_ms: i64) -> Observed {
        Observed::Active { at_ms }
    }

    #[test]
    fn fires_once_the_condition_held_for_the_duration_then_resolves() {
        let mut m = AlertMemory::default();
        assert_eq!(m.step(active(0), 0, T, false), None);
        assert_eq!(m.step(active(30_000), 30_000, T, false), None);
        assert_eq!(
            m.step(active(60_000), 60_000, T, false),
            Some(Change::Fired { notify: true })
        );
        assert_eq!(m.step(active(90_000), 90_000, T, false), None, "no second");
        assert_eq!(m.step(Observed::Unknown, 95_000, T, false), None);
        assert_eq!(
            m.step(Observed::Inactive, 100_000, T, false),
            Some(Change::Resolved { notify: true })
        );
        assert_eq!(m.step(Observed::Inactive, 101_000, T, false), None);
    }

    #[test]
    fn a_dip_restarts_the_wait() {
        let mut m = AlertMemory::default();
        m.step(active(0), 0, T, false);
        m.step(Observed::Inactive, 50_000, T, false);
        assert_eq!(m.step(active(60_000), 60_000, T, false), None);
        assert_eq!(
            m.step(active(120_000), 120_000, T, false),
            Some(Change::Fired { notify: true })
        );
    }

    #[test]
    fn renotifies_after_the_interval_only() {
        let timing = Timing {
            for_ms: 0,
            renotify_ms: 10_000,
        };
        let mut m = AlertMemory::default();
        assert_eq!(
            m.step(active(0), 0, timing, false),
            Some(Change::Fired { notify: true })
        );
        assert_eq!(m.step(active(9_999), 9_999, timing, false), None);
        assert_eq!(
            m.step(active(10_000), 10_000, timing, false),
            Some(Change::Reminded)
        );
        assert_eq!(m.step(active(15_000), 15_000, timing, false), None);
    }

    #[test]
    fn a_pause_keeps_it_quiet_and_its_end_tells_what_still_fires() {
        let timing = Timing {
            for_ms: 0,
            renotify_ms: 0,
        };
        let mut m = AlertMemory::default();
        assert_eq!(
            m.step(active(0), 0, timing, true),
            Some(Change::Fired { notify: false })
        );
        assert_eq!(m.step(active(1), 1, timing, true), None);
        assert_eq!(m.step(active(2), 2, timing, false), Some(Change::Reminded));
        assert_eq!(m.step(active(3), 3, timing, false), None);
        // Fired while paused and resolved while paused: nobody hears.
        let mut quiet = AlertMemory::default();
        quiet.step(active(0), 0, timing, true);
        assert_eq!(
            quiet.step(Observed::Inactive, 1, timing, false),
            Some(Change::Resolved { notify: false }),
            "a firing never told is not resolved aloud"
        );
    }

    #[test]
    fn a_resolve_during_a_pause_is_told_when_the_pause_ends() {
        let timing = Timing {
            for_ms: 0,
            renotify_ms: 0,
        };
        let mut m = AlertMemory::default();
        assert_eq!(
            m.step(active(0), 0, timing, false),
            Some(Change::Fired { notify: true })
        );
        assert_eq!(
            m.step(Observed::Inactive, 1, timing, true),
            Some(Change::Resolved { notify: false }),
            "quiet while paused"
        );
        assert!(m.worth_keeping(), "the owed resolve is remembered");
        assert_eq!(m.step(Observed::Inactive, 2, timing, true), None);
        assert_eq!(
            m.step(Observed::Unknown, 3, timing, false),
            Some(Change::Resolved { notify: true }),
            "told once the pause ends"
        );
        assert_eq!(m.step(Observed::Inactive, 4, timing, false), None, "once");
        assert!(!m.worth_keeping());
    }

    proptest! {
        /// Over any sequence of observations and pauses: notifications
        /// alternate firing, resolved (reminders only with a re-notify
        /// interval or of a firing a pause kept quiet), a resolve is only
        /// told after a told firing, and a told firing resolved during a
        /// pause is resolved aloud at the first step after it.
        #[test]
        fn notifications_alternate(
            steps in prop::collection::vec((0u8..3, any::<bool>(), 1i64..20_000), 1..200),
            for_ms in 0i64..30_000,
        ) {
            let timing = Timing { for_ms, renotify_ms: 0 };
            let mut m = AlertMemory::default();
            let mut now = 0;
            let mut told_firing = false;
            let mut owed = false;
            for (kind, paused, dt) in steps {
                now += dt;
                let observed = match kind {
                    0 => Observed::Active { at_ms: now },
                    1 => Observed::Inactive,
                    _ => Observed::Unknown,
                };
                let change = m.step(observed, now, timing, paused);
                if paused {
                    prop_assert!(change.is_none_or(|c| !c.notifies()), "{change:?} while paused");
                }
                match change {
                    Some(Change::Fired { notify: true }) => {
                        prop_assert!(!told_firing && !owed);
                        told_firing = true;
                    }
                    Some(Change::Reminded) => {
                        prop_assert!(!told_firing, "reminded of a firing already told");
                        prop_assert!(!owed, "reminded before the owed resolve");
                        told_firing = true;
                    }
                    Some(Change::Resolved { notify }) if owed && !paused => {
                        prop_assert!(notify, "the owed resolve is told");
                        owed = false;
                    }
                    Some(Change::Resolved { notify }) => {
                        prop_assert_eq!(notify, told_firing && !paused);
                        owed |= told_firing && paused;
                        told_firing = false;
                    }
                    Some(Change::Fired { notify: false }) | None => {}
                }
                if !paused {
                    prop_assert!(!owed, "a resolve still owed after the pause");
                }
                prop_assert_eq!(m.firing(), m.firing_since_ms.is_some());
            }
        }
    }
}
