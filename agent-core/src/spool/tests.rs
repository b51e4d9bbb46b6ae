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

#[test]
fn batches_come_back_in_order_after_reopening() {
    let dir = temp_dir("reopen");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
    for _ in 0..5 {
        spool.append(|seq| payload(seq, 100)).expect("append");
    }
    drop(spool);
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("reopen");
    let mut seen = Vec::new();
    let mut after = 0;
    while let Some(seq) = spool.next_after(after) {
        let bytes = spool.read(seq).expect("read").expect("present");
        assert_eq!(&bytes[..8], &seq.to_le_bytes());
        seen.push(seq);
        after = seq;
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    assert_eq!(spool.append(|seq| payload(seq, 10)).expect("append").seq, 6);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn sequence_numbers_never_restart_even_when_all_were_acked() {
    let dir = temp_dir("seq");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
    for _ in 0..3 {
        spool.append(|seq| payload(seq, 10)).expect("append");
    }
    for seq in 1..=3 {
        spool.remove(seq).expect("ack");
    }
    assert!(spool.is_empty());
    drop(spool);
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("reopen");
    assert_eq!(spool.append(|seq| payload(seq, 10)).expect("append").seq, 4);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_full_spool_drops_the_oldest_and_remembers_the_loss() {
    let dir = temp_dir("full");
    // Room for three files of 100 + header bytes.
    let max = 3 * (100 + HEADER_LEN as u64);
    let mut spool = Spool::open(&dir, max, Sync::Normal).expect("open");
    for _ in 0..3 {
        let a = spool.append(|seq| payload(seq, 100)).expect("append");
        assert!(a.dropped.is_empty());
    }
    assert_eq!(spool.report_due(), None);
    let a = spool.append(|seq| payload(seq, 100)).expect("append");
    assert_eq!(a.seq, 4);
    assert_eq!(a.dropped.batches, 1);
    assert_eq!(a.dropped.first_seq, 1);
    let a = spool.append(|seq| payload(seq, 100)).expect("append");
    assert_eq!((a.dropped.first_seq, a.dropped.last_seq), (2, 2));
    assert!(spool.bytes() <= max);
    assert_eq!(spool.next_after(0), Some(3));
    // The count of unreported drops survives a crash.
    drop(spool);
    let mut spool = Spool::open(&dir, max, Sync::Normal).expect("reopen");
    let due = spool.report_due().expect("a report is due");
    assert_eq!((due.batches, due.first_seq, due.last_seq), (2, 1, 2));
    assert_eq!(due.bytes, 2 * (100 + HEADER_LEN as u64));
    // The report goes in; none is due while it is in flight, even across a restart.
    let report = spool.append_report(|seq, covers| {
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
    spool.remove(report.seq).expect("ack");
    let rest = spool.report_due().expect("seq 3");
    assert_eq!((rest.batches, rest.first_seq, rest.last_seq), (1, 3, 3));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_report_dropped_before_delivery_is_made_again_with_everything() {
    let dir = temp_dir("report-lost");
    let max = 2 * (100 + HEADER_LEN as u64);
    let mut spool = Spool::open(&dir, max, Sync::Normal).expect("open");
    for _ in 0..3 {
        spool.append(|seq| payload(seq, 100)).expect("append");
    }
    let first = spool.report_due().expect("seq 1 dropped");
    assert_eq!((first.batches, first.first_seq), (1, 1));
    let report = spool
        .append_report(|seq, _| payload(seq, 100))
        .expect("report");
    assert_eq!(report.seq, 4);
    // The outage goes on: the report itself is pushed out.
    spool.append(|seq| payload(seq, 100)).expect("append");
    spool.append(|seq| payload(seq, 100)).expect("append");
    assert_eq!(spool.next_after(0), Some(5), "the report (4) was dropped");
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
    let max = 2 * (100 + HEADER_LEN as u64);
    let mut spool = Spool::open(&dir, max, Sync::Normal).expect("open");
    for _ in 0..3 {
        spool.append(|seq| payload(seq, 100)).expect("append");
    }
    // seq 1 dropped; the report (4) drops seq 2.
    let report = spool.append_report(|seq, covers| {
        assert_eq!((covers.batches, covers.last_seq), (1, 1));
        payload(seq, 100)
    });
    let report = report.expect("report");
    assert_eq!(report.dropped.first_seq, 2);
    spool.remove(report.seq).expect("ack");
    let rest = spool.report_due().expect("seq 2 still to report");
    assert_eq!((rest.batches, rest.first_seq, rest.last_seq), (1, 2, 2));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_batch_larger_than_the_spool_is_counted_not_kept_and_evicts_nothing() {
    let dir = temp_dir("huge");
    let mut spool = Spool::open(&dir, 1000, Sync::Normal).expect("open");
    spool.append(|seq| payload(seq, 10)).expect("append");
    let a = spool.append(|seq| payload(seq, 5000)).expect("append");
    assert_eq!(a.seq, 2);
    assert_eq!(
        (a.dropped.batches, a.dropped.first_seq),
        (1, 2),
        "only the huge one"
    );
    assert_eq!(spool.next_after(0), Some(1), "the small one stays");
    assert_eq!(spool.append(|seq| payload(seq, 10)).expect("append").seq, 3);
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_batch_the_collector_would_refuse_is_never_spooled() {
    let dir = temp_dir("over-limit");
    let mut spool = Spool::open(&dir, 64 << 20, Sync::Normal).expect("open");
    let a = spool
        .append(|seq| payload(seq, MAX_BATCH_BYTES + 1))
        .expect("append");
    assert_eq!(a.dropped.batches, 1);
    assert!(spool.is_empty(), "it would block delivery forever");
    assert_eq!(spool.report_due().map(|d| d.first_seq), Some(1));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn damaged_and_half_written_files_are_handled() {
    let dir = temp_dir("damaged");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
    for _ in 0..3 {
        spool.append(|seq| payload(seq, 50)).expect("append");
    }
    drop(spool);
    // A crash mid-write leaves a .tmp; a disk error flips a byte.
    fs::write(dir.join(format!("{:020}.tmp", 4)), b"partial").expect("tmp");
    let second = dir.join(format!("{:020}.batch", 2));
    let mut bytes = fs::read(&second).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&second, bytes).expect("corrupt");

    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("reopen");
    assert!(!dir.join(format!("{:020}.tmp", 4)).exists());
    assert!(spool.read(1).expect("read").is_some());
    assert!(
        spool.read(2).expect("read").is_none(),
        "damaged batch is not returned"
    );
    assert_eq!(spool.unreported().batches, 1);
    assert_eq!(spool.next_after(1), Some(3));
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn remove_through_skips_what_the_collector_already_has() {
    let dir = temp_dir("through");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Full).expect("open");
    for _ in 0..5 {
        spool.append(|seq| payload(seq, 10)).expect("append");
    }
    assert_eq!(spool.remove_through(3).expect("remove"), 3);
    assert_eq!(spool.next_after(0), Some(4));
    // A collector that has seen more than we remember pushes our numbers up.
    assert_eq!(spool.remove_through(10).expect("remove"), 2);
    assert_eq!(
        spool.append(|seq| payload(seq, 10)).expect("append").seq,
        11
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn in_normal_mode_numbers_survive_too() {
    let dir = temp_dir("seq-normal");
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("open");
    for _ in 0..12 {
        let a = spool.append(|seq| payload(seq, 10)).expect("append");
        spool.remove(a.seq).expect("ack");
    }
    assert!(spool.is_empty());
    drop(spool);
    let mut spool = Spool::open(&dir, 1 << 20, Sync::Normal).expect("reopen");
    assert_eq!(
        spool.append(|seq| payload(seq, 10)).expect("append").seq,
        13
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_discarded_batch_is_a_loss_to_report_even_if_it_was_the_report() {
    let dir = temp_dir("discard");
    let max = 2 * (100 + HEADER_LEN as u64);
    let mut spool = Spool::open(&dir, max, Sync::Normal).expect("open");
    for _ in 0..3 {
        spool.append(|seq| payload(seq, 100)).expect("append");
    }
    let report = spool
        .append_report(|seq, _| payload(seq, 100))
        .expect("report");
    // The collector refuses the report batch itself: nothing was settled.
    spool.discard(report.seq).expect("discard");
    let due = spool.report_due().expect("due again");
    assert_eq!(due.first_seq, 1);
    assert_eq!(
        due.last_seq, report.seq,
        "the refused batch is itself a loss"
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}
