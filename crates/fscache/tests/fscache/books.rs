//! Books and debris that heal: a cache whose `cache.size` a failed update
//! left off is made exact by the next prune or sweep while other handles
//! work, a recount never miscounts the commits and removals in flight,
//! debris of dead writers is swept beside live ones, and `repair`, alone,
//! makes everything exact.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fscache::{CacheInfo, FsCache, MaxSize, PruneOptions, Removed, Stored};

use crate::util;

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

// Debris of dead writers is swept while other handles are open.
#[test]
fn debris_is_swept_beside_other_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let c = util::unlimited(root);
    let other = util::unlimited(root);
    util::put(&c, "kept", 100);
    let live = c.store("in-progress").unwrap();
    let live_name = format!(
        "objects/{}",
        live.path()
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    let mut debris = Vec::new();
    for (i, sub) in ["objects", "stage"].iter().enumerate() {
        let name = format!("{sub}/uuid-{}", format!("{i}").repeat(32));
        std::fs::create_dir_all(root.join(&name).join("data/deep")).unwrap();
        std::fs::write(root.join(&name).join("object.lock"), b"").unwrap();
        std::fs::write(root.join(&name).join("data/deep/f"), vec![1u8; 50_000]).unwrap();
        debris.push(name);
    }
    let swept = other.sweep().unwrap();
    assert_eq!(swept.removed.len(), 2, "{swept:?}");
    assert_eq!(util::on_disk(root), {
        let mut v = vec!["objects/kept".to_string(), live_name];
        v.sort();
        v
    });
    // A live writer's work survives, and commits.
    std::fs::write(live.path().join("f"), b"x").unwrap();
    assert_eq!(live.commit().unwrap(), Stored::Committed);

    // `entries`, `prune` and `remove` sweep too.
    for op in 0..3 {
        std::fs::create_dir_all(root.join("objects/uuid-abababababababababababababababab/data"))
            .unwrap();
        match op {
            0 => drop(other.entries().unwrap()),
            1 => drop(other.prune(PruneOptions::default()).unwrap()),
            _ => assert_eq!(other.remove("nothing").unwrap(), Removed::Missing),
        }
        assert!(
            !root
                .join("objects/uuid-abababababababababababababababab")
                .exists(),
            "op {op} did not sweep"
        );
    }
}

#[test]
fn repair_waits_for_exclusivity_then_makes_the_books_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("cache");
    let cache = FsCache::open("repair-test", &root).unwrap();
    cache
        .set_info(CacheInfo {
            maximum_size: Some(MaxSize::Unlimited),
            ..Default::default()
        })
        .unwrap();
    let w = cache.store("kept").unwrap();
    std::fs::write(w.path().join("f"), vec![1u8; 10_000]).unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
    let recorded = std::fs::read_to_string(root.join("cache.size")).unwrap();

    // What crashes leave: an overcharged counter, an unlocked anonymous
    // entry, a stray temp file, a half-removed named directory.
    std::fs::write(root.join("cache.size"), b"999999").unwrap();
    std::fs::create_dir_all(root.join("objects/uuid-00000000000000000000000000000000/data"))
        .unwrap();
    std::fs::write(
        root.join("objects/uuid-11111111111111111111111111111111"),
        b"",
    )
    .unwrap();
    std::fs::create_dir(root.join("objects/half")).unwrap();

    let other = FsCache::open("repair-test", &root).unwrap();
    assert_eq!(cache.repair().unwrap(), None, "another handle is open");
    drop(other);

    let repaired = cache.repair().unwrap().expect("alone now");
    assert_eq!(repaired.accounted_before, Some(999_999));
    assert_eq!(repaired.accounted.to_string(), recorded);
    assert_eq!(repaired.removed.len(), 3, "{:?}", repaired.removed);
    let mut left: Vec<_> = std::fs::read_dir(root.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["kept"]);
    assert!(cache.load("kept").unwrap().is_some());

    // The handle is shared again: others can open beside it.
    let again = FsCache::open("repair-test", &root).unwrap();
    assert!(again.load("kept").unwrap().is_some());
}
