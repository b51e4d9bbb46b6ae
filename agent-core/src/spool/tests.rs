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
    let unreported = spool.unreported();
    assert_eq!(
        (
            unreported.batches,
            unreported.first_seq,
            unreported.last_seq
        ),
        (2, 1, 2)
    );
    assert_eq!(unreported.bytes, 2 * (100 + HEADER_LEN as u64));
    spool.clear_unreported().expect("clear");
    drop(spool);
    assert!(
        Spool::open(&dir, max, Sync::Normal)
            .expect("reopen")
            .unreported()
            .is_empty()
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_batch_larger_than_the_spool_is_counted_not_kept() {
    let dir = temp_dir("huge");
    let mut spool = Spool::open(&dir, 1000, Sync::Normal).expect("open");
    spool.append(|seq| payload(seq, 10)).expect("append");
    let a = spool.append(|seq| payload(seq, 5000)).expect("append");
    assert_eq!(a.seq, 2);
    assert_eq!(
        a.dropped.batches, 2,
        "the small one made room in vain, and the huge one"
    );
    assert!(spool.is_empty());
    assert_eq!(spool.append(|seq| payload(seq, 10)).expect("append").seq, 3);
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
