//! Races forced through the test hooks: another handle acts at the exact
//! point between two steps of a protocol, and the protocol must cope.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fscache::{FsCache, Hook, HookPoint, MaxSize, Stored};
use fscache_dir::CacheDir;

use crate::cache_util::*;
use crate::inspect::*;

/// A hook that runs `action` once, the first time `point` fires for
/// `rel`, and only after `armed` is set. The flag also keeps the action
/// from recursing into itself.
fn once(
    point: HookPoint,
    rel: impl Into<PathBuf>,
    armed: Arc<AtomicBool>,
    action: impl Fn(&Path) + Send + Sync + 'static,
) -> Hook {
    let rel = rel.into();
    Arc::new(move |p: HookPoint, r: &Path| {
        if p == point
            && (rel.as_os_str().is_empty() || r == rel)
            && armed.swap(false, Ordering::SeqCst)
        {
            action(r);
        }
    })
}

/// Remove entry `name` as eviction does, through a separate handle:
/// exclusive lock, removal, exact uncharge.
fn remove_as_other_handle(root: &Path, name: &str) {
    let other = CacheDir::open(root).unwrap();
    let entry = Path::new("objects").join(name);
    let fscache_dir::TryLocked::Locked(lock) = other
        .try_lock(
            &entry.join("object.lock"),
            fscache_dir::LockOptions::exclusive(),
        )
        .unwrap()
    else {
        panic!("nobody holds the entry yet")
    };
    let size = recorded(root, name);
    other.remove_entry(&entry).unwrap();
    drop(lock);
    fscache_quota::uncharge(&other, size).unwrap();
}

#[test]
fn cache_race_load_meets_removal() {
    let (_t, root) = fresh();
    let armed = Arc::new(AtomicBool::new(false));
    let r = root.clone();
    let hook = once(
        HookPoint::LockedOpenLock,
        "objects/x/object.lock",
        armed.clone(),
        move |_| remove_as_other_handle(&r, "x"),
    );
    let cache = FsCache::open_with_hook(APPID, &root, Some(hook)).unwrap();
    set_max(&cache, MaxSize::Unlimited);
    assert_eq!(store_file(&cache, "x", 1, BLOCK), Stored::Committed);
    armed.store(true, Ordering::SeqCst);
    assert!(
        cache.load("x").unwrap().is_none(),
        "a removed entry is a miss"
    );
    assert!(!armed.load(Ordering::SeqCst), "the hook fired");
    assert_eq!(entries(&root), Vec::<String>::new());
    assert_books_balance(&root);
    assert_no_debris(&root);
}

#[test]
fn cache_race_load_meets_replacement() {
    let (_t, root) = fresh();
    let armed = Arc::new(AtomicBool::new(false));
    let r = root.clone();
    let hook = once(
        HookPoint::LockedOpenLock,
        "objects/x/object.lock",
        armed.clone(),
        move |_| {
            remove_as_other_handle(&r, "x");
            let other = open(&r);
            assert_eq!(store_file(&other, "x", 2, BLOCK), Stored::Committed);
        },
    );
    let cache = FsCache::open_with_hook(APPID, &root, Some(hook)).unwrap();
    set_max(&cache, MaxSize::Unlimited);
    assert_eq!(store_file(&cache, "x", 1, BLOCK), Stored::Committed);
    armed.store(true, Ordering::SeqCst);
    // The load locked the old, unlinked lock file: it must notice and hand
    // out the new entry, never the removed one.
    let e = cache.load("x").unwrap().expect("the new entry");
    assert!(!armed.load(Ordering::SeqCst), "the hook fired");
    assert_eq!(fs::read(e.path().join("f")).unwrap(), content(2, BLOCK));
    assert_books_balance(&root);
    assert_no_debris(&root);
}

