//! Tests of the spool on scratch folders: numbering, eviction and its
//! reports, receipts, cursors, instances, and damaged files.

use super::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sl-spool-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut bytes = seq.to_le_bytes().to_vec();
    bytes.resize(len, b'x');
    bytes
}

fn meta() -> BatchMeta {
    BatchMeta {
        source: Arc::from("product"),
        records: 0,
        cursor: None,
    }
}

fn cursor_meta(source: &str, cursor: &str) -> BatchMeta {
    BatchMeta {
        source: Arc::from(source),
        records: 1,
        cursor: Some(cursor.as_bytes().to_vec()),
    }
}

/// Bytes of a spool file holding a `len`-byte payload with [`meta`].
fn file(len: usize) -> u64 {
    Spool::file_len(len, &meta())
}

fn add(spool: &mut Spool, len: usize) -> Appended {
    spool
        .append(meta(), None, |seq| payload(seq, len))
        .expect("append")
}

fn key(spool: &Spool, seq: u64) -> Key {
    Key {
        epoch: spool.current_instance().0,
        seq,
    }
}

fn all(spool: &Spool) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut after = None;
    while let Some(k) = spool.next_after(after) {
        seen.push(k.seq);
        after = Some(k);
    }
    seen
}

fn options(max: u64, sync: Sync, boot: &str) -> SpoolOptions {
    SpoolOptions {
        boot_id: Some(boot.to_string()),
        ..SpoolOptions::new(max, sync)
    }
}

