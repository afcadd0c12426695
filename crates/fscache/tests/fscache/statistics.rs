//! The statistics of `cache.stats`: summed over every handle, kept when
//! handles drop, lock waits counted, and `load_or_build` counted by what
//! its callers got.

use std::time::Duration;

use fscache::{CacheInfo, Error, MaxSize, Obtained, PruneOptions};

use crate::util::{put, unlimited};

#[test]
fn statistics_sum_every_handle_and_survive_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let a = unlimited(tmp.path());
    let b = unlimited(tmp.path());
    put(&a, "x", 10);
    for _ in 0..3 {
        drop(b.load("x").unwrap().unwrap());
    }
    assert!(b.load("nope").unwrap().is_none());
    let held = a.store("busy").unwrap();
    drop(held);
    // b's counts are flushed when its last clone drops.
    drop(b);
    let s = a.stats().unwrap();
    assert_eq!((s.stored, s.hits, s.misses_absent), (1, 3, 1));
    assert!(s.bytes_stored >= 10);
    assert_eq!(s.hit_rate(), Some(0.75));
    // What eviction and prune removed, by name and why.
    a.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Bytes(0)),
        ..Default::default()
    })
    .unwrap();
    let pruned = a.prune(PruneOptions::default()).unwrap();
    assert_eq!(pruned.removed, ["x"]);
    let recent = a.stats().unwrap().recent_removals;
    assert_eq!(
        recent
            .iter()
            .map(|r| (r.name.as_str(), r.why.as_str()))
            .collect::<Vec<_>>(),
        [("x", "pruned")]
    );
    a.zero_stats().unwrap();
    assert_eq!(a.stats().unwrap(), fscache::Stats::default());
    // osbuild never opens it; it is beside its files.
    assert!(tmp.path().join(fscache::CACHE_STATS).exists());
}

#[test]
fn a_wait_for_a_lock_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    let before = c.stats().unwrap().lock_waits;
    // Another open file description holds cache.info for a moment.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path().join("cache.info"))
        .unwrap();
    let held = fscache_lock::FileLock::lock(file, fscache_lock::LockKind::Exclusive).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
    });
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Bytes(1 << 20)),
        ..Default::default()
    })
    .unwrap();
    release.join().unwrap();
    assert_eq!(c.stats().unwrap().lock_waits, before + 1);
}

/// The user trial's count: callers of `load_or_build` that share one build
/// are hits, the builder is a build, and the wait is counted on its own,
/// not as misses.
#[test]
fn load_or_build_counts_what_its_callers_got() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    // A clone: its counts are the ones `c.stats()` flushes.
    let waiter = c.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let b = c.clone();
    let builder = std::thread::spawn(move || {
        let got = b
            .load_or_build("k", |dir| {
                held_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                std::fs::write(dir.join("f"), b"k")
            })
            .unwrap();
        assert!(matches!(got, Obtained::Built(_)));
    });
    held_rx.recv().unwrap();
    let waiting = std::thread::spawn(move || {
        let got = waiter
            .load_or_build("k", |_| -> Result<(), Error> { unreachable!() })
            .unwrap();
        assert!(matches!(got, Obtained::Hit(_)));
    });
    // Once the waiter has been refused the build lock (its handle's
    // count, flushed by `stats`), let the build finish.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while c.stats().unwrap().build_waits == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never waited"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    go_tx.send(()).unwrap();
    builder.join().unwrap();
    waiting.join().unwrap();
    // Two more hits, and a tree too large to keep.
    for _ in 0..2 {
        drop(
            c.load_or_build("k", |_| -> Result<(), Error> { unreachable!() })
                .unwrap(),
        );
    }
    let s = c.stats().unwrap();
    assert_eq!(
        (s.hits, s.built, s.build_waits, s.misses()),
        (3, 1, 1, 0),
        "{s:?}"
    );
    assert_eq!(s.loads(), 4);
    assert_eq!(s.hit_rate(), Some(0.75));
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Bytes(1)),
        ..Default::default()
    })
    .unwrap();
    let got = c
        .load_or_build("big", |d| std::fs::write(d.join("f"), vec![1u8; 10_000]))
        .unwrap();
    assert!(matches!(got, Obtained::Uncached(_)));
    drop(got);
    let s = c.stats().unwrap();
    assert_eq!((s.built_uncached, s.builds(), s.misses()), (1, 2, 0));
}
