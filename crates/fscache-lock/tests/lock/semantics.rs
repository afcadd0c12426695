//! Semantics of OFD locks as `fscache-lock` exposes them, proven within one
//! process: separate opens conflict, dups share, the lock lives until
//! explicit unlock or the last descriptor of its open file closes.
//!
//! Cross-process behaviour is tested in the workspace's top-level `tests/`,
//! and so are the timing-dependent tests of this crate: blocking waits that
//! must wake, must stay blocked, or must time out (`tests/suite/
//! lock_waits.rs`). Those need the shared timing bounds `EVENTUALLY` and
//! `QUIET`, which are defined once, in the unpublished `fscache-testkit`;
//! this file must build from the packaged crate alone, so it cannot use the
//! kit, and a second copy of the bounds here had already drifted (200 ms
//! against 300 ms). What stays here is deterministic: no test waits for
//! another thread, every answer comes from the kernel at once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use fscache_lock::{conflicting_lock, set_lock, FileLock, LockKind, Wait};
use LockKind::{Exclusive, Shared};

/// A new, separate open (its own open file description), read-write.
fn open(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open test file")
}

/// Whether a fresh open of `path` could take a lock of `kind` right now,
/// asked both by trying it and through `F_OFD_GETLK`.
fn available(path: &Path, kind: LockKind) -> bool {
    let probe = open(path);
    let free_by_query = conflicting_lock(probe.as_fd(), kind).unwrap().is_none();
    let free_by_try = FileLock::try_lock(&probe, kind).unwrap().is_some();
    assert_eq!(
        free_by_query, free_by_try,
        "F_OFD_GETLK and F_OFD_SETLK disagree about a {kind} lock"
    );
    free_by_try
}

fn temp() -> tempfile::NamedTempFile {
    tempfile::NamedTempFile::new().expect("create temp file")
}

#[test]
fn separate_opens_conflict_like_processes() {
    let tmp = temp();
    let path = tmp.path();

    let held = FileLock::lock(open(path), Exclusive).unwrap();
    assert!(!available(path, Exclusive), "exclusive vs exclusive");
    assert!(!available(path, Shared), "exclusive vs shared");
    drop(held);

    let held = FileLock::lock(open(path), Shared).unwrap();
    assert!(available(path, Shared), "shared locks coexist");
    assert!(!available(path, Exclusive), "shared vs exclusive");
    drop(held);

    assert!(available(path, Exclusive), "dropping the guard unlocks");
}

#[test]
fn try_lock_or_return_hands_the_descriptor_back() {
    let tmp = temp();
    let _held = FileLock::lock(open(tmp.path()), Exclusive).unwrap();
    let other = open(tmp.path());
    let returned = match FileLock::try_lock_or_return(other, Shared).unwrap() {
        Ok(_) => panic!("a shared lock was granted beside an exclusive one"),
        Err(fd) => fd,
    };
    // The descriptor is still usable: asking through it works.
    assert_eq!(
        conflicting_lock(returned.as_fd(), Shared).unwrap(),
        Some(Exclusive)
    );
}

/// The classic POSIX-lock pitfall: with `F_SETLK`, closing *any* descriptor
/// of a file drops all of the process's locks on it. OFD locks must not.
#[test]
fn closing_another_open_keeps_the_lock() {
    let tmp = temp();
    let path = tmp.path();
    let _held = FileLock::lock(open(path), Exclusive).unwrap();

    let unrelated = File::open(path).unwrap();
    drop(unrelated);
    let unrelated_rw = open(path);
    drop(unrelated_rw);

    assert!(!available(path, Shared), "the lock survived other closes");
    assert!(!available(path, Exclusive));
}

