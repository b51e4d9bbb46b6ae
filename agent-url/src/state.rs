//! A target's state, UP, PENDING, DOWN or DEGRADED, as a pure function of
//! its check outcomes; no clock, no IO, so every path is unit-tested.
//!
//! PENDING is a failure not yet confirmed (fewer than `.fail_after` in a
//! row); it is never announced. A change between the announced states (UP,
//! DOWN, DEGRADED) is, except the very first UP (nothing changed).

/// A target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Every condition held.
    Up,
    /// Failing, fewer than `.fail_after` times in a row.
    Pending,
    /// Failed `.fail_after` times in a row.
    Down,
    /// Answers and passes, but slower than `.expect.max_time`.
    Degraded,
}

impl TargetState {
    /// Lower-case name, for events and the `test` table.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Up => "up",
            TargetState::Pending => "pending",
            TargetState::Down => "down",
            TargetState::Degraded => "degraded",
        }
    }
}

/// How one check went, as far as state is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every condition held.
    Pass,
    /// Every condition held but the time.
    Slow,
    /// Some condition failed.
    Fail,
}

/// An announced change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The announced state before (`None`: the target had none yet).
    pub from: Option<TargetState>,
    /// The state now.
    pub to: TargetState,
}

/// One target's state machine.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    state: Option<TargetState>,
    announced: Option<TargetState>,
    failures: u32,
}

impl Tracker {
    /// The current state (`None` before the first check).
    pub fn state(&self) -> Option<TargetState> {
        self.state
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Takes one outcome; returns the change to announce, if any.
    pub fn observe(&mut self, outcome: Outcome, fail_after: u32) -> Option<Change> {
        let next = match outcome {
            Outcome::Pass => {
                self.failures = 0;
                TargetState::Up
            }
            Outcome::Slow => {
                self.failures = 0;
                TargetState::Degraded
            }
            Outcome::Fail => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= fail_after.max(1) || self.state == Some(TargetState::Down) {
                    TargetState::Down
                } else {
                    TargetState::Pending
                }
            }
        };
        self.state = Some(next);
        if next == TargetState::Pending || self.announced == Some(next) {
            return None;
        }
        let from = self.announced.replace(next);
        if from.is_none() && next == TargetState::Up {
            return None;
        }
        Some(Change { from, to: next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::*;
    use TargetState::*;

    fn run(outcomes: &[Outcome], fail_after: u32) -> (Vec<TargetState>, Vec<Change>) {
        let mut t = Tracker::default();
        let mut states = Vec::new();
        let mut changes = Vec::new();
        for o in outcomes {
            changes.extend(t.observe(*o, fail_after));
            states.extend(t.state());
        }
        (states, changes)
    }

    #[test]
    fn a_failure_is_pending_until_fail_after_then_down_then_up() {
        let (states, changes) = run(&[Pass, Fail, Fail, Fail, Pass], 2);
        assert_eq!(states, [Up, Pending, Down, Down, Up]);
        assert_eq!(
            changes,
            [
                Change {
                    from: Some(Up),
                    to: Down
                },
                Change {
                    from: Some(Down),
                    to: Up
                }
            ]
        );
    }

    #[test]
    fn one_blip_below_fail_after_announces_nothing() {
        let (states, changes) = run(&[Pass, Fail, Pass, Fail, Pass], 2);
        assert_eq!(states, [Up, Pending, Up, Pending, Up]);
        assert!(changes.is_empty());
    }

    #[test]
    fn fail_after_one_is_down_at_once_and_a_first_failure_is_announced() {
        let (states, changes) = run(&[Fail], 1);
        assert_eq!(states, [Down]);
        assert_eq!(
            changes,
            [Change {
                from: None,
                to: Down
            }]
        );
        let (_, changes) = run(&[Fail, Fail, Fail], 3);
        assert_eq!(
            changes,
            [Change {
                from: None,
                to: Down
            }]
        );
    }

    #[test]
    fn slow_answers_degrade_and_recover() {
        let (states, changes) = run(&[Pass, Slow, Slow, Pass, Slow, Fail, Fail], 2);
        assert_eq!(
            states,
            [Up, Degraded, Degraded, Up, Degraded, Pending, Down]
        );
        assert_eq!(
            changes,
            [
                Change {
                    from: Some(Up),
                    to: Degraded
                },
                Change {
                    from: Some(Degraded),
                    to: Up
                },
                Change {
                    from: Some(Up),
                    to: Degraded
                },
                Change {
                    from: Some(Degraded),
                    to: Down
                },
            ]
        );
    }

    #[test]
    fn a_slow_answer_ends_the_failure_count() {
        let mut t = Tracker::default();
        t.observe(Fail, 3);
        t.observe(Fail, 3);
        t.observe(Slow, 3);
        assert_eq!(t.failures(), 0);
        t.observe(Fail, 3);
        assert_eq!(t.state(), Some(Pending));
    }
}
