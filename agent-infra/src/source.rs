//! The server agent's loop: every interval, run the sensors, report the
//! metrics and the top processes, and raise threshold events with a load
//! snapshot. At start, compare the kernel's boot id with the one remembered
//! in `data.dir` to tell a reboot.
//!
//! State advances only after what it describes is spooled: the new boot id
//! is remembered only once the reboot event is in the spool, so a crash in
//! between reports the reboot again rather than never.

use std::path::Path;
use std::time::{Instant, SystemTime};

use agent_core::domain::{Event, Metrics, Payload, Severity};
use agent_core::{OutBatch, Sample, SourceContext, SourceError};
use tokio::time::{MissedTickBehavior, interval};

use crate::event_names;
use crate::processes::ProcessSnapshot;
use crate::sensor::{ProcessTable, Sensor, SensorSet};
use crate::settings::{InfraSettings, ThresholdSettings};
use crate::thresholds::{Thresholds, Transition, Watched};
use crate::wire::processes_payload;

/// The file in `data.dir` holding the last boot id seen.
const BOOT_ID_FILE: &str = "boot_id";

/// Runs until shutdown.
pub async fn run(
    settings: InfraSettings,
    sensors: Vec<Box<dyn Sensor>>,
    boot_id: Option<String>,
    cx: SourceContext,
) -> Result<(), SourceError> {
    if let Some(id) = boot_id {
        report_reboot(&cx, &id).await;
    }
    let mut set = SensorSet::new(sensors);
    let mut thresholds = Thresholds::new(
        settings.thresholds.hold,
        settings.interval,
        settings.thresholds.cooldown,
    );
    let mut tick = interval(settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cx.shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let reading = tokio::select! {
            () = cx.shutdown.cancelled() => return Ok(()),
            r = set.read(settings.read_deadline()) => r,
        };
        let time = SystemTime::now();
        let watched = watched(&settings.thresholds, &reading.samples);
        let transitions = thresholds.observe(Instant::now(), watched);
        // A record of the server agent is a sample.
        let records = reading.samples.len() as u64;
        cx.out.records_read(records);
        let mut payloads = vec![Payload::Metrics(Metrics {
            time,
            samples: reading.samples,
        })];
        if let Some(table) = &reading.processes {
            payloads.push(processes_payload(table.top(settings.process_top)));
        }
        let mut events = reading.events;
        // One load snapshot per cycle at most, shared by every threshold
        // crossed in it (CPU and memory often cross together).
        let wants_snapshot = transitions
            .iter()
            .any(|t| matches!(t, Transition::Exceeded { snapshot: true, .. }));
        let mut full: Option<ProcessSnapshot> = None;
        if wants_snapshot && let Some(table) = reading.processes.clone() {
            full = tokio::select! {
                () = cx.shutdown.cancelled() => return Ok(()),
                s = full_snapshot(table, settings.read_deadline()) => Some(s),
            };
        }
        for transition in transitions {
            match transition {
                Transition::Exceeded { watched, snapshot } => {
                    let shown = full.as_ref().filter(|_| snapshot);
                    events.push(exceeded_event(&watched, &settings.thresholds, shown));
                }
                Transition::Recovered { watched } => {
                    events.push(recovered_event(&watched, &settings.thresholds))
                }
            }
        }
        if let Some(full) = full {
            payloads.push(processes_payload(full));
        }
        if !events.is_empty() {
            payloads.push(Payload::Events(events));
        }
        // One cycle, one batch: stored together, acked once.
        tokio::select! {
            () = cx.shutdown.cancelled() => return Ok(()),
            sent = cx.out.send(OutBatch { payloads, cursor: None, records }) => {
                if sent.is_err() { return Ok(()) }
            }
        }
    }
}

/// Every process with its user and command line (read now for those the
/// sensor left without them: blocking IO, on the blocking pool, within
/// `deadline`; past it, the snapshot goes without them).
async fn full_snapshot(table: ProcessTable, deadline: std::time::Duration) -> ProcessSnapshot {
    let bare = table.full();
    let described = tokio::task::spawn_blocking(move || {
        let mut table = table;
        table.describe_missing();
        table.full()
    });
    match tokio::time::timeout(deadline, described).await {
        Ok(Ok(snapshot)) => snapshot,
        _ => {
            tracing::warn!(
                "Could not read every process's user and command line in time; the snapshot goes without them."
            );
            bare
        }
    }
}

/// What the remembered boot id says about this start.
#[derive(Debug, PartialEq)]
pub enum Boot {
    /// Same boot as last time: a restart, not a reboot.
    Same,
    /// No boot id remembered: the first run.
    First,
    /// The host rebooted; the event to report.
    Rebooted(Box<Event>),
}