#[test]
fn a_dup_shares_the_lock() {
    let tmp = temp();
    let path = tmp.path();
    let a = open(path);
    let b = a.try_clone().unwrap(); // dup: same open file description

    let held_a = FileLock::lock(&a, Exclusive).unwrap();
    // The lock belongs to the open file description, so the dup is no
    // competitor: taking it through `b` succeeds (it replaces the lock).
    let held_b = FileLock::try_lock(&b, Exclusive).unwrap();
    assert!(held_b.is_some(), "a dup does not conflict with itself");
    assert!(
        !available(path, Exclusive),
        "other opens are still excluded"
    );

    // Unlocking through any dup unlocks the description: after `held_b`
    // drops, the lock is gone although `held_a` still exists.
    drop(held_b);
    assert!(
        available(path, Exclusive),
        "unlock through the dup released it"
    );
    drop(held_a);
    assert!(available(path, Exclusive));
}

#[test]
fn the_lock_lives_until_the_last_descriptor_closes() {
    let tmp = temp();
    let path = tmp.path();
    let a = open(path);
    let b = a.try_clone().unwrap();

    // No guard: lock directly, then close descriptors without unlocking.
    assert!(set_lock(a.as_fd(), Some(Exclusive), Wait::NonBlock).unwrap());
    drop(a);
    assert!(
        !available(path, Shared),
        "the dup keeps the open file description, and its lock, alive"
    );
    drop(b);
    assert!(
        available(path, Exclusive),
        "closing the last descriptor released the lock"
    );
}

#[test]
fn dropping_the_guard_unlocks_although_a_dup_lives_on() {
    let tmp = temp();
    let path = tmp.path();
    let a = open(path);
    let b = a.try_clone().unwrap();

    let held = FileLock::lock(a, Exclusive).unwrap();
    assert!(!available(path, Shared));
    drop(held); // closes `a`, but `b` keeps the open file description
    assert!(
        available(path, Exclusive),
        "the guard unlocks explicitly instead of relying on close"
    );
    drop(b);
}

#[test]
fn unlock_releases_and_returns_the_descriptor() {
    let tmp = temp();
    let path = tmp.path();
    let held = FileLock::lock(open(path), Exclusive).unwrap();
    let fd = held.unlock().unwrap();
    assert!(available(path, Exclusive), "unlocked while the fd is open");
    // The returned descriptor can be locked again.
    let again = FileLock::try_lock(fd, Shared).unwrap().expect("relock");
    assert_eq!(again.kind(), Shared);
    assert!(!available(path, Exclusive));
}

#[test]
fn try_convert_waits_for_no_one_and_keeps_the_old_lock() {
    let tmp = temp();
    let path = tmp.path();
    let mut mine = FileLock::lock(open(path), Shared).unwrap();
    let theirs = FileLock::lock(open(path), Shared).unwrap();

    assert!(
        !mine.try_convert(Exclusive).unwrap(),
        "another reader holds it"
    );
    assert_eq!(mine.kind(), Shared, "the old lock is kept");
    let probe = open(path);
    drop(theirs);
    assert_eq!(
        conflicting_lock(probe.as_fd(), Exclusive).unwrap(),
        Some(Shared),
        "my shared lock is still held"
    );

    assert!(mine.try_convert(Exclusive).unwrap(), "now the only reader");
    assert_eq!(mine.kind(), Exclusive);
    assert!(!available(path, Shared));

    assert!(mine.try_convert(Exclusive).unwrap(), "same kind is a no-op");
    assert!(
        mine.try_convert(Shared).unwrap(),
        "downgrade never conflicts"
    );
    assert_eq!(mine.kind(), Shared);
    assert!(available(path, Shared));
    assert!(!available(path, Exclusive));
}

