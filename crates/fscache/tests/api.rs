//! The library 2.0 surface: builder, owned guards, `commit_and_load`,
//! single flight, `contains`, sweeps, commit reports, and the regression
//! tests of the user trial's bugs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use fscache::{
    BuildOptions, CacheInfo, Error, FsCache, MaxSize, Obtained, PruneOptions, Removed, Stored,
};

fn unlimited(root: &Path) -> FsCache {
    FsCache::builder("api-test")
        .max_size_if_unset(MaxSize::Unlimited)
        .open(root)
        .unwrap()
}

fn put(c: &FsCache, name: &str, bytes: usize) {
    let w = c.store(name).unwrap();
    std::fs::write(w.path().join("f"), vec![7u8; bytes]).unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
}

/// Set a file's atime to `secs_ago` seconds before now.
fn age(path: &Path, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    let f = std::fs::File::open(path).unwrap();
    f.set_times(std::fs::FileTimes::new().set_accessed(t))
        .unwrap();
}

/// The names in `objects/` and `stage/` (debris included).
fn on_disk(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["objects", "stage"] {
        for e in std::fs::read_dir(root.join(sub)).unwrap() {
            names.push(format!(
                "{sub}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    names.sort();
    names
}

// Bug 1: an entry's last use is its commit, not the start of its store.
#[test]
fn a_fresh_entry_is_the_most_recently_used() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    put(&c, "older", 100);
    age(&tmp.path().join("objects/older/object.lock"), 3600);
    let w = c.store("slow").unwrap();
    std::fs::write(w.path().join("f"), b"x").unwrap();
    // The store began two hours ago (its lock file says so).
    let anon_lock = w.path().parent().unwrap().join("object.lock");
    age(&anon_lock, 7200);
    assert_eq!(w.commit().unwrap(), Stored::Committed);

    let dry = c
        .prune(
            PruneOptions::new()
                .unused_for(Duration::from_secs(60))
                .dry_run(true),
        )
        .unwrap();
    assert_eq!(dry.removed, ["older"], "the fresh entry is not unused");
    // Pruning down to one entry's worth keeps the fresh one.
    let one = c.entries().unwrap()[0].size.unwrap();
    let r = c.prune(PruneOptions::new().to(one)).unwrap();
    assert_eq!(r.removed, ["older"]);
    assert!(c.contains("slow").unwrap());
}

// Bug 2: debris of dead writers is swept while other handles are open.
#[test]
fn debris_is_swept_beside_other_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let c = unlimited(root);
    let other = unlimited(root);
    put(&c, "kept", 100);
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
    assert_eq!(on_disk(root), {
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

// Bug 4: error text.
#[test]
fn errors_say_what_is_wrong_once() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let e = FsCache::open("api-test", &file).unwrap_err();
    assert_eq!(
        e.io_error().and_then(std::io::Error::raw_os_error),
        Some(20),
        "{e}"
    );
    let msg = error_chain(&e);
    assert!(msg.contains("Not a directory"), "{msg}");

    let c = unlimited(&tmp.path().join("c"));
    let missing = tmp.path().join("no-such-source");
    let e = c.store_tree("t", &missing).unwrap_err();
    let msg = error_chain(&e);
    assert_eq!(msg.matches("no-such-source").count(), 1, "{msg}");
    assert_eq!(e.io_error().and_then(std::io::Error::raw_os_error), Some(2));
    assert!(c.entries().unwrap().is_empty());

    std::fs::write(c.path().join("cache.info"), br#"{"version": 2}"#).unwrap();
    let e = c.remove("t").unwrap_err();
    assert!(
        matches!(
            e,
            Error::Incompatible {
                version: Some(2),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.to_string().contains("corrupt"), "{e}");
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[test]
fn the_builder_sets_a_limit_only_where_none_is_set() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A new cache with the osbuild default (no limit: keeps nothing).
    let plain = FsCache::open("api-test", root).unwrap();
    let w = plain.store("a").unwrap();
    assert_eq!(w.commit().unwrap(), Stored::TooLarge);

    let c = FsCache::builder("api-test")
        .max_size_if_unset(MaxSize::Bytes(1 << 20))
        .open(root)
        .unwrap();
    assert_eq!(c.info().maximum_size, Some(MaxSize::Bytes(1 << 20)));
    put(&c, "a", 10);
    // Someone else's limit stands.
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Bytes(5 << 20)),
        ..Default::default()
    })
    .unwrap();
    let d = FsCache::builder("api-test")
        .max_size_if_unset(MaxSize::Bytes(1))
        .watermark(50)
        .open(root)
        .unwrap();
    assert_eq!(d.info().maximum_size, Some(MaxSize::Bytes(5 << 20)));
    assert_eq!(d.watermark_percent(), 50);
    // Unknown keys survive the default being written.
    let text = std::fs::read_to_string(root.join("cache.info")).unwrap();
    assert!(
        text.contains("\"version\":1") || text.contains("\"version\": 1"),
        "{text}"
    );
}

/// A build step's state: the cache beside a guard that owns a clone.
struct Step {
    cache: FsCache,
    writing: Option<fscache::StoreGuard>,
}

#[test]
fn guards_own_their_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let mut step = Step {
        cache: unlimited(tmp.path()),
        writing: None,
    };
    step.writing = Some(step.cache.store("owned").unwrap());
    let w = step.writing.take().unwrap();
    let path: PathBuf = w.path().to_owned();
    // Moves to another thread, outliving the original handle.
    drop(step.cache);
    let t = std::thread::spawn(move || {
        std::fs::write(w.path().join("f"), b"x").unwrap();
        w.commit_and_load().unwrap()
    });
    let got = t.join().unwrap();
    assert!(matches!(got, Obtained::Built(_)));
    assert!(!path.exists(), "the private directory was renamed");
    assert_eq!(std::fs::read(got.path().join("f")).unwrap(), b"x");

    // Dropping an uncommitted guard removes it; close reports.
    let c = unlimited(tmp.path());
    let w = c.store("dropped").unwrap();
    let p = w.path().parent().unwrap().to_owned();
    drop(w);
    assert!(!p.exists());
    let s = c.stage().unwrap();
    let p = s.path().parent().unwrap().to_owned();
    s.close().unwrap();
    assert!(!p.exists());
}

#[test]
fn commit_and_load_leaves_no_window_for_eviction() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    let other = unlimited(tmp.path());
    for i in 0..20 {
        let w = c.store(&format!("e{i}")).unwrap();
        std::fs::write(w.path().join("f"), vec![1u8; 4096]).unwrap();
        let got = w.commit_and_load().unwrap();
        let Obtained::Built(entry) = got else {
            panic!("not built: {got:?}")
        };
        // Another handle prunes everything it may: the held entry stays.
        let r = other.prune(PruneOptions::new().to(0)).unwrap();
        assert!(r.skipped.contains(&format!("e{i}")), "{r:?}");
        // Held shared, not exclusively: other readers hit meanwhile.
        assert!(other.load(&format!("e{i}")).unwrap().is_some());
        assert_eq!(std::fs::read(entry.path().join("f")).unwrap().len(), 4096);
        assert!(entry.open_dir().unwrap().metadata().unwrap().is_dir());
    }
}

#[test]
fn a_tree_the_cache_does_not_keep_is_handed_back() {
    let tmp = tempfile::tempdir().unwrap();
    let c = FsCache::builder("api-test")
        .max_size_if_unset(MaxSize::Bytes(8192))
        .open(tmp.path())
        .unwrap();
    let got = c
        .load_or_build("big", |dir| {
            std::fs::write(dir.join("f"), vec![1u8; 100_000])
        })
        .unwrap();
    let Obtained::Uncached(tree) = got else {
        panic!("kept: {got:?}")
    };
    assert_eq!(tree.reason(), Stored::TooLarge);
    assert_eq!(std::fs::read(tree.path().join("f")).unwrap().len(), 100_000);
    let p = tree.path().to_owned();
    assert_eq!(
        std::fs::read_to_string(c.path().join("cache.size")).unwrap(),
        "0"
    );
    drop(tree);
    assert!(!p.exists());
    assert!(on_disk(c.path()).is_empty(), "{:?}", on_disk(c.path()));
}

#[test]
fn one_of_many_threads_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    let builds = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            // A handle per thread: separate opens, as separate processes.
            let c = unlimited(c.path());
            let (builds, start) = (builds.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let got = c
                    .load_or_build("shared", |dir| {
                        builds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        std::fs::write(dir.join("f"), b"once")
                    })
                    .unwrap();
                assert!(got.is_cached());
                std::fs::read(got.path().join("f")).unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), b"once");
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1);
}

