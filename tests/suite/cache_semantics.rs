//! What load, store, commit and stage answer: misses, invalid names,
//! commit outcomes, cleanup on drop and unwind, LRU eviction order.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};

use fscache::{Error, MaxSize, Stored};

use crate::cache_util::*;
use crate::inspect::*;

#[test]
fn cache_miss_is_none() {
    let (_t, root) = fresh();
    let cache = open(&root);
    assert!(cache.load("absent").unwrap().is_none());
    set_max(&cache, MaxSize::Unlimited);
    assert!(cache.load("absent").unwrap().is_none());
    assert_eq!(list(&root.join("objects")), Vec::<String>::new());
}

#[test]
fn cache_hostile_names_are_invalid_and_touch_nothing() {
    let (_t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);
    let src = tmp();
    fs::write(src.path().join("x"), b"x").unwrap();
    let long = "a".repeat(256);
    let hostile = [
        "../x", "a/b", "/abs", ".", "..", "uuid-1", "uuid-", &long, "a\0b", "",
    ];
    let listing = |root: &std::path::Path| {
        (
            list(root),
            list(&root.join("objects")),
            list(&root.join("stage")),
            list(root.parent().unwrap()),
        )
    };
    let before = listing(&root);
    for name in hostile {
        assert!(
            matches!(cache.load(name), Err(Error::InvalidName(_))),
            "load({name:?})"
        );
        assert!(
            matches!(cache.store(name), Err(Error::InvalidName(_))),
            "store({name:?})"
        );
        assert!(
            matches!(
                cache.store_tree(name, src.path()),
                Err(Error::InvalidName(_))
            ),
            "store_tree({name:?})"
        );
        assert_eq!(listing(&root), before, "{name:?} touched the disk");
    }
    // The longest valid name works.
    let max = "b".repeat(255);
    assert_eq!(store_file(&cache, &max, 1, 10), Stored::Committed);
    assert!(cache.load(&max).unwrap().is_some());
    assert_books_balance(&root);
}

#[test]
fn cache_default_limit_keeps_nothing() {
    let (_t, root) = fresh();
    let cache = open(&root);
    assert_eq!(cache.info().maximum_size, None);
    assert_eq!(store_file(&cache, "x", 1, BLOCK), Stored::TooLarge);
    assert!(cache.load("x").unwrap().is_none());
    assert_eq!(entries(&root), Vec::<String>::new());
    assert_no_debris(&root);
    assert_eq!(size_file(&root), 0);
}

#[test]
fn cache_commit_outcomes() {
    let (_t, root) = fresh();
    let cache = open(&root);
    let one = entry_space(BLOCK);
    set_max(&cache, MaxSize::Bytes(2 * one));

    assert_eq!(store_file(&cache, "n", 1, BLOCK), Stored::Committed);
    // The name is taken: the second copy is discarded, the first kept.
    assert_eq!(store_file(&cache, "n", 2, BLOCK), Stored::Exists);
    let e = cache.load("n").unwrap().unwrap();
    assert_eq!(fs::read(e.path().join("f")).unwrap(), content(1, BLOCK));
    drop(e);
    assert_books_balance(&root);
    assert_eq!(size_file(&root), one);
    assert_no_debris(&root);

    // Larger than the whole cache.
    assert_eq!(store_file(&cache, "big", 3, 4 * BLOCK), Stored::TooLarge);
    assert!(cache.load("big").unwrap().is_none());
    assert_eq!(entries(&root), ["n"]);
    assert_books_balance(&root);
    assert_no_debris(&root);

    // Dropped without commit: nothing left.
    let w = cache.store("dropped").unwrap();
    fs::write(w.path().join("f"), b"x").unwrap();
    let path = w.path().to_owned();
    assert!(path.is_dir());
    drop(w);
    assert!(!path.exists());
    assert!(cache.load("dropped").unwrap().is_none());
    assert_eq!(entries(&root), ["n"]);
    assert_no_debris(&root);
    assert_books_balance(&root);
}

#[test]
fn cache_guards_clean_up_on_drop_and_unwind() {
    let (_t, root) = fresh();
    let cache = open(&root);
    set_max(&cache, MaxSize::Unlimited);

    let s = cache.stage().unwrap();
    assert!(s.path().is_absolute());
    assert!(s.path().starts_with(root.join("stage")));
    fs::create_dir_all(s.path().join("deep/er")).unwrap();
    fs::write(s.path().join("deep/er/f"), b"x").unwrap();
    assert_eq!(list(&root.join("stage")).len(), 1);
    drop(s);
    assert_no_debris(&root);

    let r = catch_unwind(AssertUnwindSafe(|| {
        let s = cache.stage().unwrap();
        fs::write(s.path().join("f"), b"x").unwrap();
        let w = cache.store("never").unwrap();
        fs::write(w.path().join("f"), b"x").unwrap();
        panic!("boom while holding a stage and a store guard");
    }));
    assert!(r.is_err());
    assert_no_debris(&root);
    assert!(cache.load("never").unwrap().is_none());
    assert_eq!(entries(&root), Vec::<String>::new());
    assert_eq!(size_file(&root), 0);
}

#[test]
fn cache_lru_order_is_decided_by_loads() {
    let (_t, root) = fresh();
    let cache = open(&root);
    let one = entry_space(BLOCK);
    // Room for three entries and a half.
    set_max(&cache, MaxSize::Bytes(3 * one + one / 2));
    for (i, n) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(store_file(&cache, n, i as u64, BLOCK), Stored::Committed);
        tick();
    }
    drop(cache.load("a").unwrap().expect("a is there"));
    tick();
    assert_eq!(store_file(&cache, "d", 3, BLOCK), Stored::Committed);
    assert_eq!(entries(&root), ["a", "c", "d"], "b was least recently used");
    assert_books_balance(&root);
    assert_no_debris(&root);
}

