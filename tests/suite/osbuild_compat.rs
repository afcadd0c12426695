//! Differences from osbuild found by reading its code, each fixed: a
//! negative `maximum-size`, what `usage` counts in an osbuild store, and an
//! outside deleter (image-builder's `tmpfiles.d` age rule) that removes
//! files of entries without taking the cache's locks.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use fscache::{FsCache, MaxSize, PruneOptions, Removed, Stored, Verified};

use crate::cache_util::*;
use crate::inspect::*;

#[test]
fn negative_maximum_size_is_unlimited_as_osbuild_reads_it() {
    // osbuild: `self._info_maximum_size < 0` admits everything, and its
    // own tests write `-1`.
    for raw in ["-1", "-4096"] {
        let (_t, root) = fresh();
        drop(open(&root));
        fs::write(
            root.join("cache.info"),
            format!(r#"{{"version": 1, "maximum-size": {raw}, "future-key": [1]}}"#),
        )
        .unwrap();
        let cache = open(&root);
        assert_eq!(cache.info().limit(), MaxSize::Unlimited, "{raw}");
        assert_eq!(
            store_file(&cache, "big", 1, 64 * BLOCK),
            Stored::Committed,
            "{raw}"
        );
        assert!(cache.load("big").unwrap().is_some());
        assert_books_balance(&root);
        // Prune without a target prunes to the limit in force: nothing.
        let report = cache.prune(PruneOptions::default()).unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        // Our updates keep osbuild's value and every other key.
        cache
            .set_info(fscache::CacheInfo {
                creation_boot_id: Some("0".repeat(32)),
                ..Default::default()
            })
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("cache.info")).unwrap()).unwrap();
        assert_eq!(v["maximum-size"].to_string(), raw);
        assert_eq!(v["future-key"], serde_json::json!([1]));
    }
}

#[test]
fn usage_counts_only_the_caches_own_parts() {
    let (_t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);
    assert_eq!(store_file(&cache, "a", 1, 4 * BLOCK), Stored::Committed);
    let before = cache.usage().unwrap();
    // osbuild's store keeps its downloads and scratch space beside the
    // cache's parts.
    fs::create_dir_all(root.join("sources/org.osbuild.files")).unwrap();
    fs::write(
        root.join("sources/org.osbuild.files/sha256:00"),
        vec![7u8; 256 * BLOCK],
    )
    .unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::write(root.join("tmp/scratch"), vec![1u8; 64 * BLOCK]).unwrap();
    let after = cache.usage().unwrap();
    assert_eq!(after, before, "sources/ and tmp/ were counted");
    // What it counts: the root directory itself and the parts.
    let mut expect = fs::symlink_metadata(&root).unwrap().blocks() * 512;
    for part in [
        "objects",
        "stage",
        "CACHEDIR.TAG",
        "cache.info",
        "cache.lock",
        "cache.size",
        "cache.stats",
        "build.lock",
    ] {
        if root.join(part).exists() {
            expect += space(&root.join(part));
        }
    }
    assert_eq!(after.on_disk, expect);
    assert!(after.on_disk >= after.accounted);
    assert_eq!(after.entries, 1);
}

/// What an outside deleter removed from the entry `victim`, as paths
/// relative to its directory.
#[derive(Clone, Copy, Debug)]
enum Deleted {
    /// `object.info` only (the oldest file of an entry in use: its ctime is
    /// the commit's, while loads keep `object.lock` fresh).
    Info,
    /// `object.info` and some of the content.
    InfoAndSomeData,
    /// Everything inside the entry's directory.
    AllButTheDirectory,
    /// `object.lock` only.
    Lock,
    /// The whole `data/` directory.
    Data,
    /// One file inside `data/`.
    OneDataFile,
}

const ALL_DELETIONS: [Deleted; 6] = [
    Deleted::Info,
    Deleted::InfoAndSomeData,
    Deleted::AllButTheDirectory,
    Deleted::Lock,
    Deleted::Data,
    Deleted::OneDataFile,
];

/// A cache with the entries `victim` (a small tree) and `other`, then
/// `victim` damaged as `what` says, without any lock.
fn damaged(what: Deleted) -> (tempfile::TempDir, std::path::PathBuf, FsCache) {
    let (t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);
    let src = tmp();
    fs::create_dir_all(src.path().join("sub")).unwrap();
    fs::write(src.path().join("top.txt"), content(1, 3 * BLOCK)).unwrap();
    fs::write(src.path().join("sub/deep.bin"), content(2, 5 * BLOCK)).unwrap();
    assert_eq!(
        cache.store_tree("victim", src.path()).unwrap(),
        Stored::Committed
    );
    assert_eq!(store_file(&cache, "other", 3, 2 * BLOCK), Stored::Committed);
    let e = root.join("objects/victim");
    let rm = |p: &str| {
        let p = e.join(p);
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    };
    match what {
        Deleted::Info => rm("object.info"),
        Deleted::InfoAndSomeData => {
            rm("object.info");
            rm("data/sub/deep.bin");
            rm("data/sub");
        }
        Deleted::AllButTheDirectory => {
            rm("object.info");
            rm("data");
            rm("object.lock");
        }
        Deleted::Lock => rm("object.lock"),
        Deleted::Data => rm("data"),
        Deleted::OneDataFile => rm("data/top.txt"),
    }
    (t, root, cache)
}