#[test]
fn waiting_for_a_builder_is_bounded_and_cancellable() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    let waiter = unlimited(tmp.path());
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let builder = std::thread::spawn(move || {
        c.load_or_build("slow", |dir| {
            held_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            std::fs::write(dir.join("f"), b"late")
        })
        .unwrap()
        .is_cached()
    });
    held_rx.recv().unwrap();
    let stop = Arc::new(AtomicBool::new(true));
    let e = waiter
        .load_or_build_with(
            "slow",
            &BuildOptions::default().cancel_on(stop),
            |_| -> Result<(), Error> { unreachable!() },
        )
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled { .. }), "{e:?}");
    // Past the bound, the waiter builds its own.
    let got = waiter
        .load_or_build_with(
            "slow",
            &BuildOptions::default().wait_at_most(Duration::from_millis(50)),
            |dir| std::fs::write(dir.join("f"), b"own"),
        )
        .unwrap();
    assert!(matches!(got, Obtained::Built(_)));
    drop(got);
    go_tx.send(()).unwrap();
    // The first builder then finds the name taken and loads the other's.
    assert!(builder.join().unwrap());
    let e = waiter.load("slow").unwrap().unwrap();
    assert_eq!(std::fs::read(e.path().join("f")).unwrap(), b"own");
}

#[test]
fn a_failed_build_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    let e = c
        .load_or_build("fails", |dir| {
            std::fs::write(dir.join("partial"), b"x")?;
            Err(std::io::Error::other("compiler crashed"))
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "compiler crashed");
    assert!(on_disk(c.path()).is_empty(), "{:?}", on_disk(c.path()));
    assert!(!c.contains("fails").unwrap());
}