#[test]
fn cache_race_anon_dir_removed_before_link() {
    let (_t, root) = fresh();
    let armed = Arc::new(AtomicBool::new(false));
    let r = root.clone();
    let hook = once(HookPoint::AtomicDirLink, "", armed.clone(), move |rel| {
        // A racing cleanup removes the new, still empty directory.
        fs::remove_dir(r.join(rel)).unwrap();
    });
    let cache = FsCache::open_with_hook(APPID, &root, Some(hook)).unwrap();
    set_max(&cache, MaxSize::Unlimited);
    armed.store(true, Ordering::SeqCst);
    assert_eq!(store_file(&cache, "x", 1, BLOCK), Stored::Committed);
    assert!(!armed.load(Ordering::SeqCst), "the hook fired");
    assert_eq!(entries(&root), ["x"]);
    assert_no_debris(&root);
    assert_books_balance(&root);

    // The same for a stage.
    armed.store(true, Ordering::SeqCst);
    let s = cache.stage().unwrap();
    assert!(!armed.load(Ordering::SeqCst), "the hook fired");
    assert!(s.path().is_dir());
    drop(s);
    assert_no_debris(&root);
}

#[test]
fn cache_race_commit_loses_to_other_writer() {
    let (_t, root) = fresh();
    let armed = Arc::new(AtomicBool::new(false));
    let r = root.clone();
    let hook = once(HookPoint::CommitRename, "", armed.clone(), move |_| {
        let other = open(&r);
        assert_eq!(store_file(&other, "x", 2, 2 * BLOCK), Stored::Committed);
    });
    let cache = FsCache::open_with_hook(APPID, &root, Some(hook)).unwrap();
    set_max(&cache, MaxSize::Unlimited);
    assert_eq!(store_file(&cache, "keep", 0, BLOCK), Stored::Committed);
    armed.store(true, Ordering::SeqCst);
    assert_eq!(store_file(&cache, "x", 1, BLOCK), Stored::Exists);
    assert!(!armed.load(Ordering::SeqCst), "the hook fired");
    let e = cache.load("x").unwrap().unwrap();
    assert_eq!(fs::read(e.path().join("f")).unwrap(), content(2, 2 * BLOCK));
    assert_eq!(entries(&root), ["keep", "x"]);
    assert_eq!(
        size_file(&root),
        recorded(&root, "keep") + recorded(&root, "x")
    );
    assert_books_balance(&root);
    assert_no_debris(&root);
}

/// Another writer replaces `cache.size` (with `value + extra`) between our
/// open and lock of it.
fn replace_counter(root: &Path, extra: u64) {
    let v = size_file(root);
    let tmp = root.join("cache.size.racing");
    fs::write(&tmp, (v + extra).to_string()).unwrap();
    fs::rename(&tmp, root.join("cache.size")).unwrap();
}

#[test]
fn cache_race_counter_replaced_before_lock() {
    let (_t, root) = fresh();
    let armed = Arc::new(AtomicBool::new(false));
    let r = root.clone();
    let hook = once(
        HookPoint::LockedOpenLock,
        "cache.size",
        armed.clone(),
        move |_| replace_counter(&r, 8192),
    );
    let cache = FsCache::open_with_hook(APPID, &root, Some(hook)).unwrap();
    set_max(&cache, MaxSize::Unlimited);
    assert_eq!(store_file(&cache, "a", 0, BLOCK), Stored::Committed);
    let before = size_file(&root);
    armed.store(true, Ordering::SeqCst);
    assert_eq!(store_file(&cache, "b", 1, BLOCK), Stored::Committed);
    assert!(!armed.load(Ordering::SeqCst), "the hook fired");
    // Our charge went on from the other writer's value, not the stale one.
    assert_eq!(size_file(&root), before + 8192 + recorded(&root, "b"));
    assert_no_debris(&root);
    assert!(!root.join("cache.size.racing").exists());
}

