//! Processes killed in the middle of a protocol (`fscache-test-helper
//! crash-*`, `hold` + SIGKILL): the cache stays usable, the dead process's
//! locks are gone, the name misses, and `cache.size` is never lower than
//! what the entries record (too high after a crash past the charge, which
//! `fscache_quota::recount` repairs).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fscache::{CacheInfo, FsCache, HookPoint, MaxSize, Stored};

use crate::inspect::{
    assert_entries_intact, debris, entries, lockable, recorded_size, recorded_sum, size_file,
};
use crate::multiprocess::run_helper;
use crate::util::{Reporter, HELPER};
use fscache_testkit::tmpfs_dir;

const NAME: &str = "victim";

/// A cache at `root` with `limit`, holding `entries` of `bytes` each,
/// stored by this process.
fn cache_with(root: &Path, limit: MaxSize, entries: &[&str], bytes: usize) -> FsCache {
    let cache = FsCache::open("fscache-crash-test", root).unwrap();
    cache
        .set_info(CacheInfo {
            maximum_size: Some(limit),
            ..Default::default()
        })
        .unwrap();
    for name in entries {
        let w = cache.store(name).unwrap();
        std::fs::write(w.path().join("blob"), vec![7u8; bytes]).unwrap();
        let digest = crate::inspect::digest(w.path());
        std::fs::write(w.path().join("DIGEST"), digest).unwrap();
        assert_eq!(w.commit().unwrap(), Stored::Committed);
    }
    cache
}

/// Run a crashing helper subcommand and check it died by SIGKILL after
/// saying so.
fn crash(args: &[&str]) {
    let out = run_helper(args, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{args:?} should have killed itself: {}: {stdout}",
        out.status
    );
    assert!(stdout.contains("dying"), "{args:?}: {stdout}");
}

/// What must hold after any crash: a fresh open works, the name misses,
/// every piece of debris is unlocked, nothing committed is damaged, and the
/// counter is not lower than the recorded sizes. Returns the over-count.
fn check_after_crash(root: &Path, what: &str) -> u64 {
    let cache = FsCache::open("fscache-crash-test", root)
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    assert!(
        cache.load(NAME).unwrap().is_none(),
        "{what}: {NAME} must miss"
    );
    for d in debris(root) {
        let d = root.join(d);
        let lock = if d.is_dir() {
            d.join("object.lock")
        } else {
            d.clone()
        };
        if lock.exists() {
            assert!(
                lockable(&lock),
                "{what}: {} is still locked",
                lock.display()
            );
        }
    }
    for name in assert_entries_intact(root) {
        // Half removed: invalid, so it must miss.
        assert!(
            cache.load(&name).unwrap().is_none(),
            "{what}: invalid {name} loads"
        );
    }
    let size = size_file(root);
    let recorded = recorded_sum(root);
    assert!(
        size >= recorded,
        "{what}: cache.size {size} is lower than the recorded {recorded}"
    );
    size - recorded
}

/// Repair the counter, clear the debris and invalid entries, and check the cache works again:
/// exact books, and `NAME` can be stored and loaded.
fn repair_and_reuse(root: &Path, what: &str) {
    let cache = FsCache::open("fscache-crash-test", root).unwrap();
    // The layer below the facade, for the steps maintenance takes.
    let dir = fscache_dir::CacheDir::open(root).unwrap();
    let total = fscache_quota::recount(&dir).unwrap();
    assert_eq!(total, recorded_sum(root), "{what}: recount");
    assert_eq!(size_file(root), total, "{what}: recount wrote the counter");
    // Unlocked debris may be removed by anyone (maintenance's job).
    for rel in debris(root) {
        dir.remove_entry(Path::new(&rel)).unwrap();
    }
    assert!(debris(root).is_empty(), "{what}: debris left after removal");
    for name in assert_entries_intact(root) {
        let rel = Path::new("objects").join(&name);
        let lock = root.join(&rel).join("object.lock");
        assert!(
            !lock.exists() || lockable(&lock),
            "{what}: {name} is locked"
        );
        dir.remove_entry(&rel).unwrap();
    }
    assert!(
        assert_entries_intact(root).is_empty(),
        "{what}: invalid entries left"
    );
    assert_eq!(
        size_file(root),
        recorded_sum(root),
        "{what}: debris removal"
    );

    let w = cache.store(NAME).unwrap();
    std::fs::write(w.path().join("after"), b"crash").unwrap();
    assert_eq!(
        w.commit().unwrap(),
        Stored::Committed,
        "{what}: store after crash"
    );
    assert!(
        cache.load(NAME).unwrap().is_some(),
        "{what}: load after crash"
    );
    assert_eq!(
        size_file(root),
        recorded_sum(root),
        "{what}: books after reuse"
    );
}

