//! The URL agent's loop: one task schedules every target from one heap of
//! due times, runs at most `url.concurrency` checks at once (at most one
//! per target), feeds each result to the target's state machine, and sends
//! what finished each second as one batch with its events.
//!
//! The targets file is watched (notify on its folder, so editors' atomic
//! renames are seen) and re-read on the blocking pool; a bad file is logged
//! with its line and the old targets stay. A target whose settings did not
//! change keeps its state and schedule across a reload.
//!
//! Invariants: no task per target, no busy loop; every queue is bounded
//! (checks in flight by the concurrency, waiting checks by the number of
//! targets, results by one second of checks); on shutdown the loop sends
//! what finished and returns, abandoning checks in flight.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_core::config::ProcessEnv;
use agent_core::domain::{Event, Payload, Severity};
use agent_core::{OutBatch, SourceContext, SourceError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use crate::event_names;
use crate::probe::{self, CheckResult};
use crate::schedule::{self, Grid, max_jitter};
use crate::settings::{Target, UrlSettings, read_targets_file};
use crate::state::{Change, TargetState, Tracker};
use crate::wire::{Finished, checks_payload};

/// How often finished checks are sent.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long the targets file must be quiet before it is re-read.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);

/// One target's place in the loop.
#[derive(Debug)]
struct Slot {
    target: Arc<Target>,
    generation: u64,
    tracker: Tracker,
    grid: Grid,
    in_flight: bool,
    /// The connection kept between checks, when the target reuses one.
    reuse: Option<Arc<probe::ReuseSlot>>,
    /// Days left last announced by `url.cert_expiring`.
    cert_announced: Option<i32>,
}

/// A check to start.
#[derive(Debug)]
struct Due {
    target: Arc<Target>,
    generation: u64,
    reuse: Option<Arc<probe::ReuseSlot>>,
}

/// The loop's state, apart from IO.
#[derive(Debug)]
pub struct Scheduler {
    slots: HashMap<String, Slot>,
    due: BinaryHeap<Reverse<(Instant, u64, String)>>,
    waiting: VecDeque<(String, u64)>,
    generation: u64,
    concurrency: usize,
    /// Where the ticks checks start on are counted from.
    epoch: Instant,
}

impl Scheduler {
    /// A scheduler of `targets`, starting at `now`.
    pub fn new(targets: BTreeMap<String, Target>, concurrency: usize, now: Instant) -> Scheduler {
        let mut s = Scheduler {
            slots: HashMap::new(),
            due: BinaryHeap::new(),
            waiting: VecDeque::new(),
            generation: 0,
            concurrency,
            epoch: now,
        };
        s.replace(targets, now);
        s
    }

    /// How many targets.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Takes a new set of targets: unchanged ones keep state and schedule.
    pub fn replace(&mut self, targets: BTreeMap<String, Target>, now: Instant) {
        self.slots.retain(|name, _| targets.contains_key(name));
        for (name, target) in targets {
            if let Some(slot) = self.slots.get(&name)
                && *slot.target == target
            {
                continue;
            }
            self.generation += 1;
            let target_reuse = target.reuse.then(|| Arc::new(probe::ReuseSlot::default()));
            let grid = Grid::new(&name, now, target.interval);
            let first = schedule::on_tick(self.epoch, grid.at(0), schedule::tick(target.interval));
            self.due
                .push(Reverse((first, self.generation, name.clone())));
            self.slots.insert(
                name,
                Slot {
                    target: Arc::new(target),
                    generation: self.generation,
                    tracker: Tracker::default(),
                    grid,
                    in_flight: false,
                    reuse: target_reuse,
                    cert_announced: None,
                },
            );
        }
    }

    /// The instant ticks are counted from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// When the next target is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The targets due by `now`, with room to run them given `running`
    /// checks in flight; the rest wait their turn.
    fn take_due(&mut self, now: Instant, running: usize) -> Vec<Due> {
        while let Some(Reverse((at, generation, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let (generation, name) = (*generation, self.due.pop().map(|Reverse((_, _, n))| n));
            if let Some(name) = name {
                self.waiting.push_back((name, generation));
            }
        }
        let mut ready = Vec::new();
        while running + ready.len() < self.concurrency {
            let Some((name, generation)) = self.waiting.pop_front() else {
                break;
            };
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            if slot.generation != generation || slot.in_flight {
                continue;
            }
            slot.in_flight = true;
            ready.push(Due {
                target: slot.target.clone(),
                generation,
                reuse: slot.reuse.clone(),
            });
        }
        ready
    }

    /// Takes a finished check: state, events, and the target's next slot.
    fn finish(
        &mut self,
        generation: u64,
        result: CheckResult,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Option<Finished> {
        let slot = self.slots.get_mut(&result.target)?;
        if slot.generation != generation {
            return None;
        }
        slot.in_flight = false;
        let target = slot.target.clone();
        let was_down = slot.tracker.state() == Some(TargetState::Down);
        let change = slot.tracker.observe(result.outcome(), target.fail_after);
        let state = slot.tracker.state().unwrap_or(TargetState::Pending);
        if let Some(change) = change {
            events.push(state_event(&target, change, &result));
        }
        if let Some(cert) = &result.certificate {
            let days = cert
                .days_left(result.time)
                .min(cert.chain_days_left(result.time));
            if days < target.tls_min_days {
                if slot.cert_announced.is_none_or(|last| days < last) {
                    slot.cert_announced = Some(days);
                    events.push(cert_event(&target, days, cert));
                }
            } else {
                slot.cert_announced = None;
            }
        }
        let is_down = state == TargetState::Down;
        if is_down != was_down {
            let period = if is_down {
                target.down_interval
            } else {
                target.interval
            };
            slot.grid = Grid::restart(now, period);
        }
        let mut next = slot.grid.advance(now);
        let jitter = max_jitter(slot.grid.period);
        if !jitter.is_zero() {
            next += Duration::from_nanos(fastrand::u64(0..jitter.as_nanos() as u64));
        }
        let next = schedule::on_tick(self.epoch, next, schedule::tick(slot.grid.period));
        self.due
            .push(Reverse((next, generation, result.target.clone())));
        Some(Finished {
            url: target.url.to_string(),
            method: target.method.to_string(),
            state,
            result,
        })
    }
}

fn state_event(target: &Target, change: Change, result: &CheckResult) -> Event {
    let (name, severity, message) = match change.to {
        TargetState::Down => (
            event_names::URL_DOWN,
            Severity::Critical,
            format!("{} is down: {}", target.name, result.detail),
        ),
        TargetState::Degraded => (
            event_names::URL_DEGRADED,
            Severity::Warning,
            format!("{} is slow: {}", target.name, result.detail),
        ),
        // PENDING is never announced (see `state`); UP is the rest.
        TargetState::Up | TargetState::Pending => (
            event_names::URL_UP,
            Severity::Info,
            format!("{} is up again.", target.name),
        ),
    };
    let mut event = Event::now(name, severity, message)
        .attr("target", &target.name)
        .attr("url", &target.url)
        .attr("state", change.to.as_str())
        .attr("status", result.status)
        .attr("total_ms", result.total.as_millis());
    if let Some(from) = change.from {
        event = event.attr("from", from.as_str());
    }
    if let Some(f) = result.failure {
        event = event.attr("failure", f.as_str());
    }
    event
}

fn cert_event(target: &Target, days: i32, cert: &crate::tls::CertInfo) -> Event {
    Event::now(
        event_names::URL_CERT_EXPIRING,
        if days < 0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        format!(
            "The certificate of {} expires in {days} days (fewer than {}).",
            target.name, target.tls_min_days
        ),
    )
    .attr("target", &target.name)
    .attr("url", &target.url)
    .attr("days_left", days)
    .attr("subject", &cert.subject)
    .attr("issuer", &cert.issuer)
}

/// Runs until shutdown.
pub async fn run(settings: UrlSettings, cx: SourceContext) -> Result<(), SourceError> {
    let mut from_file = BTreeMap::new();
    if let Some(path) = &settings.targets_file {
        match read_targets_file(path, &ProcessEnv) {
            Ok(t) => from_file = t,
            Err(e) => {
                tracing::warn!(error = %e, "Targets file refused; running without its targets.")
            }
        }
    }
    let targets = merge(&settings.targets, from_file);
    tracing::info!(targets = targets.len(), "URL checks starting.");
    let mut scheduler = Scheduler::new(targets, settings.concurrency, Instant::now());
    let (reload_tx, mut reload_rx) = mpsc::channel::<()>(1);
    let _watcher = settings
        .targets_file
        .as_deref()
        .and_then(|p| watch(p, reload_tx));
    let mut checks: JoinSet<(u64, CheckResult)> = JoinSet::new();
    let mut finished: Vec<Finished> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    // On the checks' ticks (a second is a whole number of them), so a
    // flush shares their wake-up rather than taking one of its own.
    let mut flush = interval_at(scheduler.epoch() + FLUSH_EVERY, FLUSH_EVERY);
    flush.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let far = Duration::from_secs(3600);
    // One timer for the next due check, moved only when that changes (a
    // timer made afresh on every turn of the loop was registered and
    // removed again at each check's end).
    let next_check = sleep_until(Instant::now() + far);
    tokio::pin!(next_check);
    loop {
        let wake = scheduler.next_due().unwrap_or_else(|| Instant::now() + far);
        if next_check.deadline() != wake {
            next_check.as_mut().reset(wake);
        }
        tokio::select! {
            () = cx.shutdown.cancelled() => {
                send(&cx, &mut finished, &mut events).await;
                checks.abort_all();
                return Ok(());
            }
            () = &mut next_check => {}
            Some(joined) = checks.join_next() => {
                if let Ok((generation, result)) = joined
                    && let Some(f) = scheduler.finish(generation, result, Instant::now(), &mut events)
                {
                    finished.push(f);
                }
            }
            _ = flush.tick() => {
                send(&cx, &mut finished, &mut events).await;
            }
            Some(()) = reload_rx.recv() => {
                tokio::time::sleep(RELOAD_SETTLE).await;
                while reload_rx.try_recv().is_ok() {}
                if let Some(path) = settings.targets_file.clone() {
                    let read = tokio::task::spawn_blocking(move || read_targets_file(&path, &ProcessEnv)).await;
                    match read {
                        Ok(Ok(file)) => {
                            let targets = merge(&settings.targets, file);
                            tracing::info!(targets = targets.len(), "Targets file reloaded.");
                            scheduler.replace(targets, Instant::now());
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "Targets file refused; keeping the old targets."),
                        Err(e) => tracing::warn!(error = %e, "Targets file reload failed."),
                    }
                }
            }
        }
        for due in scheduler.take_due(Instant::now(), checks.len()) {
            checks.spawn(async move {
                let result = probe::check_reusing(&due.target, due.reuse.as_deref()).await;
                (due.generation, result)
            });
        }
    }
}

/// Config targets, then the file's (a name in both: the config's wins).
fn merge(
    config: &BTreeMap<String, Target>,
    file: BTreeMap<String, Target>,
) -> BTreeMap<String, Target> {
    let mut all = file;
    for (name, target) in config {
        if all.contains_key(name) {
            tracing::warn!(target = %name, "Target set in both url.conf and the targets file; url.conf wins.");
        }
        all.insert(name.clone(), target.clone());
    }
    all
}

async fn send(cx: &SourceContext, finished: &mut Vec<Finished>, events: &mut Vec<Event>) {
    if finished.is_empty() && events.is_empty() {
        return;
    }
    let records = finished.len() as u64;
    let mut payloads = Vec::new();
    if !finished.is_empty() {
        payloads.push(checks_payload(SystemTime::now(), std::mem::take(finished)));
    }
    if !events.is_empty() {
        payloads.push(Payload::Events(std::mem::take(events)));
    }
    cx.out.records_read(records);
    let _ = cx
        .out
        .send(OutBatch {
            payloads,
            cursor: None,
            records,
        })
        .await;
}

/// Watches the targets file's folder; signals `tx` when the file changes.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let file: PathBuf = path.to_path_buf();
    let name = file.file_name()?.to_os_string();
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |event: notify::Result<notify::Event>| {
        // Reading the file is an event too (access, close): only a change
        // counts, or each reload would trigger the next.
        if let Ok(event) = event
            && matches!(
                event.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(_)
                    | notify::EventKind::Remove(_)
            )
            && event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot watch the targets file; it will not be reloaded.");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch the targets file's folder; it will not be reloaded.");
        return None;
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::config::{Config, KeySpec, MapEnv};

    fn targets(text: &str) -> BTreeMap<String, Target> {
        let keys: Vec<KeySpec> = crate::settings::TARGET_KEYS.to_vec();
        let config = Config::from_text(Path::new("t.conf"), text, &keys).expect("parses");
        crate::settings::targets(&config, &MapEnv::new([])).expect("loads")
    }

    fn result(name: &str, failure: Option<probe::Failure>) -> CheckResult {
        CheckResult {
            target: name.into(),
            time: SystemTime::now(),
            failure,
            detail: String::new(),
            phases: probe::Phases::default(),
            total: Duration::ZERO,
            status: 200,
            http_version: "HTTP/1.1",
            body_bytes: 0,
            redirects: 0,
            final_url: String::new(),
            remote_ip: String::new(),
            certificate: None,
        }
    }

    #[test]
    fn thousands_of_targets_spread_over_the_interval_with_bounded_concurrency() {
        let text: String = (0..3000)
            .map(|i| format!("target.t{i}.url=http://127.0.0.1:1/\n"))
            .collect();
        let start = Instant::now();
        let mut s = Scheduler::new(targets(&text), 100, start);
        assert_eq!(s.len(), 3000);
        // Each starts on a tick, so one wake-up serves every check due in
        // it: 3000 targets over 60 s need at most 1200 wake-ups, not 3000.
        let tick = schedule::WAKE_TICK.as_nanos();
        assert!(
            s.due
                .iter()
                .all(|Reverse((at, _, _))| (*at - start).as_nanos().is_multiple_of(tick))
        );
        let wakes: std::collections::HashSet<Instant> =
            s.due.iter().map(|Reverse((at, _, _))| *at).collect();
        assert!(wakes.len() <= 1200, "{}", wakes.len());
        // In the first 6 s of a 60 s interval, about a tenth are due.
        let due = s.take_due(start + Duration::from_secs(6), 0);
        assert_eq!(due.len(), 100, "bounded by the concurrency");
        assert!(
            (200..400).contains(&(s.waiting.len() + due.len())),
            "{}",
            s.waiting.len()
        );
    }

    #[test]
    fn one_check_per_target_in_flight_and_down_targets_are_checked_faster() {
        let text =
            "target.a.url=http://127.0.0.1:1/\ntarget.a.interval=40s\ntarget.a.fail_after=1\n";
        let start = Instant::now();
        let mut s = Scheduler::new(targets(text), 10, start);
        let first = s.next_due().expect("due");
        let due = s.take_due(first, 0);
        assert_eq!(due.len(), 1);
        let generation = due[0].generation;
        // Due again while in flight: not started twice.
        s.due.push(Reverse((first, generation, "a".into())));
        assert!(s.take_due(first, 1).is_empty());
        let mut events = Vec::new();
        let done = first + Duration::from_secs(1);
        let f = s
            .finish(
                generation,
                result("a", Some(probe::Failure::ConnectionRefused)),
                done,
                &mut events,
            )
            .expect("kept");
        assert_eq!(f.state, TargetState::Down);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, event_names::URL_DOWN);
        // Down: the next check a quarter interval (10 s) later, plus jitter.
        let next = s.next_due().expect("due");
        assert!(
            next >= done + Duration::from_secs(10) && next <= done + Duration::from_millis(10_100),
            "{:?}",
            next - done
        );
    }

    #[test]
    fn a_certificate_within_min_days_is_announced_again_only_as_days_drop() {
        let text = "target.a.url=https://127.0.0.1:1/\ntarget.a.tls.min_days=14\n";
        let start = Instant::now();
        let mut s = Scheduler::new(targets(text), 10, start);
        let generation = s.slots["a"].generation;
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64;
        let with_days = |days: i64, chain: i64| {
            let mut r = result("a", None);
            r.time = now;
            r.certificate = Some(crate::tls::CertInfo {
                subject: "CN=a".into(),
                issuer: "CN=ca".into(),
                not_after: secs + days * 86_400 + 60,
                chain_not_after: secs + chain * 86_400 + 60,
            });
            r
        };
        let mut events = Vec::new();
        let mut at = start;
        for (leaf, chain) in [(90, 90), (90, 10), (90, 10), (90, 9), (90, 30), (90, 5)] {
            at += Duration::from_secs(60);
            s.slots.get_mut("a").expect("a").in_flight = true;
            s.finish(generation, with_days(leaf, chain), at, &mut events);
        }
        let days: Vec<&str> = events
            .iter()
            .filter(|e| e.name == event_names::URL_CERT_EXPIRING)
            .map(|e| e.attrs["days_left"].as_str())
            .collect();
        // The chain's root, not the leaf, is what expires: 10, then 9; back
        // above the threshold ends it, and 5 is a new warning.
        assert_eq!(days, ["10", "9", "5"]);
    }

    #[test]
    fn a_reload_keeps_unchanged_targets_and_drops_results_of_replaced_ones() {
        let start = Instant::now();
        let mut s = Scheduler::new(
            targets("target.a.url=http://x/\ntarget.b.url=http://y/\n"),
            10,
            start,
        );
        let gen_a = s.slots["a"].generation;
        let gen_b = s.slots["b"].generation;
        s.replace(
            targets("target.a.url=http://x/\ntarget.b.url=http://z/\n"),
            start,
        );
        assert_eq!(s.slots["a"].generation, gen_a);
        assert_ne!(s.slots["b"].generation, gen_b);
        let mut events = Vec::new();
        assert!(
            s.finish(gen_b, result("b", None), start, &mut events)
                .is_none()
        );
        s.replace(targets("target.a.url=http://x/\n"), start);
        assert_eq!(s.len(), 1);
    }
}