#[test]
fn outside_deleter_a_damaged_entry_is_never_handed_out() {
    for what in ALL_DELETIONS {
        let (_t, _root, cache) = damaged(what);
        let hit = cache.load("victim").unwrap();
        match what {
            // Within `data/` only, with `object.info` there: the load-time
            // check that would catch it costs more than it may (see
            // `docs/format.md`, "Outside deleters"); verify catches it.
            Deleted::OneDataFile => assert!(hit.is_some(), "{what:?}"),
            _ => assert!(hit.is_none(), "{what:?}: a damaged entry was handed out"),
        }
        drop(hit);
        assert!(cache.load("other").unwrap().is_some(), "{what:?}");
    }
}

#[test]
fn outside_deleter_verify_names_what_is_gone() {
    for what in ALL_DELETIONS {
        let (_t, _root, cache) = damaged(what);
        let v = cache.verify("victim").unwrap();
        assert!(v.is_bad(), "{what:?}: {v:?}");
        let names = match v {
            Verified::Incomplete { missing } => missing.names(),
            Verified::Mismatch { .. } => vec!["(content)"],
            other => panic!("{what:?}: {other:?}"),
        };
        let expect: &[&str] = match what {
            Deleted::Info | Deleted::InfoAndSomeData => &["object.info"],
            Deleted::AllButTheDirectory => &["object.lock", "object.info", "data/"],
            Deleted::Lock => &["object.lock"],
            Deleted::Data => &["data/"],
            Deleted::OneDataFile => &["(content)"],
        };
        assert_eq!(names, expect, "{what:?}");
        // verify_all sees it too (it lists before any sweep).
        let all = cache.verify_all(&|_| {}).unwrap();
        let verdicts: Vec<(&str, bool)> = all
            .iter()
            .map(|(n, r)| (n.as_str(), r.as_ref().unwrap().is_bad()))
            .collect();
        assert_eq!(verdicts, [("other", false), ("victim", true)], "{what:?}");
    }
}

#[test]
fn outside_deleter_remove_bad_removes_it_and_fixes_the_books() {
    for what in ALL_DELETIONS {
        let (_t, root, cache) = damaged(what);
        assert!(cache.verify("victim").unwrap().is_bad());
        assert!(
            matches!(cache.remove("victim").unwrap(), Removed::Removed { .. }),
            "{what:?}"
        );
        assert_eq!(entries(&root), ["other"], "{what:?}");
        assert_books_balance(&root);
        assert_eq!(
            cache.usage().unwrap().accounted,
            recorded(&root, "other"),
            "{what:?}"
        );
        // The name is free again.
        assert_eq!(
            store_file(&cache, "victim", 9, BLOCK),
            Stored::Committed,
            "{what:?}"
        );
        assert!(cache.load("victim").unwrap().is_some());
        assert_books_balance(&root);
    }
}

#[test]
fn outside_deleter_prune_sweep_and_listings_never_trip() {
    for what in ALL_DELETIONS {
        let (_t, root, cache) = damaged(what);
        // Listing, usage and a dry run first: no errors, nothing changes.
        cache.usage().unwrap();
        cache
            .prune(PruneOptions::new().unused_for(Duration::ZERO).dry_run(true))
            .unwrap();
        let listed: Vec<String> = cache
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        // The listing sweeps: entries that can never be loaded again go,
        // and the books are fixed (this handle is alone).
        let gone_by_sweep = !matches!(what, Deleted::Data | Deleted::OneDataFile);
        if gone_by_sweep {
            assert_eq!(listed, ["other"], "{what:?}");
            assert_books_balance(&root);
        } else {
            assert_eq!(listed, ["other", "victim"], "{what:?}");
        }
        cache.sweep().unwrap();
        // Prune everything unused: the damaged entry goes with the rest.
        let report = cache
            .prune(PruneOptions::new().unused_for(Duration::ZERO))
            .unwrap();
        assert!(report.skipped.is_empty(), "{what:?}: {report:?}");
        assert_eq!(entries(&root), Vec::<String>::new(), "{what:?}");
        assert_eq!(size_file(&root), 0, "{what:?}");
        assert_no_debris(&root);
    }
}

#[test]
fn outside_deleter_books_are_recounted_live_while_others_use_the_cache() {
    let (_t, root, cache) = damaged(Deleted::Info);
    // Another handle (another process, osbuild say) has the cache open, so
    // no repair could run; the sweep marks the books suspect and the live
    // recount settles them.
    let other = open(&root);
    assert!(size_file(&root) > recorded_sum(&root));
    cache.sweep().unwrap();
    assert_eq!(entries(&root), ["other"]);
    assert_books_balance(&root);
    assert!(other.load("other").unwrap().is_some());
}