#[test]
fn cache_held_entry_is_never_evicted() {
    let (_t, root) = fresh();
    let cache = open(&root);
    let one = entry_space(BLOCK);
    set_max(&cache, MaxSize::Bytes(3 * one + one / 2));
    for (i, n) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(store_file(&cache, n, i as u64, BLOCK), Stored::Committed);
        tick();
    }
    // `a` is held and, after b and c are used, the oldest.
    let held_a = cache.load("a").unwrap().unwrap();
    tick();
    drop(cache.load("b").unwrap().unwrap());
    tick();
    drop(cache.load("c").unwrap().unwrap());
    tick();
    assert_eq!(
        store_file(&cache, "d", 3, BLOCK),
        Stored::Committed,
        "the idle b and c can make room although the oldest, a, is held"
    );
    let left = entries(&root);
    assert!(
        left.contains(&"a".to_owned()),
        "held entry evicted: {left:?}"
    );
    assert_eq!(left, ["a", "c", "d"], "b is the oldest idle entry");
    assert_eq!(
        fs::read(held_a.path().join("f")).unwrap(),
        content(0, BLOCK)
    );
    assert_books_balance(&root);

    // Everything held: nothing can be evicted.
    let held: Vec<_> = ["c", "d"]
        .iter()
        .map(|n| cache.load(n).unwrap().unwrap())
        .collect();
    let before = size_file(&root);
    assert_eq!(store_file(&cache, "e", 4, BLOCK), Stored::NoSpace);
    assert_eq!(entries(&root), ["a", "c", "d"]);
    assert_eq!(size_file(&root), before);
    assert_books_balance(&root);
    assert_no_debris(&root);
    drop(held);
    drop(held_a);
    // Released: now it fits.
    assert_eq!(store_file(&cache, "e", 4, BLOCK), Stored::Committed);
    assert_books_balance(&root);
}

#[test]
fn cache_eviction_removes_only_what_the_store_needs_oldest_first() {
    let (_t, root) = fresh();
    let cache = open(&root);
    let one = entry_space(BLOCK);
    let limit = 10 * one + one / 2;
    // Ten entries fill a 10.5-entry cache; each store after that needs
    // one eviction and removes exactly one entry, the oldest idle one,
    // whether it comes from a fresh scan (planned down to the watermark)
    // or from the handle's kept list of candidates.
    set_max(&cache, MaxSize::Bytes(limit));
    let names: Vec<String> = (0..10).map(|i| format!("e{i:02}")).collect();
    for (i, n) in names.iter().enumerate() {
        assert_eq!(store_file(&cache, n, i as u64, BLOCK), Stored::Committed);
        tick();
    }
    for (i, new) in ["new", "newer"].iter().enumerate() {
        assert_eq!(
            store_file(&cache, new, 99 + i as u64, BLOCK),
            Stored::Committed
        );
        let left = entries(&root);
        assert_eq!(left.len(), 10, "one evicted for one needed: {left:?}");
        assert!(!left.contains(&names[i]), "{left:?}");
        assert!(left.contains(&names[i + 1]), "{left:?}");
        assert_eq!(size_file(&root), 10 * one);
        assert_books_balance(&root);
        tick();
    }
    // The watermark sets how far ahead a scan plans, not how much one
    // store removes: with 50% the next scan lists half the cache, and the
    // store still removes one entry.
    cache.set_watermark_percent(50);
    assert_eq!(store_file(&cache, "newest", 101, BLOCK), Stored::Committed);
    let left = entries(&root);
    assert_eq!(left.len(), 10, "{left:?}");
    assert!(!left.contains(&names[2]) && left.contains(&names[3]));
    assert!(left.contains(&"newest".to_owned()) && left.contains(&"newer".to_owned()));
    // A loaded entry is no longer the oldest: the kept list skips it.
    tick();
    drop(cache.load(&names[3]).unwrap().expect("hit"));
    tick();
    assert_eq!(store_file(&cache, "last", 102, BLOCK), Stored::Committed);
    let left = entries(&root);
    assert!(
        left.contains(&names[3]) && !left.contains(&names[4]),
        "{left:?}"
    );
    assert!(size_file(&root) <= limit);
    assert_books_balance(&root);
    assert_no_debris(&root);
}

#[test]
fn cache_eviction_that_runs_out_of_its_list_frees_only_the_rest() {
    // A commit that empties its kept list and scans again must count what
    // it already freed: it removes only the rest of its need.
    let (_t, root) = fresh();
    let cache = open(&root);
    let one = entry_space(BLOCK);
    let two = entry_space(2 * BLOCK);
    set_max(&cache, MaxSize::Bytes(4 * one));
    for (i, n) in ["a", "c", "b"].iter().enumerate() {
        assert_eq!(store_file(&cache, n, i as u64, BLOCK), Stored::Committed);
        tick();
    }
    // Needs one entry's room: the scan plans a and c, a goes.
    assert_eq!(store_file(&cache, "x", 7, 2 * BLOCK), Stored::Committed);
    assert_eq!(entries(&root), ["b", "c", "x"]);
    tick();
    // Needs two: c from the list, then (list empty, scan again) b only.
    assert_eq!(store_file(&cache, "y", 8, 2 * BLOCK), Stored::Committed);
    assert_eq!(entries(&root), ["x", "y"]);
    assert_eq!(size_file(&root), 2 * two);
    assert_books_balance(&root);
}