#[test]
fn conflicting_lock_reports_the_holder() {
    let tmp = temp();
    let path = tmp.path();
    let probe = open(path);
    let ask = |kind| conflicting_lock(probe.as_fd(), kind).unwrap();

    assert_eq!(ask(Shared), None);
    assert_eq!(ask(Exclusive), None);

    let shared = FileLock::lock(open(path), Shared).unwrap();
    assert_eq!(ask(Shared), None, "readers do not conflict");
    assert_eq!(ask(Exclusive), Some(Shared));
    drop(shared);

    let exclusive = FileLock::lock(open(path), Exclusive).unwrap();
    assert_eq!(ask(Shared), Some(Exclusive));
    assert_eq!(ask(Exclusive), Some(Exclusive));
    // A description never conflicts with its own lock.
    assert_eq!(
        conflicting_lock(exclusive.as_fd(), Exclusive).unwrap(),
        None
    );
    drop(exclusive);

    assert_eq!(ask(Exclusive), None);
}

#[test]
fn access_mode_mismatch_is_an_error_not_a_panic() {
    let tmp = temp();
    let path = tmp.path();
    let ebadf = |r: io::Result<()>| {
        let e = r.expect_err("lock granted on a descriptor of the wrong mode");
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
    };

    let read_only = File::open(path).unwrap();
    ebadf(FileLock::lock(&read_only, Exclusive).map(drop));
    ebadf(FileLock::try_lock(&read_only, Exclusive).map(drop));
    // Never waited for: the descriptor's mode is refused on the first try.
    let timeout = Duration::from_millis(200);
    ebadf(FileLock::lock_timeout(&read_only, Exclusive, timeout).map(drop));
    ebadf(set_lock(read_only.as_fd(), Some(Exclusive), Wait::NonBlock).map(drop));
    // A shared lock on a read-only descriptor is fine, but converting it up
    // fails and keeps the shared lock.
    let mut held = FileLock::lock(&read_only, Shared).unwrap();
    ebadf(held.try_convert(Exclusive).map(drop));
    ebadf(held.convert(Exclusive));
    assert_eq!(held.kind(), Shared);
    assert!(!available(path, Exclusive));
    drop(held);

    let write_only = OpenOptions::new().write(true).open(path).unwrap();
    ebadf(FileLock::try_lock(&write_only, Shared).map(drop));
    assert!(FileLock::try_lock(&write_only, Exclusive)
        .unwrap()
        .is_some());
}

#[test]
fn close_releases_a_lock_held_through_the_only_descriptor() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let held = FileLock::lock(
        File::options()
            .read(true)
            .write(true)
            .open(file.path())
            .unwrap(),
        LockKind::Exclusive,
    )
    .unwrap();
    let other = File::open(file.path()).unwrap();
    let other = match FileLock::try_lock_or_return(other, LockKind::Shared).unwrap() {
        Ok(_) => panic!("the exclusive lock must exclude a second open"),
        Err(fd) => fd,
    };
    held.close();
    assert!(FileLock::try_lock(other, LockKind::Shared)
        .unwrap()
        .is_some());
}

#[test]
fn close_keeps_the_lock_while_a_dup_lives() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let fd = File::options()
        .read(true)
        .write(true)
        .open(file.path())
        .unwrap();
    let dup = fd.try_clone().unwrap();
    FileLock::lock(fd, LockKind::Exclusive).unwrap().close();
    let other = File::open(file.path()).unwrap();
    assert!(
        FileLock::try_lock(other, LockKind::Shared)
            .unwrap()
            .is_none(),
        "the dup still holds it"
    );
    drop(dup);
    let other = File::open(file.path()).unwrap();
    assert!(FileLock::try_lock(other, LockKind::Shared)
        .unwrap()
        .is_some());
}