#[test]
fn a_commit_dates_the_entry_so_load_needs_one_stat() {
    let (_t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);
    assert_eq!(store_file(&cache, "x", 1, BLOCK), Stored::Committed);
    let mtime = |p: &str| {
        let m = fs::symlink_metadata(root.join(p)).unwrap();
        (m.mtime(), m.mtime_nsec())
    };
    // The directory's mtime is just before the lock's: load's fast check.
    assert!(mtime("objects/x") < mtime("objects/x/object.lock"));
    // A load keeps it so (it sets only the lock's atime).
    drop(cache.load("x").unwrap().expect("hit"));
    assert!(mtime("objects/x") < mtime("objects/x/object.lock"));
    // Removing a part, even within the same clock tick, dates the
    // directory at or after the lock: the load looks closer and misses.
    fs::remove_dir_all(root.join("objects/x/data")).unwrap();
    assert!(mtime("objects/x") >= mtime("objects/x/object.lock"));
    assert!(cache.load("x").unwrap().is_none());
}

/// The last use of entry `name`: its `object.lock` atime.
fn last_use(root: &std::path::Path, name: &str) -> std::time::SystemTime {
    fs::metadata(root.join("objects").join(name).join("object.lock"))
        .unwrap()
        .accessed()
        .unwrap()
}

/// osbuild's store never touches `cache.evict` and does not stamp its
/// entry at commit: its `object.lock` keeps the atime of when the store
/// began. One that began before a scan and commits after it is older
/// than the list's later records, so a commit that did not scan uses the
/// list only up to its cutoff (the oldest lock atime in flight during the
/// scan), then scans again: eviction stays in LRU order across the
/// osbuild entry.
#[test]
fn an_osbuild_store_in_flight_during_a_scan_keeps_eviction_in_lru_order() {
    use fscache_lock::{FileLock, LockKind};
    let (_t, root) = fresh();
    let one = entry_space(BLOCK);
    let setup = FsCache::builder(APPID).watermark(50).open(&root).unwrap();
    set_max(&setup, MaxSize::Bytes(20 * one));
    for i in 0..20 {
        let name = format!("e{i:02}");
        assert_eq!(store_file(&setup, &name, i, BLOCK), Stored::Committed);
        tick();
    }
    // osbuild's store begins: its directory, its lock file held
    // exclusively, data being written. Its lock's atime (when it began)
    // lies between e05's and e06's last use.
    let uuid = root.join("objects").join(fscache_dir::anonymous_name());
    fs::create_dir_all(uuid.join("data")).unwrap();
    let lock_path = uuid.join("object.lock");
    let lock_file = fs::File::create(&lock_path).unwrap();
    let began = last_use(&root, "e05")
        + (last_use(&root, "e06")
            .duration_since(last_use(&root, "e05"))
            .unwrap()
            / 2);
    lock_file
        .set_times(fs::FileTimes::new().set_accessed(began))
        .unwrap();
    let held = FileLock::lock(lock_file, LockKind::Exclusive).unwrap();
    fs::write(uuid.join("data/file"), content(99, BLOCK)).unwrap();
    // Our store scans (no list yet) and plans e00..e10 down to the 50 %
    // watermark; the osbuild store in flight sets the list's cutoff.
    let a = FsCache::builder(APPID).watermark(50).open(&root).unwrap();
    assert_eq!(store_file(&a, "a", 100, BLOCK), Stored::Committed);
    assert!(!entries(&root).contains(&"e00".to_owned()));
    drop(a);
    // osbuild commits, with room for it: charge, object.info, rename,
    // unlock. No stamp: the lock's atime stays `began`.
    setup
        .set_info(fscache::CacheInfo {
            maximum_size: Some(MaxSize::Bytes(21 * one)),
            ..Default::default()
        })
        .unwrap();
    let dir = fscache_dir::CacheDir::open(&root).unwrap();
    fscache_quota::charge(&dir, one, MaxSize::Unlimited).unwrap();
    fs::write(uuid.join("object.info"), format!(r#"{{"size": {one}}}"#)).unwrap();
    fs::rename(&uuid, root.join("objects/ob")).unwrap();
    drop(held);
    assert_eq!(last_use(&root, "ob"), began);
    // Another handle stores one entry at a time, each needing one entry's
    // room: e01..e05 from the list (up to its cutoff), then ob (a scan:
    // the list's later records are younger than ob), then e06.
    let b = open(&root);
    let mut gone = Vec::new();
    for i in 0..7 {
        let before = entries(&root);
        assert_eq!(
            store_file(&b, &format!("b{i}"), 200 + i, BLOCK),
            Stored::Committed
        );
        let after = entries(&root);
        gone.extend(before.into_iter().filter(|n| !after.contains(n)));
    }
    assert_eq!(gone, ["e01", "e02", "e03", "e04", "e05", "ob", "e06"]);
    assert_books_balance(&root);
    assert_no_debris(&root);
}