/// The user trial's bug: a build that asks for its own name waited for
/// itself forever, and left a `uuid-*` behind when killed.
#[test]
fn load_or_build_of_its_own_name_from_its_build_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    // Another handle of the same cache, too: the lock is the cache's.
    let other = unlimited(tmp.path());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let outer = c.clone();
    std::thread::spawn(move || {
        let r = outer.load_or_build("self", |_dir| -> Result<(), Error> {
            let inner = other.load_or_build("self", |_| -> Result<(), Error> { unreachable!() });
            let e = inner.expect_err("the inner call is refused");
            assert!(matches!(e, Error::Reentrant { .. }), "{e:?}");
            assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::Deadlock);
            // Another name, from inside the build, is fine.
            let other_name = other.load_or_build("dep", |d| std::fs::write(d.join("f"), b"d"));
            assert!(matches!(other_name, Ok(Obtained::Built(_))));
            Err(Error::Reentrant {
                name: "self".into(),
            })
        });
        done_tx.send(r.map(|_| ())).unwrap();
    });
    let r = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no hang");
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "`load_or_build` of `self` called from inside its own build: it would wait for itself"
    );
    // Nothing left behind, and the lock is free again: a later build works.
    assert_eq!(on_disk(c.path()), ["objects/dep"]);
    let got = c
        .load_or_build("self", |d| std::fs::write(d.join("f"), b"s"))
        .unwrap();
    assert!(matches!(got, Obtained::Built(_)));
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

#[test]
fn contains_is_a_peek_and_commit_reports_evictions() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    put(&c, "a", 20_000);
    let lock = tmp.path().join("objects/a/object.lock");
    age(&lock, 1000);
    let before = std::fs::metadata(&lock).unwrap().accessed().unwrap();
    assert!(c.contains("a").unwrap());
    assert!(!c.contains("b").unwrap());
    assert!(matches!(c.contains("uuid-x"), Err(Error::InvalidName(_))));
    assert_eq!(
        std::fs::metadata(&lock).unwrap().accessed().unwrap(),
        before
    );

    put(&c, "b", 20_000);
    age(&tmp.path().join("objects/b/object.lock"), 500);
    let total: u64 = c.entries().unwrap().iter().map(|e| e.size.unwrap()).sum();
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Bytes(total + 4096)),
        ..Default::default()
    })
    .unwrap();
    // Free only what is needed, so the report names one victim.
    c.set_watermark_percent(100);
    let w = c.store("c").unwrap();
    std::fs::write(w.path().join("f"), vec![1u8; 20_000]).unwrap();
    let report = w.commit_report().unwrap();
    assert_eq!(report.stored, Stored::Committed);
    assert_eq!(report.evicted, ["a"]);
    assert!(report.size >= 20_000);
    let names: Vec<_> = c
        .iter_entries()
        .unwrap()
        .map(|e| e.unwrap().name)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["b", "c"]);
}

#[test]
fn committed_durability_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let c = FsCache::builder("api-test")
        .max_size_if_unset(MaxSize::Unlimited)
        .durability(fscache::Durability::Committed)
        .open(tmp.path())
        .unwrap();
    let w = c.store("durable").unwrap();
    std::fs::create_dir_all(w.path().join("a/b")).unwrap();
    std::fs::write(w.path().join("a/b/f"), b"x").unwrap();
    std::os::unix::fs::symlink("a/b/f", w.path().join("link")).unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
    let e = c.load("durable").unwrap().unwrap();
    assert_eq!(std::fs::read(e.path().join("link")).unwrap(), b"x");
}

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

/// Found by the model test with injected I/O errors: an eviction whose
/// removal failed half-way (`object.info` gone, files left) made every
/// later store of that name report `Exists` for an entry that does not
/// exist, until something swept. The commit now sweeps such debris under
/// its name and renames again.
#[test]
fn a_store_replaces_what_a_failed_removal_left_under_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let c = unlimited(tmp.path());
    put(&c, "n", 100);
    // A removal that failed after the entry stopped counting: uncharged,
    // `object.info` unlinked, the rest still there.
    assert!(matches!(
        c.remove("n").unwrap(),
        fscache::Removed::Removed { .. }
    ));
    let n = tmp.path().join("objects/n");
    std::fs::create_dir_all(n.join("data")).unwrap();
    std::fs::write(n.join("data/left-over"), b"half removed").unwrap();
    std::fs::write(n.join("object.lock"), b"").unwrap();
    assert!(!c.contains("n").unwrap());

    let w = c.store("n").unwrap();
    std::fs::write(w.path().join("f"), b"new").unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
    let e = c.load("n").unwrap().expect("the new entry");
    assert_eq!(std::fs::read(e.path().join("f")).unwrap(), b"new");
    assert!(!e.path().join("left-over").exists());
    drop(e);
    // The books stayed exact: nothing to correct.
    let r = c.repair().unwrap().expect("alone");
    assert_eq!(r.accounted_before, Some(r.accounted));
}
