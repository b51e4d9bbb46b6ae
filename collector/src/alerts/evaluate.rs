//! The evaluator: on each tick, reads every enabled rule, observes its
//! condition with a bounded number of store reads (one per rule, but one
//! per project for all the threshold rules' series, and one per firing
//! threshold to confirm it), steps each alert's state machine
//! ([`super::state`]), and records the changes with their notifications in
//! one transaction. Then it tells the `stream` subscribers and wakes the
//! delivery loop.
//!
//! What it reads, by condition: thresholds the newest point of each series
//! (`MetricReads::latest_of`, one read per project for every metric the
//! rules name; a firing is confirmed against every point of
//! the `for` window, so a dip between two ticks is not missed), `no data`
//! the agents' last-seen times, event rules the agents' events of the
//! window (the server agent's `threshold.exceeded`/`recovered`,
//! `host.rebooted`, `db.lock_wait`, ...), URL rules the targets' current
//! states, log rules a bounded search.
//!
//! Besides the tick, the group writer wakes it when agents' events were
//! stored (a reboot, a threshold crossed, a URL down: rare, and worth
//! telling at once), never sooner than four times the last tick's duration
//! after it, so a stream of events cannot keep it evaluating.
//!
//! Alerts that fire survive a restart (their state is stored), so a
//! restart does not tell them again; a pending `for` starts over.
//! Never sends anything itself and never blocks ingest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

use super::notify::{AgentRef, Body, RuleRef};
use super::rules::{Condition, UrlWatch};
use super::state::{AlertMemory, Change, Observed, Timing};
use super::{AlertChange, AlertKey, AlertsHub, RuleRow, Transition};
use crate::logs::LogQuery;
use crate::model::{Agent, EventQuery, UrlState, UrlTargetFilter};
use crate::store::{Range, Store, StoreError};
use crate::time_text::format_ms;

/// The least time between two evaluations woken by ingest.
pub const INGEST_WAKE_GAP: Duration = Duration::from_millis(250);
/// Most rules evaluated per tick (all projects); the rest wait a tick.
pub const MAX_RULES_PER_TICK: usize = 1000;
/// How far back a threshold's newest point may be to count.
const FRESH_MS: i64 = 300_000;

/// The newest points per (project, metric), read once per tick however
/// many rules watch the metric.
type LatestRead = HashMap<(i64, String), Arc<Vec<crate::store::Latest>>>;
/// How far back paired events (exceeded .. recovered) are read.
const PAIRED_LOOKBACK_MS: i64 = 600_000;
/// Record shapes read per log pattern rule and tick (the most frequent
/// first: a shape rarer than these counts as none).
const PATTERNS_READ: usize = 1000;
/// Most events read per event rule and tick.
const EVENTS_PER_RULE: i64 = 1000;

/// One observation of one alert.
struct Seen {
    key: AlertKey,
    observed: Observed,
    value: Option<f64>,
    message: String,
}

/// The evaluator's state between ticks.
pub struct Evaluator<S> {
    store: Arc<S>,
    hub: AlertsHub,
    memory: HashMap<AlertKey, AlertMemory>,
    /// Each rule as last seen: one whose condition (`expr`, `agent`,
    /// `product`) changed, or that was disabled or deleted, resolves its
    /// alerts (aloud, those told) through the channels it had.
    rules_seen: HashMap<i64, RuleRow>,
    /// Rules evaluated last, from here on (round robin past the cap).
    next_rule: usize,
    /// Until the first tick recorded: paired events are read back from
    /// each firing alert's start (a recovery sent while the collector was
    /// down may be older than the usual window).
    looking_back: bool,
}

impl<S> std::fmt::Debug for Evaluator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("alerts", &self.memory.len())
            .finish_non_exhaustive()
    }
}

