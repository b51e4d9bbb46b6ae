//! The server agent's loop: every interval, run the collectors, report the
//! metrics and the top processes, and raise threshold events with a load
//! snapshot. At start, compare the kernel's boot id with the one remembered
//! in `data.dir` to tell a reboot.

use std::path::Path;
use std::time::{Instant, SystemTime};

use agent_core::domain::{Event, EventKind, Metrics, Payload, ProcessSnapshot, Severity};
use agent_core::{Sample, SourceContext, SourceError};
use tokio::time::{MissedTickBehavior, interval};

use crate::collect::{Collect, CollectorSet, ProcessTable};
use crate::settings::{InfraSettings, ThresholdSettings};
use crate::thresholds::{Thresholds, Transition, Watched};

/// The file in `data.dir` holding the last boot id seen.
const BOOT_ID_FILE: &str = "boot_id";

/// Runs until shutdown.
pub async fn run(
    settings: InfraSettings,
    collectors: Vec<Box<dyn Collect>>,
    boot_id: Option<String>,
    cx: SourceContext,
) -> Result<(), SourceError> {
    if let Some(event) = boot_id.and_then(|id| reboot_event(&cx.data_dir, &id)) {
        let _ = cx.out.event(event).await;
    }
    let mut set = CollectorSet::new(collectors);
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
            r = set.collect(settings.collect_deadline()) => r,
        };
        let time = SystemTime::now();
        let watched = watched(&settings.thresholds, &reading.samples);
        let transitions = thresholds.observe(Instant::now(), watched);
        let mut payloads = vec![Payload::Metrics(Metrics {
            time,
            samples: reading.samples,
        })];
        if let Some(table) = &reading.processes {
            payloads.push(Payload::Processes(table.top(settings.process_top)));
        }
        let mut events = reading.events;
        // One load snapshot per cycle at most, shared by every threshold
        // crossed in it (CPU and memory often cross together).
        let mut full: Option<ProcessSnapshot> = None;
        for transition in transitions {
            match transition {
                Transition::Exceeded { watched, snapshot } => {
                    if snapshot && full.is_none() {
                        full = reading.processes.as_ref().map(ProcessTable::full);
                    }
                    let shown = full.as_ref().filter(|_| snapshot);
                    events.push(exceeded_event(&watched, &settings.thresholds, shown));
                }
                Transition::Recovered { watched } => {
                    events.push(recovered_event(&watched, &settings.thresholds))
                }
            }
        }
        if let Some(full) = full {
            payloads.push(Payload::Processes(full));
        }
        if !events.is_empty() {
            payloads.push(Payload::Events(events));
        }
        // One cycle, one batch: stored together, acked once.
        tokio::select! {
            () = cx.shutdown.cancelled() => return Ok(()),
            sent = cx.out.send_all(payloads) => if sent.is_err() { return Ok(()) },
        }
    }
}

/// Compares `boot_id` with the one remembered in `data_dir`, remembers the
/// new one, and returns a reboot event when they differ. The first run
/// remembers without an event.
pub fn reboot_event(data_dir: &Path, boot_id: &str) -> Option<Event> {
    let file = data_dir.join(BOOT_ID_FILE);
    let previous = agent_core::state::read_trimmed(&file);
    if previous.as_deref() == Some(boot_id) {
        return None;
    }
    if let Err(e) = agent_core::state::write_atomic(&file, format!("{boot_id}\n").as_bytes()) {
        tracing::warn!(error = %e, "Cannot remember the boot id; a reboot may be reported twice.");
    }
    let previous = previous?;
    tracing::info!(previous = %previous, current = %boot_id, "The host rebooted since the agent last ran.");
    Some(
        Event::now(
            EventKind::HostRebooted,
            Severity::Warning,
            "System rebooted.",
        )
        .attr("boot_id", boot_id)
        .attr("previous_boot_id", previous)
        .attr("boot_time_ms", agent_core::identity::boot_time_ms()),
    )
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
        EventKind::ThresholdExceeded,
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
        EventKind::ThresholdRecovered,
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
mod tests {
    use super::*;

    #[test]
    fn a_changed_boot_id_raises_exactly_one_reboot_event() {
        let dir = std::env::temp_dir().join(format!("sl-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(
            reboot_event(&dir, "boot-a").is_none(),
            "first run remembers quietly"
        );
        assert!(
            reboot_event(&dir, "boot-a").is_none(),
            "a restart is not a reboot"
        );
        let event = reboot_event(&dir, "boot-b").expect("a reboot");
        assert_eq!(event.kind, EventKind::HostRebooted);
        assert_eq!(event.attrs["previous_boot_id"], "boot-a");
        assert!(reboot_event(&dir, "boot-b").is_none(), "reported once");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
