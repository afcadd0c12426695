//! Blocking waits of `fscache-lock` between threads: a waiter wakes when
//! the holder releases, stays blocked while it holds, and `lock_timeout`
//! gives up or succeeds in time. Moved here from the crate's own
//! `tests/lock/semantics.rs` because they depend on timing: here they share the
//! one definition of `EVENTUALLY` and `QUIET` in `fscache-testkit`, which a
//! packaged crate's tests cannot use.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fscache_lock::{FileLock, LockKind};
use fscache_testkit::{open_rw as open, temp_file as temp, EVENTUALLY, QUIET};
use LockKind::{Exclusive, Shared};

#[test]
fn a_blocked_lock_wakes_when_the_holder_releases() {
    let tmp = temp();
    let path = tmp.path().to_path_buf();
    let held = FileLock::lock(open(&path), Exclusive).unwrap();

    let (tx, rx) = mpsc::channel();
    let waiter = {
        let file = open(&path);
        thread::spawn(move || {
            tx.send("waiting").unwrap();
            let guard = FileLock::lock(file, Exclusive).expect("blocking lock");
            tx.send("locked").unwrap();
            guard.unlock().expect("unlock");
        })
    };

    assert_eq!(rx.recv_timeout(EVENTUALLY), Ok("waiting"));
    // The waiter must stay blocked while the lock is held.
    assert_eq!(
        rx.recv_timeout(QUIET),
        Err(mpsc::RecvTimeoutError::Timeout),
        "the waiter got the lock while it was held"
    );
    drop(held);
    assert_eq!(rx.recv_timeout(EVENTUALLY), Ok("locked"));
    waiter.join().unwrap();
}

#[test]
fn a_blocked_convert_wakes_when_the_other_reader_leaves() {
    let tmp = temp();
    let path = tmp.path().to_path_buf();
    let reader = FileLock::lock(open(&path), Shared).unwrap();

    let (tx, rx) = mpsc::channel();
    let converter = {
        let file = open(&path);
        thread::spawn(move || {
            let mut guard = FileLock::lock(file, Shared).expect("shared lock");
            tx.send("shared").unwrap();
            guard.convert(Exclusive).expect("convert");
            tx.send("exclusive").unwrap();
            assert_eq!(guard.kind(), Exclusive);
        })
    };

    assert_eq!(rx.recv_timeout(EVENTUALLY), Ok("shared"));
    assert_eq!(
        rx.recv_timeout(QUIET),
        Err(mpsc::RecvTimeoutError::Timeout),
        "converted to exclusive while another reader held the file"
    );
    drop(reader);
    assert_eq!(rx.recv_timeout(EVENTUALLY), Ok("exclusive"));
    converter.join().unwrap();
}

#[test]
fn lock_timeout_gives_up_under_contention() {
    let tmp = temp();
    let path = tmp.path();
    let held = FileLock::lock(open(path), Exclusive).unwrap();

    let timeout = Duration::from_millis(120);
    let start = Instant::now();
    let got = FileLock::lock_timeout(open(path), Shared, timeout).unwrap();
    let elapsed = start.elapsed();
    assert!(got.is_none(), "granted while an exclusive lock was held");
    assert!(elapsed >= timeout, "gave up early, after {elapsed:?}");
    assert!(elapsed < EVENTUALLY, "took {elapsed:?}");

    drop(held);
    let got = FileLock::lock_timeout(open(path), Exclusive, timeout).unwrap();
    assert_eq!(got.map(|g| g.kind()), Some(Exclusive));
}

#[test]
fn lock_timeout_succeeds_when_released_in_time() {
    let tmp = temp();
    let path = tmp.path().to_path_buf();
    let held = FileLock::lock(open(&path), Exclusive).unwrap();
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        drop(held);
    });
    let got = FileLock::lock_timeout(open(&path), Exclusive, EVENTUALLY).unwrap();
    assert!(got.is_some(), "not granted although the holder released");
    releaser.join().unwrap();
}

/// Plain OFD locks prefer readers: while a writer waits, a new reader is
/// let in at once. With `lock_writers_first` the waiting writer holds the
/// gate, so the new reader queues behind it, and the writer goes first.
#[test]
fn writers_first_queues_new_readers_behind_a_waiting_writer() {
    use fscache_lock::{conflicting_range_lock, RangeLock, WRITERS_FIRST_GATE};
    use std::os::fd::AsFd;
    let tmp = temp();
    let path = tmp.path().to_path_buf();

    // Without the gate: a reader holds, a writer waits, a new reader gets in.
    let reader = FileLock::lock(open(&path), Shared).unwrap();
    let writer = {
        let file = open(&path);
        thread::spawn(move || drop(FileLock::lock(file, Exclusive).expect("lock")))
    };
    thread::sleep(QUIET); // let the writer block
    assert!(
        FileLock::try_lock(open(&path), Shared).unwrap().is_some(),
        "a new reader passes the waiting writer"
    );
    drop(reader);
    writer.join().unwrap();

    // With the gate.
    let first = RangeLock::lock_writers_first(open(&path), Shared).unwrap();
    let (tx, rx) = mpsc::channel();
    let writer = {
        let (file, tx) = (open(&path), tx.clone());
        thread::spawn(move || {
            let held = RangeLock::lock_writers_first(file, Exclusive).expect("write");
            tx.send("writer").unwrap();
            thread::sleep(Duration::from_millis(50));
            held.unlock().expect("unlock");
        })
    };
    // The writer waits for `first` holding the gate exclusively.
    let probe = open(&path);
    let deadline = Instant::now() + EVENTUALLY;
    while conflicting_range_lock(probe.as_fd(), Shared, WRITERS_FIRST_GATE, 1)
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "the writer never took the gate");
        thread::sleep(Duration::from_millis(5));
    }
    let late = {
        let file = open(&path);
        thread::spawn(move || {
            let held = RangeLock::lock_writers_first(file, Shared).expect("read");
            tx.send("late reader").unwrap();
            drop(held);
        })
    };
    assert_eq!(
        rx.recv_timeout(QUIET),
        Err(mpsc::RecvTimeoutError::Timeout),
        "nobody passes the reader that holds the lock"
    );
    drop(first);
    assert_eq!(
        rx.recv_timeout(EVENTUALLY),
        Ok("writer"),
        "the writer first"
    );
    assert_eq!(rx.recv_timeout(EVENTUALLY), Ok("late reader"));
    writer.join().unwrap();
    late.join().unwrap();
}
