//! Tests of the pipeline: splitting, the full-spool policy, receipts,
//! named sources, and what is counted at shutdown. Each runs a real
//! pipeline on a spool in a scratch folder; none touches the network.

use std::time::Duration;

use super::*;
use crate::domain::{Metrics, Sample};
use crate::receipt::Fate;
use crate::spool::{Key, SpoolOptions, Sync};
use crate::transport::wire::test_support::{opaque_payload, seq_and_samples};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sl-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct Rig {
    dir: std::path::PathBuf,
    spool: SharedSpool,
    counters: Arc<AgentCounters>,
    out: Output,
    stop: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

fn rig(name: &str, max_bytes: u64, policy: SpoolFull) -> Rig {
    let dir = temp_dir(name);
    let counters = Arc::new(AgentCounters::default());
    let mut options = SpoolOptions::new(max_bytes, Sync::Normal);
    options.counters = Some(counters.clone());
    let spool = Spool::open_with(&dir, options).expect("spool");
    let spool = SharedSpool::new(spool, counters.clone());
    let (out, inbox) = Output::channel("main", counters.clone());
    let stop = CancellationToken::new();
    let running = tokio::spawn(run(
        inbox,
        spool.clone(),
        counters.clone(),
        policy,
        "main",
        stop.clone(),
    ));
    Rig {
        dir,
        spool,
        counters,
        out,
        stop,
        running,
    }
}

fn lines(n: usize, size: usize) -> Payload {
    Payload::Events(
        (0..n)
            .map(|i| Event::now("product.line", Severity::Info, "x".repeat(size)).attr("i", i))
            .collect(),
    )
}

async fn keys(spool: &SharedSpool) -> Vec<Key> {
    spool
        .in_memory(|s| {
            let mut out = Vec::new();
            let mut after = None;
            while let Some(k) = s.next_after(after) {
                out.push(k);
                after = Some(k);
            }
            out
        })
        .await
        .expect("spool")
}

async fn settle(spool: &SharedSpool, key: Key, fate: Fate) {
    spool
        .with(move |s| s.settle(key, fate))
        .await
        .expect("spool")
        .expect("settle");
}

#[tokio::test]
async fn a_send_larger_than_a_batch_is_split_and_its_receipt_waits_for_every_part() {
    let rig = rig("split", 64 << 20, SpoolFull::DropOldest);
    // About 3 MiB of samples: three or four batches of at most 1 MiB.
    let samples: Vec<Sample> = (0..60_000)
        .map(|i| Sample::new("product.bytes", i as f64).label("part", format!("file-{i}")))
        .collect();
    let batch = OutBatch {
        payloads: vec![Payload::Metrics(Metrics {
            time: SystemTime::now(),
            samples,
        })],
        cursor: Some(b"offset=123".to_vec()),
        records: 60_000,
    };
    let mut receipt = rig.out.send(batch).await.expect("sent");
    assert_eq!(receipt.spooled().await, Ok(()));
    let keys = keys(&rig.spool).await;
    assert!(keys.len() >= 3, "split into {}", keys.len());
    let mut samples = 0;
    for &key in &keys {
        let bytes = rig
            .spool
            .with(move |s| s.read(key))
            .await
            .expect("spool")
            .expect("read")
            .expect("present");
        assert!(
            bytes.len() <= BATCH_LIMIT,
            "a part of {} bytes",
            bytes.len()
        );
        let (seq, in_part) = seq_and_samples(&bytes);
        assert_eq!(seq, key.seq);
        samples += in_part;
    }
    assert_eq!(samples, 60_000, "nothing lost in the split");
    // The cursor goes with the last part: acking the others moves nothing.
    let resume = rig
        .spool
        .in_memory(|s| s.resume("main"))
        .await
        .expect("spool");
    assert_eq!(resume.spooled.as_deref(), Some(&b"offset=123"[..]));
    for key in &keys[..keys.len() - 1] {
        settle(&rig.spool, *key, Fate::Acked).await;
    }
    assert_eq!(receipt.fate(), None, "the last part is not acked yet");
    let last = keys[keys.len() - 1];
    settle(&rig.spool, last, Fate::Acked).await;
    assert_eq!(receipt.settled().await, Fate::Acked);
    let resume = rig
        .spool
        .in_memory(|s| s.resume("main"))
        .await
        .expect("spool");
    assert_eq!(resume.acked.as_deref(), Some(&b"offset=123"[..]));
    let main = rig.counters.source("main");
    assert_eq!((main.records_sent, main.records_acked), (60_000, 60_000));
    rig.stop.cancel();
    let _ = rig.running.await;
    std::fs::remove_dir_all(&rig.dir).expect("cleanup");
}

#[tokio::test]
async fn a_split_send_with_one_part_dropped_is_dropped() {
    let rig = rig("split-drop", 64 << 20, SpoolFull::DropOldest);
    let receipt = rig
        .out
        .send(OutBatch::new(vec![lines(6000, 400)]))
        .await
        .expect("sent");
    let keys = loop {
        let keys = keys(&rig.spool).await;
        if keys.len() >= 2 {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    settle(
        &rig.spool,
        keys[0],
        Fate::Dropped(DropReason::Refused("no".into())),
    )
    .await;
    for key in &keys[1..] {
        settle(&rig.spool, *key, Fate::Acked).await;
    }
    assert_eq!(
        receipt.settled().await,
        Fate::Dropped(DropReason::Refused("no".into()))
    );
    rig.stop.cancel();
    let _ = rig.running.await;
    std::fs::remove_dir_all(&rig.dir).expect("cleanup");
}

#[tokio::test]
async fn a_product_payload_larger_than_a_batch_is_refused_before_it_is_spooled() {
    let rig = rig("too-large", 64 << 20, SpoolFull::DropOldest);
    let big = opaque_payload(BATCH_LIMIT);
    let batch = OutBatch {
        payloads: vec![Payload::Encoded(big)],
        cursor: None,
        records: 3,
    };
    let mut receipt = rig.out.send(batch).await.expect("answered");
    assert_eq!(receipt.spooled().await, Err(DropReason::TooLarge));
    assert!(keys(&rig.spool).await.is_empty(), "never spooled");
    assert_eq!(rig.counters.source("main").records_dropped, 3);
    rig.stop.cancel();
    let _ = rig.running.await;
    std::fs::remove_dir_all(&rig.dir).expect("cleanup");
}

/// The file size of one batch of 20 lines with a 2-byte cursor.
fn twenty_lines_file() -> u64 {
    let probe = wire::encode_payload(&lines(20, 100), BATCH_LIMIT).expect("fits");
    Spool::file_len(
        wire::encode_batch(
            1,
            SystemTime::now(),
            &AgentCounters::default().snapshot(),
            &probe,
        )
        .len(),
        &BatchMeta {
            source: Arc::from("main"),
            records: 20,
            cursor: Some(b"00".to_vec()),
        },
    )
}

#[tokio::test]
async fn with_block_the_source_waits_for_room_and_nothing_is_dropped() {
    // Room for two batches of 20 lines, not three.
    let one = twenty_lines_file();
    let rig = rig("block", 2 * one + one / 2, SpoolFull::Block);
    let mut receipts = Vec::new();
    for i in 0..2 {
        let batch = OutBatch {
            payloads: vec![lines(20, 100)],
            cursor: Some(format!("{i:02}").into_bytes()),
            records: 20,
        };
        let mut r = rig.out.send(batch).await.expect("sent");
        assert_eq!(r.spooled().await, Ok(()));
        receipts.push(r);
    }
    // The third does not fit: it waits, and so does its source.
    let mut third = rig
        .out
        .send(OutBatch {
            payloads: vec![lines(20, 100)],
            cursor: Some(b"02".to_vec()),
            records: 20,
        })
        .await
        .expect("queued");
    let waited = tokio::time::timeout(Duration::from_millis(300), third.spooled()).await;
    assert!(waited.is_err(), "spooled although the spool is full");
    assert_eq!(keys(&rig.spool).await.len(), 2, "nothing evicted");
    // An ack makes room: the third goes in.
    let first = keys(&rig.spool).await[0];
    settle(&rig.spool, first, Fate::Acked).await;
    assert_eq!(third.spooled().await, Ok(()));
    assert_eq!(receipts[0].fate(), Some(Fate::Acked));
    assert_eq!(rig.counters.snapshot().batches_dropped, 0);
    rig.stop.cancel();
    let _ = rig.running.await;
    std::fs::remove_dir_all(&rig.dir).expect("cleanup");
}

#[tokio::test]
async fn a_block_wait_ends_at_shutdown_and_what_was_queued_is_counted_and_reported() {
    let one = twenty_lines_file();
    let rig = rig("shutdown", one + one / 2, SpoolFull::Block);
    // Room for one batch: the second waits, the third is queued behind it.
    let first = rig
        .out
        .send(OutBatch::new(vec![lines(20, 100)]))
        .await
        .expect("sent");
    let mut second = rig
        .out
        .send(OutBatch::new(vec![lines(20, 100)]))
        .await
        .expect("sent");
    let third = rig
        .out
        .send(OutBatch::new(vec![lines(20, 100)]))
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(first);
    rig.stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), rig.running)
        .await
        .expect("the pipeline stops")
        .expect("no panic");
    assert_eq!(second.spooled().await, Err(DropReason::Shutdown));
    assert_eq!(third.settled().await, Fate::Dropped(DropReason::Shutdown));
    let unreported = rig
        .spool
        .in_memory(|s| s.unreported())
        .await
        .expect("spool");
    assert_eq!(unreported.batches, 2, "counted, to be reported");
    assert_eq!(rig.counters.snapshot().batches_dropped, 2);
    // The next run reports it.
    drop(rig.spool);
    let spool = Spool::open(&rig.dir, 1 << 20, Sync::Normal).expect("reopen");
    assert_eq!(spool.report_due().map(|d| d.batches), Some(2));
    std::fs::remove_dir_all(&rig.dir).expect("cleanup");
}

#[tokio::test]
async fn named_sources_share_the_pipeline_with_their_own_cursors_and_counts() {
    let rig = rig("named", 64 << 20, SpoolFull::DropOldest);
    let a = rig.out.named("source-a");
    assert_eq!((rig.out.source(), a.source()), ("main", "source-a"));
    a.records_read(7);
    let mut r = a
        .send(OutBatch {
            payloads: vec![lines(5, 10)],
            cursor: Some(b"n1".to_vec()),
            records: 5,
        })
        .await
        .expect("sent");
    assert_eq!(r.spooled().await, Ok(()));
    let resume = rig
        .spool
        .in_memory(|s| s.resume("source-a"))
        .await
        .expect("spool");
    assert_eq!(resume.spooled.as_deref(), Some(&b"n1"[..]));
    let other = rig
        .spool
        .in_memory(|s| s.resume("main"))
        .await
        .expect("spool");
    assert_eq!(other.spooled, None);
    let health = rig.counters.snapshot();
    let n = health
        .sources
        .iter()
        .find(|s| s.name == "source-a")
        .expect("source-a");
    assert_eq!((n.records_read, n.records_sent), (7, 5));
    rig.stop.cancel();
    let _ = rig.running.await;
    std::fs::remove_dir_all(&rig.dir).expect("cleanup");
}