impl<S: Store> Evaluator<S> {
    /// An evaluator that knows the firing alerts stored.
    pub async fn start(store: Arc<S>, hub: AlertsHub) -> Result<Evaluator<S>, StoreError> {
        let mut memory = HashMap::new();
        for alert in store.alerts(None, true).await? {
            memory.insert(
                alert.key.clone(),
                AlertMemory {
                    pending_since_ms: None,
                    firing_since_ms: Some(alert.since_ms),
                    last_notified_ms: alert.last_notified_ms,
                    resolve_owed: false,
                },
            );
        }
        let rules_seen = store
            .alert_rules(None)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        Ok(Evaluator {
            store,
            hub,
            memory,
            rules_seen,
            next_rule: 0,
            looking_back: true,
        })
    }

    /// Evaluates every `every`, and soon after agents' events are stored
    /// (`events_stored`; at most once per [`INGEST_WAKE_GAP`]), until
    /// `shutdown`.
    pub async fn run(
        mut self,
        every: Duration,
        events_stored: Arc<crate::store::group::GroupStats>,
        shutdown: CancellationToken,
    ) {
        let mut tick = interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // When an ingest wake may evaluate again at the earliest.
        let mut next_wake = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                () = events_stored.events_stored.notified() => {
                    // Let the rest of a burst land, and bound the rate.
                    let at = next_wake.max(tokio::time::Instant::now() + INGEST_WAKE_GAP);
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
            }
            let started = tokio::time::Instant::now();
            let evaluated = tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.tick(crate::now_ms()) => r,
            };
            next_wake = tokio::time::Instant::now() + ingest_wake_gap(started.elapsed());
            if let Err(e) = evaluated {
                tracing::warn!(error = %e, "Alert evaluation failed.");
            }
        }
    }

    /// One evaluation of every rule at `now_ms`; the changes recorded.
    /// The alerts' memory is stepped on a copy, kept only once the store
    /// holds the changes (a failed commit leaves it as it was, so the
    /// next tick tries again).
    pub async fn tick(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let all_rules = self.store.alert_rules(None).await?;
        if all_rules.is_empty() && self.memory.is_empty() {
            self.rules_seen.clear();
            return Ok(0);
        }
        let mut memory = self.memory.clone();
        let mut rules: Vec<RuleRow> = all_rules
            .iter()
            .filter(|r| r.spec.enabled)
            .cloned()
            .collect();
        if rules.len() > MAX_RULES_PER_TICK {
            let start = self.next_rule % rules.len();
            rules.rotate_left(start);
            rules.truncate(MAX_RULES_PER_TICK);
            self.next_rule = start + MAX_RULES_PER_TICK;
        }
        let paused: HashSet<i64> = self
            .store
            .pauses(None)
            .await?
            .into_iter()
            .filter(|p| p.active(now_ms))
            .map(|p| p.oid)
            .collect();
        let projects: HashMap<i64, String> = self
            .store
            .projects()
            .await?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
        let conditions: Vec<Option<Condition>> = rules
            .iter()
            .map(|r| super::rules::parse(&r.spec.name, &r.spec.expr).ok())
            .collect();
        let mut latest_read = self.read_latest(&rules, &conditions, now_ms).await?;
        let mut agents_of: HashMap<i64, HashMap<i64, Agent>> = HashMap::new();
        let mut changes = Vec::new();
        let mut transitions = Vec::new();
        self.end_alerts(
            &all_rules,
            &mut memory,
            &mut agents_of,
            &projects,
            &paused,
            now_ms,
            &mut changes,
            &mut transitions,
        )
        .await?;
        for (rule, condition) in rules.iter().zip(conditions) {
            let Some(condition) = condition else {
                continue;
            };
            let agents = self.agents_in(&mut agents_of, rule.project_id).await?;
            let in_scope: HashMap<i64, &Agent> = agents
                .values()
                .filter(|a| in_scope(rule, &condition, a))
                .map(|a| (a.oid, a))
                .collect();
            let seen = self
                .observe(rule, &condition, &in_scope, &mut latest_read, now_ms)
                .await?;
            let timing = Timing {
                for_ms: match &condition {
                    Condition::Threshold { for_ms, .. } => *for_ms,
                    _ => 0,
                },
                renotify_ms: rule.spec.renotify_ms().unwrap_or(0),
            };
            // Alerts of the rule not seen this tick: gone from the data.
            // A threshold's series without fresh points keeps its state
            // (`no data` rules tell that), as does an alert that waits for
            // its resolving event (`threshold.recovered`) however long ago
            // it fired; any other condition no longer holds. An alert
            // owing the resolve of a pause is stepped either way.
            let seen_keys: HashSet<&AlertKey> = seen.iter().map(|s| &s.key).collect();
            let mut unseen: Vec<Seen> = Vec::new();
            let absence_resolves = !matches!(
                condition,
                Condition::Threshold { .. }
                    | Condition::Event {
                        resolved_by: Some(_),
                        ..
                    }
            );
            for (key, alert) in &memory {
                let stepped = alert.resolve_owed
                    || (absence_resolves && (alert.firing() || alert.pending_since_ms.is_some()));
                if key.rule_id == rule.id && stepped && !seen_keys.contains(key) {
                    unseen.push(Seen {
                        key: key.clone(),
                        observed: if absence_resolves {
                            Observed::Inactive
                        } else {
                            Observed::Unknown
                        },
                        value: None,
                        message: "The condition no longer holds.".into(),
                    });
                }
            }
            for seen in seen.into_iter().chain(unseen) {
                let memory = memory.entry(seen.key.clone()).or_default();
                if let (
                    Observed::Active { at_ms },
                    Condition::Threshold {
                        metric,
                        labels,
                        op,
                        value,
                        for_ms,
                    },
                ) = (seen.observed, &condition)
                    && *for_ms > 0
                    && memory.would_fire(at_ms, timing)
                {
                    // Confirm with every point of the window.
                    let range = Range {
                        from_ms: at_ms - for_ms,
                        to_ms: at_ms,
                        step_ms: None,
                    };
                    let series = self
                        .store
                        .metrics(rule.project_id, seen.key.oid, metric, range)
                        .await?;
                    let last_failing = series
                        .iter()
                        .filter(|s| {
                            labels_match(&s.labels, labels)
                                && label_text(&s.labels) == seen.key.target
                        })
                        .flat_map(|s| s.points.iter())
                        .filter(|(_, v)| !op.holds(*v, *value))
                        .map(|(t, _)| *t)
                        .max();
                    if let Some(t) = last_failing {
                        memory.restart_pending(t);
                    }
                }
                let paused = paused.contains(&seen.key.oid);
                let Some(change) = memory.step(seen.observed, now_ms, timing, paused) else {
                    continue;
                };
                let agent = agents.get(&seen.key.oid);
                let since_ms = memory.firing_since_ms.unwrap_or(now_ms);
                let last_notified_ms = memory.last_notified_ms;
                let (change, transition) = records(
                    rule,
                    &projects,
                    agent,
                    seen,
                    change,
                    since_ms,
                    last_notified_ms,
                    now_ms,
                )?;
                changes.push(change);
                transitions.push(transition);
            }
        }
        memory.retain(|_, m| m.worth_keeping());
        if !changes.is_empty() {
            self.store.record_alert_changes(&changes).await?;
        }
        self.memory = memory;
        self.rules_seen = all_rules.into_iter().map(|r| (r.id, r)).collect();
        self.looking_back = false;
        for change in &changes {
            tracing::info!(
                rule = %change.rule,
                oid = change.key.oid,
                target = %change.key.target,
                state = change.state,
                notifications = change.notifications.len(),
                "Alert changed."
            );
        }
        if changes.iter().any(|c| !c.notifications.is_empty()) {
            self.hub.wake_queue.notify_one();
        }
        for transition in transitions {
            // No subscriber is fine.
            let _ = self.hub.transitions.send(Arc::new(transition));
        }
        Ok(changes.len())
    }

    /// The newest points of every metric the threshold rules watch, per
    /// (project, metric): one [`MetricReads::latest_of`] per project for
    /// all its names, however many rules watch each.
    ///
    /// [`MetricReads::latest_of`]: crate::store::MetricReads::latest_of
    async fn read_latest(
        &self,
        rules: &[RuleRow],
        conditions: &[Option<Condition>],
        now_ms: i64,
    ) -> Result<LatestRead, StoreError> {
        let mut wanted: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        for (rule, condition) in rules.iter().zip(conditions) {
            if let Some(Condition::Threshold { metric, .. }) = condition {
                wanted
                    .entry(rule.project_id)
                    .or_default()
                    .insert(metric.as_str());
            }
        }
        let mut read = LatestRead::new();
        for (project_id, names) in wanted {
            let names: Vec<&str> = names.into_iter().collect();
            let lists = self
                .store
                .latest_of(project_id, &names, now_ms - FRESH_MS)
                .await?;
            for (name, list) in names.iter().zip(lists) {
                read.insert((project_id, (*name).to_string()), Arc::new(list));
            }
        }
        Ok(read)
    }

    /// Before the rules are observed: forgets, without a word, the alerts
    /// of terminated agents (their rows went with them), and resolves the
    /// alerts of rules deleted, disabled, or whose condition changed
    /// (aloud where the firing was told and the agent is not paused).
    #[allow(clippy::too_many_arguments)]
    async fn end_alerts(
        &self,
        all_rules: &[RuleRow],
        memory: &mut HashMap<AlertKey, AlertMemory>,
        agents_of: &mut HashMap<i64, HashMap<i64, Agent>>,
        projects: &HashMap<i64, String>,
        paused: &HashSet<i64>,
        now_ms: i64,
        changes: &mut Vec<AlertChange>,
        transitions: &mut Vec<Transition>,
    ) -> Result<(), StoreError> {
        let current: HashMap<i64, &RuleRow> = all_rules.iter().map(|r| (r.id, r)).collect();
        let keys: Vec<AlertKey> = memory.keys().cloned().collect();
        for key in keys {
            let seen_rule = self.rules_seen.get(&key.rule_id);
            let now_rule = current.get(&key.rule_id).copied();
            let Some(rule) = seen_rule.or(now_rule) else {
                memory.remove(&key);
                continue;
            };
            let agent = self
                .agents_in(agents_of, rule.project_id)
                .await?
                .get(&key.oid);
            if agent.is_some_and(|a| a.terminated_ms.is_some()) {
                memory.remove(&key);
                continue;
            }
            let reason = match now_rule {
                None => "The rule was deleted.",
                Some(r) if !r.spec.enabled => "The rule was disabled.",
                Some(r) if !rule.spec.same_condition(&r.spec) => "The rule's condition changed.",
                Some(_) => continue,
            };
            let Some(alert) = memory.remove(&key) else {
                continue;
            };
            let since_ms = match (alert.firing_since_ms, alert.resolve_owed) {
                (Some(since_ms), _) => since_ms,
                (None, true) => now_ms,
                (None, false) => continue,
            };
            let told = alert.last_notified_ms.is_some() || alert.resolve_owed;
            let change = Change::Resolved {
                notify: told && !paused.contains(&key.oid),
            };
            let seen = Seen {
                key,
                observed: Observed::Inactive,
                value: None,
                message: reason.into(),
            };
            let (change, transition) =
                records(rule, projects, agent, seen, change, since_ms, None, now_ms)?;
            changes.push(change);
            transitions.push(transition);
        }
        Ok(())
    }

    /// The agents of `project_id` by oid, read from the store once per tick
    /// (`cache` lives for the tick).
    async fn agents_in<'a>(
        &self,
        cache: &'a mut HashMap<i64, HashMap<i64, Agent>>,
        project_id: i64,
    ) -> Result<&'a HashMap<i64, Agent>, StoreError> {
        match cache.entry(project_id) {
            std::collections::hash_map::Entry::Occupied(known) => Ok(known.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let agents = self.store.agents(project_id).await?;
                Ok(slot.insert(agents.into_iter().map(|a| (a.oid, a)).collect()))
            }
        }
    }

    /// What `condition` looks like now, per alert, for the agents in scope.
    async fn observe(
        &self,
        rule: &RuleRow,
        condition: &Condition,
        agents: &HashMap<i64, &Agent>,
        latest_read: &mut LatestRead,
        now_ms: i64,
    ) -> Result<Vec<Seen>, StoreError> {
        let key = |oid: i64, target: String| AlertKey {
            rule_id: rule.id,
            oid,
            target,
        };
        let mut seen = Vec::new();
        match condition {
            Condition::Threshold {
                metric,
                labels,
                op,
                value,
                for_ms,
            } => {
                let read_key = (rule.project_id, metric.clone());
                let latest = match latest_read.get(&read_key) {
                    Some(l) => l.clone(),
                    None => {
                        let l = Arc::new(
                            self.store
                                .latest(rule.project_id, metric, now_ms - FRESH_MS)
                                .await?,
                        );
                        latest_read.insert(read_key, l.clone());
                        l
                    }
                };
                for point in latest.iter() {
                    let Some(agent) = agents.get(&point.oid) else {
                        continue;
                    };
                    if !labels_match(&point.labels, labels) {
                        continue;
                    }
                    let target = label_text(&point.labels);
                    let holds = op.holds(point.value, *value);
                    let shown = if target.is_empty() {
                        metric.clone()
                    } else {
                        format!("{metric}{{{target}}}")
                    };
                    let message = if holds {
                        format!(
                            "{shown} is {} on {} ({} {value}{}).",
                            round(point.value),
                            agent.oname,
                            op.text(),
                            if *for_ms > 0 {
                                format!(" for {}", duration_text(*for_ms))
                            } else {
                                String::new()
                            }
                        )
                    } else {
                        format!(
                            "{shown} is {} on {}: back to normal.",
                            round(point.value),
                            agent.oname
                        )
                    };
                    seen.push(Seen {
                        key: key(point.oid, target),
                        observed: if holds {
                            Observed::Active {
                                at_ms: point.time_ms,
                            }
                        } else {
                            Observed::Inactive
                        },
                        value: Some(point.value),
                        message,
                    });
                }
            }
            Condition::NoData => {
                for agent in agents.values() {
                    let quiet = agent.is_quiet(now_ms);
                    seen.push(Seen {
                        key: key(agent.oid, String::new()),
                        observed: if quiet {
                            Observed::Active { at_ms: now_ms }
                        } else {
                            Observed::Inactive
                        },
                        value: None,
                        message: if quiet {
                            format!(
                                "{} ({}) has sent no data since {}.",
                                agent.oname,
                                agent.product,
                                format_ms(agent.last_seen_ms)
                            )
                        } else {
                            format!("{} ({}) sends data again.", agent.oname, agent.product)
                        },
                    });
                }
            }
            Condition::Event {
                kind,
                resolved_by,
                clear_ms,
                key: key_attr,
                at_least,
            } => {
                let lookback = if resolved_by.is_some() {
                    PAIRED_LOOKBACK_MS
                } else {
                    *clear_ms
                };
                let mut from_ms = now_ms - lookback;
                if resolved_by.is_some() && self.looking_back {
                    // After a start: back to before each firing alert began.
                    let oldest = self
                        .memory
                        .iter()
                        .filter(|(k, _)| k.rule_id == rule.id)
                        .filter_map(|(_, m)| m.firing_since_ms)
                        .min();
                    if let Some(oldest) = oldest {
                        from_ms = from_ms.min(oldest - PAIRED_LOOKBACK_MS);
                    }
                }
                let mut events = Vec::new();
                for k in std::iter::once(kind).chain(resolved_by.iter()) {
                    let query = EventQuery {
                        from_ms,
                        to_ms: now_ms + 60_000,
                        oid: None,
                        kind: Some(k.clone()),
                        limit: EVENTS_PER_RULE,
                    };
                    events.extend(self.store.events(rule.project_id, &query).await?);
                }
                // Oldest first: the newest event per alert decides.
                events.sort_by_key(|e| (e.event.time_ms, e.id));
                let mut newest: BTreeMap<(i64, String), Seen> = BTreeMap::new();
                for stored in events {
                    let Some(oid) = stored.oid else { continue };
                    if !agents.contains_key(&oid) {
                        continue;
                    }
                    let event = &stored.event;
                    let target = match key_attr {
                        None => String::new(),
                        Some((attr, wanted)) => {
                            let value = event.attrs.get(attr).cloned().unwrap_or_default();
                            if wanted.as_ref().is_some_and(|w| *w != value) {
                                continue;
                            }
                            value
                        }
                    };
                    let firing = event.kind == *kind;
                    let number = at_least
                        .as_ref()
                        .and_then(|(attr, _)| event.attrs.get(attr)?.parse::<f64>().ok());
                    if firing
                        && let Some((_, least)) = at_least
                        && number.is_none_or(|n| n < *least)
                    {
                        continue;
                    }
                    let value = number.or_else(|| event.attrs.get("value")?.parse().ok());
                    newest.insert(
                        (oid, target.clone()),
                        Seen {
                            key: key(oid, target),
                            observed: if firing {
                                Observed::Active {
                                    at_ms: event.time_ms,
                                }
                            } else {
                                Observed::Inactive
                            },
                            value,
                            message: event.message.clone(),
                        },
                    );
                }
                seen.extend(newest.into_values());
            }
            Condition::Url { watch, target } => {
                let filter = UrlTargetFilter {
                    target: target.clone(),
                    ..UrlTargetFilter::default()
                };
                for row in self.store.url_targets(rule.project_id, &filter).await? {
                    if !agents.contains_key(&row.oid) {
                        continue;
                    }
                    let state = row.latest.state;
                    let holds = match watch {
                        UrlWatch::Down => state == UrlState::Down,
                        UrlWatch::Degraded => matches!(state, UrlState::Down | UrlState::Degraded),
                    };
                    if state == UrlState::Pending {
                        continue;
                    }
                    seen.push(Seen {
                        key: key(row.oid, row.latest.target.clone()),
                        observed: if holds {
                            Observed::Active {
                                at_ms: row.since_ms,
                            }
                        } else {
                            Observed::Inactive
                        },
                        value: Some(row.latest.phases.total_us as f64 / 1000.0),
                        message: format!(
                            "{} ({}) is {} since {} as seen from {}: {}",
                            row.latest.target,
                            row.latest.url,
                            state.name(),
                            format_ms(row.since_ms),
                            row.oname,
                            row.latest.failure
                        ),
                    });
                }
            }
            Condition::LogPattern {
                pattern,
                count,
                window_ms,
            } => {
                let query = crate::logs::PatternQuery {
                    category: None,
                    from_ms: now_ms - window_ms,
                    to_ms: now_ms,
                    limit: PATTERNS_READ,
                };
                let shapes = self.store.log_patterns(rule.project_id, &query).await?;
                let found = shapes
                    .iter()
                    .find(|s| s.pattern == *pattern)
                    .map_or(0, |s| s.count);
                let holds = found > *count;
                seen.push(Seen {
                    key: key(0, pattern.clone()),
                    observed: if holds {
                        Observed::Active { at_ms: now_ms }
                    } else {
                        Observed::Inactive
                    },
                    value: Some(found as f64),
                    message: format!(
                        "{found} log records of the shape \"{pattern}\" in the last {} ({} {count}).",
                        duration_text(*window_ms),
                        if holds { "more than" } else { "at most" }
                    ),
                });
            }
            Condition::Log {
                text,
                count,
                window_ms,
            } => {
                // One agent named: its records; otherwise the project's.
                let oid = match &rule.spec.agent {
                    Some(_) => match agents.values().next() {
                        Some(a) => Some(a.oid),
                        None => return Ok(seen),
                    },
                    None => None,
                };
                let query = LogQuery {
                    text: crate::logs::text::Query::parse(text),
                    category: None,
                    oid,
                    from_ms: now_ms - window_ms,
                    to_ms: now_ms,
                    fields: Vec::new(),
                    limit: usize::try_from(*count + 1).unwrap_or(1000),
                    before: None,
                };
                let page = self.store.search_logs(rule.project_id, &query).await?;
                let found = page.records.len() as u64;
                let holds = found > *count;
                seen.push(Seen {
                    key: key(oid.unwrap_or(0), String::new()),
                    observed: if holds {
                        Observed::Active { at_ms: now_ms }
                    } else {
                        Observed::Inactive
                    },
                    value: Some(found as f64),
                    message: if holds {
                        format!(
                            "More than {count} log records with \"{text}\" in the last {}.",
                            duration_text(*window_ms)
                        )
                    } else {
                        format!(
                            "{found} log records with \"{text}\" in the last {} (at most {count}).",
                            duration_text(*window_ms)
                        )
                    },
                });
            }
        }
        Ok(seen)
    }
}