#[test]
fn range_locks_of_different_ranges_do_not_conflict() {
    use fscache_lock::set_range_lock;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ranges");
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap()
    };
    let (a, b) = (open(), open());
    let far = 1u64 << 61;
    let x = Some(LockKind::Exclusive);
    assert!(set_range_lock(a.as_fd(), x, Wait::NonBlock, far, 1).unwrap());
    // Another open file description: same byte conflicts, the next is free.
    assert!(!set_range_lock(b.as_fd(), x, Wait::NonBlock, far, 1).unwrap());
    assert!(set_range_lock(b.as_fd(), x, Wait::NonBlock, far + 1, 1).unwrap());
    // Unlocking the range frees it.
    assert!(set_range_lock(a.as_fd(), None, Wait::NonBlock, far, 1).unwrap());
    assert!(set_range_lock(b.as_fd(), x, Wait::NonBlock, far, 1).unwrap());
    // A range past off_t is refused, not wrapped.
    let e = set_range_lock(a.as_fd(), x, Wait::NonBlock, u64::MAX - 1, 1).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn range_lock_guards_its_bytes_only() {
    use fscache_lock::{LockOwner, RangeLock};
    let tmp = temp();
    let path = tmp.path();
    let held = RangeLock::lock(open(path), Exclusive, 10, 5).unwrap();
    assert_eq!((held.kind(), held.start(), held.len()), (Exclusive, 10, 5));
    for (start, len, free) in [(0, 10, true), (15, 1, true), (14, 1, false), (0, 0, false)] {
        let got = RangeLock::try_lock(open(path), Shared, start, len).unwrap();
        assert_eq!(got.is_some(), free, "{start}+{len}");
    }
    // The whole-file guard sees the range too, and GETLK names it.
    assert!(FileLock::try_lock(open(path), Shared).unwrap().is_none());
    let probe = open(path);
    let conflict = fscache_lock::conflicting_range_lock(probe.as_fd(), Shared, 0, 0)
        .unwrap()
        .expect("the range conflicts");
    assert_eq!((conflict.start, conflict.len), (10, 5));
    assert_eq!(conflict.kind, Exclusive);
    assert_eq!(
        conflict.owner,
        LockOwner::OpenFile,
        "OFD locks report pid -1"
    );

    // unlock hands the descriptor back with the range free.
    let fd = held.unlock().unwrap();
    assert!(available(path, Exclusive));
    // Drop unlocks although a dup keeps the description open.
    let dup = fd.try_clone().unwrap();
    let again = RangeLock::try_lock(fd, Shared, 10, 5)
        .unwrap()
        .expect("relock");
    assert!(RangeLock::try_lock(open(path), Exclusive, 10, 1)
        .unwrap()
        .is_none());
    drop(again);
    assert!(RangeLock::try_lock(open(path), Exclusive, 10, 1)
        .unwrap()
        .is_some());
    drop(dup);
}

#[test]
fn range_lock_converts_in_place_and_keeps_it_on_refusal() {
    use fscache_lock::RangeLock;
    let tmp = temp();
    let path = tmp.path();
    let mut mine = RangeLock::lock(open(path), Shared, 0, 1).unwrap();
    let theirs = RangeLock::lock(open(path), Shared, 0, 1).unwrap();
    assert!(!mine.try_convert(Exclusive).unwrap(), "another reader");
    assert_eq!(mine.kind(), Shared);
    drop(theirs);
    assert_eq!(
        mine.conflicting(Exclusive).unwrap(),
        None,
        "a description never conflicts with itself"
    );
    assert!(
        RangeLock::try_lock(open(path), Exclusive, 0, 1)
            .unwrap()
            .is_none(),
        "the refused upgrade kept the shared lock"
    );
    mine.convert(Exclusive).unwrap();
    assert!(RangeLock::try_lock(open(path), Shared, 0, 1)
        .unwrap()
        .is_none());
    assert!(
        mine.try_convert(Shared).unwrap(),
        "downgrade never conflicts"
    );
    assert!(RangeLock::try_lock(open(path), Shared, 0, 1)
        .unwrap()
        .is_some());
    // A range past off_t is refused by every entry point, not wrapped.
    for r in [
        RangeLock::try_lock(open(path), Shared, u64::MAX - 1, 1).map(drop),
        RangeLock::lock(open(path), Shared, 1 << 63, 0).map(drop),
    ] {
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
    mine.close();
    assert!(
        available(path, Exclusive),
        "close released the only descriptor"
    );
}
