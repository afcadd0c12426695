//! The statistics of `cache.stats`: summed over every handle, kept when
//! handles drop, and lock waits counted.

use std::time::Duration;

use fscache::{CacheInfo, MaxSize, PruneOptions};

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
