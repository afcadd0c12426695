//! Unit tests of `maint.rs`: listing, removal, prune and usage against a
//! real cache in a temporary directory.

use super::*;
use crate::{CacheInfo, MaxSize, Stored};
use fscache_dir::CACHE_INFO;

fn cache(limit: MaxSize) -> (tempfile::TempDir, FsCache) {
    let tmp = tempfile::tempdir().unwrap();
    let c = FsCache::open("maint-test", tmp.path().join("c")).unwrap();
    c.set_info(CacheInfo {
        maximum_size: Some(limit),
        ..Default::default()
    })
    .unwrap();
    (tmp, c)
}

fn put(c: &FsCache, name: &str, bytes: usize) {
    let w = c.store(name).unwrap();
    std::fs::write(w.path().join("f"), vec![1u8; bytes]).unwrap();
    assert_eq!(w.commit().unwrap(), Stored::Committed);
}

fn atime(c: &FsCache, name: &str) -> (i64, i64) {
    let st = c
        .dir()
        .stat(&PathBuf::from(OBJECTS).join(name).join(OBJECT_LOCK))
        .unwrap();
    (st.st_atime, st.st_atime_nsec as i64)
}

/// Set an entry's last use to `secs_ago` seconds before now.
fn age(c: &FsCache, name: &str, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    let f = std::fs::File::open(c.path().join(OBJECTS).join(name).join(OBJECT_LOCK)).unwrap();
    f.set_times(std::fs::FileTimes::new().set_accessed(t))
        .unwrap();
}

fn c(name: &str, t: i64, size: Option<u64>) -> Candidate {
    Candidate::new(name, (t, 0), size)
}