/// The stored change (with a notification per channel when it notifies)
/// and the streamed transition of one alert's change.
#[allow(clippy::too_many_arguments)]
fn records(
    rule: &RuleRow,
    projects: &HashMap<i64, String>,
    agent: Option<&Agent>,
    seen: Seen,
    change: Change,
    since_ms: i64,
    last_notified_ms: Option<i64>,
    now_ms: i64,
) -> Result<(AlertChange, Transition), StoreError> {
    let notifications = if change.notifies() {
        let body = Body {
            state: change.state().into(),
            reminder: change == Change::Reminded,
            project: projects.get(&rule.project_id).cloned().unwrap_or_default(),
            rule: Some(RuleRef {
                id: rule.id,
                name: rule.spec.name.clone(),
                expr: rule.spec.expr.clone(),
                severity: rule.spec.severity.clone(),
            }),
            agent: agent.map(|a| AgentRef {
                oid: a.oid,
                oname: a.oname.clone(),
                product: a.product.clone(),
            }),
            target: seen.key.target.clone(),
            value: seen.value,
            message: seen.message.clone(),
            since: format_ms(since_ms),
            time: format_ms(now_ms),
            time_ms: now_ms,
        };
        let payload = serde_json::to_string(&body)
            .map_err(|e| StoreError::Corrupt(format!("notification body: {e}")))?;
        rule.spec
            .channels
            .iter()
            .map(|c| (*c, payload.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let notified = !notifications.is_empty();
    let stored = AlertChange {
        project_id: rule.project_id,
        key: seen.key.clone(),
        rule: rule.spec.name.clone(),
        state: change.state(),
        time_ms: now_ms,
        since_ms,
        last_notified_ms,
        value: seen.value,
        message: seen.message.clone(),
        notifications,
    };
    let transition = Transition {
        project_id: rule.project_id,
        key: seen.key,
        rule: rule.spec.name.clone(),
        oname: agent.map(|a| a.oname.clone()).unwrap_or_default(),
        state: change.state(),
        time_ms: now_ms,
        value: seen.value,
        message: seen.message,
        notified,
    };
    Ok((stored, transition))
}

/// How long after a tick an ingest wake may evaluate again: never sooner
/// than four times the tick's own duration (so agents' events cannot keep
/// a slow evaluator busy most of the time), nor than [`INGEST_WAKE_GAP`].
fn ingest_wake_gap(last_tick: Duration) -> Duration {
    INGEST_WAKE_GAP.max(last_tick.saturating_mul(4))
}

/// Whether `agent` is one a rule applies to: not terminated, its `agent`
/// (by name) and `product` (given, or the condition's own).
fn in_scope(rule: &RuleRow, condition: &Condition, agent: &Agent) -> bool {
    // A terminated agent's data is gone and it is refused: no rule
    // watches it (it is not "no data", it is gone) until it is enabled.
    if agent.terminated_ms.is_some() {
        return false;
    }
    if rule.spec.agent.as_ref().is_some_and(|n| *n != agent.oname) {
        return false;
    }
    match rule.spec.product.as_deref().or(condition.product()) {
        Some(product) => agent.product == product,
        None => true,
    }
}

fn labels_match(have: &BTreeMap<String, String>, want: &[(String, String)]) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// `k="v",k2="v2"`: a series' identity within its agent.
fn label_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join(",")
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn duration_text(ms: i64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

#[cfg(test)]
mod tests;
