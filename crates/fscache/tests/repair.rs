//! `FsCache::repair`: only alone, and afterwards the books are exact.

use fscache::{CacheInfo, FsCache, MaxSize, Stored};

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
