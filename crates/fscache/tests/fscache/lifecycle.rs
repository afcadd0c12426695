//! An entry's life through the handles of one process: the builder,
//! store, commit, load and their owned guards, LRU order, `contains`,
//! commit reports and error text.

use std::path::PathBuf;
use std::time::Duration;

use fscache::{CacheInfo, Error, FsCache, MaxSize, Obtained, PruneOptions, Stored};

use crate::util::{age, on_disk, put, unlimited};

// An entry's last use is its commit, not the start of its store.
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

// Error text.
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