#[test]
fn cache_race_counter_replaced_before_lock_quota_layer() {
    let (_t, root) = fresh();
    drop(open(&root));
    let mut dir = CacheDir::open(&root).unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let r = root.clone();
    dir.set_hook(Some(once(
        HookPoint::LockedOpenLock,
        "cache.size",
        armed.clone(),
        move |_| replace_counter(&r, 100),
    )));
    let charged = fscache_quota::charge(&dir, 5, MaxSize::Unlimited).unwrap();
    assert!(!armed.load(Ordering::SeqCst), "the hook fired");
    assert_eq!(charged, fscache_quota::Charge::Accepted { total: 105 });
    assert_eq!(size_file(&root), 105);
    assert_eq!(fscache_quota::uncharge(&dir, 5).unwrap(), 100);
}

/// When the kept eviction list runs out (here: none was written yet), the
/// evicting commits that meet it at once do not each scan `objects/`: the
/// first holds the rescan lock (byte 2 of `books.lock`) while it scans,
/// the other waits for it, then takes its candidate from the list the
/// first wrote. Two handles, so two open file descriptions of
/// `books.lock`: the OFD lock between them is the one between processes.
#[test]
fn cache_race_evicting_commits_share_one_rescan() {
    use std::sync::mpsc;
    let (_t, root) = fresh();
    let setup = open(&root);
    let one = entry_space(BLOCK);
    set_max(&setup, MaxSize::Bytes(20 * one));
    for i in 0..20 {
        assert_eq!(
            store_file(&setup, &format!("e{i:02}"), i, BLOCK),
            Stored::Committed
        );
        tick();
    }
    setup.zero_stats().unwrap();
    drop(setup);
    // A's scan pauses at its start until B has had time to reach its own
    // (or the bound passes: then B came late and found A's list anyway).
    let (scanning_tx, scanning_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let scanning_tx = std::sync::Mutex::new(scanning_tx);
    let go_rx = std::sync::Mutex::new(go_rx);
    let armed = Arc::new(AtomicBool::new(true));
    let hook = once(HookPoint::EvictScan, "", armed, move |_| {
        scanning_tx.lock().unwrap().send(()).unwrap();
        let _ = go_rx
            .lock()
            .unwrap()
            .recv_timeout(fscache_testkit::EVENTUALLY);
    });
    let a = FsCache::open_with_hook(APPID, &root, Some(hook)).unwrap();
    let b = open(&root);
    std::thread::scope(|s| {
        let ta = s.spawn(|| store_file(&a, "a", 100, BLOCK));
        scanning_rx
            .recv_timeout(fscache_testkit::EVENTUALLY)
            .expect("A scans");
        let tb = s.spawn(|| store_file(&b, "b", 101, BLOCK));
        std::thread::sleep(fscache_testkit::QUIET);
        go_tx.send(()).unwrap();
        assert_eq!(ta.join().unwrap(), Stored::Committed);
        assert_eq!(tb.join().unwrap(), Stored::Committed);
    });
    // Both handles' counts, summed in cache.stats.
    drop(a);
    let stats = b.stats().unwrap();
    assert_eq!(stats.eviction_scans, 1, "one scan served both commits");
    assert_eq!(stats.evictions, 2);
    // The two oldest went, one each, from the one list.
    let left = entries(&root);
    assert!(!left.contains(&"e00".to_owned()) && !left.contains(&"e01".to_owned()));
    assert_eq!(left.len(), 20);
    assert!(root.join("cache.evict").exists());
    assert_books_balance(&root);
    assert_no_debris(&root);
    // A recount of the books makes the list stale: it is unlinked, and
    // the next evicting commit scans again.
    assert!(b.repair().unwrap().is_some(), "b is the only handle");
    assert!(
        !root.join("cache.evict").exists(),
        "stale after the recount"
    );
    assert_eq!(store_file(&b, "c", 102, BLOCK), Stored::Committed);
    assert_eq!(b.stats().unwrap().eviction_scans, 2);
}