#[test]
fn entries_report_size_use_and_readers_without_touching_atime() {
    let (_t, c) = cache(MaxSize::Unlimited);
    put(&c, "b", 5000);
    put(&c, "a", 10);
    let before = (atime(&c, "a"), atime(&c, "b"));
    let held = c.load("b").unwrap().unwrap();
    let b_used = atime(&c, "b");
    let list = c.entries().unwrap();
    assert_eq!(
        list.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(!list[0].in_use);
    assert!(list[1].in_use);
    assert!(list[1].size.unwrap() >= 5000);
    assert_eq!(atime(&c, "a"), before.0);
    assert_eq!(atime(&c, "b"), b_used);
    drop(held);
    assert!(c.entries().unwrap().iter().all(|e| !e.in_use));
    let age = SystemTime::now()
        .duration_since(list[0].last_use)
        .unwrap_or_default();
    assert!(age < Duration::from_secs(60), "{age:?}");
}

#[test]
fn remove_uncharges_exactly_and_respects_readers() {
    let (_t, c) = cache(MaxSize::Unlimited);
    put(&c, "a", 3000);
    put(&c, "b", 100);
    let size_a = c.entries().unwrap()[0].size.unwrap();
    let before = c.usage().unwrap().accounted;

    let held = c.load("a").unwrap().unwrap();
    assert_eq!(c.remove("a").unwrap(), Removed::InUse);
    assert!(held.path().join("f").exists());
    drop(held);

    assert_eq!(c.remove("a").unwrap(), Removed::Removed { freed: size_a });
    assert_eq!(c.usage().unwrap().accounted, before - size_a);
    assert_eq!(c.remove("a").unwrap(), Removed::Missing);
    assert!(c.load("a").unwrap().is_none());
    assert!(matches!(c.remove("../x"), Err(Error::InvalidName(_))));
    assert!(matches!(c.remove("uuid-1"), Err(Error::InvalidName(_))));
    assert_eq!(c.usage().unwrap().entries, 1);
}

#[test]
fn remove_of_debris_without_object_info_recounts_the_books() {
    let (_t, c) = cache(MaxSize::Unlimited);
    put(&c, "a", 100);
    std::fs::remove_file(c.path().join("objects/a/object.info")).unwrap();
    assert!(c.usage().unwrap().accounted > 0);
    // The sweep that `remove` runs first takes the invalid entry as
    // debris. What it was charged is unknown (its record is gone): the
    // books are marked suspect and recounted, to 0 here.
    assert!(matches!(
        c.remove("a").unwrap(),
        Removed::Removed { freed: 0 }
    ));
    assert_eq!(c.usage().unwrap().accounted, 0);
    assert!(!c.path().join("objects/a").exists());
}

#[test]
fn prune_to_a_size_takes_the_least_recently_used_and_skips_readers() {
    let (_t, c) = cache(MaxSize::Unlimited);
    for (name, ago) in [("old", 300), ("mid", 200), ("new", 100)] {
        put(&c, name, 4000);
        age(&c, name, ago);
    }
    let sizes: u64 = c.entries().unwrap().iter().map(|e| e.size.unwrap()).sum();
    let one = sizes / 3;

    let dry = c
        .prune(PruneOptions {
            to: Some(one),
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(dry.removed, ["old", "mid"]);
    assert!(dry.dry_run);
    assert_eq!(c.usage().unwrap().entries, 3, "a dry run removes nothing");

    let held = c.load("old").unwrap().unwrap();
    let r = c
        .prune(PruneOptions {
            to: Some(one),
            ..Default::default()
        })
        .unwrap();
    // "old" was just loaded: it is now the most recent and held.
    assert_eq!(r.removed, ["mid", "new"]);
    assert_eq!(r.accounted, sizes - r.freed);
    drop(held);
    assert_eq!(
        c.entries()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["old"]
    );
}

#[test]
fn prune_unused_for_and_default_limit() {
    let (_t, c) = cache(MaxSize::Unlimited);
    put(&c, "stale", 100);
    age(&c, "stale", 3 * 86_400);
    put(&c, "fresh", 100);
    let held = c.load("fresh").unwrap().unwrap();
    let dry = c
        .prune(PruneOptions {
            unused_for: Some(Duration::from_secs(86_400)),
            dry_run: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(dry.removed, ["stale"]);
    let r = c
        .prune(PruneOptions {
            unused_for: Some(Duration::from_secs(86_400)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.removed, ["stale"]);
    assert!(r.skipped.is_empty());
    drop(held);
    // Unlimited and no criterion: nothing to do.
    assert!(c.prune(PruneOptions::default()).unwrap().removed.is_empty());
    // Lower the limit to 0: the default prunes down to it.
    c.set_info(CacheInfo {
        maximum_size: Some(MaxSize::Bytes(0)),
        ..Default::default()
    })
    .unwrap();
    let r = c.prune(PruneOptions::default()).unwrap();
    assert_eq!(r.removed, ["fresh"]);
    assert_eq!(r.accounted, 0);
}

#[test]
fn choose_combines_age_and_size() {
    let now = UNIX_EPOCH + Duration::from_secs(1000);
    let cands = [
        c("a", 100, Some(10)),
        c("b", 500, Some(10)),
        c("junk", 600, None),
        c("d", 900, Some(10)),
    ];
    let names = |v: Vec<Candidate>| v.into_iter().map(|c| c.name).collect::<Vec<_>>();
    // Unused for 600 s: a (100 < 400); junk always.
    assert_eq!(
        names(choose(
            &cands,
            30,
            None,
            Some(Duration::from_secs(600)),
            now
        )),
        ["a", "junk"]
    );
    // Down to 10 after a is gone (30 - 10 = 20): b too.
    assert_eq!(
        names(choose(
            &cands,
            30,
            Some(10),
            Some(Duration::from_secs(600)),
            now
        )),
        ["a", "b", "junk"]
    );
    assert_eq!(names(choose(&cands, 30, Some(30), None, now)), ["junk"]);
    // A duration reaching before the epoch selects by age nothing.
    assert_eq!(
        names(choose(&cands, 30, None, Some(Duration::MAX), now)),
        ["junk"]
    );
    assert_eq!(stamp_to_time((-1, 0)), UNIX_EPOCH - Duration::from_secs(1));
}

#[test]
fn usage_counts_disk_and_entries() {
    let (_t, c) = cache(MaxSize::Unlimited);
    let empty = c.usage().unwrap();
    assert_eq!((empty.accounted, empty.entries), (0, 0));
    put(&c, "a", 8192);
    let u = c.usage().unwrap();
    assert_eq!(u.entries, 1);
    assert!(u.accounted >= 8192);
    assert!(u.on_disk >= u.accounted);
}

#[test]
fn an_incompatible_cache_is_not_modified() {
    let (_t, c) = cache(MaxSize::Unlimited);
    put(&c, "a", 10);
    std::fs::write(c.path().join(CACHE_INFO), br#"{"version": 2}"#).unwrap();
    assert!(matches!(c.remove("a"), Err(Error::Incompatible { .. })));
    assert!(matches!(
        c.prune(PruneOptions {
            to: Some(0),
            ..Default::default()
        }),
        Err(Error::Incompatible { .. })
    ));
    assert_eq!(c.entries().unwrap().len(), 1);
}
