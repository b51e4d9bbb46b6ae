//! Threshold events: CPU, memory or a filesystem crossing its limit for
//! long enough raises one event (with a process snapshot), and clearing it
//! for as long raises one recovery event.
//!
//! A pure state machine: readings in, transitions out, no clock of its own
//! (the caller passes `now`), so every path is unit-tested.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a threshold watches.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    /// Identity of the threshold: `cpu`, `mem`, `disk:/var`.
    pub key: String,
    /// What people call it: `CPU usage`, `Memory used`, `Disk /var used`.
    pub label: String,
    /// The current value, %.
    pub value: f64,
    /// The limit, %.
    pub limit: f64,
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Crossed for the hold time.
    Exceeded {
        /// What.
        watched: Watched,
        /// Whether to take a process snapshot (not within the cooldown).
        snapshot: bool,
    },
    /// Clear again for the hold time.
    Recovered {
        /// What.
        watched: Watched,
    },
}

#[derive(Debug, Default)]
struct State {
    over: u32,
    under: u32,
    raised: bool,
    last_snapshot: Option<Instant>,
}

/// The state of every threshold.
#[derive(Debug)]
pub struct Thresholds {
    samples_needed: u32,
    cooldown: Duration,
    states: HashMap<String, State>,
}

impl Thresholds {
    /// Thresholds that need `hold` (at `interval` per reading) to change
    /// state, and snapshot at most once per `cooldown`.
    pub fn new(hold: Duration, interval: Duration, cooldown: Duration) -> Thresholds {
        let needed = hold.as_secs_f64() / interval.as_secs_f64().max(0.001);
        Thresholds {
            samples_needed: (needed.ceil() as u32).max(1),
            cooldown,
            states: HashMap::new(),
        }
    }

    /// How many consecutive readings change a state.
    pub fn samples_needed(&self) -> u32 {
        self.samples_needed
    }

    /// Feeds one reading of each watched value.
    pub fn observe(&mut self, now: Instant, readings: Vec<Watched>) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for watched in readings {
            let state = self.states.entry(watched.key.clone()).or_default();
            if watched.value >= watched.limit {
                state.over += 1;
                state.under = 0;
                if !state.raised && state.over >= self.samples_needed {
                    state.raised = true;
                    let snapshot = state
                        .last_snapshot
                        .is_none_or(|t| now.duration_since(t) >= self.cooldown);
                    if snapshot {
                        state.last_snapshot = Some(now);
                    }
                    transitions.push(Transition::Exceeded { watched, snapshot });
                }
            } else {
                state.under += 1;
                state.over = 0;
                if state.raised && state.under >= self.samples_needed {
                    state.raised = false;
                    transitions.push(Transition::Recovered { watched });
                }
            }
        }
        transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(value: f64) -> Vec<Watched> {
        vec![Watched {
            key: "cpu".into(),
            label: "CPU usage".into(),
            value,
            limit: 90.0,
        }]
    }

    fn kinds(t: &[Transition]) -> Vec<&'static str> {
        t.iter()
            .map(|t| match t {
                Transition::Exceeded { snapshot: true, .. } => "exceeded+snapshot",
                Transition::Exceeded {
                    snapshot: false, ..
                } => "exceeded",
                Transition::Recovered { .. } => "recovered",
            })
            .collect()
    }

    #[test]
    fn crossing_for_the_hold_time_raises_once_and_clearing_recovers_once() {
        let start = Instant::now();
        let mut t = Thresholds::new(
            Duration::from_secs(15),
            Duration::from_secs(5),
            Duration::from_secs(600),
        );
        assert_eq!(t.samples_needed(), 3);
        let mut seen = Vec::new();
        let values = [
            95.0, 95.0, 50.0, 95.0, 95.0, 95.0, 99.0, 99.0, 10.0, 10.0, 10.0, 10.0,
        ];
        for (i, v) in values.into_iter().enumerate() {
            let now = start + Duration::from_secs(5 * i as u64);
            seen.push(kinds(&t.observe(now, cpu(v))));
        }
        let flat: Vec<(usize, &str)> = seen
            .iter()
            .enumerate()
            .flat_map(|(i, k)| k.iter().map(move |k| (i, *k)))
            .collect();
        assert_eq!(flat, [(5, "exceeded+snapshot"), (10, "recovered")]);
    }

    #[test]
    fn a_flapping_host_gets_no_second_snapshot_within_the_cooldown() {
        let start = Instant::now();
        let mut t = Thresholds::new(
            Duration::from_secs(5),
            Duration::from_secs(5),
            Duration::from_secs(60),
        );
        let mut out = Vec::new();
        for i in 0..20u64 {
            let v = if i % 2 == 0 { 95.0 } else { 10.0 };
            out.extend(kinds(
                &t.observe(start + Duration::from_secs(5 * i), cpu(v)),
            ));
        }
        let snapshots = out.iter().filter(|k| **k == "exceeded+snapshot").count();
        assert_eq!(snapshots, 2, "one at the start, one after 60 s: {out:?}");
        assert_eq!(out.iter().filter(|k| **k == "recovered").count(), 10);
    }

    #[test]
    fn each_filesystem_has_its_own_state() {
        let now = Instant::now();
        let mut t = Thresholds::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let disk = |mount: &str, value| Watched {
            key: format!("disk:{mount}"),
            label: format!("Disk {mount} used"),
            value,
            limit: 90.0,
        };
        let out = t.observe(now, vec![disk("/", 95.0), disk("/var", 10.0)]);
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], Transition::Exceeded { watched, .. } if watched.key == "disk:/"));
    }
}