#[test]
fn batches_come_back_in_order_after_reopening() {
    let dir = temp_dir("reopen");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
    for _ in 0..5 {
        add(&mut spool, 100);
    }
    let instance = spool.current_instance().1.to_string();
    drop(spool);
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("reopen");
    assert_eq!(spool.current_instance().1, instance);
    let mut after = None;
    while let Some(k) = spool.next_after(after) {
        let bytes = spool.read(k).expect("read").expect("present");
        assert_eq!(&bytes[..8], &k.seq.to_le_bytes());
        after = Some(k);
    }
    assert_eq!(all(&spool), [1, 2, 3, 4, 5]);
    assert_eq!(add(&mut spool, 10).key.seq, 6);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn sequence_numbers_never_restart_even_when_all_were_acked() {
    let dir = temp_dir("seq");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
    for _ in 0..3 {
        add(&mut spool, 10);
    }
    for seq in 1..=3 {
        let k = key(&spool, seq);
        spool.settle(k, Fate::Acked).expect("ack");
    }
    assert!(spool.is_empty());
    drop(spool);
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("reopen");
    assert_eq!(add(&mut spool, 10).key.seq, 4);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_full_spool_drops_the_oldest_and_remembers_the_loss() {
    let dir = temp_dir("full");
    // Room for three files of 100 bytes of payload.
    let max = 3 * file(100);
    let mut spool = Spool::open(&dir, max, Sync::Normal).expect("open");
    for _ in 0..3 {
        assert!(add(&mut spool, 100).dropped.is_empty());
    }
    assert_eq!(spool.report_due(), None);
    let a = add(&mut spool, 100);
    assert_eq!(a.key.seq, 4);
    assert_eq!(a.dropped.batches, 1);
    assert_eq!(a.dropped.first_seq, 1);
    let a = add(&mut spool, 100);
    assert_eq!((a.dropped.first_seq, a.dropped.last_seq), (2, 2));
    assert!(spool.bytes() <= max);
    assert_eq!(all(&spool)[0], 3);
    // The count of unreported drops survives a crash.
    drop(spool);
    let mut spool = Spool::open(&dir, max, Sync::Normal).expect("reopen");
    let due = spool.report_due().expect("a report is due");
    assert_eq!((due.batches, due.first_seq, due.last_seq), (2, 1, 2));
    assert_eq!(due.bytes, 2 * file(100));
    // The report goes in; none is due while it is in flight, even across a restart.
    let report = spool.append_report(meta(), |seq, covers| {
        assert_eq!(covers, due);
        payload(seq, 100)
    });
    let report = report.expect("report appended");
    assert_eq!(spool.report_due(), None);
    drop(spool);
    let mut spool = Spool::open(&dir, max, Sync::Normal).expect("reopen");
    assert_eq!(spool.report_due(), None, "still in flight after a restart");
    // Acknowledged: what it reported is settled. Making room for the report
    // dropped seq 3, which is due next.
    assert_eq!(report.dropped.first_seq, 3);
    spool.settle(report.key, Fate::Acked).expect("ack");
    let rest = spool.report_due().expect("seq 3");
    assert_eq!((rest.batches, rest.first_seq, rest.last_seq), (1, 3, 3));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_report_dropped_before_delivery_is_made_again_with_everything() {
    let dir = temp_dir("report-lost");
    let mut spool = Spool::open(&dir, 2 * file(100), Sync::Normal).expect("open");
    for _ in 0..3 {
        add(&mut spool, 100);
    }
    let first = spool.report_due().expect("seq 1 dropped");
    assert_eq!((first.batches, first.first_seq), (1, 1));
    let report = spool
        .append_report(meta(), |seq, _| payload(seq, 100))
        .expect("report");
    assert_eq!(report.key.seq, 4);
    // The outage goes on: the report itself is pushed out.
    add(&mut spool, 100);
    add(&mut spool, 100);
    assert_eq!(all(&spool)[0], 5, "the report (4) was dropped");
    let again = spool.report_due().expect("due again");
    assert_eq!(
        again.first_seq, 1,
        "the lost report's drops are reported again"
    );
    assert_eq!(
        again.batches, 4,
        "1 and 2, 3, and the report batch 4 itself"
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn drops_after_a_report_are_left_for_the_next_one() {
    let dir = temp_dir("report-partial");
    let mut spool = Spool::open(&dir, 2 * file(100), Sync::Normal).expect("open");
    for _ in 0..3 {
        add(&mut spool, 100);
    }
    // seq 1 dropped; the report (4) drops seq 2.
    let report = spool.append_report(meta(), |seq, covers| {
        assert_eq!((covers.batches, covers.last_seq), (1, 1));
        payload(seq, 100)
    });
    let report = report.expect("report");
    assert_eq!(report.dropped.first_seq, 2);
    spool.settle(report.key, Fate::Acked).expect("ack");
    let rest = spool.report_due().expect("seq 2 still to report");
    assert_eq!((rest.batches, rest.first_seq, rest.last_seq), (1, 2, 2));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_batch_larger_than_the_spool_is_counted_not_kept_and_evicts_nothing() {
    let dir = temp_dir("huge");
    let mut spool = Spool::open(&dir, 1000, Sync::Normal).expect("open");
    add(&mut spool, 10);
    let (tracker, mut receipt) = Tracker::new();
    let a = spool
        .append(meta(), Some(tracker), |seq| payload(seq, 5000))
        .expect("append");
    assert_eq!(a.key.seq, 2);
    assert!(!a.kept);
    assert_eq!(
        (a.dropped.batches, a.dropped.first_seq),
        (1, 2),
        "only the huge one"
    );
    assert_eq!(all(&spool), [1], "the small one stays");
    assert_eq!(add(&mut spool, 10).key.seq, 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    assert_eq!(rt.block_on(receipt.spooled()), Err(DropReason::TooLarge));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_batch_the_collector_would_refuse_is_never_spooled() {
    let dir = temp_dir("over-limit");
    let mut spool = Spool::open(&dir, 64 << 20, Sync::Normal).expect("open");
    let a = add(&mut spool, MAX_BATCH_BYTES + 1);
    assert_eq!(a.dropped.batches, 1);
    assert!(spool.is_empty(), "it would block delivery forever");
    assert_eq!(spool.report_due().map(|d| d.first_seq), Some(1));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn damaged_half_written_and_old_format_files_are_handled() {
    let dir = temp_dir("damaged");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
    for _ in 0..3 {
        add(&mut spool, 50);
    }
    let epoch = spool.current_instance().0;
    drop(spool);
    // A crash mid-write leaves a .tmp; a disk error flips a byte; an older
    // agent left a file of the first format.
    let tmp = dir.join(format!("{epoch:010}-{:020}.tmp", 4));
    fs::write(&tmp, b"partial").expect("tmp");
    let second = dir.join(format!("{epoch:010}-{:020}.batch", 2));
    let mut bytes = fs::read(&second).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&second, bytes).expect("corrupt");
    let old = dir.join(format!("{:020}.batch", 9));
    fs::write(&old, b"SLB1\0\0\0\0\0\0\0\0\0\0\0\0payload").expect("old");

    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("reopen");
    assert!(!tmp.exists());
    assert!(!old.exists(), "the old format is refused");
    assert_eq!(
        spool.unreported().batches,
        1,
        "the old-format file is counted"
    );
    assert!(spool.read(key(&spool, 1)).expect("read").is_some());
    assert!(
        spool.read(key(&spool, 2)).expect("read").is_none(),
        "damaged batch is not returned"
    );
    assert_eq!(spool.unreported().batches, 2);
    assert_eq!(all(&spool), [1, 3]);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn settle_through_skips_what_the_collector_already_has() {
    let dir = temp_dir("through");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
    for _ in 0..5 {
        add(&mut spool, 10);
    }
    let epoch = spool.current_instance().0;
    let through = spool.settle_through(epoch, 3).expect("settle");
    assert_eq!(through.settled, 3);
    assert_eq!(through.beyond_numbering, None);
    assert_eq!(all(&spool), [4, 5]);
    assert_eq!(add(&mut spool, 10).key.seq, 6);
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// The regression: a collector holding numbers above the spool's made the
/// spool remove its unsent batches as "already stored" and number on above.
#[test]
fn a_collector_ahead_of_the_numbering_removes_nothing_unsent_and_starts_a_new_instance() {
    let dir = temp_dir("ahead");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("open");
    for _ in 0..5 {
        add(&mut spool, 10);
    }
    let (epoch, old) = (
        spool.current_instance().0,
        spool.current_instance().1.to_string(),
    );
    // The collector says it has up to 100 of this instance.
    let through = spool.settle_through(epoch, 100).expect("settle");
    assert_eq!(through.beyond_numbering, Some(100));
    assert_eq!(through.settled, 5, "only what this spool numbered");
    let next = add(&mut spool, 10);
    assert_eq!(next.key.seq, 1, "a new instance starts at 1");
    assert_ne!(spool.current_instance().1, old);
    assert!(next.key.epoch > epoch);
    // The old instance is not numbered in any more: the collector holding
    // more of it is normal, and changes nothing.
    let through = spool.settle_through(epoch, 200).expect("settle");
    assert_eq!(through.beyond_numbering, None);
    assert_eq!(spool.current_instance().0, next.key.epoch);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn in_normal_mode_numbers_survive_too() {
    let dir = temp_dir("seq-normal");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("open");
    for _ in 0..12 {
        let a = add(&mut spool, 10);
        spool.settle(a.key, Fate::Acked).expect("ack");
    }
    assert!(spool.is_empty());
    drop(spool);
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("reopen");
    assert_eq!(add(&mut spool, 10).key.seq, 13);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_refused_batch_is_a_loss_to_report_even_if_it_was_the_report() {
    let dir = temp_dir("discard");
    let mut spool = Spool::open(&dir, 2 * file(100), Sync::Normal).expect("open");
    for _ in 0..3 {
        add(&mut spool, 100);
    }
    let report = spool
        .append_report(meta(), |seq, _| payload(seq, 100))
        .expect("report");
    // The collector refuses the report batch itself: nothing was settled.
    spool
        .settle(report.key, Fate::Dropped(DropReason::Refused("no".into())))
        .expect("refuse");
    let due = spool.report_due().expect("due again");
    assert_eq!(due.first_seq, 1);
    assert_eq!(
        due.last_seq, report.key.seq,
        "the refused batch is itself a loss"
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// The regression: the spool evicted a batch the transport had sent, and
/// reported it dropped, although the collector then stored it.
#[test]
fn a_batch_in_flight_is_never_evicted_the_oldest_not_in_flight_goes() {
    let dir = temp_dir("in-flight");
    let mut spool = Spool::open(&dir, 3 * file(100), Sync::Normal).expect("open");
    let (tracker, receipt) = Tracker::new();
    let first = spool
        .append(meta(), Some(tracker), |seq| payload(seq, 100))
        .expect("append");
    add(&mut spool, 100);
    add(&mut spool, 100);
    spool.mark_in_flight(first.key);
    let a = add(&mut spool, 100);
    assert_eq!(
        (a.dropped.first_seq, a.dropped.last_seq),
        (2, 2),
        "2 went, not 1"
    );
    assert_eq!(all(&spool), [1, 3, 4]);
    assert_eq!(
        receipt.fate(),
        None,
        "the batch in flight is not reported dropped"
    );
    // Everything in flight: the spool overshoots rather than evict.
    for k in [3, 4] {
        let k = key(&spool, k);
        spool.mark_in_flight(k);
    }
    let a = add(&mut spool, 100);
    assert!(a.dropped.is_empty());
    assert_eq!(spool.bytes(), 4 * file(100), "over by what is in flight");
    spool.settle(first.key, Fate::Acked).expect("ack");
    assert_eq!(receipt.fate(), Some(Fate::Acked));
    // Once the session ends, nothing is in flight and eviction resumes.
    spool.clear_in_flight();
    let a = add(&mut spool, 100);
    assert_eq!(a.dropped.first_seq, 3);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn receipts_follow_acks_refusals_and_evictions() {
    let dir = temp_dir("receipts");
    let mut spool = Spool::open(&dir, 2 * file(100), Sync::Normal).expect("open");
    let mut receipts = Vec::new();
    for _ in 0..3 {
        let (tracker, receipt) = Tracker::new();
        spool
            .append(meta(), Some(tracker), |seq| payload(seq, 100))
            .expect("append");
        receipts.push(receipt);
    }
    assert_eq!(
        receipts[0].fate(),
        Some(Fate::Dropped(DropReason::SpoolFull))
    );
    let (k2, k3) = (key(&spool, 2), key(&spool, 3));
    spool.settle(k2, Fate::Acked).expect("ack");
    spool
        .settle(k3, Fate::Dropped(DropReason::Refused("bad".into())))
        .expect("refuse");
    assert_eq!(receipts[1].fate(), Some(Fate::Acked));
    assert_eq!(
        receipts[2].fate(),
        Some(Fate::Dropped(DropReason::Refused("bad".into())))
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn per_source_records_are_counted_as_sent_acked_and_dropped() {
    let dir = temp_dir("records");
    let counters = Arc::new(AgentCounters::default());
    let mut options = SpoolOptions::new(
        2 * Spool::file_len(100, &cursor_meta("source-a", "0")),
        Sync::Normal,
    );
    options.counters = Some(counters.clone());
    let mut spool = Spool::open_with(&dir, options).expect("open");
    for i in 0..3 {
        let mut m = cursor_meta("source-a", &i.to_string());
        m.records = 10;
        spool
            .append(m, None, |seq| payload(seq, 100))
            .expect("append");
    }
    let k = key(&spool, 2);
    spool.settle(k, Fate::Acked).expect("ack");
    let a = counters.source("source-a");
    assert_eq!(
        (a.records_sent, a.records_acked, a.records_dropped),
        (30, 10, 10)
    );
    assert_eq!(counters.snapshot().batches_dropped, 1);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn cursors_move_only_past_settled_batches_in_order_and_survive_restarts() {
    let dir = temp_dir("cursors");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("open");
    let resume = spool.resume("source-a");
    assert_eq!((resume.acked, resume.spooled), (None, None));
    let mut updates = resume.acked_updates;
    for (source, cursor) in [
        ("source-a", "a"),
        ("source-a", "b"),
        ("source-b", "x"),
        ("source-a", "c"),
    ] {
        spool
            .append(cursor_meta(source, cursor), None, |seq| payload(seq, 10))
            .expect("append");
    }
    // Batches without a cursor (metrics) and cost nothing here.
    add(&mut spool, 10);
    let resume = spool.resume("source-a");
    assert_eq!(resume.acked, None);
    assert_eq!(resume.spooled.as_deref(), Some(&b"c"[..]), "newest spooled");
    // Acked out of order: "b" must wait for "a".
    let (k1, k2, k4) = (key(&spool, 1), key(&spool, 2), key(&spool, 4));
    spool.settle(k2, Fate::Acked).expect("ack");
    assert_eq!(spool.resume("source-a").acked, None, "a is still pending");
    assert!(!updates.has_changed().expect("open"));
    spool.settle(k1, Fate::Acked).expect("ack");
    assert_eq!(spool.resume("source-a").acked.as_deref(), Some(&b"b"[..]));
    assert!(updates.has_changed().expect("open"));
    assert_eq!(updates.borrow_and_update().as_deref(), Some(&b"b"[..]));
    assert_eq!(spool.resume("source-b").acked, None, "per source");
    drop(spool);

    // After a restart: the acked cursor is on disk, and acks for batches
    // spooled before the restart still move it.
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("reopen");
    let resume = spool.resume("source-a");
    assert_eq!(resume.acked.as_deref(), Some(&b"b"[..]));
    assert_eq!(resume.spooled.as_deref(), Some(&b"c"[..]));
    let mut updates = resume.acked_updates;
    // A dropped batch settles too: its records will never come back.
    spool
        .settle(k4, Fate::Dropped(DropReason::Refused("x".into())))
        .expect("refuse");
    assert!(updates.has_changed().expect("open"));
    assert_eq!(updates.borrow_and_update().as_deref(), Some(&b"c"[..]));
    assert_eq!(spool.resume("source-a").spooled, None);
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// The regression: after a power cut with sync=normal the record of the
/// numbering may roll back, the spool numbered again from below what the
/// collector held, and those new batches were removed as "already stored".
#[test]
fn after_a_reboot_with_sync_normal_new_batches_get_a_new_instance_and_old_ones_keep_theirs() {
    let dir = temp_dir("reboot");
    let mut spool = Spool::open_with(&dir, options(1 << 20, Sync::Normal, "boot-a")).expect("open");
    for _ in 0..5 {
        add(&mut spool, 10);
    }
    let (old_epoch, old_id) = (
        spool.current_instance().0,
        spool.current_instance().1.to_string(),
    );
    drop(spool);
    // The power cut rolled the numbering record back to 2.
    fs::write(
        dir.join(LAST_SEQ_FILE),
        format!("{old_epoch:010} {:020}\n", 2),
    )
    .expect("roll back");
    fs::remove_file(dir.join(format!("{old_epoch:010}-{:020}.batch", 5))).expect("lost file");

    let mut spool =
        Spool::open_with(&dir, options(1 << 20, Sync::Normal, "boot-b")).expect("reopen");
    let (epoch, id) = (
        spool.current_instance().0,
        spool.current_instance().1.to_string(),
    );
    assert_ne!(id, old_id, "a new instance");
    assert!(epoch > old_epoch);
    let a = add(&mut spool, 10);
    assert_eq!(a.key.seq, 1, "numbered from 1 in the new instance");
    // The old batches keep their instance and come first.
    assert_eq!(spool.oldest_instance(), (old_epoch, old_id.clone()));
    let first = spool.next_after(None).expect("old batch");
    assert_eq!((first.epoch, first.seq), (old_epoch, 1));
    // Reopening on the same boot keeps the new instance.
    drop(spool);
    let spool = Spool::open_with(&dir, options(1 << 20, Sync::Normal, "boot-b")).expect("reopen");
    assert_eq!(spool.current_instance().1, id);
    assert_eq!(spool.last_seq(), 1);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn with_sync_full_a_reboot_keeps_the_instance() {
    let dir = temp_dir("reboot-full");
    let mut spool = Spool::open_with(&dir, options(1 << 20, Sync::Full, "boot-a")).expect("open");
    add(&mut spool, 10);
    let id = spool.current_instance().1.to_string();
    drop(spool);
    let mut spool = Spool::open_with(&dir, options(1 << 20, Sync::Full, "boot-b")).expect("reopen");
    assert_eq!(spool.current_instance().1, id);
    assert_eq!(add(&mut spool, 10).key.seq, 2);
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// The regression: a missing or damaged instance file made a new instance
/// under which the spooled batches were resent, and stored twice.
#[test]
fn a_lost_instance_file_leaves_spooled_batches_in_their_own_instance() {
    for damage in ["missing", "garbage"] {
        let dir = temp_dir(&format!("instance-{damage}"));
        let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
        for _ in 0..3 {
            add(&mut spool, 10);
        }
        let (old_epoch, old_id) = (
            spool.current_instance().0,
            spool.current_instance().1.to_string(),
        );
        drop(spool);
        match damage {
            "missing" => fs::remove_file(dir.join(INSTANCE_FILE)).expect("remove"),
            _ => fs::write(dir.join(INSTANCE_FILE), "garbage").expect("write"),
        }
        let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("reopen");
        assert_eq!(
            spool.oldest_instance(),
            (old_epoch, old_id.clone()),
            "{damage}"
        );
        assert_eq!(all(&spool), [1, 2, 3]);
        assert_ne!(
            spool.current_instance().1,
            old_id,
            "new batches: a new instance"
        );
        assert_eq!(add(&mut spool, 10).key.seq, 1);
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}

/// The file of a settled batch is reused for the next one (same inode: no
/// inode allocated or freed per batch), cut to the new batch's length, and
/// never seen as a batch: the folder holds only what is waiting, and a
/// reopened spool finds exactly that.
#[test]
fn a_settled_batch_file_is_reused_for_the_next_batch_and_cut_to_length() {
    use std::os::unix::fs::MetadataExt;
    let dir = temp_dir("spare");
    let batch_files = |dir: &Path| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .expect("folder")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == BATCH_EXT))
            .collect();
        files.sort();
        files
    };
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("open");
    let first = add(&mut spool, 3000).key;
    let [first_file] = batch_files(&dir).try_into().expect("one batch file");
    let inode = fs::metadata(&first_file).expect("file").ino();
    spool.settle(first, Fate::Acked).expect("settle");
    assert!(
        batch_files(&dir).is_empty(),
        "a settled batch is not in the folder"
    );

    // Shorter than the spare: cut, or the stale tail would fail the CRC.
    let second = add(&mut spool, 100).key;
    let [second_file] = batch_files(&dir).try_into().expect("one batch file");
    assert_eq!(
        fs::metadata(&second_file).expect("file").ino(),
        inode,
        "reused"
    );
    assert_eq!(
        fs::metadata(&second_file).expect("file").len(),
        file(100),
        "cut to the new batch's length"
    );
    let read = read_spooled_file(&second_file).expect("a whole batch file");
    assert_eq!(read.seq, second.seq);
    assert_eq!(read.batch, payload(second.seq, 100));
    assert_eq!(
        spool.read(second).expect("read"),
        Some(payload(second.seq, 100))
    );

    // Reopened: only the waiting batch is there; leftover spares are gone.
    spool.settle(second, Fate::Acked).expect("settle");
    let third = add(&mut spool, 5000).key;
    let fourth = add(&mut spool, 10).key;
    spool.settle(third, Fate::Acked).expect("settle");
    drop(spool);
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("reopen");
    assert_eq!(all(&spool), [fourth.seq]);
    assert_eq!(
        spool.read(fourth).expect("read"),
        Some(payload(fourth.seq, 10))
    );
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .expect("folder")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    fs::remove_dir_all(&dir).expect("cleanup");
}

/// Cursors are written over the start of their file in place: a shorter
/// cursor after a longer one, one too large for that (replaced whole) and
/// a small one after it again all read back as written after a restart;
/// a file of the first format (epoch, seq, cursor) still reads.
#[test]
fn cursors_written_in_place_read_back_whatever_their_lengths() {
    let dir = temp_dir("cursor-in-place");
    let long = "l".repeat(300);
    let huge = "h".repeat(CURSOR_IN_PLACE_BYTES + 100);
    for cursor in [long.as_str(), "s", huge.as_str(), "t", "u"] {
        let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("open");
        let appended = spool
            .append(cursor_meta("source-a", cursor), None, |seq| {
                payload(seq, 10)
            })
            .expect("append");
        spool.settle(appended.key, Fate::Acked).expect("ack");
        drop(spool);
        let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("reopen");
        assert_eq!(
            spool.resume("source-a").acked.as_deref(),
            Some(cursor.as_bytes()),
            "a cursor of {} bytes",
            cursor.len()
        );
    }
    let file = dir.join(CURSORS_DIR).join(cursor_file_name("source-a"));
    let mut first_format = 1u32.to_le_bytes().to_vec();
    first_format.extend_from_slice(&7u64.to_le_bytes());
    first_format.extend_from_slice(b"old");
    fs::write(&file, &first_format).expect("write");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("reopen");
    assert_eq!(spool.resume("source-a").acked.as_deref(), Some(&b"old"[..]));
    // A record whose CRC does not hold is no cursor.
    let mut damaged = cursor_record(Key { epoch: 1, seq: 8 }, b"new");
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    fs::write(&file, &damaged).expect("write");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("reopen");
    assert_eq!(spool.resume("source-a").acked, None);
    fs::remove_dir_all(&dir).expect("cleanup");
}