/// Compares `boot_id` with the one remembered in `data_dir`. Writes
/// nothing: see [`remember_boot_id`].
pub fn check_boot(data_dir: &Path, boot_id: &str) -> Boot {
    let previous = agent_core::state::read_trimmed(&data_dir.join(BOOT_ID_FILE));
    match previous {
        None => Boot::First,
        Some(p) if p == boot_id => Boot::Same,
        Some(previous) => {
            tracing::info!(previous = %previous, current = %boot_id, "The host rebooted since the agent last ran.");
            Boot::Rebooted(Box::new(
                Event::now(
                    event_names::HOST_REBOOTED,
                    Severity::Warning,
                    "System rebooted.",
                )
                .attr("boot_id", boot_id)
                .attr("previous_boot_id", previous)
                .attr("boot_time_ms", agent_core::identity::boot_time_ms()),
            ))
        }
    }
}

/// Remembers `boot_id` as the last one seen.
pub fn remember_boot_id(data_dir: &Path, boot_id: &str) {
    let file = data_dir.join(BOOT_ID_FILE);
    if let Err(e) = agent_core::state::write_atomic(&file, format!("{boot_id}\n").as_bytes()) {
        tracing::warn!(error = %e, "Cannot remember the boot id; a reboot may be reported twice.");
    }
}

/// Reports a reboot, and remembers the new boot id only once the event is
/// spooled (not if the agent stops first).
pub async fn report_reboot(cx: &SourceContext, boot_id: &str) {
    let event = match check_boot(&cx.data_dir, boot_id) {
        Boot::Same => return,
        Boot::First => return remember_boot_id(&cx.data_dir, boot_id),
        Boot::Rebooted(event) => *event,
    };
    let Ok(mut receipt) = cx.out.event(event).await else {
        return;
    };
    let spooled = tokio::select! {
        () = cx.shutdown.cancelled() => return,
        r = receipt.spooled() => r,
    };
    match spooled {
        Ok(()) => remember_boot_id(&cx.data_dir, boot_id),
        Err(reason) => {
            tracing::warn!(reason = %reason, "The reboot event could not be spooled; it will be reported at the next start.");
        }
    }
}

/// The values the thresholds watch in this reading.
fn watched(t: &ThresholdSettings, samples: &[Sample]) -> Vec<Watched> {
    let mut out = Vec::new();
    for s in samples {
        let entry = match (&*s.name, s.labels.is_empty()) {
            ("cpu.usage", true) => t
                .cpu
                .map(|limit| ("cpu".to_string(), "CPU usage".to_string(), limit)),
            ("mem.used_pct", true) => t
                .mem
                .map(|limit| ("mem".to_string(), "Memory used".to_string(), limit)),
            ("disk.used_pct", false) => {
                let mount = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "mount")
                    .map(|(_, v)| v.clone());
                t.disk
                    .zip(mount)
                    .map(|(limit, m)| (format!("disk:{m}"), format!("Disk {m} used"), limit))
            }
            _ => None,
        };
        if let Some((key, label, limit)) = entry {
            out.push(Watched {
                key,
                label,
                value: s.value,
                limit,
            });
        }
    }
    out
}

fn leaders(snapshot: &ProcessSnapshot, by_memory: bool) -> String {
    let mut list: Vec<_> = snapshot.processes.iter().collect();
    if by_memory {
        list.sort_by_key(|p| std::cmp::Reverse(p.rss_bytes));
    }
    list.iter()
        .take(5)
        .map(|p| {
            if by_memory {
                format!("{}[{}] {:.1}%", p.name, p.pid, p.mem_pct)
            } else {
                format!("{}[{}] {:.1}%", p.name, p.pid, p.cpu_pct)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn exceeded_event(w: &Watched, t: &ThresholdSettings, snapshot: Option<&ProcessSnapshot>) -> Event {
    let mut message = format!(
        "{} {:.1}% has been at or above {}% for {}.",
        w.label,
        w.value,
        w.limit,
        humanize(t.hold)
    );
    let mut event = Event::now(
        event_names::THRESHOLD_EXCEEDED,
        Severity::Critical,
        String::new(),
    )
    .attr("threshold", &w.key)
    .attr("value", format!("{:.1}", w.value))
    .attr("limit", w.limit);
    match snapshot {
        Some(s) => {
            let top_cpu = leaders(s, false);
            message.push_str(&format!(" Top CPU: {top_cpu}."));
            event = event
                .attr("snapshot_ms", agent_core::transport::wire::unix_ms(s.time))
                .attr("snapshot_processes", s.processes.len())
                .attr("top_cpu", top_cpu)
                .attr("top_mem", leaders(s, true));
        }
        None => event = event.attr("snapshot", "skipped: within the cooldown"),
    }
    event.message = message;
    event
}

fn recovered_event(w: &Watched, t: &ThresholdSettings) -> Event {
    Event::now(
        event_names::THRESHOLD_RECOVERED,
        Severity::Info,
        format!(
            "{} {:.1}% is back below {}% for {}.",
            w.label,
            w.value,
            w.limit,
            humanize(t.hold)
        ),
    )
    .attr("threshold", &w.key)
    .attr("value", format!("{:.1}", w.value))
    .attr("limit", w.limit)
}

fn humanize(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests;
