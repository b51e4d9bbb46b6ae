//! Tests of the loop's start: reboots, and the order of the reboot event
//! and the remembered boot id.

use std::sync::Arc;

use agent_core::health::AgentCounters;
use agent_core::pipeline::{self, Output, SharedSpool};
use agent_core::spool::{Spool, SpoolFull, Sync};
use tokio_util::sync::CancellationToken;

use super::*;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sl-infra-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn a_changed_boot_id_is_a_reboot_and_the_check_writes_nothing() {
    let dir = temp_dir("boot");
    assert_eq!(check_boot(&dir, "boot-a"), Boot::First);
    remember_boot_id(&dir, "boot-a");
    assert_eq!(
        check_boot(&dir, "boot-a"),
        Boot::Same,
        "a restart is not a reboot"
    );
    let Boot::Rebooted(event) = check_boot(&dir, "boot-b") else {
        panic!("a reboot");
    };
    assert_eq!(event.name, "host.rebooted");
    assert_eq!(event.attrs["previous_boot_id"], "boot-a");
    // Until the event is spooled and the id remembered, a crash reports it again.
    assert!(matches!(check_boot(&dir, "boot-b"), Boot::Rebooted(_)));
    remember_boot_id(&dir, "boot-b");
    assert_eq!(check_boot(&dir, "boot-b"), Boot::Same, "reported once");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The regression: the boot id was saved before the event was spooled, so
/// a crash in between lost the event for good.
#[tokio::test]
async fn the_new_boot_id_is_remembered_only_after_the_reboot_event_is_spooled() {
    let dir = temp_dir("reboot-order");
    remember_boot_id(&dir, "boot-a");
    let counters = Arc::new(AgentCounters::default());
    let spool = Spool::open(&dir.join("spool"), 1 << 20, Sync::Normal).expect("spool");
    let spool = SharedSpool::new(spool, counters.clone());
    let (out, inbox) = Output::channel("infra", counters.clone());

    // The pipeline is not running yet: the event cannot be spooled.
    let cx = SourceContext::new(
        CancellationToken::new(),
        out,
        counters.clone(),
        dir.clone(),
        spool.clone(),
    );
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        report_reboot(&cx, "boot-b"),
    )
    .await;
    assert!(waiting.is_err(), "it waits for the event to be spooled");
    assert!(
        matches!(check_boot(&dir, "boot-b"), Boot::Rebooted(_)),
        "not remembered before the event is spooled"
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(pipeline::run(
        inbox,
        spool.clone(),
        counters.clone(),
        SpoolFull::DropOldest,
        "infra",
        stop.clone(),
    ));
    report_reboot(&cx, "boot-b").await;
    assert_eq!(check_boot(&dir, "boot-b"), Boot::Same);
    let spooled = spool.in_memory(|s| s.len()).await.expect("spool");
    assert!(spooled >= 1, "the event is in the spool");
    stop.cancel();
    let _ = running.await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
