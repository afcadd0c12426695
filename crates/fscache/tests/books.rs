//! Books that heal: a cache whose `cache.size` a failed update left off is
//! made exact by the next prune or sweep while other handles work, and a
//! recount never miscounts the commits and removals in flight.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fscache::{CacheInfo, FsCache, MaxSize, PruneOptions, Stored};

fn size_file(root: &Path) -> u64 {
    std::fs::read_to_string(root.join("cache.size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The sum of the sizes every `objects/*/object.info` records (crashed
/// commits' `uuid-*` ones included: they are on the books until a sweep).
fn recorded_sum(root: &Path) -> u64 {
    let mut sum = 0;
    for e in std::fs::read_dir(root.join("objects")).unwrap() {
        let Ok(text) = std::fs::read_to_string(e.unwrap().path().join("object.info")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        sum += v["size"].as_u64().unwrap();
    }
    sum
}

fn open(root: &Path, max: MaxSize) -> FsCache {
    let c = FsCache::open("books-test", root).unwrap();
    c.set_info(CacheInfo {
        maximum_size: Some(max),
        ..Default::default()
    })
    .unwrap();
    c
}

fn put(c: &FsCache, name: &str, bytes: usize) -> Stored {
    let w = c.store(name).unwrap();
    std::fs::write(w.path().join("f"), vec![7u8; bytes]).unwrap();
    w.commit().unwrap()
}

#[test]
fn suspect_books_are_exact_after_one_prune_and_clean_ones_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("c");
    let c = open(&root, MaxSize::Unlimited);
    assert_eq!(put(&c, "a", 5000), Stored::Committed);
    assert_eq!(put(&c, "b", 100), Stored::Committed);
    let exact = recorded_sum(&root);
    // osbuild's own drift (it uncharges whole directories): no marker, no
    // damage, the books are left as they are.
    std::fs::write(root.join("cache.size"), (exact - 10).to_string()).unwrap();
    let r = c.prune(PruneOptions::default()).unwrap();
    assert!(r.removed.is_empty() && r.error.is_none(), "{r:?}");
    assert_eq!(size_file(&root), exact - 10);
    // A failed update marked them suspect: one prune that removes nothing
    // makes them exact, and clears the marker.
    std::fs::write(root.join("cache.size"), (exact + 208_896).to_string()).unwrap();
    std::fs::write(root.join("cache.size.suspect"), b"").unwrap();
    let r = c.prune(PruneOptions::default()).unwrap();
    assert_eq!(r.accounted, exact, "{r:?}");
    assert_eq!(size_file(&root), exact);
    assert!(!root.join("cache.size.suspect").exists());
    // The same through a sweep.
    std::fs::write(root.join("cache.size"), b"1").unwrap();
    std::fs::write(root.join("cache.size.suspect"), b"").unwrap();
    c.sweep().unwrap();
    assert_eq!(size_file(&root), exact);
}

#[test]
fn a_full_cache_with_over_counted_books_settles_them_and_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("c");
    let c = open(&root, MaxSize::Bytes(1 << 20));
    // Nothing on disk, yet the books say full: only the marker tells.
    std::fs::write(root.join("cache.size"), (1u64 << 20).to_string()).unwrap();
    std::fs::write(root.join("cache.size.suspect"), b"").unwrap();
    assert_eq!(put(&c, "a", 4096), Stored::Committed);
    assert_eq!(size_file(&root), recorded_sum(&root));
}

#[test]
fn a_live_recount_misses_no_commit_or_removal_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("c");
    let first = open(&root, MaxSize::Bytes(64 * 4096));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let c = FsCache::open("books-test", &root).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("t{t}-{}", i % 16);
                    let _ = put(&c, &name, 4096 * (1 + (i as usize % 3)));
                    if i % 5 == 0 {
                        let _ = c.remove(&format!("t{t}-{}", (i + 7) % 16));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Mark the books suspect again and again: every prune and sweep
    // recounts them while the others charge and uncharge.
    let mut recounts = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    while std::time::Instant::now() < deadline {
        std::fs::write(root.join("cache.size.suspect"), b"").unwrap();
        if recounts % 2 == 0 {
            first.sweep().unwrap();
        } else {
            let r = first.prune(PruneOptions::default()).unwrap();
            assert!(r.error.is_none(), "{r:?}");
        }
        recounts += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    // No drift was real: every recount must have kept the books exact.
    first.sweep().unwrap();
    assert_eq!(
        size_file(&root),
        recorded_sum(&root),
        "after {recounts} recounts"
    );
    assert!(recounts > 3);
}