#[test]
fn a_store_killed_before_commit_leaves_unlocked_debris_and_exact_books() {
    let tmp = tmpfs_dir();
    let root = tmp.path().join("cache");
    let _cache = cache_with(&root, MaxSize::Bytes(1 << 20), &["keep"], 10_000);
    let before = size_file(&root);

    crash(&["crash-in-store", root.to_str().unwrap(), NAME]);

    let stores = debris(&root);
    assert_eq!(stores.len(), 1, "one abandoned store: {stores:?}");
    assert!(
        root.join(&stores[0]).join("data").is_dir(),
        "its data is still there"
    );
    assert_eq!(
        check_after_crash(&root, "crash-in-store"),
        0,
        "nothing was charged"
    );
    assert_eq!(size_file(&root), before);
    assert_eq!(entries(&root), ["keep"]);
    repair_and_reuse(&root, "crash-in-store");
}

#[test]
fn a_commit_killed_after_charging_overcounts_until_recount() {
    let tmp = tmpfs_dir();
    let root = tmp.path().join("cache");
    let _cache = cache_with(&root, MaxSize::Bytes(1 << 20), &["keep"], 10_000);

    crash(&["crash-after-charge", root.to_str().unwrap(), NAME]);

    let stores = debris(&root);
    assert_eq!(stores.len(), 1, "one abandoned commit: {stores:?}");
    let charged =
        recorded_size(&root.join(&stores[0])).expect("object.info was written before the rename");
    assert!(charged > 0);
    let over = check_after_crash(&root, "crash-after-charge");
    assert_eq!(
        over, charged,
        "the counter is too high by exactly the charge"
    );
    repair_and_reuse(&root, "crash-after-charge");
}

#[test]
fn a_store_killed_at_any_hook_point_never_undercounts() {
    // Each point of store → commit (with an eviction, since the cache is
    // full) where a process may die.
    let points = [
        HookPoint::AtomicDirLink,
        HookPoint::CommitMeasure,
        HookPoint::CommitCharge,
        HookPoint::LockedOpenOpen,
        HookPoint::LockedOpenLock,
        HookPoint::RemoveRmdir,
        HookPoint::CommitRename,
    ];
    for point in points.map(HookPoint::name) {
        let tmp = tmpfs_dir();
        let root = tmp.path().join("cache");
        let old = ["old0", "old1", "old2"];
        let cache = cache_with(&root, MaxSize::Unlimited, &old, 64 * 1024);
        // Exactly full: the helper's store must evict.
        cache
            .set_info(CacheInfo {
                maximum_size: Some(MaxSize::Bytes(size_file(&root))),
                ..Default::default()
            })
            .unwrap();
        drop(cache);

        crash(&["crash-at", point, root.to_str().unwrap(), NAME]);

        let over = check_after_crash(&root, point);
        eprintln!("{point}: over-count {over}, debris {:?}", debris(&root));
        repair_and_reuse(&root, point);
    }
}

#[test]
fn a_reader_killed_with_sigkill_releases_its_entry() {
    let tmp = tmpfs_dir();
    let root = tmp.path().join("cache");
    let cache = cache_with(&root, MaxSize::Bytes(1 << 20), &[NAME], 10_000);
    let dir = fscache_dir::CacheDir::open(&root).unwrap();
    let lock = root.join("objects").join(NAME).join("object.lock");

    let mut command = Command::new(HELPER);
    command.arg("hold").arg(&root).arg(NAME);
    let mut holder = Reporter::spawn(command);
    holder.expect_line("loaded");
    assert!(!lockable(&lock), "the holder's read lock excludes removal");
    let victims = fscache_quota::list_lru(&dir).unwrap();
    let evicted = fscache_quota::evict(&dir, &victims);
    assert!(evicted.failed.is_empty(), "{evicted:?}");
    assert_eq!(evicted.skipped, [NAME], "a held entry is not evicted");
    assert!(cache.load(NAME).unwrap().is_some(), "readers share");

    let status = holder.kill();
    assert_eq!(status.signal(), Some(9));

    assert!(lockable(&lock), "the dead holder's lock is gone");
    let victims = fscache_quota::list_lru(&dir).unwrap();
    let evicted = fscache_quota::evict(&dir, &victims);
    assert!(evicted.failed.is_empty(), "{evicted:?}");
    assert_eq!(evicted.removed, [NAME], "an idle entry is evicted");
    assert!(cache.load(NAME).unwrap().is_none());
    assert_eq!(size_file(&root), 0);
    assert_eq!(recorded_sum(&root), 0);
}
